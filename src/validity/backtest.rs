//! The backtest: scores at a cut, from the events before it, against what
//! happened in the horizon after it (issue #15, item 1), beside the
//! baselines an analyst would use (recency, frequency, monetary value) and
//! any peer predictions, all on the same relationships with the same metrics.
//!
//! Owns the population (every relationship that exists at the cut), the
//! assembly of predictors, the report and its text table. It must not read
//! an event at or after the cut for a predictor (`scoring::state_before`,
//! `Observed::baselines`) nor one after the horizon for an outcome.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ValidityError;
use super::metrics::{self, Band, Bootstrap, Ranked};
use super::outcomes::{Observed, Outcome, Pair, Window};
use super::scoring::{self, Scores};
use crate::domain::{Entity, EntityId, Event};
use crate::score::ScoringModel;

/// Score bands of the calibration table: ten points each, as the brand
/// summary's histogram.
pub const SCORE_BANDS: [f64; 11] = [
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
];

/// The share of relationships whose outcome rate "top-decile lift" reads.
pub const TOP_FRACTION: f64 = 0.1;

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// What to backtest.
#[derive(Debug, Clone)]
pub struct BacktestSpec {
    /// Scores use the events strictly before it; outcomes are in
    /// `(cut, cut + horizon]`.
    pub cut: DateTime<Utc>,
    /// Length of the horizon, days (> 0).
    pub horizon_days: f64,
    /// Only this brand's relationships, when given.
    pub brand: Option<EntityId>,
    pub bootstrap: Bootstrap,
}

impl BacktestSpec {
    /// The outcome window `(cut, cut + horizon]`.
    pub fn window(&self) -> Result<Window, ValidityError> {
        window_after(self.cut, self.horizon_days)
    }
}

/// `(from, from + days]`, for a positive, representable number of days.
pub fn window_after(from: DateTime<Utc>, days: f64) -> Result<Window, ValidityError> {
    if !(days > 0.0 && days <= 36_500.0) {
        return Err(ValidityError::Invalid(format!(
            "the horizon must be between 0 and 36500 days, got {days}"
        )));
    }
    let to = from
        .checked_add_signed(chrono::Duration::seconds((days * 86_400.0).round() as i64))
        .ok_or_else(|| ValidityError::Invalid("the horizon ends past the year 262143".into()))?;
    Ok(Window { from, to })
}

/// A scoring model under test, with the name it is reported under.
#[derive(Debug, Clone)]
pub struct NamedModel {
    pub name: String,
    pub model: Arc<ScoringModel>,
}

/// Outside predictions (a peer model such as BG/NBD): one value per
/// relationship, higher meaning healthier (more likely to purchase).
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub values: HashMap<Pair, f64>,
}

impl Peer {
    /// Reads TSV lines `person<TAB>brand<TAB>value` (`#` lines and blank
    /// lines skipped).
    pub fn from_tsv(name: &str, text: &str) -> Result<Peer, ValidityError> {
        let mut values = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| {
                ValidityError::Invalid(format!(
                    "peer {name}, line {}: {why}; expected person<TAB>brand<TAB>value",
                    n + 1
                ))
            };
            let mut cols = line.split('\t');
            let (Some(p), Some(b), Some(v), None) =
                (cols.next(), cols.next(), cols.next(), cols.next())
            else {
                return Err(bad("not three columns"));
            };
            let person = EntityId::new(p).map_err(|e| bad(&format!("bad person id: {e}")))?;
            let brand = EntityId::new(b).map_err(|e| bad(&format!("bad brand id: {e}")))?;
            let value: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| !v.is_nan())
                .ok_or_else(|| bad("the value is not a number"))?;
            values.insert((person, brand), value);
        }
        Ok(Peer {
            name: name.to_string(),
            values,
        })
    }
}

/// Where a predictor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictorKind {
    /// A Fusion model's score (0..100).
    Score,
    /// Recency, frequency or monetary value.
    Baseline,
    /// Outside predictions.
    Peer,
}

/// One value per relationship of the population, higher meaning healthier.
#[derive(Debug, Clone)]
pub struct Predictor {
    pub name: String,
    pub kind: PredictorKind,
    pub values: Vec<f64>,
    /// Relationships it had no value for (given the lowest rank for a peer,
    /// the neutral 50 for a score).
    pub missing: usize,
}

impl Predictor {
    /// A model's scores over `pairs`; a relationship the model does not
    /// reach has no events behind it there: the neutral 50.
    pub fn from_scores(name: &str, scores: &Scores, pairs: &[Pair]) -> Predictor {
        let mut missing = 0;
        let values = pairs
            .iter()
            .map(|p| {
                scores.get(p).map(|s| s.score).unwrap_or_else(|| {
                    missing += 1;
                    50.0
                })
            })
            .collect();
        Predictor {
            name: name.to_string(),
            kind: PredictorKind::Score,
            values,
            missing,
        }
    }
}

/// A predictor's row in one outcome's table.
#[derive(Debug, Clone, Serialize)]
pub struct PredictorMetrics {
    pub predictor: String,
    /// ROC AUC, oriented so that 1 is perfect and 0.5 chance (high values
    /// predict a purchase, low values every other outcome).
    pub auc: Option<f64>,
    pub auc_ci: Option<[f64; 2]>,
    /// Outcome rate in the top decile (the highest values for a purchase,
    /// the lowest for the others) over the overall rate.
    pub lift: Option<f64>,
    pub lift_ci: Option<[f64; 2]>,
}

/// One yes/no outcome.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeReport {
    pub outcome: Outcome,
    /// `false` when the data holds no event that could produce it: absent,
    /// not zero, and no metrics.
    pub present: bool,
    /// What the data would need for it.
    pub needs: &'static str,
    /// Its risk set, in words.
    pub among: &'static str,
    /// Relationships for which it is defined (its risk set).
    pub relationships: usize,
    pub positives: usize,
    pub rate: Option<f64>,
    pub metrics: Vec<PredictorMetrics>,
}

/// Spend in the horizon.
#[derive(Debug, Clone, Serialize)]
pub struct AmountReport {
    pub present: bool,
    pub purchasers: usize,
    /// Base currency.
    pub total: f64,
    pub metrics: Vec<AmountMetrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AmountMetrics {
    pub predictor: String,
    /// Spearman's correlation with the amount spent in the horizon, over
    /// every relationship (0 for those that did not buy).
    pub spearman: Option<f64>,
    /// The same among the relationships that bought.
    pub spearman_purchasers: Option<f64>,
}

/// What fraction of each band had each outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationTable {
    pub predictor: String,
    /// `score_band` (fixed bands of the 0..100 score) or `decile`.
    pub bands_by: &'static str,
    /// The outcomes the rates are of, in order.
    pub outcomes: Vec<Outcome>,
    pub bands: Vec<Band>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PredictorInfo {
    pub name: String,
    pub kind: PredictorKind,
    pub missing: usize,
}

/// The whole backtest.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    pub cut: DateTime<Utc>,
    pub horizon_end: DateTime<Utc>,
    pub horizon_days: f64,
    pub brand: Option<EntityId>,
    pub relationships: usize,
    pub predictors: Vec<PredictorInfo>,
    pub outcomes: Vec<OutcomeReport>,
    pub amount: AmountReport,
    pub calibration: Vec<CalibrationTable>,
    pub bootstrap_replicates: usize,
    pub bootstrap_seed: u64,
}

/// Runs the backtest of `models` (and `peers`) on a log.
pub fn backtest(
    entities: &[Entity],
    events: &[Event],
    models: &[NamedModel],
    peers: &[Peer],
    spec: &BacktestSpec,
) -> Result<BacktestReport, ValidityError> {
    let window = spec.window()?;
    if let Some(brand) = &spec.brand {
        super::known_brand(entities, events, brand)?;
    }
    if models.is_empty() {
        return Err(ValidityError::Invalid("no model to backtest".into()));
    }
    let scores: Vec<Scores> = models
        .iter()
        .map(|m| scoring::scores_at_cut(Arc::clone(&m.model), entities, events, spec.cut))
        .collect();
    let pairs = population(&scores, spec.brand.as_ref());
    let mut predictors: Vec<Predictor> = models
        .iter()
        .zip(&scores)
        .map(|(m, s)| Predictor::from_scores(&m.name, s, &pairs))
        .collect();
    // Amounts in the base currency of the first model (every model of one
    // run converts with its own table; outcomes need one).
    let observed = Observed::new(events, window, &models[0].model.currency);
    predictors.extend(baselines(&observed, &pairs));
    for peer in peers {
        let mut missing = 0;
        let values = pairs
            .iter()
            .map(|p| {
                peer.values.get(p).copied().unwrap_or_else(|| {
                    missing += 1;
                    f64::NEG_INFINITY
                })
            })
            .collect();
        predictors.push(Predictor {
            name: peer.name.clone(),
            kind: PredictorKind::Peer,
            values,
            missing,
        });
    }
    Ok(evaluate(&pairs, &predictors, &observed, spec))
}

/// Every relationship that exists at the cut for any of the models (a
/// relationship exists where events reach it), of one brand if asked,
/// in id order.
pub fn population(scores: &[Scores], brand: Option<&EntityId>) -> Vec<Pair> {
    let set: BTreeSet<&Pair> = scores
        .iter()
        .flat_map(|s| s.keys())
        .filter(|(_, b)| brand.is_none_or(|want| b == want))
        .collect();
    set.into_iter().cloned().collect()
}

/// The analyst's baselines over `pairs`.
pub fn baselines(observed: &Observed, pairs: &[Pair]) -> Vec<Predictor> {
    observed
        .baselines(pairs)
        .into_iter()
        .map(|(name, values)| Predictor {
            name: name.to_string(),
            kind: PredictorKind::Baseline,
            values,
            missing: 0,
        })
        .collect()
}

fn interval(values: &[Option<f64>]) -> Option<[f64; 2]> {
    metrics::percentile_interval(values, LEVEL).map(|(a, b)| [a, b])
}

/// The metrics of every predictor against every outcome of `observed`.
pub fn evaluate(
    pairs: &[Pair],
    predictors: &[Predictor],
    observed: &Observed,
    spec: &BacktestSpec,
) -> BacktestReport {
    let n = pairs.len();
    let ranked: Vec<Ranked> = predictors.iter().map(|p| Ranked::new(&p.values)).collect();
    let labels: Vec<(Outcome, Option<Vec<Option<bool>>>)> = Outcome::ALL
        .iter()
        .map(|&o| (o, observed.labels(o, pairs)))
        .collect();
    let present: Vec<(Outcome, &Vec<Option<bool>>)> = labels
        .iter()
        .filter_map(|(o, l)| l.as_ref().map(|l| (*o, l)))
        .collect();

    // One bootstrap for everything: each replicate resamples relationships
    // once, and every (outcome, predictor) metric is read from the same
    // resample, so differences between predictors are paired.
    let stat = |w: &[f64]| -> Vec<(Option<f64>, Option<f64>)> {
        present
            .iter()
            .flat_map(|(o, l)| {
                ranked.iter().map(move |r| {
                    (
                        metrics::roc_auc(r, l, w, o.direction()),
                        metrics::lift(r, l, w, o.direction(), TOP_FRACTION),
                    )
                })
            })
            .collect()
    };
    let point = stat(&vec![1.0; n]);
    let replicates = spec.bootstrap.run(n, stat);

    let mut outcomes = Vec::new();
    let mut k = 0;
    for (outcome, l) in &labels {
        let Some(l) = l else {
            outcomes.push(OutcomeReport {
                outcome: *outcome,
                present: false,
                needs: outcome.needs(),
                among: outcome.among(),
                relationships: 0,
                positives: 0,
                rate: None,
                metrics: Vec::new(),
            });
            continue;
        };
        let defined = l.iter().flatten().count();
        let positives = l.iter().flatten().filter(|b| **b).count();
        let metrics = predictors
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let slot = k + j;
                let aucs: Vec<Option<f64>> = replicates.iter().map(|r| r[slot].0).collect();
                let lifts: Vec<Option<f64>> = replicates.iter().map(|r| r[slot].1).collect();
                PredictorMetrics {
                    predictor: p.name.clone(),
                    auc: point[slot].0,
                    auc_ci: interval(&aucs),
                    lift: point[slot].1,
                    lift_ci: interval(&lifts),
                }
            })
            .collect();
        k += predictors.len();
        outcomes.push(OutcomeReport {
            outcome: *outcome,
            present: true,
            needs: outcome.needs(),
            among: outcome.among(),
            relationships: defined,
            positives,
            rate: (defined > 0).then(|| positives as f64 / defined as f64),
            metrics,
        });
    }

    let amounts = observed.amounts(pairs);
    let amount = match &amounts {
        None => AmountReport {
            present: false,
            purchasers: 0,
            total: 0.0,
            metrics: Vec::new(),
        },
        Some(a) => {
            let buyers: Vec<usize> = (0..n).filter(|&i| a[i] > 0.0).collect();
            let bought: Vec<f64> = buyers.iter().map(|&i| a[i]).collect();
            AmountReport {
                present: true,
                purchasers: buyers.len(),
                total: a.iter().sum(),
                metrics: predictors
                    .iter()
                    .map(|p| AmountMetrics {
                        predictor: p.name.clone(),
                        spearman: metrics::spearman(&p.values, a),
                        spearman_purchasers: metrics::spearman(
                            &buyers.iter().map(|&i| p.values[i]).collect::<Vec<_>>(),
                            &bought,
                        ),
                    })
                    .collect(),
            }
        }
    };

    let shown: Vec<Outcome> = present.iter().map(|(o, _)| *o).collect();
    let label_refs: Vec<&[Option<bool>]> = present.iter().map(|(_, l)| l.as_slice()).collect();
    let mut calibration = Vec::new();
    for p in predictors {
        if p.kind == PredictorKind::Score {
            calibration.push(CalibrationTable {
                predictor: p.name.clone(),
                bands_by: "score_band",
                outcomes: shown.clone(),
                bands: metrics::bands(&p.values, &SCORE_BANDS, &label_refs),
            });
        }
    }
    for p in predictors {
        let edges = metrics::quantile_edges(&p.values, 10);
        if edges.len() >= 2 {
            calibration.push(CalibrationTable {
                predictor: p.name.clone(),
                bands_by: "decile",
                outcomes: shown.clone(),
                bands: metrics::bands(&p.values, &edges, &label_refs),
            });
        }
    }

    BacktestReport {
        cut: observed.window.from,
        horizon_end: observed.window.to,
        horizon_days: observed.window.days(),
        brand: spec.brand.clone(),
        relationships: n,
        predictors: predictors
            .iter()
            .map(|p| PredictorInfo {
                name: p.name.clone(),
                kind: p.kind,
                missing: p.missing,
            })
            .collect(),
        outcomes,
        amount,
        calibration,
        bootstrap_replicates: spec.bootstrap.replicates,
        bootstrap_seed: spec.bootstrap.seed,
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".to_string(), |v| super::fixed(v, decimals, false))
}

fn ci(v: Option<[f64; 2]>, decimals: usize) -> String {
    v.map_or(String::new(), |[a, b]| {
        format!(
            "[{}, {}]",
            super::fixed(a, decimals, false),
            super::fixed(b, decimals, false)
        )
    })
}

impl BacktestReport {
    /// The readable table (`fusion backtest` without `--json`).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "backtest: scores at {} (events before it), outcomes to {} ({:.0} days); {} relationships{}",
            self.cut.to_rfc3339(),
            self.horizon_end.to_rfc3339(),
            self.horizon_days,
            self.relationships,
            self.brand
                .as_ref()
                .map_or(String::new(), |b| format!(" of brand {b}"))
        );
        let _ = writeln!(
            s,
            "AUC: 0.5 is chance, 1 perfect (high values predict a purchase, low values the rest); \
             lift: outcome rate in the top decile over the overall rate; 95% bootstrap intervals ({} replicates, seed {})",
            self.bootstrap_replicates, self.bootstrap_seed
        );
        for p in self.predictors.iter().filter(|p| p.missing > 0) {
            let _ = writeln!(
                s,
                "note: {} had no value for {} relationships",
                p.name, p.missing
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<10} {:>18}  {:<20} {:>6} {:<16} {:>6} {:<14}",
            "outcome", "positives", "predictor", "AUC", "95% CI", "lift", "95% CI"
        );
        for o in &self.outcomes {
            if !o.present {
                let _ = writeln!(
                    s,
                    "{:<10} absent: the data has no {}",
                    o.outcome.as_str(),
                    o.needs
                );
                continue;
            }
            let counts = format!(
                "{}/{} {}",
                o.positives,
                o.relationships,
                o.rate
                    .map_or(String::new(), |r| format!("({:.1}%)", 100.0 * r))
            );
            for (j, m) in o.metrics.iter().enumerate() {
                let (name, counts) = if j == 0 {
                    (o.outcome.as_str(), counts.as_str())
                } else {
                    ("", "")
                };
                let _ = writeln!(
                    s,
                    "{:<10} {:>18}  {:<20} {:>6} {:<16} {:>6} {:<14}",
                    name,
                    counts,
                    m.predictor,
                    num(m.auc, 3),
                    ci(m.auc_ci, 3),
                    num(m.lift, 2),
                    ci(m.lift_ci, 2)
                );
            }
        }
        let _ = writeln!(s);
        if self.amount.present {
            let _ = writeln!(
                s,
                "amount in the horizon: {} purchasers, {} in total; Spearman with the amount (all relationships / purchasers only):",
                self.amount.purchasers,
                super::fixed(self.amount.total, 2, false)
            );
            for m in &self.amount.metrics {
                let _ = writeln!(
                    s,
                    "  {:<20} {:>7} / {:>7}",
                    m.predictor,
                    num(m.spearman, 3),
                    num(m.spearman_purchasers, 3)
                );
            }
        } else {
            let _ = writeln!(s, "amount: absent: the data has no purchase events");
        }
        for table in self
            .calibration
            .iter()
            .filter(|t| t.bands_by == "score_band")
        {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "calibration of {} by score band: share of relationships with each outcome",
                table.predictor
            );
            let mut header = format!("{:<10} {:>8}", "band", "n");
            for o in &table.outcomes {
                let _ = write!(header, " {:>10}", o.as_str());
            }
            let _ = writeln!(s, "{header}");
            for b in table.bands.iter().filter(|b| b.items > 0) {
                let mut row = format!(
                    "{:<10} {:>8}",
                    format!("{:.0}-{:.0}", b.from, b.to),
                    b.items
                );
                for r in &b.rates {
                    let _ = write!(
                        row,
                        " {:>10}",
                        r.map_or("-".to_string(), |r| format!("{:.1}%", 100.0 * r))
                    );
                }
                let _ = writeln!(s, "{row}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_files_are_read_strictly() {
        let peer = Peer::from_tsv(
            "bgnbd",
            "# person brand value\nc1\tcdnow\t0.5\n\nc2\tcdnow\t-1e-3\n",
        )
        .unwrap();
        let key = |p: &str| (EntityId::new(p).unwrap(), EntityId::new("cdnow").unwrap());
        assert_eq!(peer.values[&key("c1")], 0.5);
        assert_eq!(peer.values[&key("c2")], -0.001);
        let err = Peer::from_tsv("x", "c1\tcdnow\n").unwrap_err().to_string();
        assert!(err.contains("peer x, line 1: not three columns"), "{err}");
        let err = Peer::from_tsv("x", "c1\tcdnow\tNaN\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a number"), "{err}");
        // `..` is not an id (spaces are, since ids became any UTF-8).
        let err = Peer::from_tsv("x", "..\tcdnow\t1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad person id"), "{err}");
    }
}
