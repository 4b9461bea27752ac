//! The scoring model as data (`models/*.toml`): impulse weights, half-lives,
//! propagation constants, score spread. Loading validates every number so a
//! bad model fails at start, not in a score.

use serde::Deserialize;

use super::Component;
use crate::domain::CurrencyTable;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringModel {
    pub spread: f64,
    pub tolerance: f64,
    /// Push threshold of the live (incremental) series, raw units.
    pub live_tolerance: f64,
    pub max_hops: u32,
    pub top_contributions: usize,
    pub half_life_days: PerComponent,
    pub weight: PerComponent,
    pub propagation: Propagation,
    pub impulse: Impulses,
    /// Exchange rates: amounts are scored and totalled in `currency.base`.
    pub currency: CurrencyTable,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerComponent {
    pub sentiment: f64,
    pub sales: f64,
    pub service: f64,
    pub engagement: f64,
    pub influence: f64,
    pub values: f64,
}

impl PerComponent {
    pub fn get(&self, c: Component) -> f64 {
        match c {
            Component::Sentiment => self.sentiment,
            Component::Sales => self.sales,
            Component::Service => self.service,
            Component::Engagement => self.engagement,
            Component::Influence => self.influence,
            Component::Values => self.values,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Propagation {
    pub audience: f64,
    pub association: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impulses {
    pub post: f64,
    pub mention: f64,
    pub reach_boost: f64,
    pub review_star: f64,
    pub review_text: f64,
    pub purchase: f64,
    pub purchase_unit: f64,
    pub service_csat: f64,
    pub service_effort: f64,
    pub service_resolved: f64,
    pub service_wait: f64,
    pub service_transfer: f64,
    pub endorsement: f64,
    pub audience_growth: f64,
    pub follow_brand: f64,
    pub attendance: f64,
    pub performance: f64,
    pub performance_association: f64,
    pub sales_lift: f64,
    pub sales_window_days: f64,
    pub sales_baseline_periods: usize,
    pub cause: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot parse the model: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid model: {0}")]
    Invalid(String),
}

/// The model shipped in `models/default.toml`, compiled in so the binary works
/// from any directory.
pub const DEFAULT_MODEL: &str = include_str!("../../models/default.toml");

impl ScoringModel {
    pub fn from_toml(text: &str) -> Result<Self, ModelError> {
        let model: ScoringModel = toml::from_str(text)?;
        model.validate()?;
        Ok(model)
    }

    pub fn default_model() -> Self {
        Self::from_toml(DEFAULT_MODEL).expect("models/default.toml is valid")
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if !(self.spread > 0.0 && self.spread.is_finite()) {
            return bad("spread must be a positive number".into());
        }
        if !(self.tolerance > 0.0 && self.tolerance < 1.0) {
            return bad("tolerance must be in (0, 1)".into());
        }
        if !(self.live_tolerance > 0.0 && self.live_tolerance < 1.0) {
            return bad("live_tolerance must be in (0, 1)".into());
        }
        for c in Component::ALL {
            let h = self.half_life_days.get(c);
            if !(h > 0.0 && h.is_finite()) {
                return bad(format!("half_life_days.{} must be positive", c.as_str()));
            }
            if !self.weight.get(c).is_finite() {
                return bad(format!("weight.{} must be a number", c.as_str()));
            }
        }
        let p = self.propagation;
        if p.audience < 0.0 || p.association < 0.0 || p.audience + p.association >= 1.0 {
            return bad(
                "propagation.audience and propagation.association must be non-negative \
                 and sum to less than 1, or the spill does not converge"
                    .into(),
            );
        }
        if self.impulse.purchase_unit <= 0.0 || self.impulse.sales_window_days < 0.0 {
            return bad(
                "impulse.purchase_unit must be positive and sales_window_days non-negative".into(),
            );
        }
        if self.impulse.sales_baseline_periods == 0 {
            return bad("impulse.sales_baseline_periods must be at least 1".into());
        }
        if let Some(problem) = self.currency.problem() {
            return bad(problem);
        }
        Ok(())
    }

    /// Decay factor of component `c` over `seconds` of event time.
    pub fn decay(&self, c: Component, seconds: f64) -> f64 {
        let half_life = self.half_life_days.get(c) * 86_400.0;
        (-(seconds.max(0.0)) / half_life).exp2()
    }

    /// The Fusion Score of a raw sum: 50 neutral, 0..100.
    pub fn score(&self, raw: f64) -> f64 {
        50.0 + 50.0 * (raw / self.spread).tanh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_loads() {
        let m = ScoringModel::default_model();
        assert!(m.propagation.audience + m.propagation.association < 1.0);
    }

    #[test]
    fn the_default_rate_table_covers_the_major_currencies() {
        let m = ScoringModel::default_model();
        assert_eq!(m.currency.base.as_str(), "USD");
        assert!(m.currency.rates.len() >= 30, "{}", m.currency.rates.len());
        for code in [
            "USD", "EUR", "JPY", "GBP", "CHF", "CNY", "INR", "BRL", "CAD", "AUD",
        ] {
            let c = crate::domain::Currency::new(code).unwrap();
            assert!(m.currency.knows(c), "{code}");
        }
    }

    #[test]
    fn a_rate_out_of_bounds_is_refused() {
        let text = DEFAULT_MODEL.replace("JPY = 171.94", "JPY = 0.0");
        let err = ScoringModel::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("currency.rates.JPY"), "{err}");
    }

    #[test]
    fn diverging_propagation_is_refused() {
        let text = DEFAULT_MODEL.replace("association = 0.35", "association = 0.95");
        let err = ScoringModel::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("converge"), "{err}");
    }
}
