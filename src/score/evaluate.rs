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
//!   by the parallel relationship-space driver (`relspace.rs`); the
//!   sequential walk stays here as `batch_reference`, its test oracle.
//!
//! Both iterate in id order and prune amounts below the model's tolerance, so
//! they are deterministic; they agree within the tolerance.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Components, ScoreState};
use crate::domain::{EntityId, EventId, EventKind, Sentiment};

/// One event's share in a relationship's score.
#[derive(Debug, Clone, Serialize)]
pub struct Contribution {
    pub event: EventId,
    #[serde(rename = "type")]
    pub event_type: &'static str,
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

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub person: EntityId,
    pub brand: EntityId,
    pub at: DateTime<Utc>,
    pub score: f64,
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

/// Score of one relationship in a batch evaluation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RelationScore {
    pub score: f64,
    pub raw: f64,
    pub components: Components,
}

impl RelationScore {
    /// The score of weighted component sums: raw is their sum.
    pub fn from_components(model: &super::ScoringModel, components: Components) -> Self {
        let raw: f64 = components.iter().sum();
        Self {
            score: model.score(raw),
            raw,
            components,
        }
    }
}

/// Every relationship's score at one time.
#[derive(Debug, Clone)]
pub struct BatchScores {
    pub at: DateTime<Utc>,
    pub scores: BTreeMap<(EntityId, EntityId), RelationScore>,
}

/// The adjoint weights of one person: `y[p, b]` for the target brand, one
/// value for every other brand, and corrections for associated brands.
#[derive(Debug, Clone, Default)]
struct Adjoint {
    target: f64,
    other: f64,
    extra: BTreeMap<EntityId, f64>,
}

impl Adjoint {
    fn at(&self, brand: &EntityId, target: &EntityId) -> f64 {
        if brand == target {
            self.target
        } else {
            self.other + self.extra.get(brand).copied().unwrap_or(0.0)
        }
    }
    fn add_scaled(&mut self, other: &Adjoint, k: f64) {
        self.target += k * other.target;
        self.other += k * other.other;
        for (b, v) in &other.extra {
            *self.extra.entry(b.clone()).or_insert(0.0) += k * v;
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

impl ScoreState {
    /// The score of (person, brand) at `at`, with its reasons. `None` when no
    /// event reaches the pair, or the person has withdrawn consent.
    pub fn explain(
        &self,
        person: &EntityId,
        brand: &EntityId,
        at: DateTime<Utc>,
    ) -> Option<Explanation> {
        if !self.consents(person, at) {
            return None;
        }
        let model = self.model();
        let (total, route) = self.walk(person, brand, at, true);

        let mut components = [0.0; 6];
        let mut per_event: BTreeMap<u32, (f64, EntityId, EntityId)> = BTreeMap::new();
        self.for_each_share(&total, person, brand, at, |p, imp, v| {
            components[imp.component.index()] += v;
            let entry = per_event
                .entry(imp.event)
                .or_insert((0.0, p.clone(), imp.brand.clone()));
            entry.0 += v;
        });
        if per_event.is_empty() {
            return None;
        }
        let raw: f64 = components.iter().sum();
        let score = model.score(raw);
        let mut contributions: Vec<Contribution> = per_event
            .iter()
            .map(|(&pos, (v, via, about))| {
                let event = self.event_at(pos);
                let mut path: Vec<String> = route
                    .get(via)
                    .map(|r| r.iter().map(|p| format!("person:{p}")).collect())
                    .unwrap_or_else(|| vec![format!("person:{person}"), format!("person:{via}")]);
                path.push(format!("brand:{about}"));
                if about != brand {
                    path.push(format!("brand:{brand}"));
                }
                let sentiment = match &event.kind {
                    EventKind::Post { sentiment, .. } | EventKind::Mention { sentiment, .. } => {
                        Some(*sentiment)
                    }
                    EventKind::Review { sentiment, .. } => *sentiment,
                    _ => None,
                };
                Contribution {
                    sentiment,
                    channel: event.kind.channel().map(str::to_string),
                    event: event.id.clone(),
                    event_type: event.kind.event_type().as_str(),
                    time: event.time,
                    delta: score - model.score(raw - v),
                    raw: *v,
                    path,
                }
            })
            .collect();
        let updated_at = contributions.iter().map(|c| c.time).max();
        let event_count = contributions.len();
        contributions.sort_by(|a, b| {
            b.delta
                .abs()
                .total_cmp(&a.delta.abs())
                .then_with(|| a.event.cmp(&b.event))
        });
        contributions.truncate(model.top_contributions);
        Some(Explanation {
            person: person.clone(),
            brand: brand.clone(),
            at,
            score,
            raw,
            components,
            contributions,
            event_count,
            updated_at,
        })
    }

    /// The adjoint walk `y = Σ_k (αMᵀ)^k e_(person,brand)` over the graph as
    /// of `at`; with `routes`, also the first route found to each person.
    #[allow(clippy::type_complexity)]
    fn walk(
        &self,
        person: &EntityId,
        brand: &EntityId,
        at: DateTime<Utc>,
        routes: bool,
    ) -> (
        BTreeMap<EntityId, Adjoint>,
        HashMap<EntityId, Vec<EntityId>>,
    ) {
        let model = self.model();
        let (alpha_f, alpha_a) = (model.propagation.audience, model.propagation.association);
        let tol = model.tolerance;
        let mut total: BTreeMap<EntityId, Adjoint> = BTreeMap::new();
        let mut route: HashMap<EntityId, Vec<EntityId>> = HashMap::new();
        let mut frontier: BTreeMap<EntityId, Adjoint> = BTreeMap::new();
        frontier.insert(
            person.clone(),
            Adjoint {
                target: 1.0,
                ..Default::default()
            },
        );
        if routes {
            route.insert(person.clone(), vec![person.clone()]);
        }
        for (p, y) in &frontier {
            total.entry(p.clone()).or_default().add_scaled(y, 1.0);
        }
        for _hop in 0..model.max_hops {
            let mut next: BTreeMap<EntityId, Adjoint> = BTreeMap::new();
            for (p, y) in &frontier {
                let followees = self.graph.followees(p, at);
                let attention: f64 = followees.iter().map(|(_, w)| w).sum();
                if attention > 0.0 {
                    for (f, w) in &followees {
                        next.entry(f.clone())
                            .or_default()
                            .add_scaled(y, alpha_f * w / attention);
                        if routes && !route.contains_key(f) {
                            let mut r = route[p].clone();
                            r.push(f.clone());
                            route.insert(f.clone(), r);
                        }
                    }
                }
                let assoc = self.associations_at(p, at);
                if !assoc.is_empty() {
                    let s: f64 = assoc.iter().map(|(b, a)| a * y.at(b, brand)).sum();
                    let share_target = assoc
                        .iter()
                        .find(|(b, _)| b == brand)
                        .map_or(0.0, |(_, a)| *a);
                    let mut moved = Adjoint {
                        target: alpha_a * (s - share_target * y.target),
                        other: alpha_a * s,
                        extra: BTreeMap::new(),
                    };
                    for (b, a) in &assoc {
                        if b != brand {
                            moved.extra.insert(b.clone(), -alpha_a * a * y.at(b, brand));
                        }
                    }
                    next.entry(p.clone()).or_default().add_scaled(&moved, 1.0);
                }
            }
            next.retain(|_, y| y.magnitude() >= tol);
            if next.is_empty() {
                break;
            }
            for (p, y) in &next {
                total.entry(p.clone()).or_default().add_scaled(y, 1.0);
            }
            frontier = next;
        }

        (total, route)
    }

    /// Every impulse up to `at` that reaches (`person`, `brand`) through the
    /// adjoint weights `total`: calls `f(person, impulse, share)` with its
    /// share `y[p, b_i] · x_i`, decayed to `at` and weighted, in a fixed order.
    /// A share of 0 still counts (the relationship exists, at 50) when the
    /// impulse is nonzero but decayed or weighted to nothing, or when it is
    /// the relationship's own interaction of 0 (a free item); a spilled
    /// impulse of 0 reaches nothing, as in the batch.
    fn for_each_share(
        &self,
        total: &BTreeMap<EntityId, Adjoint>,
        person: &EntityId,
        brand: &EntityId,
        at: DateTime<Utc>,
        mut f: impl FnMut(&EntityId, &super::state::Impulse, f64),
    ) {
        let model = self.model();
        for (p, y) in total {
            if !self.consents(p, at) {
                continue;
            }
            let Some(list) = self.impulses.get(p) else {
                continue;
            };
            let end = list.partition_point(|i| i.time <= at);
            for imp in &list[..end] {
                let w = y.at(&imp.brand, brand);
                if w == 0.0 {
                    continue;
                }
                let c = imp.component;
                let secs = (at - imp.time).num_milliseconds() as f64 / 1000.0;
                let v = w * imp.amount * model.decay(c, secs) * model.weight.get(c);
                if v != 0.0 || imp.amount != 0.0 || (p == person && imp.brand == *brand) {
                    f(p, imp, v);
                }
            }
        }
    }

    /// Just the score of (person, brand) at `at` (what `explain` gives,
    /// without the reasons); `None` where `explain` gives none.
    pub fn score_at(&self, person: &EntityId, brand: &EntityId, at: DateTime<Utc>) -> Option<f64> {
        if !self.consents(person, at) {
            return None;
        }
        let model = self.model();
        let (total, _) = self.walk(person, brand, at, false);
        let mut components = [0.0; 6];
        let mut any = false;
        self.for_each_share(&total, person, brand, at, |_, imp, v| {
            components[imp.component.index()] += v;
            any = true;
        });
        // Summed per component first, as `explain` does, so both agree to the bit.
        any.then(|| model.score(components.iter().sum()))
    }

    /// Every relationship's score at `at`: the relationship-space driver
    /// (`relspace`), parallel over brands and people.
    pub fn batch(&self, at: DateTime<Utc>) -> BatchScores {
        super::relspace::batch(self, at)
    }

    /// The sequential forward walk from every impulse that `batch` replaced,
    /// kept as the oracle the parallel driver is tested against
    /// (`tests/it/relspace.rs`) and benched against. Not for serving.
    #[doc(hidden)]
    pub fn batch_reference(&self, at: DateTime<Utc>) -> BatchScores {
        let model = self.model();
        let (alpha_f, alpha_a) = (model.propagation.audience, model.propagation.association);
        let tol = model.tolerance;

        let mut x: BTreeMap<(EntityId, EntityId), Components> = BTreeMap::new();
        let mut people: Vec<&EntityId> = self.impulses.keys().collect();
        people.sort();
        for p in people {
            if !self.consents(p, at) {
                continue;
            }
            let list = &self.impulses[p];
            let end = list.partition_point(|i| i.time <= at);
            for imp in &list[..end] {
                let c = imp.component;
                let secs = (at - imp.time).num_milliseconds() as f64 / 1000.0;
                let v = imp.amount * model.decay(c, secs) * model.weight.get(c);
                x.entry((p.clone(), imp.brand.clone())).or_insert([0.0; 6])[c.index()] += v;
            }
        }

        // Followers of each person with the share of their attention.
        let mut attention: HashMap<EntityId, f64> = HashMap::new();
        let edges = self.graph.follow_edges(at);
        for (q, _, w) in &edges {
            *attention.entry(q.clone()).or_insert(0.0) += w;
        }
        let mut followers: HashMap<EntityId, Vec<(EntityId, f64)>> = HashMap::new();
        for (q, p, w) in &edges {
            if self.consents(q, at) {
                followers
                    .entry(p.clone())
                    .or_default()
                    .push((q.clone(), w / attention[q]));
            }
        }
        let mut assoc_cache: HashMap<EntityId, Vec<(EntityId, f64)>> = HashMap::new();

        let mut total = x.clone();
        let mut frontier = x;
        for _hop in 0..model.max_hops {
            let mut next: BTreeMap<(EntityId, EntityId), Components> = BTreeMap::new();
            for ((p, b), v) in &frontier {
                if let Some(fs) = followers.get(p) {
                    for (q, share) in fs {
                        let e = next.entry((q.clone(), b.clone())).or_insert([0.0; 6]);
                        for (acc, vi) in e.iter_mut().zip(v) {
                            *acc += alpha_f * share * vi;
                        }
                    }
                }
                let assoc = assoc_cache
                    .entry(p.clone())
                    .or_insert_with(|| self.associations_at(p, at));
                for (b2, a) in assoc.iter() {
                    if b2 == b {
                        continue;
                    }
                    let e = next.entry((p.clone(), b2.clone())).or_insert([0.0; 6]);
                    for (acc, vi) in e.iter_mut().zip(v) {
                        *acc += alpha_a * a * vi;
                    }
                }
            }
            next.retain(|_, v| v.iter().fold(0.0f64, |m, x| m.max(x.abs())) >= tol);
            if next.is_empty() {
                break;
            }
            for (k, v) in &next {
                let e = total.entry(k.clone()).or_insert([0.0; 6]);
                for (acc, vi) in e.iter_mut().zip(v) {
                    *acc += vi;
                }
            }
            frontier = next;
        }
        let scores = total
            .into_iter()
            .filter(|((p, _), _)| self.consents(p, at))
            .map(|(k, components)| (k, RelationScore::from_components(model, components)))
            .collect();
        BatchScores { at, scores }
    }
}
