//! Evaluating scores at a time `at`: impulses up to `at`, decayed to `at`,
//! propagated through the graph as it stood at `at`.
//!
//! The propagation is the truncated series `s = Σ_k (αM)^k x` over
//! relationship space (DESIGN.md), with one hop
//! `X' = α_f·F·X + α_a·assoc(X)`: `F[q,p]` is q's attention on p (follow
//! strength over q's total), `assoc` moves a person's mass on one brand onto
//! their other associated brands in proportion to the normalised association.
//!
//! Two ways to sum the same series:
//! - `explain` (one relationship, exact, with its reasons): the adjoint walk
//!   `y = Σ_k (αMᵀ)^k e_(q,b)` from the target, which only visits the people q
//!   follows (transitively) and their associations; each impulse then
//!   contributes `y[p,b'] · x_i`, which is what the explanation lists.
//! - `batch` (every relationship): the forward walk from every impulse, run
//!   by the parallel relationship-space driver (`batch.rs`).
//!
//! Both take decay and the operator's coefficients from `shares.rs`,
//! iterate in id order and prune amounts below the model's tolerance, so
//! they are deterministic; they agree within the tolerance
//! (`tests/it/relspace.rs`, `explain_and_the_batch_agree_*`). No IO, no
//! clock: `at` is an argument.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use rustc_hash::FxHashMap;

use crate::domain::{EntityId, Event, EventId, EventKind, Sentiment};
use crate::graph::Handle;
use crate::score::fold::FoldState;
use crate::score::model::Components;
use crate::score::shares::{attention_share, decayed};

use super::view::{Impulse, ScoreView};

/// One event's share in a relationship's score.
#[derive(Debug, Clone, Serialize)]
pub struct Contribution {
    /// The event's id.
    pub event: EventId,
    /// Its type's wire name.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// Its event time.
    pub time: DateTime<Utc>,
    /// Score points this event accounts for at the evaluation time: the score
    /// minus the score without it.
    pub delta: f64,
    /// Its share of the raw sum.
    pub raw: f64,
    /// How it reached the relationship: `person:q`, people followed, the
    /// person it happened to, the brand it was about, and the target brand
    /// when it spilled over by association.
    pub path: Vec<String>,
    /// The sentiment a post, mention or review carried, and whether the
    /// sender gave it or Fusion scored the text (VADER).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<Sentiment>,
    /// Where the interaction took place (`web`, `store`, ...), when the
    /// sender said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// One relationship's score at a time, with its reasons: what
/// `GET /v1/relationships/{person}/{brand}` answers (with a trend).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The person.
    pub person: EntityId,
    /// The brand.
    pub brand: EntityId,
    /// The evaluation time.
    pub at: DateTime<Utc>,
    /// The Fusion Score, 0 to 100 (50 neutral).
    pub score: f64,
    /// The raw sum, `score = 50 + 50·tanh(raw / spread)`.
    pub raw: f64,
    /// Weighted raw sum per component; they add up to `raw`.
    pub components: Components,
    /// The largest contributions by |delta|, at most the model's `top_contributions`.
    pub contributions: Vec<Contribution>,
    /// Number of events that moved this relationship at all.
    pub event_count: usize,
    /// Time of the latest event that moved it.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The adjoint weights of one person: `y[p, b]` for the target brand, one
/// value for every other brand, and corrections for associated brands.
#[derive(Debug, Clone, Default)]
struct Adjoint {
    target: f64,
    other: f64,
    extra: BTreeMap<Handle, f64>,
}

impl Adjoint {
    fn at(&self, brand: Handle, target: Handle) -> f64 {
        if brand == target {
            self.target
        } else {
            self.other + self.extra.get(&brand).copied().unwrap_or(0.0)
        }
    }
    fn add_scaled(&mut self, other: &Adjoint, k: f64) {
        self.target += k * other.target;
        self.other += k * other.other;
        for (b, v) in &other.extra {
            *self.extra.entry(*b).or_insert(0.0) += k * v;
        }
    }
    fn magnitude(&self) -> f64 {
        self.extra
            .values()
            .fold(self.target.abs().max(self.other.abs()), |m, v| {
                m.max(v.abs())
            })
    }
}

/// People of the walk, in id order (the order every sum follows).
type ByName<'s, T> = BTreeMap<(&'s EntityId, Handle), T>;

/// One event's share of an explanation, before the event is looked up.
#[derive(Debug, Clone)]
struct Entry {
    event: u64,
    time: DateTime<Utc>,
    delta: f64,
    raw: f64,
    path: Vec<String>,
}

/// An explanation whose contributions name their events by reference
/// (what the impulses keep), not yet by id: `ScoreState` answers it without
/// reading events, and whoever holds the events (the engine: the store)
/// finishes it with the few it lists ([`ExplanationDraft::events`]).
#[derive(Debug, Clone)]
pub struct ExplanationDraft {
    explanation: Explanation,
    /// Candidates for the listed contributions: the largest by |delta|,
    /// and every one tied with the last of them (ties are broken by event
    /// id, known only once the events are looked up).
    entries: Vec<Entry>,
    top: usize,
}

impl ExplanationDraft {
    /// The relationship's score (what the explanation will say).
    pub fn score(&self) -> f64 {
        self.explanation.score
    }

    /// The references of the events the contributions need (at most the
    /// model's `top_contributions`, plus ties), ascending.
    pub fn events(&self) -> Vec<u64> {
        let mut refs: Vec<u64> = self.entries.iter().map(|e| e.event).collect();
        refs.sort_unstable();
        refs.dedup();
        refs
    }

    /// The explanation, with `lookup` giving each listed event by its
    /// reference (an event it does not give is left out of the reasons).
    pub fn finish<'e>(self, lookup: impl Fn(u64) -> Option<&'e Event>) -> Explanation {
        let mut explanation = self.explanation;
        let mut contributions: Vec<Contribution> =
            self.entries
                .into_iter()
                .filter_map(|e| {
                    let event = lookup(e.event)?;
                    let sentiment = match &event.kind {
                        EventKind::Post { sentiment, .. }
                        | EventKind::Mention { sentiment, .. } => Some(*sentiment),
                        EventKind::Review { sentiment, .. } => *sentiment,
                        _ => None,
                    };
                    Some(Contribution {
                        sentiment,
                        channel: event.kind.channel().map(str::to_string),
                        event: event.id.clone(),
                        event_type: event.kind.event_type().as_str(),
                        time: e.time,
                        delta: e.delta,
                        raw: e.raw,
                        path: e.path,
                    })
                })
                .collect();
        contributions.sort_by(|a, b| {
            b.delta
                .abs()
                .total_cmp(&a.delta.abs())
                .then_with(|| a.event.cmp(&b.event))
        });
        contributions.truncate(self.top);
        explanation.contributions = contributions;
        explanation
    }
}

impl FoldState {
    /// The score of (person, brand) at `at`, with its reasons, the events
    /// named by log position (finish with [`ExplanationDraft::finish`]).
    /// `None` when no event reaches the pair, or the person has withdrawn
    /// consent.
    pub fn explain(
        &self,
        person: &EntityId,
        brand: &EntityId,
        at: DateTime<Utc>,
    ) -> Option<ExplanationDraft> {
        explain_in(self, person, brand, at)
    }

    /// Just the score of (person, brand) at `at` (what `explain` gives,
    /// without the reasons); `None` where `explain` gives none.
    pub fn score_at(&self, person: &EntityId, brand: &EntityId, at: DateTime<Utc>) -> Option<f64> {
        score_in(self, person, brand, at)
    }
}

/// [`FoldState::explain`] over any view (`view.rs`): the fold's state, or a
/// what-if overlay over it, summed alike.
pub fn explain_in<V: ScoreView>(
    view: &V,
    person: &EntityId,
    brand: &EntityId,
    at: DateTime<Utc>,
) -> Option<ExplanationDraft> {
    let (p, b) = (view.handle(person)?, view.handle(brand)?);
    if !view.consents(p, at) {
        return None;
    }
    let model = view.model();
    let (total, route) = walk(view, p, b, at, true);

    let mut components = [0.0; 6];
    let mut per_event: BTreeMap<u64, (f64, DateTime<Utc>, Handle, Handle)> = BTreeMap::new();
    for_each_share(view, &total, p, b, at, |via, imp, c, v| {
        components[c] += v;
        let entry = per_event
            .entry(imp.event)
            .or_insert((0.0, imp.time, via, imp.brand));
        entry.0 += v;
    });
    if per_event.is_empty() {
        return None;
    }
    let raw: f64 = components.iter().sum();
    let score = model.score(raw);
    let mut entries: Vec<Entry> = per_event
        .iter()
        .map(|(&event, &(v, time, via, about))| {
            let mut path: Vec<String> = route
                .get(&via)
                .map(|r| {
                    r.iter()
                        .map(|p| format!("person:{}", view.name(*p)))
                        .collect()
                })
                .unwrap_or_else(|| {
                    vec![
                        format!("person:{person}"),
                        format!("person:{}", view.name(via)),
                    ]
                });
            path.push(format!("brand:{}", view.name(about)));
            if about != b {
                path.push(format!("brand:{brand}"));
            }
            Entry {
                event,
                time,
                delta: score - model.score(raw - v),
                raw: v,
                path,
            }
        })
        .collect();
    let updated_at = entries.iter().map(|e| e.time).max();
    let event_count = entries.len();
    entries.sort_by(|x, y| y.delta.abs().total_cmp(&x.delta.abs()));
    let top = model.top_contributions;
    if let Some(last) = top.checked_sub(1).and_then(|i| entries.get(i)) {
        let edge = last.delta.abs();
        let keep = entries.partition_point(|e| e.delta.abs() >= edge);
        entries.truncate(keep);
    } else if top == 0 {
        entries.clear();
    }
    Some(ExplanationDraft {
        explanation: Explanation {
            person: person.clone(),
            brand: brand.clone(),
            at,
            score,
            raw,
            components,
            contributions: Vec::new(),
            event_count,
            updated_at,
        },
        entries,
        top,
    })
}

/// [`FoldState::score_at`] over any view.
pub fn score_in<V: ScoreView>(
    view: &V,
    person: &EntityId,
    brand: &EntityId,
    at: DateTime<Utc>,
) -> Option<f64> {
    let (p, b) = (view.handle(person)?, view.handle(brand)?);
    if !view.consents(p, at) {
        return None;
    }
    let (total, _) = walk(view, p, b, at, false);
    let mut components = [0.0; 6];
    let mut any = false;
    for_each_share(view, &total, p, b, at, |_, _, c, v| {
        components[c] += v;
        any = true;
    });
    // Summed per component first, as `explain` does, so both agree to the bit.
    any.then(|| view.model().score(components.iter().sum()))
}

/// The adjoint walk `y = Σ_k (αMᵀ)^k e_(person,brand)` over the graph as
/// of `at`; with `routes`, also the first route found to each person.
fn walk<V: ScoreView>(
    view: &V,
    person: Handle,
    brand: Handle,
    at: DateTime<Utc>,
    routes: bool,
) -> (ByName<'_, Adjoint>, FxHashMap<Handle, Vec<Handle>>) {
    let model = view.model();
    let key = |h: Handle| (view.name(h), h);
    let alpha_f = model.propagation.audience;
    let tol = model.tolerance;
    let mut total: ByName<'_, Adjoint> = BTreeMap::new();
    let mut route: FxHashMap<Handle, Vec<Handle>> = FxHashMap::default();
    let mut frontier: ByName<'_, Adjoint> = BTreeMap::new();
    frontier.insert(
        key(person),
        Adjoint {
            target: 1.0,
            ..Default::default()
        },
    );
    if routes {
        route.insert(person, vec![person]);
    }
    for (p, y) in &frontier {
        total.entry(*p).or_default().add_scaled(y, 1.0);
    }
    for _hop in 0..model.max_hops {
        let mut next: ByName<'_, Adjoint> = BTreeMap::new();
        for (&(_, p), y) in &frontier {
            // A person without consent has no follow row and no
            // association row (they receive no spill), so nothing
            // reaches the target through them: the walk stops there.
            // (It went on before issue #10; the explanation then
            // disagreed with the batch.)
            if !view.consents(p, at) {
                continue;
            }
            let followees = view.followees(p, at);
            let attention: f64 = followees.iter().map(|(_, w)| w).sum();
            if attention > 0.0 {
                for &(f, w) in &followees {
                    next.entry(key(f))
                        .or_default()
                        .add_scaled(y, attention_share(alpha_f, w, attention));
                    if routes && !route.contains_key(&f) {
                        let mut r = route[&p].clone();
                        r.push(f);
                        route.insert(f, r);
                    }
                }
            }
            // y'[p,b'] = Σ_{b≠b'} c_b y[p,b] = S - c_b' y[p,b'], S = Σ_b c_b y[p,b],
            // with c_b the association shares.
            let shares = view.association_shares(p, at);
            if !shares.is_empty() {
                let s: f64 = shares.iter().map(|(b, c)| c * y.at(*b, brand)).sum();
                let c_target = shares
                    .iter()
                    .find(|(b, _)| *b == brand)
                    .map_or(0.0, |(_, c)| *c);
                let mut moved = Adjoint {
                    target: s - c_target * y.target,
                    other: s,
                    extra: BTreeMap::new(),
                };
                for &(b, c) in &shares {
                    if b != brand {
                        moved.extra.insert(b, -c * y.at(b, brand));
                    }
                }
                next.entry(key(p)).or_default().add_scaled(&moved, 1.0);
            }
        }
        next.retain(|_, y| y.magnitude() >= tol);
        if next.is_empty() {
            break;
        }
        for (p, y) in &next {
            total.entry(*p).or_default().add_scaled(y, 1.0);
        }
        frontier = next;
    }

    (total, route)
}

/// Every impulse up to `at` that reaches (`person`, `brand`) through the
/// adjoint weights `total`: calls `f(person, impulse, component index,
/// share)` with its share `y[p, b_i] · x_i`, decayed to `at` and weighted,
/// in a fixed order (people by id, each one's impulses in event order). A
/// share of 0 still counts (the relationship exists, at 50) when the
/// impulse is nonzero but decayed or weighted to nothing, or when it is
/// the relationship's own interaction of 0 (a free item); a spilled
/// impulse of 0 reaches nothing, as in the batch.
fn for_each_share<V: ScoreView>(
    view: &V,
    total: &ByName<'_, Adjoint>,
    person: Handle,
    brand: Handle,
    at: DateTime<Utc>,
    mut f: impl FnMut(Handle, &Impulse, usize, f64),
) {
    let model = view.model();
    for (&(_, p), y) in total {
        if !view.consents(p, at) {
            continue;
        }
        view.for_each_impulse(p, at, |imp| {
            let w = y.at(imp.brand, brand);
            if w == 0.0 {
                return;
            }
            let c = imp.component;
            let v = w * decayed(model, c, imp.amount, imp.time, at);
            if v != 0.0 || imp.amount != 0.0 || (p == person && imp.brand == brand) {
                f(p, &imp, c.index(), v);
            }
        });
    }
}
