//! Calibration (issue #15, item 2): fits a model's weights and half-lives to
//! what predicts outcomes in a training window, reports the fitted model
//! against the base model on a later validation window, and writes the
//! fitted model as TOML with those figures in its comments.
//!
//! Method (docs/validity.md, "Calibration"): the score at the training cut
//! is linear in the weights, and each component depends on its own
//! half-life only, so one batch per half-life of a grid gives every
//! component's value at every grid half-life; a coordinate search then
//! moves one component's (half-life, weight) at a time to the grid point
//! that most raises the mean ROC AUC over the outcomes of the training
//! window, until a sweep changes nothing. Deterministic: grids, order of
//! visits and tie-breaking are fixed, and candidates are evaluated in
//! parallel but chosen in order.
//!
//! It must not read an event after the training window's end while
//! fitting: `fit` drops them before it looks at anything, so the validation
//! window cannot leak into the fitted model (`tests/it/calibrate.rs`).

use std::fmt::Write as _;
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use super::ValidityError;
use super::backtest::{self, BacktestReport, BacktestSpec, Predictor};
use super::metrics::{self, Bootstrap, Ranked};
use super::outcomes::{Observed, Outcome, Pair, Window};
use super::scoring::{self, Params, Scores};
use crate::domain::{Entity, EntityId, Event};
use crate::score::ScoringModel;

/// Half-lives tried, days (the base model's own are added).
pub const HALF_LIFE_GRID: [f64; 9] = [7.0, 14.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 365.0];
/// Weights tried. The score's ranking does not change when every weight is
/// scaled alike, so a bounded grid loses nothing but resolution.
pub const WEIGHT_GRID: [f64; 9] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0];
/// A move must raise the mean training AUC by at least this much: smaller
/// gains are within sampling noise, and refusing them keeps the base
/// model's values where the data does not speak.
pub const MIN_GAIN: f64 = 1e-4;
/// At most this many sweeps over the components.
pub const MAX_SWEEPS: usize = 4;

/// What to calibrate on.
#[derive(Debug, Clone)]
pub struct CalibrateSpec {
    /// Scores at `train.from` (events before it), outcomes in the window.
    pub train: Window,
    /// Scores at `validate.from` (events before it), outcomes in the window;
    /// must start at or after the training window's end.
    pub validate: Window,
    /// Only this brand's relationships, when given.
    pub brand: Option<EntityId>,
    /// For the validation report's intervals.
    pub bootstrap: Bootstrap,
    pub half_life_grid: Vec<f64>,
    pub weight_grid: Vec<f64>,
    pub max_sweeps: usize,
}

impl CalibrateSpec {
    /// The default grids and sweeps.
    pub fn new(train: Window, validate: Window, bootstrap: Bootstrap) -> CalibrateSpec {
        CalibrateSpec {
            train,
            validate,
            brand: None,
            bootstrap,
            half_life_grid: HALF_LIFE_GRID.to_vec(),
            weight_grid: WEIGHT_GRID.to_vec(),
            max_sweeps: MAX_SWEEPS,
        }
    }

    fn check(&self) -> Result<(), ValidityError> {
        for (name, w) in [("training", self.train), ("validation", self.validate)] {
            if w.from >= w.to {
                return Err(ValidityError::Invalid(format!(
                    "the {name} window must end after it starts ({} .. {})",
                    w.from.to_rfc3339(),
                    w.to.to_rfc3339()
                )));
            }
        }
        if self.validate.from < self.train.to {
            return Err(ValidityError::Invalid(format!(
                "the validation window must start at or after the training window ends ({}); \
                 overlapping windows would fit on the validation outcomes",
                self.train.to.to_rfc3339()
            )));
        }
        let bad = |g: &[f64], what: &str| {
            g.is_empty() || g.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || {
                what == "half-life" && g.iter().any(|v| *v <= 0.0)
            }
        };
        if bad(&self.half_life_grid, "half-life") || bad(&self.weight_grid, "weight") {
            return Err(ValidityError::Invalid(
                "the grids must be non-empty, half-lives positive and weights non-negative".into(),
            ));
        }
        Ok(())
    }
}

/// The fitted parameters and how they were found.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub base: Params,
    pub fitted: Params,
    /// The outcomes whose mean AUC was maximised (present and defined in
    /// the training window).
    pub outcomes: Vec<Outcome>,
    /// Mean training AUC (weighted by `min(positives, negatives)` per
    /// outcome) of the base and the fitted parameters.
    pub base_objective: f64,
    pub fitted_objective: f64,
    /// Relationships at the training cut.
    pub relationships: usize,
    pub sweeps: usize,
    pub evaluations: usize,
    /// Components without any value at the training cut: left as they were.
    pub silent: Vec<&'static str>,
}

/// Calibration and its validation.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrateReport {
    pub train: Window,
    pub validate: Window,
    pub fit: Fit,
    /// The base model (`fusion`), the fitted one (`fusion:calibrated`) and
    /// the baselines on the validation window.
    pub validation: BacktestReport,
}

/// Name of the fitted model in reports.
pub const FITTED: &str = "fusion:calibrated";

/// Every relationship's component values at the training cut, for every
/// half-life of the grid (one batch each, all weights 1): `values[c]` holds
/// `n × k` values, relationship-major; `None` for a component that is zero
/// everywhere.
struct Tables {
    n: usize,
    k: usize,
    values: Vec<Option<Vec<f32>>>,
}

impl Tables {
    fn build(
        base: &ScoringModel,
        entities: &[Entity],
        events: &[Event],
        cut: chrono::DateTime<chrono::Utc>,
        grid: &[f64],
        brand: Option<&EntityId>,
    ) -> (Vec<Pair>, Tables) {
        let batches: Vec<Scores> = grid
            .iter()
            .map(|&h| {
                let p = Params {
                    weights: [1.0; 6],
                    half_lives: [h; 6],
                };
                let model = Arc::new(scoring::with_params(base, &p));
                scoring::scores_at_cut(model, entities, events, cut)
            })
            .collect();
        let pairs = backtest::population(&batches, brand);
        let (n, k) = (pairs.len(), grid.len());
        let mut values: Vec<Vec<f32>> = vec![vec![0.0; n * k]; 6];
        for (j, batch) in batches.iter().enumerate() {
            for (i, pair) in pairs.iter().enumerate() {
                if let Some(s) = batch.get(pair) {
                    for (c, v) in s.components.iter().enumerate() {
                        values[c][i * k + j] = *v as f32;
                    }
                }
            }
        }
        let values = values
            .into_iter()
            .map(|v| v.iter().any(|x| *x != 0.0).then_some(v))
            .collect();
        (pairs, Tables { n, k, values })
    }

    /// The raw score of every relationship for half-life indices `j` and
    /// weights `w` (the order of the scores, which is all AUC reads).
    fn raw(&self, j: &[usize; 6], w: &[f64; 6]) -> Vec<f64> {
        let mut raw = vec![0.0; self.n];
        for (c, values) in self.values.iter().enumerate() {
            let Some(values) = values else { continue };
            if w[c] == 0.0 {
                continue;
            }
            for (i, r) in raw.iter_mut().enumerate() {
                *r += w[c] * f64::from(values[i * self.k + j[c]]);
            }
        }
        raw
    }
}

/// The training objective: the mean ROC AUC over the outcomes, each
/// weighted by `min(positives, negatives)` (about how many independent
/// comparisons its AUC rests on, so an outcome with 30 cases does not count
/// as much as one with 3,000), on all relationships and on each of two
/// halves of them (by person, alternately in id order).
struct Objective {
    /// Per outcome: its direction, and labels for all, half A, half B.
    outcomes: Vec<(Outcome, [Vec<Option<bool>>; 3])>,
    /// Per outcome and part: its weight in the mean.
    weights: Vec<[f64; 3]>,
}

impl Objective {
    fn new(labels: Vec<(Outcome, Vec<Option<bool>>)>, pairs: &[Pair]) -> Objective {
        // Half of each relationship: the parity of its person's rank, so
        // a person's relationships stay together.
        let mut half = Vec::with_capacity(pairs.len());
        let mut rank = 0usize;
        for (i, (person, _)) in pairs.iter().enumerate() {
            if i > 0 && pairs[i - 1].0 != *person {
                rank += 1;
            }
            half.push(rank % 2);
        }
        let mut outcomes = Vec::new();
        let mut weights = Vec::new();
        for (o, l) in labels {
            let part = |h: usize| -> Vec<Option<bool>> {
                l.iter()
                    .zip(&half)
                    .map(|(v, x)| if *x == h { *v } else { None })
                    .collect()
            };
            let parts = [l.clone(), part(0), part(1)];
            let w = parts.each_ref().map(|p| {
                let pos = p.iter().flatten().filter(|b| **b).count();
                let neg = p.iter().flatten().filter(|b| !**b).count();
                pos.min(neg) as f64
            });
            outcomes.push((o, parts));
            weights.push(w);
        }
        Objective { outcomes, weights }
    }

    /// The objective of the scores `raw`: (all, half A, half B).
    fn of(&self, raw: &[f64]) -> [f64; 3] {
        let ranked = Ranked::new(raw);
        let ones = vec![1.0; raw.len()];
        let mut value = [0.0; 3];
        for part in 0..3 {
            let (mut sum, mut total) = (0.0, 0.0);
            for ((o, labels), w) in self.outcomes.iter().zip(&self.weights) {
                if let Some(auc) = metrics::roc_auc(&ranked, &labels[part], &ones, o.direction()) {
                    sum += w[part] * auc;
                    total += w[part];
                }
            }
            value[part] = if total > 0.0 { sum / total } else { 0.5 };
        }
        value
    }
}

/// Fits `base`'s weights and half-lives on the training window. Reads no
/// event after `spec.train.to`.
pub fn fit(
    base: &ScoringModel,
    entities: &[Entity],
    events: &[Event],
    spec: &CalibrateSpec,
) -> Result<Fit, ValidityError> {
    spec.check()?;
    if let Some(brand) = &spec.brand {
        super::known_brand(entities, events, brand)?;
    }
    let train = spec.train;
    // Nothing after the training window exists for the fit.
    let seen: Vec<Event> = events
        .iter()
        .filter(|e| e.time <= train.to)
        .cloned()
        .collect();
    let start = scoring::params(base);
    let mut grid: Vec<f64> = spec.half_life_grid.clone();
    grid.extend(start.half_lives);
    grid.sort_by(f64::total_cmp);
    grid.dedup();
    let mut weights: Vec<f64> = spec.weight_grid.clone();
    weights.extend(start.weights.iter().filter(|w| **w >= 0.0));
    weights.sort_by(f64::total_cmp);
    weights.dedup();

    let (pairs, tables) = Tables::build(
        base,
        entities,
        &seen,
        train.from,
        &grid,
        spec.brand.as_ref(),
    );
    let observed = Observed::new(&seen, train, &base.currency);
    let labels: Vec<(Outcome, Vec<Option<bool>>)> = Outcome::ALL
        .iter()
        .filter_map(|&o| observed.labels(o, &pairs).map(|l| (o, l)))
        .filter(|(o, l)| {
            // Only outcomes with both classes say anything about a ranking.
            let ranked = Ranked::new(&vec![0.0; l.len()]);
            metrics::roc_auc(&ranked, l, &vec![1.0; l.len()], o.direction()).is_some()
        })
        .collect();
    if labels.is_empty() {
        return Err(ValidityError::Invalid(format!(
            "no outcome in the training window ({} .. {}) has both relationships with and without it; \
             widen the window or move it",
            train.from.to_rfc3339(),
            train.to.to_rfc3339()
        )));
    }

    let index = |h: f64| {
        grid.iter()
            .position(|g| *g == h)
            .expect("added to the grid")
    };
    let mut j: [usize; 6] = start.half_lives.map(index);
    let mut w: [f64; 6] = start.weights;
    let objective = Objective::new(labels, &pairs);
    let outcomes: Vec<Outcome> = objective.outcomes.iter().map(|(o, _)| *o).collect();
    let base_objective = objective.of(&tables.raw(&j, &w));
    let mut best = base_objective;
    let mut evaluations = 1;
    let mut sweeps = 0;
    let active: Vec<usize> = (0..6).filter(|c| tables.values[*c].is_some()).collect();
    while sweeps < spec.max_sweeps {
        sweeps += 1;
        let mut moved = false;
        for &c in &active {
            let candidates: Vec<(usize, f64)> = (0..grid.len())
                .flat_map(|jj| weights.iter().map(move |&ww| (jj, ww)))
                .filter(|&(jj, ww)| (jj, ww) != (j[c], w[c]))
                .collect();
            let scores: Vec<[f64; 3]> = candidates
                .par_iter()
                .map(|&(jj, ww)| {
                    let (mut j2, mut w2) = (j, w);
                    j2[c] = jj;
                    w2[c] = ww;
                    objective.of(&tables.raw(&j2, &w2))
                })
                .collect();
            evaluations += candidates.len();
            // A move must gain on all relationships and on each half (a
            // gain that only one half shows is that half's noise). The
            // largest gain wins; on a tie the weight nearest the current
            // one (a component alone ranks alike at any positive weight, so
            // a rescale is no move), then the first in grid order.
            let mut pick: Option<(usize, [f64; 3])> = None;
            let shift = |k: usize| (candidates[k].1 - w[c]).abs();
            for (k, s) in scores.iter().enumerate() {
                let gains = s[0] >= best[0] + MIN_GAIN && s[1] > best[1] && s[2] > best[2];
                let better = |(b, v): (usize, [f64; 3])| {
                    s[0] > v[0] || (s[0] == v[0] && shift(k) < shift(b))
                };
                if gains && pick.is_none_or(better) {
                    pick = Some((k, *s));
                }
            }
            if let Some((k, s)) = pick {
                (j[c], w[c]) = candidates[k];
                best = s;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let names = scoring::component_names();
    Ok(Fit {
        base: start,
        fitted: Params {
            weights: w,
            half_lives: j.map(|i| grid[i]),
        },
        outcomes,
        base_objective: base_objective[0],
        fitted_objective: best[0],
        relationships: tables.n,
        sweeps,
        evaluations,
        silent: (0..6)
            .filter(|c| tables.values[*c].is_none())
            .map(|c| names[c])
            .collect(),
    })
}

/// Fits on the training window, then backtests the base and the fitted
/// model (and the baselines) on the validation window.
pub fn calibrate(
    base: &ScoringModel,
    entities: &[Entity],
    events: &[Event],
    spec: &CalibrateSpec,
) -> Result<(CalibrateReport, ScoringModel), ValidityError> {
    let fit = fit(base, entities, events, spec)?;
    let fitted = scoring::with_params(base, &fit.fitted);
    let cut = spec.validate.from;
    let base_scores = scoring::scores_at_cut(Arc::new(base.clone()), entities, events, cut);
    let fitted_scores = scoring::scores_at_cut(Arc::new(fitted.clone()), entities, events, cut);
    let both = [base_scores, fitted_scores];
    let pairs = backtest::population(&both, spec.brand.as_ref());
    let observed = Observed::new(events, spec.validate, &base.currency);
    let mut predictors = vec![
        Predictor::from_scores("fusion", &both[0], &pairs),
        Predictor::from_scores(FITTED, &both[1], &pairs),
    ];
    predictors.extend(backtest::baselines(&observed, &pairs));
    let validation = backtest::evaluate(
        &pairs,
        &predictors,
        &observed,
        &BacktestSpec {
            cut,
            horizon_days: spec.validate.days(),
            brand: spec.brand.clone(),
            bootstrap: spec.bootstrap,
        },
    );
    Ok((
        CalibrateReport {
            train: spec.train,
            validate: spec.validate,
            fit,
            validation,
        },
        fitted,
    ))
}

/// `base_text` (the base model's TOML) with the fitted weights and
/// half-lives, and the report's figures as comments at the top. Every
/// other line, comment and value of the base model is kept.
pub fn model_text(base_text: &str, report: &CalibrateReport) -> Result<String, ValidityError> {
    let names = scoring::component_names();
    let p = &report.fit.fitted;
    let mut section = String::new();
    let mut replaced = 0;
    let mut body = String::new();
    for line in base_text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        }
        let values = match section.as_str() {
            "weight" => Some(&p.weights),
            "half_life_days" => Some(&p.half_lives),
            _ => None,
        };
        let key = trimmed.split('=').next().unwrap_or("").trim();
        if let (Some(values), Some(c)) = (values, names.iter().position(|n| *n == key))
            && trimmed.contains('=')
        {
            let _ = writeln!(body, "{key} = {:?}", values[c]);
            replaced += 1;
        } else {
            let _ = writeln!(body, "{line}");
        }
    }
    if replaced != 12 {
        return Err(ValidityError::Invalid(format!(
            "the base model must list the six weights under [weight] and the six half-lives \
             under [half_life_days], one per line; found {replaced} of 12"
        )));
    }
    let mut head = String::new();
    let f = &report.fit;
    let v = &report.validation;
    let _ = writeln!(
        head,
        "# Calibrated by `fusion calibrate` (docs/validity.md): weights and half-lives are\n\
         # fitted, everything else is the base model's.\n#\n\
         # Training: scores at {} (events before it), outcomes to {}; {} relationships.\n\
         # Mean ROC AUC over {}: base {:.4}, fitted {:.4}\n\
         # ({} sweeps, {} evaluations; no value at the cut, left as they were: {}).\n#\n\
         # Validation: scores at {}, outcomes to {}; {} relationships.\n\
         # AUC [95% bootstrap interval] and top-decile lift, base -> fitted (baselines):",
        report.train.from.to_rfc3339(),
        report.train.to.to_rfc3339(),
        f.relationships,
        f.outcomes
            .iter()
            .map(|o| o.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        f.base_objective,
        f.fitted_objective,
        f.sweeps,
        f.evaluations,
        if f.silent.is_empty() {
            "none".to_string()
        } else {
            f.silent.join(", ")
        },
        report.validate.from.to_rfc3339(),
        report.validate.to.to_rfc3339(),
        v.relationships,
    );
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |x| super::fixed(x, 3, false));
    for o in &v.outcomes {
        if !o.present {
            let _ = writeln!(
                head,
                "#   {:<10} absent: the data has no {}",
                o.outcome.as_str(),
                o.needs
            );
            continue;
        }
        let get = |name: &str| o.metrics.iter().find(|m| m.predictor == name);
        let (Some(b), Some(c)) = (get("fusion"), get(FITTED)) else {
            continue;
        };
        let ci = |m: &backtest::PredictorMetrics| {
            m.auc_ci.map_or(String::new(), |[a, b]| {
                format!(
                    " [{}, {}]",
                    super::fixed(a, 3, false),
                    super::fixed(b, 3, false)
                )
            })
        };
        let baselines: Vec<String> = ["recency", "frequency", "monetary"]
            .iter()
            .filter_map(|n| get(n).map(|m| format!("{n} {}", fmt(m.auc))))
            .collect();
        let _ = writeln!(
            head,
            "#   {:<10} AUC {}{} -> {}{}; lift {} -> {} ({})",
            o.outcome.as_str(),
            fmt(b.auc),
            ci(b),
            fmt(c.auc),
            ci(c),
            fmt(b.lift),
            fmt(c.lift),
            baselines.join(", ")
        );
    }
    let _ = writeln!(head, "#");
    Ok(head + &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_text_keeps_everything_but_the_fitted_values() {
        let base = ScoringModel::default_model();
        let mut fitted = scoring::params(&base);
        fitted.weights[3] = 0.25;
        fitted.half_lives[1] = 14.0;
        let window = Window {
            from: "2026-01-01T00:00:00Z".parse().unwrap(),
            to: "2026-02-01T00:00:00Z".parse().unwrap(),
        };
        let report = CalibrateReport {
            train: window,
            validate: window,
            fit: Fit {
                base: scoring::params(&base),
                fitted,
                outcomes: vec![Outcome::Purchase],
                base_objective: 0.6,
                fitted_objective: 0.7,
                relationships: 10,
                sweeps: 1,
                evaluations: 5,
                silent: vec!["values"],
            },
            validation: BacktestReport {
                cut: window.from,
                horizon_end: window.to,
                horizon_days: 31.0,
                brand: None,
                relationships: 0,
                predictors: Vec::new(),
                outcomes: Vec::new(),
                amount: backtest::AmountReport {
                    present: false,
                    purchasers: 0,
                    total: 0.0,
                    metrics: Vec::new(),
                },
                calibration: Vec::new(),
                bootstrap_replicates: 0,
                bootstrap_seed: 0,
            },
        };
        let text = model_text(crate::score::DEFAULT_MODEL, &report).unwrap();
        let model = ScoringModel::from_toml(&text).expect("the written model loads");
        assert_eq!(scoring::params(&model), fitted);
        assert!(text.starts_with("# Calibrated by `fusion calibrate`"));
        assert!(text.contains("base 0.6000, fitted 0.7000"));
        // The base model's own comments survive.
        assert!(text.contains("# Spill factors, damped per hop."));
        assert!(model_text("spread = 4.0\n", &report).is_err());
    }
}
