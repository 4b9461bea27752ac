//! Does the score mean something (issue #15): backtests of scores against
//! what happened after them, calibration of a model's weights and half-lives
//! from data, and the measured impact of a brand's actions.
//!
//! - [`metrics`]: ROC AUC, Spearman, lift, bands, the bootstrap.
//! - [`outcomes`]: what happened in a window; the RFM baselines.
//! - [`scoring`]: the one adapter to the scoring engine's public API.
//! - [`backtest`]: scores at a cut against outcomes after it.
//! - [`calibrate`]: fits weights and half-lives on a training window.
//! - [`impact`]: the effect of an occasion or a cause (difference in differences).
//!
//! Everything here is a pure function of the events, the registrations, the
//! model and the times it is given: no clock, no IO (the CLI and the HTTP
//! edge read files and the clock), and every random draw comes from a
//! seeded ChaCha8 stream.

pub mod backtest;
pub mod calibrate;
pub mod impact;
pub mod metrics;
pub mod outcomes;
pub mod scoring;

pub use backtest::{BacktestReport, BacktestSpec, NamedModel, Peer, backtest};
pub use metrics::Bootstrap;
pub use outcomes::{Observed, Outcome, Pair, Window, purchase_amount};

/// `x` to `decimals` decimals for the readable tables, with `+` before a
/// positive value when `signed`. A value that rounds to zero prints as
/// zero without a sign: `{:.2}` prints -0.001 (or `-0.0`) as `-0.00`, a
/// negative effect the figures do not show.
pub fn fixed(x: f64, decimals: usize, signed: bool) -> String {
    let digits = format!("{:.decimals$}", x.abs());
    let zero = digits.bytes().all(|b| b == b'0' || b == b'.');
    let sign = if zero || x.is_nan() {
        ""
    } else if x < 0.0 {
        "-"
    } else if signed {
        "+"
    } else {
        ""
    };
    format!("{sign}{digits}")
}

/// Refuses a brand the log does not know: neither registered as a brand
/// in `entities` nor named as one by any of `events`. A filter on such a
/// brand (a typo) would otherwise select nothing and report "0
/// relationships" as if that were a finding.
pub fn known_brand(
    entities: &[crate::domain::Entity],
    events: &[crate::domain::Event],
    brand: &crate::domain::EntityId,
) -> Result<(), ValidityError> {
    use crate::domain::{EntityKind, Role};
    let registered = entities
        .iter()
        .any(|e| e.id == *brand && e.kind == EntityKind::Brand);
    let named = || {
        events.iter().any(|e| {
            e.references()
                .iter()
                .any(|(id, role)| *id == brand && *role == Role::Brand)
        })
    };
    if registered || named() {
        Ok(())
    } else {
        Err(ValidityError::NotFound(format!(
            "no brand '{brand}' in the log; give a brand its events name"
        )))
    }
}

/// Why a validity computation cannot run. Every variant is the caller's
/// mistake (a time, a window, an id); the message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidityError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

#[cfg(test)]
mod tests {
    use super::fixed;

    /// `fusion impact` printed "-0.00" for an effect that rounds to zero
    /// (and for `-0.0`). Regression test: zero prints without a sign.
    #[test]
    fn a_value_that_rounds_to_zero_prints_without_a_sign() {
        assert_eq!(fixed(-0.001, 2, false), "0.00");
        assert_eq!(fixed(-0.0, 2, true), "0.00");
        assert_eq!(fixed(0.004, 2, true), "0.00");
        assert_eq!(fixed(-0.006, 2, true), "-0.01");
        assert_eq!(fixed(1.5, 1, true), "+1.5");
        assert_eq!(fixed(-2.25, 3, false), "-2.250");
        assert_eq!(fixed(12.0, 0, false), "12");
    }
}
