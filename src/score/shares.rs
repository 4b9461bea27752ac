//! The one definition of decay and of the propagation operator's
//! coefficients (ARCHITECTURE.md, "Scoring"). Explanations (the adjoint
//! walk), the batch driver and the push driver of the live series all call
//! these, so the three sum the same numbers, rounded alike.
//!
//! - Decay: an impulse `x` of component `c` at `t_i` is worth
//!   `w_c · x · 2^(-(t - t_i)/h_c)` at `t ≥ t_i` (DESIGN.md, "Scoring";
//!   `h_c` the half-life, `w_c` the weight). Time is event time in whole
//!   milliseconds.
//! - Attention share: `α_f · w / Σw`, the part of what person `p` does that
//!   reaches follower `q`, where `w` is q's follow strength of p and `Σw` all
//!   of q's follow strengths (q's attention).
//! - Association share: `α_a · s / max(1, Σs)`, the part of what happens
//!   between person `p` and one brand that spills onto p's associated brand
//!   `b`, where `s` is p's association strength with b and `Σs` the sum over
//!   p's associated brands.
//!
//! Pure arithmetic: no IO, no clock.

use chrono::{DateTime, Utc};

use super::model::{Component, ScoringModel};

/// Event time from `from` to `to`, in seconds, counted in whole
/// milliseconds (negative when `to` is earlier).
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

/// `2^(seconds / half_life_seconds)`: the factor of `seconds` of event time
/// for a half-life; below 1 for a negative span (decay), above 1 for a
/// positive one (forward decay's landmark factors, `live`).
pub fn half_life_factor(seconds: f64, half_life_seconds: f64) -> f64 {
    (seconds / half_life_seconds).exp2()
}

/// The half-life of component `c` in seconds.
pub fn half_life_seconds(model: &ScoringModel, c: Component) -> f64 {
    model.half_life_days.get(c) * 86_400.0
}

/// Event time as whole nanoseconds since 1970 (`None` outside about 1677 to
/// 2262), the form [`seconds_between_nanos`] takes: a time converted once
/// and then measured against several others costs no calendar arithmetic
/// per span.
pub fn nanos(t: DateTime<Utc>) -> Option<i64> {
    t.timestamp_nanos_opt()
}

/// [`seconds_between`] of two times given as [`nanos`], the same number to
/// the bit (whole milliseconds, truncated toward zero as
/// `TimeDelta::num_milliseconds` does).
pub fn seconds_between_nanos(from: i64, to: i64) -> f64 {
    // Integer division truncates toward zero; 128 bits only for spans
    // past 292 years, where 64 would overflow.
    let millis = match to.checked_sub(from) {
        Some(span) => span / 1_000_000,
        None => ((i128::from(to) - i128::from(from)) / 1_000_000) as i64,
    };
    millis as f64 / 1000.0
}

/// An impulse of `amount` on component `c` at `time`, decayed to `at` and
/// weighted: `w_c · x · 2^(-(at - time)/h_c)`, in raw score units.
pub fn decayed(
    model: &ScoringModel,
    c: Component,
    amount: f64,
    time: DateTime<Utc>,
    at: DateTime<Utc>,
) -> f64 {
    weighted(
        amount,
        seconds_between(time, at),
        half_life_seconds(model, c),
        model.weight.get(c),
    )
}

/// `weight · amount · decay over seconds`, the one expression [`decayed`]
/// and [`Decays::decayed`] evaluate (so they round alike); the decay is 1
/// for a span of 0 or less (an impulse is whole at its own time).
#[inline]
fn weighted(amount: f64, seconds: f64, half_life_seconds: f64, weight: f64) -> f64 {
    scaled(amount, decay(seconds, half_life_seconds), weight)
}

/// The decay over `seconds` of [`weighted`]'s expression.
#[inline]
fn decay(seconds: f64, half_life_seconds: f64) -> f64 {
    half_life_factor(-seconds.max(0.0), half_life_seconds)
}

/// The rest of [`weighted`]'s expression, in its order.
#[inline]
fn scaled(amount: f64, decay: f64, weight: f64) -> f64 {
    amount * decay * weight
}

/// The model's half-lives (seconds) and weights per component, looked up
/// once for a loop that decays many impulses (the relationship read).
#[derive(Debug, Clone, Copy)]
pub struct Decays {
    half_life_seconds: [f64; 6],
    weight: [f64; 6],
}

impl Decays {
    /// The model's.
    pub fn of(model: &ScoringModel) -> Self {
        let mut d = Self {
            half_life_seconds: [0.0; 6],
            weight: [0.0; 6],
        };
        for c in Component::ALL {
            d.half_life_seconds[c.index()] = half_life_seconds(model, c);
            d.weight[c.index()] = model.weight.get(c);
        }
        d
    }

    /// The half-lives' and weights' bits: equal exactly when two models
    /// decay and weigh every component alike.
    pub fn bits(&self) -> [u64; 12] {
        let mut bits = [0; 12];
        for (b, x) in bits
            .iter_mut()
            .zip(self.half_life_seconds.iter().chain(&self.weight))
        {
            *b = x.to_bits();
        }
        bits
    }

    /// [`decayed`] over `seconds` of event time, the same number to the bit.
    #[inline]
    pub fn decayed(&self, c: Component, amount: f64, seconds: f64) -> f64 {
        let i = c.index();
        weighted(amount, seconds, self.half_life_seconds[i], self.weight[i])
    }

    /// The decay of component `c` over `seconds`: what [`Self::decayed`]
    /// multiplies by (`fold::sums` decays a running sum by it from one
    /// impulse to the next).
    #[inline]
    pub fn decay(&self, c: Component, seconds: f64) -> f64 {
        decay(seconds, self.half_life_seconds[c.index()])
    }
}

/// An impulse of `amount` on component `c` at `time`, weighted, in forward
/// units of the origin `origin`: `w_c · x · 2^((time - origin)/h_c)`
/// (the live series' forward decay, `live`).
pub fn forward(
    model: &ScoringModel,
    c: Component,
    amount: f64,
    time: DateTime<Utc>,
    origin: DateTime<Utc>,
) -> f64 {
    amount
        * model.weight.get(c)
        * half_life_factor(seconds_between(origin, time), half_life_seconds(model, c))
}

/// The attention share `α_f · w / Σw` (module docs); 0 when `attention`
/// (`Σw`) is not positive.
pub fn attention_share(alpha_f: f64, strength: f64, attention: f64) -> f64 {
    if attention > 0.0 {
        alpha_f * (strength / attention)
    } else {
        0.0
    }
}

/// The association share `α_a · s / max(1, Σs)` (module docs).
pub fn association_share(alpha_a: f64, strength: f64, total: f64) -> f64 {
    alpha_a * (strength / total.max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impulse_halves_in_one_half_life() {
        let model = ScoringModel::default_model();
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = model.half_life_days.get(Component::Sales);
        let t1 = t0 + chrono::Duration::seconds((h * 86_400.0) as i64);
        let w = model.weight.get(Component::Sales);
        assert_eq!(decayed(&model, Component::Sales, 2.0, t0, t0), 2.0 * w);
        assert!((decayed(&model, Component::Sales, 2.0, t0, t1) - w).abs() < 1e-12);
        // Before its time an impulse is whole (callers leave it out).
        let before = t0 - chrono::Duration::seconds(5);
        assert_eq!(decayed(&model, Component::Sales, 2.0, t0, before), 2.0 * w);
    }

    /// The relationship read decays from nanoseconds and looked-up
    /// half-lives (issue #11); it must give `decayed`'s bits, sub-millisecond
    /// and negative spans included.
    #[test]
    fn decays_from_nanoseconds_equal_decayed_to_the_bit() {
        let model = ScoringModel::default_model();
        let decays = Decays::of(&model);
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let spans = [
            0i64,
            1,
            999_999,
            1_000_000,
            1_500_000,
            -1,
            -999_999,
            -1_000_001,
            86_400_000_000_123,
            -2_592_000_000_999_999,
            4_000_000_000_000_000_000,
        ];
        // Past 292 years the span takes the 128-bit path.
        let (far, near) = (
            nanos(t0).unwrap() + 4_000_000_000_000_000_000,
            -5_300_000_000_000_000_000,
        );
        assert_eq!(
            seconds_between_nanos(near, far),
            (((far as i128 - near as i128) / 1_000_000) as i64) as f64 / 1000.0
        );
        for ns in spans {
            let t1 = t0 + chrono::Duration::nanoseconds(ns);
            assert_eq!(
                seconds_between_nanos(nanos(t0).unwrap(), nanos(t1).unwrap()).to_bits(),
                seconds_between(t0, t1).to_bits(),
                "span {ns} ns"
            );
            for c in Component::ALL {
                let secs = seconds_between_nanos(nanos(t0).unwrap(), nanos(t1).unwrap());
                assert_eq!(
                    decays.decayed(c, 3.7, secs).to_bits(),
                    decayed(&model, c, 3.7, t0, t1).to_bits()
                );
            }
        }
    }

    #[test]
    fn shares_are_bounded_by_their_factor() {
        assert_eq!(attention_share(0.5, 2.0, 4.0), 0.25);
        assert_eq!(attention_share(0.5, 2.0, 0.0), 0.0);
        assert_eq!(association_share(0.4, 0.5, 0.5), 0.2);
        assert_eq!(association_share(0.4, 1.0, 4.0), 0.1);
    }
}
