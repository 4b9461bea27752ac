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
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use rustc_hash::FxHashMap;

use crate::domain::{EntityId, Event, EventId, EventKind, Sentiment};
use crate::graph::Handle;
use crate::score::fold::FoldState;
use crate::score::model::{Components, ScoringModel};
use crate::score::shares::{
    Decays, attention_share, nanos, seconds_between, seconds_between_nanos,
};

use super::view::{Impulse, ScoreView, Span};

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

/// An [`Adjoint`] as a finished walk keeps it: `y[p, b]` for every brand
/// with a correction, already added to `other` (the same addition
/// [`Adjoint::at`] makes, so the same bits), in a hash map looked up once
/// per impulse read (a binary search there was about an eighth of a
/// relationship read's CPU under `benches/http_read.sh`'s rotation).
#[derive(Debug, Clone)]
struct Weights {
    target: f64,
    /// `other + 0.0`: what [`Adjoint::at`] gives a brand without a
    /// correction (not `other` itself: `-0.0 + 0.0` is `0.0`).
    other: f64,
    at: FxHashMap<Handle, f64>,
}

impl Weights {
    fn of(y: Adjoint) -> Self {
        Self {
            target: y.target,
            other: y.other + 0.0,
            at: y.extra.into_iter().map(|(b, v)| (b, y.other + v)).collect(),
        }
    }
    /// `y[p, brand]` ([`Adjoint::at`]).
    #[inline]
    fn at(&self, brand: Handle, target: Handle) -> f64 {
        if brand == target {
            self.target
        } else {
            self.at.get(&brand).copied().unwrap_or(self.other)
        }
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

    /// The explanation at `at` and the score at each of `past`, as
    /// [`FoldState::explain`] and [`FoldState::score_at`] give them, in one
    /// read that reuses walks: [`read_in`].
    pub fn read(
        &self,
        person: &EntityId,
        brand: &EntityId,
        at: DateTime<Utc>,
        past: &[DateTime<Utc>],
        cached: impl Fn(DateTime<Utc>) -> Option<Arc<Walk>>,
    ) -> Option<Reading> {
        read_in(self, person, brand, at, past, cached)
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
    read_in(view, person, brand, at, &[], |_| None).map(|r| r.draft)
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
    let walk = walk(view, p, b, at);
    let sums = sum_shares(view, &walk, p, b, &[at], |_, _, _| {});
    sums[0].score(view.model())
}

/// One relationship read: the explanation at `at` and the score at each of
/// `past` (`None` where [`score_in`] gives none), every number bit for bit
/// what [`explain_in`] and [`score_in`] give, with the walks it used.
#[derive(Debug)]
pub struct Reading {
    /// The explanation at `at`.
    pub draft: ExplanationDraft,
    /// The score at each of the `past` times asked for, in their order.
    pub past: Vec<Option<f64>>,
    /// The walks the read used (at least the one at `at`), to be kept and
    /// given again to later reads of the same pair.
    pub walks: Vec<Arc<Walk>>,
}

/// [`explain_in`] at `at` and [`score_in`] at each of `past` in one read:
/// one adjoint walk serves every time its [`Walk::span`] covers (the graph
/// rows it read are the same there, so the walk is), and one pass over the
/// impulses sums every time that walk serves. `cached(t)` may give a walk of
/// this pair, taken on this state, whose span covers `t` (the engine's cache
/// of walks); one is taken where it gives none. Costs one walk per
/// distinct graph in the span of times, plus `O(impulses reached)` per time.
pub fn read_in<V: ScoreView>(
    view: &V,
    person: &EntityId,
    brand: &EntityId,
    at: DateTime<Utc>,
    past: &[DateTime<Utc>],
    cached: impl Fn(DateTime<Utc>) -> Option<Arc<Walk>>,
) -> Option<Reading> {
    let (p, b) = (view.handle(person)?, view.handle(brand)?);
    if !view.consents(p, at) {
        return None;
    }
    let mut walks: Vec<Arc<Walk>> = Vec::new();
    let mut walk_for = |t: DateTime<Utc>| -> usize {
        if let Some(i) = walks.iter().position(|w| w.span.covers(t)) {
            return i;
        }
        walks.push(cached(t).unwrap_or_else(|| Arc::new(walk(view, p, b, t))));
        walks.len() - 1
    };
    // Which walk serves which time (the first, the one at `at`).
    let first = walk_for(at);
    let served: Vec<usize> = past.iter().map(|&t| walk_for(t)).collect();

    let mut past_scores: Vec<Option<f64>> = vec![None; past.len()];
    let mut draft = None;
    for (w, walk) in walks.iter().enumerate() {
        let mut times: Vec<DateTime<Utc>> = Vec::new();
        if w == first {
            times.push(at);
        }
        let slots: Vec<usize> = (0..past.len()).filter(|&i| served[i] == w).collect();
        times.extend(slots.iter().map(|&i| past[i]));
        let mut per_event = PerEvent::with_capacity(if w == first { 4096 } else { 0 });
        let sums = sum_shares(view, walk, p, b, &times, |via, imp, v| {
            if w == first {
                per_event.add(via, imp, v);
            }
        });
        let past_sums = if w == first {
            draft = Some(drafted(
                view, walk, person, brand, b, at, &sums[0], per_event,
            )?);
            &sums[1..]
        } else {
            &sums[..]
        };
        for (&i, s) in slots.iter().zip(past_sums) {
            past_scores[i] = if view.consents(p, past[i]) {
                s.score(view.model())
            } else {
                None
            };
        }
    }
    Some(Reading {
        draft: draft?,
        past: past_scores,
        walks,
    })
}

/// One event's share of an explanation as it is summed: its share, time,
/// the person it happened to and the brand it was about (the first impulse's).
#[derive(Default)]
struct PerEvent {
    index: FxHashMap<u64, usize>,
    list: Vec<(u64, f64, DateTime<Utc>, Handle, Handle)>,
}

impl PerEvent {
    fn with_capacity(n: usize) -> Self {
        Self {
            index: FxHashMap::with_capacity_and_hasher(n, Default::default()),
            list: Vec::with_capacity(n),
        }
    }
    fn add(&mut self, via: Handle, imp: &Impulse, v: f64) {
        let i = *self.index.entry(imp.event).or_insert_with(|| {
            self.list.push((imp.event, 0.0, imp.time, via, imp.brand));
            self.list.len() - 1
        });
        // Added in the order the shares come, as the per-component sums are.
        self.list[i].1 += v;
    }
}

/// The draft of the explanation at `at` from its sums and per-event shares:
/// the score, the deltas, and the paths of the candidates for the listed
/// contributions (only those: a path is strings).
#[allow(clippy::too_many_arguments)]
fn drafted<V: ScoreView>(
    view: &V,
    walk: &Walk,
    person: &EntityId,
    brand: &EntityId,
    b: Handle,
    at: DateTime<Utc>,
    sums: &Sums,
    per_event: PerEvent,
) -> Option<ExplanationDraft> {
    if per_event.list.is_empty() {
        return None;
    }
    let model = view.model();
    let components = sums.components;
    let raw: f64 = components.iter().sum();
    let score = model.score(raw);
    let deltas: Vec<f64> = per_event
        .list
        .iter()
        .map(|&(_, v, ..)| score - model.score(raw - v))
        .collect();
    let updated_at = per_event.list.iter().map(|e| e.2).max();
    let event_count = per_event.list.len();
    // The candidates: the `top` largest by |delta| and every one tied with
    // the last of them (the set a sort by |delta| cut at the last tie keeps).
    let top = model.top_contributions;
    let edge = if top == 0 {
        None
    } else if deltas.len() <= top {
        Some(f64::NEG_INFINITY)
    } else {
        let mut magnitudes: Vec<f64> = deltas.iter().map(|d| d.abs()).collect();
        let (_, edge, _) = magnitudes.select_nth_unstable_by(top - 1, |x, y| y.total_cmp(x));
        Some(*edge)
    };
    let mut entries: Vec<Entry> = match edge {
        None => Vec::new(),
        Some(edge) => per_event
            .list
            .iter()
            .zip(&deltas)
            .filter(|(_, d)| d.abs() >= edge)
            .map(|(&(event, v, time, via, about), &delta)| {
                let mut path: Vec<String> = match walk.route(via) {
                    Some(r) => r
                        .iter()
                        .map(|p| format!("person:{}", view.name(*p)))
                        .collect(),
                    None => vec![
                        format!("person:{person}"),
                        format!("person:{}", view.name(via)),
                    ],
                };
                path.push(format!("brand:{}", view.name(about)));
                if about != b {
                    path.push(format!("brand:{brand}"));
                }
                Entry {
                    event,
                    time,
                    delta,
                    raw: v,
                    path,
                }
            })
            .collect(),
    };
    // In the order a sort by |delta| of events by reference gives, so the
    // draft is the one it always was (`finish` orders them again).
    entries.sort_by(|x, y| {
        y.delta
            .abs()
            .total_cmp(&x.delta.abs())
            .then_with(|| x.event.cmp(&y.event))
    });
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

/// The adjoint weights `y = Σ_k (αMᵀ)^k e_(person,brand)` of one
/// relationship over the graph as of a time, with the first route found to
/// each person, and the [`Span`] of times whose graph is the same for it
/// (every person it visited keeps their consent, follow and association
/// rows there), so the walk at any time in the span is this one, bit for
/// bit. It does not depend on impulses: events that only add impulses leave
/// it as it is.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The people visited, in id order (the order every sum follows).
    weights: Vec<(Handle, Weights)>,
    /// The person before each on the first route found to it (the
    /// relationship's person has none).
    before: FxHashMap<Handle, Handle>,
    person: Handle,
    span: Span,
}

impl Walk {
    /// The times this walk is the walk of.
    pub fn span(&self) -> Span {
        self.span
    }

    /// People the walk visited (its size).
    pub fn people(&self) -> usize {
        self.weights.len()
    }

    /// The first route found from the relationship's person to `to`.
    fn route(&self, to: Handle) -> Option<Vec<Handle>> {
        let mut route = vec![to];
        let mut at = to;
        while at != self.person {
            at = *self.before.get(&at)?;
            route.push(at);
        }
        route.reverse();
        Some(route)
    }
}

/// The adjoint walk `y = Σ_k (αMᵀ)^k e_(person,brand)` over the graph as
/// of `at`, with the first route found to each person and its span.
fn walk<V: ScoreView>(view: &V, person: Handle, brand: Handle, at: DateTime<Utc>) -> Walk {
    let model = view.model();
    let key = |h: Handle| (view.name(h), h);
    let alpha_f = model.propagation.audience;
    let tol = model.tolerance;
    let mut total: ByName<'_, Adjoint> = BTreeMap::new();
    let mut before: FxHashMap<Handle, Handle> = FxHashMap::default();
    let mut frontier: ByName<'_, Adjoint> = BTreeMap::new();
    frontier.insert(
        key(person),
        Adjoint {
            target: 1.0,
            ..Default::default()
        },
    );
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
                    if f != person && !before.contains_key(&f) {
                        before.insert(f, p);
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
    // Every person whose rows the walk read is in `total` (a frontier is
    // added to it before it is expanded), and their consent is what the
    // sums read too: the walk is the same wherever all of them are steady.
    let span = total.keys().fold(
        Span {
            from: None,
            until: None,
        },
        |span, &(_, p)| span.meet(view.steady(p, at)),
    );
    Walk {
        weights: total
            .into_iter()
            .map(|((_, h), y)| (h, Weights::of(y)))
            .collect(),
        before,
        person,
        span,
    }
}

/// The per-component sums of one evaluation time.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    components: [f64; 6],
    /// Whether any impulse reached the relationship (it exists).
    any: bool,
}

impl Sums {
    /// The score, if the relationship exists; summed per component first,
    /// as `explain` does, so both agree to the bit.
    fn score(&self, model: &ScoringModel) -> Option<f64> {
        self.any.then(|| model.score(self.components.iter().sum()))
    }
}

/// Every impulse that reaches (`person`, `brand`) through `walk`, summed at
/// each of `times` (which `walk` must cover): the share of an impulse at
/// or before `t` is `y[p, b_i] · x_i`, decayed to `t` and weighted, added
/// in a fixed order (people by id, each one's impulses in event order);
/// `f(person, impulse, share)` sees the shares at `times[0]`. A share of 0
/// still counts (the relationship exists, at 50) when the impulse is
/// nonzero but decayed or weighted to nothing, or when it is the
/// relationship's own interaction of 0 (a free item); a spilled impulse of
/// 0 reaches nothing, as in the batch.
fn sum_shares<V: ScoreView>(
    view: &V,
    walk: &Walk,
    person: Handle,
    brand: Handle,
    times: &[DateTime<Utc>],
    mut f: impl FnMut(Handle, &Impulse, f64),
) -> Vec<Sums> {
    let decays = Decays::of(view.model());
    let mut sums = vec![Sums::default(); times.len()];
    let Some(&until) = times.iter().max() else {
        return sums;
    };
    // Each impulse's time is converted once, not once per time it is
    // decayed to (`shares::seconds_between_nanos`, the same bits).
    let times_ns: Vec<Option<i64>> = times.iter().map(|&t| nanos(t)).collect();
    let span = |imp: &Impulse, imp_ns: Option<i64>, k: usize| match (imp_ns, times_ns[k]) {
        (Some(from), Some(to)) => seconds_between_nanos(from, to),
        _ => seconds_between(imp.time, times[k]),
    };
    // A sales credit is one impulse that many people of the walk may hold
    // (`fold::impulses`): its decayed value at each time is a function of
    // the impulse alone, so it is computed once per read and kept here
    // (`times.len()` values from the offset `shared` gives), the same bits.
    let mut shared: FxHashMap<u32, usize> = FxHashMap::default();
    let mut shared_decayed: Vec<f64> = Vec::new();
    // Many impulses share their time and component (an event's impulses,
    // a post's on several people of the walk): their decay to each time is
    // one `exp2`, computed once per read and kept here as the credits' are
    // (`times.len()` values from the offset `decay_at` gives), then scaled
    // by each amount in `decayed`'s own order, the same bits. Under
    // `benches/http_read.sh`'s rotation a read decayed 28,000 impulses at
    // 7,500 distinct (time, component, evaluation time)s.
    let mut decay_at: FxHashMap<(i64, usize), usize> = FxHashMap::default();
    let mut last_decay: Option<((i64, usize), usize)> = None;
    let mut decays_kept: Vec<f64> = Vec::new();
    let mut consenting = vec![false; times.len()];
    for (p, y) in &walk.weights {
        let p = *p;
        for (k, &t) in times.iter().enumerate() {
            consenting[k] = view.consents(p, t);
        }
        if !consenting.contains(&true) {
            continue;
        }
        view.for_each_impulse(p, until, |imp| {
            let w = y.at(imp.brand, brand);
            if w == 0.0 {
                return;
            }
            let c = imp.component;
            let own = p == person && imp.brand == brand;
            let imp_ns = nanos(imp.time);
            let kept = imp.credit.map(|credit| {
                *shared.entry(credit).or_insert_with(|| {
                    let offset = shared_decayed.len();
                    shared_decayed.extend((0..times.len()).map(|k| {
                        if imp.time > times[k] {
                            0.0
                        } else {
                            decays.decayed(c, imp.amount, span(&imp, imp_ns, k))
                        }
                    }));
                    offset
                })
            });
            let of_time = match (kept, imp_ns) {
                (None, Some(ns)) => {
                    let key = (ns, c.index());
                    Some(match last_decay {
                        Some((last, offset)) if last == key => offset,
                        _ => {
                            let offset = *decay_at.entry(key).or_insert_with(|| {
                                let offset = decays_kept.len();
                                decays_kept.extend((0..times.len()).map(|k| {
                                    if imp.time > times[k] {
                                        0.0
                                    } else {
                                        decays.decay(c, span(&imp, imp_ns, k))
                                    }
                                }));
                                offset
                            });
                            last_decay = Some((key, offset));
                            offset
                        }
                    })
                }
                _ => None,
            };
            for (k, &t) in times.iter().enumerate() {
                if imp.time > t || !consenting[k] {
                    continue;
                }
                let decayed = match (kept, of_time) {
                    (Some(offset), _) => shared_decayed[offset + k],
                    (None, Some(offset)) => {
                        decays.decayed_by(c, imp.amount, decays_kept[offset + k])
                    }
                    (None, None) => decays.decayed(c, imp.amount, span(&imp, imp_ns, k)),
                };
                let v = w * decayed;
                if v != 0.0 || imp.amount != 0.0 || own {
                    sums[k].components[c.index()] += v;
                    sums[k].any = true;
                    if k == 0 {
                        f(p, &imp, v);
                    }
                }
            }
        });
    }
    sums
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration;

    use super::*;
    use crate::generate::{GenerateConfig, write_ndjson};
    use crate::score::ScoreState;

    /// The fold's state read as if no impulse were a shared credit: every
    /// impulse decayed on its own, as before credits were kept once.
    struct Unshared<'a>(&'a FoldState);

    impl ScoreView for Unshared<'_> {
        fn model(&self) -> &ScoringModel {
            self.0.model()
        }
        fn name(&self, h: Handle) -> &EntityId {
            ScoreView::name(self.0, h)
        }
        fn handle(&self, id: &EntityId) -> Option<Handle> {
            self.0.handle(id)
        }
        fn consents(&self, person: Handle, at: DateTime<Utc>) -> bool {
            self.0.consents_h(person, at)
        }
        fn followees(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
            ScoreView::followees(self.0, person, at)
        }
        fn associations(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
            ScoreView::associations(self.0, person, at)
        }
        fn for_each_impulse(&self, p: Handle, at: DateTime<Utc>, mut f: impl FnMut(Impulse)) {
            self.0.for_each_impulse(p, at, |imp| {
                f(Impulse {
                    credit: None,
                    ..imp
                })
            });
        }
    }

    /// A relationship read decays a sales credit once for every person of
    /// its walk that holds it (task h24); its explanation and its scores at
    /// past times are the bits of decaying each person's copy alone.
    #[test]
    fn a_credit_decayed_once_per_read_reads_the_bits_of_each_copy_decayed_alone() {
        let config = GenerateConfig {
            people: 300,
            influencers: 10,
            brands: 5,
            events: 6_000,
            ..GenerateConfig::default()
        };
        let mut ndjson = Vec::new();
        write_ndjson(&config, &mut ndjson).unwrap();
        let model = ScoringModel::default_model();
        let values: Vec<serde_json::Value> = ndjson
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let valid = crate::ingest::validate_all(&values, &model.currency);
        let events = valid.good.into_iter().map(|(_, event)| event).collect();
        let state = ScoreState::build(Arc::new(model), Vec::new(), events);
        let fold: &FoldState = &state;
        assert!(fold.credits.len() > 10, "the stream credits sales lifts");
        let at = fold.latest_time().unwrap();
        let past: Vec<DateTime<Utc>> = (1..20).map(|d| at - Duration::days(d * 3)).collect();
        let bits = |r: Option<Reading>| {
            r.map(|r| {
                let past: Vec<Option<u64>> = r.past.iter().map(|s| s.map(f64::to_bits)).collect();
                (serde_json::to_string(&r.draft.explanation).unwrap(), past)
            })
        };
        let mut read = 0;
        for p in (0..20)
            .map(|i| format!("p{i}"))
            .chain((0..10).map(|i| format!("i{i}")))
        {
            for b in (0..5).map(|i| format!("b{i}")) {
                let (p, b) = (EntityId::new(&p).unwrap(), EntityId::new(&b).unwrap());
                let shared = bits(read_in(fold, &p, &b, at, &past, |_| None));
                let alone = bits(read_in(&Unshared(fold), &p, &b, at, &past, |_| None));
                assert_eq!(shared, alone, "{p} {b}");
                read += usize::from(shared.is_some());
            }
        }
        assert!(read > 30, "{read} relationships read");
    }
}
