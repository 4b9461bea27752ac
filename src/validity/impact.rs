//! The impact of a brand's action (issue #15, item 4): did an occasion or a
//! cause change the relationships of the people it reached? Difference in
//! differences against a matched comparison group of the brand's other
//! people, with a stratified bootstrap interval; when no comparison group
//! can be formed, the brand-level change around the action, said plainly
//! not to be an effect estimate.
//!
//! Two steps, so a service can hold its state's read lock only briefly:
//! [`gather`] takes what is needed from the state (two snapshots and the
//! few events involved), [`estimate`] does the rest without it. Neither
//! reads the clock: `at` (the edge's "now", or a given time) is an argument.
//!
//! Method (docs/validity.md, "Impact"):
//! - reached: the attendees of the occasion (reported up to the end of the
//!   after window), or the people whose registered interests share a tag
//!   with the cause; performers are the action's agents, in neither group;
//! - comparison pool: the brand's other people with a relationship at the
//!   action's time;
//! - matching: coarsened exact matching (Iacus, King & Porro 2012) on
//!   whether the person follows a performer, the score before (5-point
//!   bands) and purchase frequency (purchases from the brand in the 90 days
//!   before: 0, 1, 2–3, 4–7, 8+);
//! - outcomes, each the after value minus the before value: the score (at
//!   the end of the after window minus just before the action) and the
//!   amount bought from the brand (after window minus before window);
//! - effect: the average over matched reached people of their change minus
//!   the mean change of the comparison people in their stratum (the
//!   average treatment effect on the treated); 95% percentile interval
//!   from a bootstrap that resamples reached and comparison people within
//!   each stratum (fixed-seed ChaCha8).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::metrics::{self, Bootstrap};
use super::outcomes::purchase_amount;
use super::scoring;
use super::{ValidityError, fixed};
use crate::domain::{EntityId, EventId, EventKind};
use crate::score::RelSnapshot;
use crate::score::ScoreState;
use crate::score::ScoringModel;

/// Fewer matched reached people or comparison people than this, and there
/// is no estimate: a bootstrap of a handful says nothing.
pub const MIN_GROUP: usize = 5;
/// A stratum needs at least this many comparison people: the mean of one
/// or two is one or two people's luck, and the bootstrap cannot see it.
pub const MIN_STRATUM_COMPARISON: usize = 5;
/// Width of the score bands people are matched within, points.
pub const SCORE_BAND: f64 = 5.0;
/// Purchase frequency, a matching variable, counts the purchases from the
/// brand in this many days before the action (a customer's habit, not the
/// before window's luck: matching on the before window alone pairs a
/// non-customer with a regular who skipped two weeks).
pub const FREQUENCY_DAYS: i64 = 90;
/// Default length of the before and after windows, days.
pub const DEFAULT_WINDOW_DAYS: f64 = 14.0;
/// Default bootstrap: the groups are small, so replicates are cheap.
pub const DEFAULT_BOOTSTRAP: Bootstrap = Bootstrap {
    replicates: 1_000,
    seed: 15,
};

/// The action whose impact is asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// An occasion, by its entity id.
    Occasion(EntityId),
    /// A cause, by the id of its `cause` event.
    Cause(EventId),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct ImpactSpec {
    pub brand: EntityId,
    pub action: Action,
    /// Only events at or before it count; the after window ends by it.
    pub at: DateTime<Utc>,
    /// Length of the before and after windows, days (shortened alike when
    /// `at` comes earlier than the after window's end).
    pub window_days: f64,
    pub bootstrap: Bootstrap,
}

/// What [`estimate`] needs, taken from the state by [`gather`].
pub struct ImpactInputs {
    spec: ImpactSpec,
    action: ActionInfo,
    before: Span,
    after: Span,
    reached: BTreeSet<EntityId>,
    performers: BTreeSet<EntityId>,
    /// People following a performer at the action's time.
    follow_performers: BTreeSet<EntityId>,
    /// The brand's purchases from the frequency lookback to the end of the
    /// after window: (person, time, amount).
    purchases: Vec<(EntityId, DateTime<Utc>, f64)>,
    /// The brand's reported sales in both windows.
    reported: Vec<(DateTime<Utc>, f64)>,
    snapshot_before: RelSnapshot,
    snapshot_after: RelSnapshot,
    model: Arc<ScoringModel>,
}

/// The action, as found in the log.
#[derive(Debug, Clone, Serialize)]
pub struct ActionInfo {
    /// `occasion` or `cause`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub time: DateTime<Utc>,
    /// The occasion's performers (none for a cause).
    pub performers: Vec<EntityId>,
    pub tags: Vec<String>,
}

/// A time span; `before` is `[from, to)`, `after` is `(from, to]`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// How many people are in each group.
#[derive(Debug, Clone, Serialize)]
pub struct Groups {
    /// Reached people (performers excluded).
    pub reached: usize,
    /// Reached people with at least one comparison person in their stratum.
    pub matched_reached: usize,
    /// The brand's other people with a relationship at the action's time.
    pub comparison_pool: usize,
    /// Comparison people in a stratum with reached people.
    pub matched_comparison: usize,
    /// Strata holding both.
    pub strata: usize,
}

/// An effect with its interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Effect {
    pub effect: f64,
    /// 95% percentile bootstrap interval.
    pub ci95: Option<[f64; 2]>,
}

/// The difference-in-differences estimate.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub method: &'static str,
    /// On the score of a reached person's relationship with the brand, points.
    pub points: Effect,
    /// On the amount a reached person bought from the brand in the after
    /// window (base currency per person).
    pub sales_per_person: Effect,
    /// The same over all matched reached people.
    pub sales_total: Effect,
    pub replicates: usize,
    pub seed: u64,
}

/// The brand as a whole around the action (not an effect estimate).
#[derive(Debug, Clone, Serialize)]
pub struct BrandLevel {
    /// Purchases from the brand in each window, base currency.
    pub purchases_before: f64,
    pub purchases_after: f64,
    /// The brand's own sales reports (`brand_sales`) dated in each window.
    pub reported_sales_before: f64,
    pub reported_sales_after: f64,
    /// Mean score of the brand's relationships just before the action and
    /// at the end of the after window, and how many there were.
    pub mean_score_before: Option<f64>,
    pub mean_score_after: Option<f64>,
    pub relationships_before: usize,
    pub relationships_after: usize,
}

/// The answer of `GET /v1/brands/{brand}/impact` and `fusion impact`.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactReport {
    pub brand: EntityId,
    pub action: ActionInfo,
    pub as_of: DateTime<Utc>,
    pub window_days: f64,
    pub before: Span,
    pub after: Span,
    pub groups: Groups,
    /// `None` when no comparison group could be formed.
    pub estimate: Option<Estimate>,
    pub brand_level: BrandLevel,
    /// What the figures are, in words.
    pub note: String,
}

/// Takes from `state` and `events` what the estimate needs. `events` is the
/// log in canonical order, or the part of it that names the brand, the
/// action's occasion and its performers (the state keeps no event).
/// Errors: the action is not in the log (or belongs to another brand), or
/// it is not before `at`.
pub fn gather(
    state: &ScoreState,
    events: &[crate::domain::Event],
    spec: &ImpactSpec,
) -> Result<ImpactInputs, ValidityError> {
    if !(spec.window_days > 0.0 && spec.window_days <= 3_650.0) {
        return Err(ValidityError::Invalid(format!(
            "the window must be between 0 and 3650 days, got {}",
            spec.window_days
        )));
    }
    let visible = |t: DateTime<Utc>| t <= spec.at;
    let action = find_action(events, spec)?;
    let t0 = action.time;
    if t0 >= spec.at {
        return Err(ValidityError::Invalid(format!(
            "the {} {} happened at {}, not before {}: there is no after window yet",
            action.kind,
            action.id,
            t0.to_rfc3339(),
            spec.at.to_rfc3339()
        )));
    }
    let asked = Duration::seconds((spec.window_days * 86_400.0).round() as i64);
    let window = asked.min(spec.at - t0);
    let before = Span {
        from: t0 - window,
        to: t0,
    };
    let after = Span {
        from: t0,
        to: t0 + window,
    };
    let performers: BTreeSet<EntityId> = action.performers.iter().cloned().collect();
    let reached: BTreeSet<EntityId> = match &spec.action {
        Action::Occasion(occasion) => events
            .iter()
            .filter(|e| e.time <= after.to && visible(e.time))
            .filter_map(|e| match &e.kind {
                EventKind::Attendance {
                    person,
                    occasion: o,
                } if o == occasion => Some(person.clone()),
                _ => None,
            })
            .collect(),
        Action::Cause(_) => scoring::interested(state, &action.tags)
            .into_iter()
            .collect(),
    };
    let reached = &reached - &performers;

    // Follows of the performers as they stood at the action (canonical order).
    let mut follows: BTreeSet<(&EntityId, &EntityId)> = BTreeSet::new();
    for e in events.iter().take_while(|e| e.time < t0) {
        match &e.kind {
            EventKind::Follow { person, target, .. } if performers.contains(target) => {
                follows.insert((person, target));
            }
            EventKind::Unfollow { person, target } => {
                follows.remove(&(person, target));
            }
            _ => {}
        }
    }
    let follow_performers: BTreeSet<EntityId> =
        follows.into_iter().map(|(p, _)| p.clone()).collect();

    let lookback = before.from.min(t0 - Duration::days(FREQUENCY_DAYS));
    let in_windows = |t: DateTime<Utc>| t >= lookback && t <= after.to;
    let currencies = scoring::model(state).currency.clone();
    let mut purchases = Vec::new();
    let mut reported = Vec::new();
    for e in events.iter().filter(|e| in_windows(e.time)) {
        match &e.kind {
            EventKind::Purchase { person, brand, .. } if *brand == spec.brand => {
                let amount = purchase_amount(e, &currencies).unwrap_or(0.0);
                purchases.push((person.clone(), e.time, amount));
            }
            EventKind::BrandSales {
                brand,
                amount,
                currency,
            } if *brand == spec.brand => {
                reported.push((
                    e.time,
                    currencies.to_base(*amount, *currency).unwrap_or(0.0),
                ));
            }
            _ => {}
        }
    }
    Ok(ImpactInputs {
        spec: spec.clone(),
        before,
        after,
        reached,
        performers,
        follow_performers,
        purchases,
        reported,
        // Just before the action: its own impulses are not "before".
        snapshot_before: scoring::snapshot(state, t0 - Duration::seconds(1)),
        snapshot_after: scoring::snapshot(state, after.to),
        model: scoring::model(state),
        action,
    })
}

fn find_action(
    events: &[crate::domain::Event],
    spec: &ImpactSpec,
) -> Result<ActionInfo, ValidityError> {
    let brand = &spec.brand;
    super::known_brand(&[], events, brand)?;
    match &spec.action {
        Action::Occasion(id) => {
            let found = events
                .iter()
                .filter(|e| e.time <= spec.at)
                .find_map(|e| match &e.kind {
                    EventKind::Occasion {
                        occasion,
                        brand: host,
                        performers,
                        tags,
                    } if occasion == id => Some((e.time, host, performers, tags)),
                    _ => None,
                });
            let Some((time, host, performers, tags)) = found else {
                return Err(ValidityError::NotFound(format!(
                    "no occasion '{id}' as of {}",
                    spec.at.to_rfc3339()
                )));
            };
            if host != brand {
                return Err(ValidityError::NotFound(format!(
                    "occasion '{id}' is hosted by '{host}', not '{brand}'"
                )));
            }
            Ok(ActionInfo {
                kind: "occasion",
                id: id.to_string(),
                time,
                performers: performers.clone(),
                tags: tags.clone(),
            })
        }
        Action::Cause(id) => {
            let found = events
                .iter()
                .filter(|e| e.time <= spec.at && e.id == *id)
                .find_map(|e| match &e.kind {
                    EventKind::Cause {
                        brand: actor, tags, ..
                    } => Some((e.time, actor, tags)),
                    _ => None,
                });
            let Some((time, actor, tags)) = found else {
                return Err(ValidityError::NotFound(format!(
                    "no cause event '{id}' as of {}",
                    spec.at.to_rfc3339()
                )));
            };
            if actor != brand {
                return Err(ValidityError::NotFound(format!(
                    "cause '{id}' is by '{actor}', not '{brand}'"
                )));
            }
            Ok(ActionInfo {
                kind: "cause",
                id: id.to_string(),
                time,
                performers: Vec::new(),
                tags: tags.clone(),
            })
        }
    }
}

/// A matching stratum: (follows a performer, score band, frequency band).
type Stratum = (bool, i64, u8);

/// One person of either group.
#[derive(Debug, Clone)]
struct Unit {
    stratum: Stratum,
    d_points: f64,
    d_sales: f64,
}

/// Purchase counts in the frequency lookback, coarsened: 0, 1, 2–3, 4–7, 8+.
fn frequency_band(n: usize) -> u8 {
    match n {
        0 | 1 => n as u8,
        2..=3 => 2,
        4..=7 => 3,
        _ => 4,
    }
}

/// The estimate (or the brand-level change) from what [`gather`] took.
pub fn estimate(inputs: ImpactInputs) -> ImpactReport {
    let ImpactInputs {
        spec,
        action,
        before,
        after,
        reached,
        performers,
        follow_performers,
        purchases,
        reported,
        snapshot_before,
        snapshot_after,
        model,
    } = inputs;
    let brand = &spec.brand;
    let of_brand = |snapshot: RelSnapshot| -> BTreeMap<EntityId, f64> {
        scoring::scores_of(snapshot, &model)
            .into_iter()
            .filter(|((_, b), _)| b == brand)
            .map(|((p, _), s)| (p, s.score))
            .collect()
    };
    let score_before = of_brand(snapshot_before);
    let score_after = of_brand(snapshot_after);

    // Per person: purchases in the frequency lookback, and the amounts in
    // the before and the after window.
    let habit_from = before.to - Duration::days(FREQUENCY_DAYS);
    let mut bought: BTreeMap<&EntityId, (usize, f64, f64)> = BTreeMap::new();
    for (p, t, amount) in &purchases {
        let entry = bought.entry(p).or_default();
        if *t >= habit_from && *t < before.to {
            entry.0 += 1;
        }
        if *t >= before.from && *t < before.to {
            entry.1 += amount;
        } else if *t > after.from && *t <= after.to {
            entry.2 += amount;
        }
    }
    let unit = |p: &EntityId| {
        let s0 = score_before.get(p).copied().unwrap_or(50.0);
        let s1 = score_after.get(p).copied().unwrap_or(50.0);
        let (n, pre, post) = bought.get(p).copied().unwrap_or_default();
        Unit {
            stratum: (
                follow_performers.contains(p),
                (s0 / SCORE_BAND).floor() as i64,
                frequency_band(n),
            ),
            d_points: s1 - s0,
            d_sales: post - pre,
        }
    };
    let treated: Vec<Unit> = reached.iter().map(unit).collect();
    let pool: Vec<Unit> = score_before
        .keys()
        .filter(|p| !reached.contains(*p) && !performers.contains(*p))
        .map(unit)
        .collect();

    // Strata with reached people and enough comparison people for a stable
    // mean. Layout: every matched reached person first (stratum by
    // stratum), then each stratum's comparison people, one range each.
    let mut strata: BTreeMap<Stratum, (Vec<&Unit>, Vec<&Unit>)> = BTreeMap::new();
    for u in &treated {
        strata.entry(u.stratum).or_default().0.push(u);
    }
    for u in &pool {
        if let Some(s) = strata.get_mut(&u.stratum) {
            s.1.push(u);
        }
    }
    strata.retain(|_, (t, c)| !t.is_empty() && c.len() >= MIN_STRATUM_COMPARISON);
    let mut layout: Vec<&Unit> = Vec::new();
    // The stratum (index) of each matched reached person.
    let mut stratum_of: Vec<usize> = Vec::new();
    for (k, (t, _)) in strata.values().enumerate() {
        layout.extend(t);
        stratum_of.extend(std::iter::repeat_n(k, t.len()));
    }
    let matched_reached = layout.len();
    let mut comparison: Vec<Range<usize>> = Vec::new();
    for (_, c) in strata.values() {
        let a = layout.len();
        layout.extend(c);
        comparison.push(a..layout.len());
    }
    let matched_comparison = layout.len() - matched_reached;
    let groups = Groups {
        reached: treated.len(),
        matched_reached,
        comparison_pool: pool.len(),
        matched_comparison,
        strata: comparison.len(),
    };

    // The average effect on the treated under weights `w` (1 each for the
    // point estimate): the weighted mean, over matched reached people, of
    // their change minus the weighted mean change of the comparison people
    // of their stratum. With unit weights this is Σ_s n_s (t̄_s − c̄_s) / N.
    let att = |w: &[f64], value: fn(&Unit) -> f64| -> f64 {
        let control: Vec<f64> = comparison
            .iter()
            .map(|r| {
                let (mut sum, mut n) = (0.0, 0.0);
                for i in r.clone() {
                    sum += w[i] * value(layout[i]);
                    n += w[i];
                }
                sum / n
            })
            .collect();
        let (mut sum, mut n) = (0.0, 0.0);
        for i in 0..matched_reached {
            sum += w[i] * (value(layout[i]) - control[stratum_of[i]]);
            n += w[i];
        }
        sum / n
    };
    let estimate = (matched_reached >= MIN_GROUP && matched_comparison >= MIN_GROUP).then(|| {
        let ones = vec![1.0; layout.len()];
        // Reached people are resampled together (so the mix of strata
        // varies, as it would in another sample of the reached), comparison
        // people within their stratum.
        let ranges: Vec<Range<usize>> = std::iter::once(0..matched_reached)
            .chain(comparison.iter().cloned())
            .collect();
        let draws = spec.bootstrap.run_stratified(&ranges, layout.len(), |w| {
            (att(w, |u| u.d_points), att(w, |u| u.d_sales))
        });
        let interval =
            |v: Vec<Option<f64>>| metrics::percentile_interval(&v, 0.95).map(|(a, b)| [a, b]);
        let points = interval(draws.iter().map(|d| Some(d.0)).collect());
        let sales = interval(draws.iter().map(|d| Some(d.1)).collect());
        let n = matched_reached as f64;
        let sales_effect = att(&ones, |u| u.d_sales);
        Estimate {
            method: "difference in differences, coarsened exact matching",
            points: Effect {
                effect: att(&ones, |u| u.d_points),
                ci95: points,
            },
            sales_per_person: Effect {
                effect: sales_effect,
                ci95: sales,
            },
            sales_total: Effect {
                effect: sales_effect * n,
                ci95: sales.map(|[a, b]| [a * n, b * n]),
            },
            replicates: spec.bootstrap.replicates,
            seed: spec.bootstrap.seed,
        }
    });

    let sum_in =
        |from_incl: bool, span: &Span, list: &mut dyn Iterator<Item = (DateTime<Utc>, f64)>| {
            list.filter(|(t, _)| {
                if from_incl {
                    *t >= span.from && *t < span.to
                } else {
                    *t > span.from && *t <= span.to
                }
            })
            .map(|(_, a)| a)
            .sum::<f64>()
        };
    let mean = |m: &BTreeMap<EntityId, f64>| {
        (!m.is_empty()).then(|| m.values().sum::<f64>() / m.len() as f64)
    };
    let brand_level = BrandLevel {
        purchases_before: sum_in(true, &before, &mut purchases.iter().map(|p| (p.1, p.2))),
        purchases_after: sum_in(false, &after, &mut purchases.iter().map(|p| (p.1, p.2))),
        reported_sales_before: sum_in(true, &before, &mut reported.iter().copied()),
        reported_sales_after: sum_in(false, &after, &mut reported.iter().copied()),
        mean_score_before: mean(&score_before),
        mean_score_after: mean(&score_after),
        relationships_before: score_before.len(),
        relationships_after: score_after.len(),
    };
    let window_days = (after.to - after.from).num_seconds() as f64 / 86_400.0;
    let note = match &estimate {
        Some(_) => format!(
            "difference in differences over {window_days:.1} days before and after: the change of the \
             {matched_reached} matched reached people minus that of {matched_comparison} comparison people \
             of the brand in the same strata (follows a performer, score before in {SCORE_BAND}-point bands, \
             purchases in the {FREQUENCY_DAYS} days before); 95% stratified bootstrap intervals"
        ),
        None => format!(
            "no comparison group: {matched_reached} reached and {matched_comparison} comparison people could be \
             matched (at least {MIN_GROUP} of each are needed); brand_level is the brand's change around the \
             action, not an effect estimate: it moves with everything else that happened then"
        ),
    };
    ImpactReport {
        brand: spec.brand.clone(),
        action,
        as_of: spec.at,
        window_days,
        before,
        after,
        groups,
        estimate,
        brand_level,
        note,
    }
}

/// [`gather`] then [`estimate`], for callers that own the state and the log.
pub fn impact(
    state: &ScoreState,
    events: &[crate::domain::Event],
    spec: &ImpactSpec,
) -> Result<ImpactReport, ValidityError> {
    gather(state, events, spec).map(estimate)
}

impl ImpactReport {
    /// The readable form (`fusion impact` without `--json`).
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "impact of {} {} by {} at {} (windows of {:.1} days; as of {})",
            self.action.kind,
            self.action.id,
            self.brand,
            self.action.time.to_rfc3339(),
            self.window_days,
            self.as_of.to_rfc3339()
        );
        let g = &self.groups;
        let _ = writeln!(
            s,
            "reached {} (matched {}), comparison pool {} (matched {}), {} strata",
            g.reached, g.matched_reached, g.comparison_pool, g.matched_comparison, g.strata
        );
        let ci = |e: &Effect| {
            e.ci95.map_or(String::new(), |[a, b]| {
                format!(" [95% CI {}, {}]", fixed(a, 2, true), fixed(b, 2, true))
            })
        };
        if let Some(e) = &self.estimate {
            let _ = writeln!(
                s,
                "effect on the score: {} points{}",
                fixed(e.points.effect, 2, true),
                ci(&e.points)
            );
            let _ = writeln!(
                s,
                "effect on sales: {} per reached person{}, {} in total{}",
                fixed(e.sales_per_person.effect, 2, true),
                ci(&e.sales_per_person),
                fixed(e.sales_total.effect, 2, true),
                ci(&e.sales_total)
            );
        }
        let b = &self.brand_level;
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| fixed(v, 2, false));
        let _ = writeln!(
            s,
            "brand level: purchases {} -> {}, reported sales {} -> {}, mean score {} -> {} ({} -> {} relationships)",
            fixed(b.purchases_before, 2, false),
            fixed(b.purchases_after, 2, false),
            fixed(b.reported_sales_before, 2, false),
            fixed(b.reported_sales_after, 2, false),
            opt(b.mean_score_before),
            opt(b.mean_score_after),
            b.relationships_before,
            b.relationships_after
        );
        let _ = writeln!(s, "{}", self.note);
        s
    }
}
