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

/// Decay of component `c` over `seconds` of event time (1 for a span of 0
/// or less: an impulse is whole at its own time).
pub fn decay(model: &ScoringModel, c: Component, seconds: f64) -> f64 {
    half_life_factor(-seconds.max(0.0), half_life_seconds(model, c))
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
    amount * decay(model, c, seconds_between(time, at)) * model.weight.get(c)
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
        assert_eq!(decay(&model, Component::Sales, -5.0), 1.0);
    }

    #[test]
    fn shares_are_bounded_by_their_factor() {
        assert_eq!(attention_share(0.5, 2.0, 4.0), 0.25);
        assert_eq!(attention_share(0.5, 2.0, 0.0), 0.0);
        assert_eq!(association_share(0.4, 0.5, 0.5), 0.2);
        assert_eq!(association_share(0.4, 1.0, 4.0), 0.1);
    }
}
