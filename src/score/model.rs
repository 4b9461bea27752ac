//! The scoring model as data (`models/*.toml`): impulse weights, half-lives,
//! propagation constants, score spread. Loading validates every number so a
//! bad model fails at start, not in a score.
//!
//! **Bounds** (`ScoringModel::validate`; issue #9: every model the loader
//! accepts must fold any accepted event without a non-finite number and in
//! bounded work):
//! - `half_life_days` in [`MIN_HALF_LIFE_DAYS`, `MAX_HALF_LIFE_DAYS`] (one
//!   hour to 100 years). Decay itself is safe for any positive half-life
//!   (backward decay only shrinks; the live series moves its forward-decay
//!   landmark, `live.rs`); below an hour the landmark would move every few
//!   days of event time, past 100 years nothing decays within the accepted
//!   time range.
//! - `weight.*` and every `impulse.*` coefficient finite with magnitude at
//!   most [`MAX_COEFFICIENT`]: an impulse is a coefficient times a bounded
//!   function of validated fields (a logarithm of an amount, a sentiment in
//!   [-1, 1], ...), so every impulse is finite; `purchase_unit` in
//!   [1e-3, 1e9], `sales_window_days` in [0, 3650],
//!   `sales_baseline_periods` in [1, 1000].
//! - `propagation.audience + propagation.association` at most
//!   [`MAX_SPILL`] (the series converges geometrically at that rate),
//!   `tolerance` in [1e-12, 0.1], `live_tolerance` in [1e-9, 0.1] (the push
//!   count is at most the series' mass over the tolerance), `max_hops` in
//!   [1, 10000], `spread` in [1e-3, 1e6], `top_contributions` at most 1000.

use serde::{Deserialize, Serialize};

use crate::domain::CurrencyTable;

/// The parts a relationship is made of (DESIGN.md, "Scoring").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// What the person says about the brand: posts, mentions, reviews.
    Sentiment,
    /// Purchases, and sales lift credited after occasions.
    Sales,
    /// Quality and effort of support contacts.
    Service,
    /// Endorsements, performances, attendance, follows of the brand.
    Engagement,
    /// Audience growth of associated people.
    Influence,
    /// The brand's causes that match the person's interests.
    Values,
}

impl Component {
    /// Every component, in index order.
    pub const ALL: [Component; 6] = [
        Component::Sentiment,
        Component::Sales,
        Component::Service,
        Component::Engagement,
        Component::Influence,
        Component::Values,
    ];

    /// The component's name on the wire and in models (`sentiment`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Sentiment => "sentiment",
            Component::Sales => "sales",
            Component::Service => "service",
            Component::Engagement => "engagement",
            Component::Influence => "influence",
            Component::Values => "values",
        }
    }

    /// Its position in [`Components`] (0 to 5).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value per component, indexed by `Component::index`.
pub type Components = [f64; 6];

/// The scoring model: every number scoring uses, loaded from TOML
/// (`models/default.toml` documents each) and validated against the bounds
/// of the module docs. Raw units are the units of `raw`, the weighted sum
/// of components before `score = 50 + 50·tanh(raw / spread)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringModel {
    /// Raw units that move a score from 50 to about 88 (tanh(1)).
    pub spread: f64,
    /// Truncation of the batch and adjoint series, raw units: amounts
    /// below it are not propagated further.
    pub tolerance: f64,
    /// Push threshold of the live (incremental) series, raw units.
    pub live_tolerance: f64,
    /// A safety cap on hops of the series (the tolerance ends it long before).
    pub max_hops: u32,
    /// Contributions an explanation lists, at most.
    pub top_contributions: usize,
    /// Half-life of each component, days of event time.
    pub half_life_days: PerComponent,
    /// Weight of each component in the raw sum.
    pub weight: PerComponent,
    /// The propagation operator's spill factors.
    pub propagation: Propagation,
    /// The impulse rules' coefficients.
    pub impulse: Impulses,
    /// Exchange rates: amounts are scored and totalled in `currency.base`.
    pub currency: CurrencyTable,
}

/// One number per component (a half-life, a weight).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // one field per `Component`, documented there
pub struct PerComponent {
    pub sentiment: f64,
    pub sales: f64,
    pub service: f64,
    pub engagement: f64,
    pub influence: f64,
    pub values: f64,
}

impl PerComponent {
    /// The number of component `c`.
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

/// Overrides of the parts of a model applied at read time (weights,
/// half-lives, propagation constants), for model what-if
/// (`score::simulate`): impulses stand as folded, only their reading
/// changes. Absent members keep the model's value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverrides {
    /// Weights per component.
    #[serde(default)]
    pub weight: SomeComponents,
    /// Half-lives per component, days.
    #[serde(default)]
    pub half_life_days: SomeComponents,
    /// Spill factors.
    #[serde(default)]
    pub propagation: SomePropagation,
}

/// Some components' numbers (an override).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // one field per `Component`, documented there
pub struct SomeComponents {
    pub sentiment: Option<f64>,
    pub sales: Option<f64>,
    pub service: Option<f64>,
    pub engagement: Option<f64>,
    pub influence: Option<f64>,
    pub values: Option<f64>,
}

impl SomeComponents {
    fn apply(&self, to: &mut PerComponent) {
        let pairs = [
            (&mut to.sentiment, self.sentiment),
            (&mut to.sales, self.sales),
            (&mut to.service, self.service),
            (&mut to.engagement, self.engagement),
            (&mut to.influence, self.influence),
            (&mut to.values, self.values),
        ];
        for (slot, v) in pairs {
            if let Some(v) = v {
                *slot = v;
            }
        }
    }
}

/// Some spill factors (an override).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // as `Propagation`
pub struct SomePropagation {
    pub audience: Option<f64>,
    pub association: Option<f64>,
}

impl ModelOverrides {
    /// Whether it overrides nothing.
    pub fn is_empty(&self) -> bool {
        let none = |c: &SomeComponents| {
            [
                c.sentiment,
                c.sales,
                c.service,
                c.engagement,
                c.influence,
                c.values,
            ]
            .iter()
            .all(Option::is_none)
        };
        none(&self.weight)
            && none(&self.half_life_days)
            && self.propagation.audience.is_none()
            && self.propagation.association.is_none()
    }
}

/// The spill factors of the propagation operator (`shares.rs`); their sum
/// is at most [`MAX_SPILL`], so the series converges.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Propagation {
    /// `α_f`: what a person does spills onto their followers' relationships.
    pub audience: f64,
    /// `α_a`: what happens between a person and a brand spills onto the
    /// person's associated brands.
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

impl Impulses {
    /// Every coefficient that multiplies an impulse, by name (the bounds
    /// of `ScoringModel::validate`).
    fn coefficients(&self) -> [(&'static str, f64); 19] {
        [
            ("post", self.post),
            ("mention", self.mention),
            ("reach_boost", self.reach_boost),
            ("review_star", self.review_star),
            ("review_text", self.review_text),
            ("purchase", self.purchase),
            ("service_csat", self.service_csat),
            ("service_effort", self.service_effort),
            ("service_resolved", self.service_resolved),
            ("service_wait", self.service_wait),
            ("service_transfer", self.service_transfer),
            ("endorsement", self.endorsement),
            ("audience_growth", self.audience_growth),
            ("follow_brand", self.follow_brand),
            ("attendance", self.attendance),
            ("performance", self.performance),
            ("performance_association", self.performance_association),
            ("sales_lift", self.sales_lift),
            ("cause", self.cause),
        ]
    }
}

/// Why a model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not TOML, or not the model's shape (an unknown or missing key).
    #[error("cannot parse the model: {0}")]
    Parse(#[from] toml::de::Error),
    /// A number outside its bound (module docs); the message names it.
    #[error("invalid model: {0}")]
    Invalid(String),
}

/// Shortest half-life a model may give a component, in days (one hour).
pub const MIN_HALF_LIFE_DAYS: f64 = 1.0 / 24.0;
/// Longest half-life a model may give a component, in days (100 years).
pub const MAX_HALF_LIFE_DAYS: f64 = 36_500.0;
/// Largest magnitude of a component weight or an impulse coefficient.
pub const MAX_COEFFICIENT: f64 = 1e3;
/// Largest `propagation.audience + propagation.association`.
pub const MAX_SPILL: f64 = 0.95;

/// The model shipped in `models/default.toml`, compiled in so the binary works
/// from any directory.
pub const DEFAULT_MODEL: &str = include_str!("../../models/default.toml");

impl ScoringModel {
    /// Parses and validates a model. Errors: [`ModelError`].
    pub fn from_toml(text: &str) -> Result<Self, ModelError> {
        let model: ScoringModel = toml::from_str(text)?;
        model.validate()?;
        Ok(model)
    }

    /// The model of `models/default.toml`.
    pub fn default_model() -> Self {
        Self::from_toml(DEFAULT_MODEL).expect("models/default.toml is valid")
    }

    /// Checks every number against its bound (module docs, "Bounds").
    fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        let within = |x: f64, lo: f64, hi: f64| x.is_finite() && (lo..=hi).contains(&x);
        if !within(self.spread, 1e-3, 1e6) {
            return bad("spread must be in [0.001, 1000000]".into());
        }
        if !within(self.tolerance, 1e-12, 0.1) {
            return bad("tolerance must be in [1e-12, 0.1]".into());
        }
        if !within(self.live_tolerance, 1e-9, 0.1) {
            return bad("live_tolerance must be in [1e-9, 0.1]".into());
        }
        if !(1..=10_000).contains(&self.max_hops) {
            return bad("max_hops must be in [1, 10000]".into());
        }
        if self.top_contributions > 1000 {
            return bad("top_contributions must be at most 1000".into());
        }
        for c in Component::ALL {
            let h = self.half_life_days.get(c);
            if !within(h, MIN_HALF_LIFE_DAYS, MAX_HALF_LIFE_DAYS) {
                return bad(format!(
                    "half_life_days.{} must be in [{MIN_HALF_LIFE_DAYS}, {MAX_HALF_LIFE_DAYS}] \
                     (one hour to 100 years)",
                    c.as_str()
                ));
            }
            if !within(self.weight.get(c), -MAX_COEFFICIENT, MAX_COEFFICIENT) {
                return bad(format!(
                    "weight.{} must be a number in [-{MAX_COEFFICIENT}, {MAX_COEFFICIENT}]",
                    c.as_str()
                ));
            }
        }
        let p = self.propagation;
        if !(within(p.audience, 0.0, 1.0)
            && within(p.association, 0.0, 1.0)
            && p.audience + p.association <= MAX_SPILL)
        {
            return bad(format!(
                "propagation.audience and propagation.association must be non-negative \
                 and sum to at most {MAX_SPILL}, or the spill does not converge"
            ));
        }
        for (name, x) in self.impulse.coefficients() {
            if !within(x, -MAX_COEFFICIENT, MAX_COEFFICIENT) {
                return bad(format!(
                    "impulse.{name} must be a number in [-{MAX_COEFFICIENT}, {MAX_COEFFICIENT}]"
                ));
            }
        }
        if self.impulse.performance_association < 0.0 {
            return bad("impulse.performance_association must not be negative".into());
        }
        if !within(self.impulse.purchase_unit, 1e-3, 1e9) {
            return bad("impulse.purchase_unit must be in [0.001, 1000000000]".into());
        }
        if !within(self.impulse.sales_window_days, 0.0, 3650.0) {
            return bad("impulse.sales_window_days must be in [0, 3650]".into());
        }
        if !(1..=1000).contains(&self.impulse.sales_baseline_periods) {
            return bad("impulse.sales_baseline_periods must be in [1, 1000]".into());
        }
        if let Some(problem) = self.currency.problem() {
            return bad(problem);
        }
        Ok(())
    }

    /// This model with `overrides` applied, checked against the same
    /// bounds as a loaded model. Errors: the first bound broken.
    pub fn with_overrides(&self, overrides: &ModelOverrides) -> Result<ScoringModel, ModelError> {
        let mut model = self.clone();
        overrides.weight.apply(&mut model.weight);
        overrides.half_life_days.apply(&mut model.half_life_days);
        if let Some(a) = overrides.propagation.audience {
            model.propagation.audience = a;
        }
        if let Some(a) = overrides.propagation.association {
            model.propagation.association = a;
        }
        model.validate()?;
        Ok(model)
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
