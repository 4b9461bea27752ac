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
//!   contributes `y[p,b'] · x_i`, which is what the explanation lists. The
//!   sums are taken per (person, brand, component) from running decayed
//!   sums (`fold::sums`, task h35), the reasons from each one's largest
//!   impulses, so a read costs the series it reaches, not their impulses.
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
use crate::score::fold::sums::span_seconds;
use crate::score::model::{Components, ScoringModel};
use crate::score::shares::{Decays, attention_share};

use super::view::{PersonSums, ScoreView, Span};

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

    /// The adjoint walk of (`person`, `brand`) at `at`, as [`FoldState::read`]
    /// takes it where `cached` gives none (so a caller that times or keeps
    /// walks can take them itself); `None` when either is unknown.
    pub fn walk(&self, person: &EntityId, brand: &EntityId, at: DateTime<Utc>) -> Option<Walk> {
        let (p, b) = (self.handle(person)?, self.handle(brand)?);
        Some(walk(self, p, b, at))
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
    let sums = sum_shares(view, &walk, p, b, &[at]);
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
        let sums = sum_shares(view, walk, p, b, &times);
        let past_sums = if w == first {
            let moved = moved(view, walk, p, b, at);
            draft = Some(drafted(view, walk, person, brand, b, at, &sums[0], moved)?);
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
    moved: Moved,
) -> Option<ExplanationDraft> {
    if !sums.any || moved.candidates.is_empty() {
        return None;
    }
    let model = view.model();
    let components = sums.components;
    let raw: f64 = components.iter().sum();
    let score = model.score(raw);
    let deltas: Vec<f64> = moved
        .candidates
        .iter()
        .map(|&(_, v, ..)| score - model.score(raw - v))
        .collect();
    let updated_at = moved.latest;
    let event_count = moved.count;
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
        Some(edge) => moved
            .candidates
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
/// each of `times` (which `walk` must cover): the share of the impulses of
/// one (person `p`, brand `b'`, component) at or before `t` is
/// `y[p, b'] · D · 2^(-(t − t_D)/h)`, their running decayed sum
/// (`fold::sums`) at its latest impulse then, weighted, added in a fixed
/// order (people by id, each one's series in the order their first
/// impulses came). `O(series reached · log n)` per time, whatever the
/// impulses. A series counts (the relationship exists, at 50 if nothing
/// else) when an impulse of it at or before `t` is nonzero, or is the
/// relationship's own interaction of 0 (a free item); one of only spilled
/// zeros reaches nothing, as in the batch.
fn sum_shares<V: ScoreView>(
    view: &V,
    walk: &Walk,
    person: Handle,
    brand: Handle,
    times: &[DateTime<Utc>],
) -> Vec<Sums> {
    let decays = Decays::of(view.model());
    let mut sums = vec![Sums::default(); times.len()];
    let mut consenting = vec![false; times.len()];
    for (p, y) in &walk.weights {
        let p = *p;
        for (k, &t) in times.iter().enumerate() {
            consenting[k] = view.consents(p, t);
        }
        if !consenting.contains(&true) {
            continue;
        }
        let Some(person_sums) = view.person_sums(p) else {
            continue;
        };
        debug_assert!(person_sums.fits(view.model()), "sums of another model");
        for series in &person_sums.series {
            let w = y.at(series.brand, brand);
            if w == 0.0 {
                continue;
            }
            let own = p == person && series.brand == brand;
            let c = series.component.index();
            for (k, &t) in times.iter().enumerate() {
                if !consenting[k] {
                    continue;
                }
                let Some(j) = series.upto(t) else {
                    continue;
                };
                if series.counts(j, own) {
                    sums[k].components[c] += w * series.value(&decays, j, t);
                    sums[k].any = true;
                }
            }
        }
    }
    sums
}

/// The events that moved (`person`, `brand`) at `at` through `walk`, as
/// the explanation lists them: the candidates for its largest
/// contributions with their exact shares, how many events moved it, and
/// when the latest did.
struct Moved {
    /// (event, share, time, the person it happened to, the brand it was
    /// about), by event reference.
    candidates: Vec<(u64, f64, DateTime<Utc>, Handle, Handle)>,
    count: usize,
    latest: Option<DateTime<Utc>>,
}

/// Whether impulse `i` of `series`, held by the walk's person `p` (weights
/// `y`), counts for the relationship read: at or before `at`, on a brand
/// the walk weighs for `brand`, and of nonzero amount unless it is the
/// relationship's own (a zero own impulse is still one of its events).
fn reaches(
    p: Handle,
    y: &Weights,
    series: &crate::score::fold::sums::Series,
    i: u32,
    (person, brand): (Handle, Handle),
    at: DateTime<Utc>,
) -> bool {
    let own = p == person && series.brand == brand;
    let (amount, time) = series.at(i);
    time <= at && y.at(series.brand, brand) != 0.0 && (own || amount != 0.0)
}

/// [`Moved`] from the people's sums, without a pass over their impulses:
/// each reached series gives its impulses at or before `at` largest first
/// (`fold::sums::Series::largest`) while they are among the
/// `3 · top_contributions` largest impulse shares seen (ties kept); an
/// event with impulses in several series of one person is a candidate too
/// when a bound of their sum reaches the smallest of those
/// (`spanning_candidates`), and one held by several people of the walk
/// when the sum of its copies' magnitudes does.
/// Each candidate's share is then summed exactly, over every impulse of
/// that event the walk reaches, in the order a pass over every impulse
/// added them (the same bits). The count is each person's events by prefix
/// counts, an event counted in several series or for several people of
/// the walk once. Where a score saturates (every delta 0 at 100), the
/// deltas all tie and the listed are the largest shares, not the smallest
/// event ids of every event as a pass over all of them gave.
fn moved<V: ScoreView>(
    view: &V,
    walk: &Walk,
    person: Handle,
    brand: Handle,
    at: DateTime<Utc>,
) -> Moved {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let model = view.model();
    let decays = Decays::of(model);
    let want = 3 * model.top_contributions.max(1);
    let people: Vec<(Handle, &Weights, Arc<PersonSums>)> = walk
        .weights
        .iter()
        .filter(|(p, _)| view.consents(*p, at))
        .filter_map(|(p, y)| Some((*p, y, view.person_sums(*p)?)))
        .collect();
    debug_assert!(
        people.iter().all(|(_, _, s)| s.fits(model)),
        "sums of another model"
    );
    let mut count = 0;
    let mut latest: Option<DateTime<Utc>> = None;
    // The `want` largest |shares| seen, smallest on top, and every share
    // pushed (those below the final edge are dropped after: ties stay).
    let mut heap: BinaryHeap<Reverse<Magnitude>> = BinaryHeap::with_capacity(want + 1);
    let mut pushed: Vec<(f64, u64)> = Vec::new();
    let mut largest_weight: Vec<f64> = Vec::with_capacity(people.len());
    for (p, y, sums) in &people {
        // How this person's events are counted: every series reached (the
        // person's distinct events), the series of one brand (no event
        // has two impulses on one brand), or some of several brands (the
        // events spanning them seen one by one).
        let mut all = true;
        let mut brands: Option<(Handle, bool)> = None;
        let mut counted = 0;
        let mut zeros = 0;
        let mut weight: f64 = 0.0;
        for series in &sums.series {
            let w = y.at(series.brand, brand);
            if w == 0.0 {
                all = false;
                continue;
            }
            weight = weight.max(w.abs());
            let own = *p == person && series.brand == brand;
            let Some(j) = series.upto(at) else {
                continue;
            };
            brands = match brands {
                None => Some((series.brand, false)),
                Some((b, several)) => Some((b, several || b != series.brand)),
            };
            if !series.counts(j, own) {
                continue;
            }
            counted += series.events(j, own);
            if own {
                zeros += series.events(j, true) - series.events(j, false);
            }
            latest = latest.max(series.latest(j, own));
            for (event, amount, time) in series.largest(j, own) {
                let v =
                    (w * decays.decayed(series.component, amount, span_seconds(time, at))).abs();
                if heap.len() == want && heap.peek().is_some_and(|Reverse(m)| v < m.0) {
                    break;
                }
                pushed.push((v, event));
                heap.push(Reverse(Magnitude(v)));
                if heap.len() > want {
                    heap.pop();
                }
            }
        }
        largest_weight.push(weight);
        count += if all {
            sums.events_until(at) + zeros
        } else if brands.is_some_and(|(_, several)| several) {
            let mut seen: FxHashMap<u64, ()> = FxHashMap::default();
            for &(event, s, i) in &sums.spanning {
                let series = &sums.series[s as usize];
                if reaches(*p, y, series, i, (person, brand), at)
                    && seen.insert(event, ()).is_some()
                {
                    counted -= 1;
                }
            }
            counted
        } else {
            counted
        };
    }
    let edge = match heap.peek() {
        Some(Reverse(m)) if heap.len() == want => m.0,
        _ => 0.0,
    };
    // An event of a rule that moves several people (a sales credit, a
    // cause, an occasion: `fold::sums`) held by several people of the walk
    // is one event, and its share the sum of their copies: a candidate
    // when that sum of magnitudes reaches the edge (each copy alone may
    // not).
    let mut held: Vec<u64> = Vec::new();
    if people
        .iter()
        .filter(|(.., s)| !s.multi_person.is_empty())
        .count()
        > 1
    {
        // The first person holding each, and the copies' magnitudes once a
        // second holds it.
        let mut seen: FxHashMap<u64, (usize, u32, u32, Option<f64>)> = FxHashMap::default();
        let magnitude = |k: usize, s: u32, i: u32| {
            let (_, y, sums) = &people[k];
            let series = &sums.series[s as usize];
            let (amount, time) = series.at(i);
            (y.at(series.brand, brand)
                * decays.decayed(series.component, amount, span_seconds(time, at)))
            .abs()
        };
        for (k, (p, y, sums)) in people.iter().enumerate() {
            for &(event, s, i) in &sums.multi_person {
                if !reaches(*p, y, &sums.series[s as usize], i, (person, brand), at) {
                    continue;
                }
                match seen.entry(event) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert((k, s, i, None));
                    }
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        let (first, fs, fi, sum) = e.get_mut();
                        if *first == k {
                            continue;
                        }
                        count -= 1;
                        let before = sum.unwrap_or_else(|| magnitude(*first, *fs, *fi));
                        *sum = Some(before + magnitude(k, s, i));
                    }
                }
            }
        }
        held.extend(
            seen.into_iter()
                .filter(|(_, x)| x.3.is_some_and(|m| m >= edge))
                .map(|(e, _)| e),
        );
    }
    let mut events: Vec<u64> = pushed
        .into_iter()
        .filter(|&(v, _)| v >= edge)
        .map(|(_, e)| e)
        .collect();
    events.extend(held);
    // An event with impulses in several series of one person may be large
    // only as their sum: a candidate when a bound of it reaches the edge.
    for ((_, _, sums), &weight) in people.iter().zip(&largest_weight) {
        events.extend(sums.spanning_candidates(at, weight, edge));
    }
    events.sort_unstable();
    events.dedup();
    let candidates = events
        .into_iter()
        .filter_map(|event| {
            let mut share = 0.0;
            let mut first = None;
            for (p, y, sums) in &people {
                for (series, amount, time) in sums.of_event(event) {
                    let w = y.at(series.brand, brand);
                    if time > at || w == 0.0 {
                        continue;
                    }
                    let own = *p == person && series.brand == brand;
                    let v = w * decays.decayed(series.component, amount, span_seconds(time, at));
                    if v != 0.0 || amount != 0.0 || own {
                        share += v;
                        first.get_or_insert((time, *p, series.brand));
                    }
                }
            }
            first.map(|(time, via, about)| (event, share, time, via, about))
        })
        .collect();
    Moved {
        candidates,
        count,
        latest,
    }
}

/// An `f64` ordered by `total_cmp` (the candidates' heap).
#[derive(Debug, Clone, Copy)]
struct Magnitude(f64);

impl PartialEq for Magnitude {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for Magnitude {}
impl PartialOrd for Magnitude {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Magnitude {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration;

    use super::*;
    use crate::score::ScoreState;

    /// A state of a generated stream (influencers, brand associations,
    /// occasions and sales credits, causes).
    fn generated() -> ScoreState {
        let model = ScoringModel::default_model();
        let events = crate::generate::small_generated_events(&model);
        ScoreState::build(Arc::new(model), Vec::new(), events)
    }

    /// An event's share and time.
    type EventShare = (u64, f64, DateTime<Utc>);

    /// What a pass over every impulse the walk reaches gives at `at` (the
    /// read before task h35): the weighted components, each one decayed
    /// alone, and every event's share with its time, in first-seen order.
    fn every_impulse(
        fold: &FoldState,
        walk: &Walk,
        person: Handle,
        brand: Handle,
        at: DateTime<Utc>,
    ) -> ([f64; 6], Vec<EventShare>) {
        let model = fold.model();
        let mut components = [0.0; 6];
        let mut events: Vec<EventShare> = Vec::new();
        let mut index: FxHashMap<u64, usize> = FxHashMap::default();
        for (p, y) in &walk.weights {
            if !fold.consents_h(*p, at) {
                continue;
            }
            ScoreView::for_each_impulse(fold, *p, at, |imp| {
                let w = y.at(imp.brand, brand);
                let own = *p == person && imp.brand == brand;
                let v = w * crate::score::shares::decayed(
                    model,
                    imp.component,
                    imp.amount,
                    imp.time,
                    at,
                );
                if w != 0.0 && (v != 0.0 || imp.amount != 0.0 || own) {
                    components[imp.component.index()] += v;
                    let i = *index.entry(imp.event).or_insert_with(|| {
                        events.push((imp.event, 0.0, imp.time));
                        events.len() - 1
                    });
                    events[i].1 += v;
                }
            });
        }
        (components, events)
    }

    /// The read sums each (person, brand, component) as a running decayed
    /// sum and picks its reasons from each one's largest impulses (task
    /// h35, issue #11's 100 µs read), where it decayed every impulse it
    /// reached: its components are that pass's to within rounding, it
    /// counts the same events with the same latest time, and the reasons
    /// it lists are the same events with the same shares, to the bit.
    #[test]
    fn a_read_from_the_sums_lists_what_a_pass_over_every_impulse_lists() {
        let state = generated();
        let fold: &FoldState = &state;
        assert!(fold.credits.len() > 10, "the stream credits sales lifts");
        let model = fold.model();
        let latest = fold.latest_time().unwrap();
        let mut read = 0;
        let mut listed = 0;
        for at in [
            latest,
            latest - Duration::days(20),
            latest + Duration::days(9),
        ] {
            for p in (0..40)
                .map(|i| format!("p{i}"))
                .chain((0..10).map(|i| format!("i{i}")))
            {
                for b in (0..5).map(|i| format!("b{i}")) {
                    let (person, brand) = (EntityId::new(&p).unwrap(), EntityId::new(&b).unwrap());
                    let (Some(ph), Some(bh)) = (fold.handle(&person), fold.handle(&brand)) else {
                        continue;
                    };
                    let walk = walk(fold, ph, bh, at);
                    let (components, events) = every_impulse(fold, &walk, ph, bh, at);
                    let draft = explain_in(fold, &person, &brand, at);
                    let Some(draft) = draft else {
                        assert!(
                            events.is_empty(),
                            "{p} {b} {at}: no read, {} events",
                            events.len()
                        );
                        continue;
                    };
                    read += 1;
                    let e = &draft.explanation;
                    for (c, (sum, pass)) in e.components.iter().zip(components).enumerate() {
                        assert!(
                            (sum - pass).abs() <= 1e-12 * (1.0 + pass.abs()),
                            "{p} {b} {at}: component {c} {sum} against {pass}"
                        );
                    }
                    assert_eq!(e.event_count, events.len(), "{p} {b} {at}");
                    assert_eq!(
                        e.updated_at,
                        events.iter().map(|e| e.2).max(),
                        "{p} {b} {at}"
                    );
                    // The listed: the `top` largest by |delta| and their ties.
                    let delta = |v: f64| (e.score - model.score(e.raw - v)).abs();
                    let mut by_delta: Vec<f64> = events.iter().map(|x| delta(x.1)).collect();
                    by_delta.sort_by(|x, y| y.total_cmp(x));
                    let edge = by_delta
                        .get(model.top_contributions - 1)
                        .copied()
                        .unwrap_or(f64::NEG_INFINITY);
                    let mut want: Vec<(u64, u64)> = events
                        .iter()
                        .filter(|x| delta(x.1) >= edge)
                        .map(|x| (x.0, x.1.to_bits()))
                        .collect();
                    let mut got: Vec<(u64, u64)> = draft
                        .entries
                        .iter()
                        .map(|x| (x.event, x.raw.to_bits()))
                        .collect();
                    want.sort_unstable();
                    got.sort_unstable();
                    assert_eq!(got, want, "{p} {b} {at}");
                    listed += got.len();
                }
            }
        }
        assert!(
            read > 100 && listed > 1_000,
            "{read} relationships read, {listed} listed"
        );
    }
}
