//! What-if (`POST /v1/simulate`, issue #13): the score changes events
//! would cause, or a model would, without storing or changing anything.
//!
//! It runs on an **overlay over the fold's state**, never on a copy of it:
//! [`Overlay`] holds only what the simulated events add (their impulses,
//! follow and association edits, audience reports, consent changes and the
//! entities they name first), computed by the fold's own impulse rules
//! (`fold::rules`) from the context the state and the overlay give at each
//! event's time; [`Overlaid`] is a [`ScoreView`] that reads the state
//! through the overlay. Then, when the live series answers for `at` and
//! the model is the state's (**the difference**, [`difference`]):
//! 1. the overlay's difference (its impulses, and for the rows it edits
//!    the push driver's edge-change residual from the live scores before)
//!    is pushed forward over the overlaid graph at the model's
//!    `live_tolerance` with the push driver's arithmetic: every reached
//!    relationship's change of raw score, within a bound the answer gives;
//! 2. before (the live series) and before + change rank the movers and
//!    make the brand summaries and the distribution;
//! 3. only the top movers are scored before (the state) and after (the
//!    overlaid view) by the adjoint walk a relationship read runs, with
//!    the after-state's reasons, so the movers listed are bit-equal to
//!    simulating events and then storing them (`tests/it/simulate.rs`).
//!
//! Else (**exact**: an overridden model, an `at` before the latest stored
//! event, a series catching up): the relationships the events reach are
//! found by a forward walk from what the overlay changed, pruned at
//! `live_tolerance`, and each is scored before and after by the adjoint
//! walk; the top movers get the after-state's reasons. Each walk reads
//! every impulse of every person it visits: an influencer's post on a
//! 1,000,000-event store reaches thousands of relationships at about
//! 0.1 s each, past the 5 s bound, which the difference avoids.
//!
//! Model-only what-if ([`model_whatif`]): a brand's relationships scored
//! under the state's model and under an overridden one (weights,
//! half-lives and propagation constants apply at read time, so the
//! impulses stand), summarised as a distribution of deltas.
//!
//! Bounds: the caller's `stop` is asked between units of work (one
//! relationship scored, one event folded, one hop): the engine passes its
//! deadline. No IO, no clock.
//!
//! Limits, said here once: a simulated follow, unfollow or consent change
//! takes its place in the history of what it touches (a stored change
//! after it still wins, as it would once stored: `Edit::holds_at`), but a
//! simulated event earlier than stored ones is otherwise read as their
//! latest change (an endorsement is not folded into the strengths later
//! stored ones built on), and the state's own impulses are not re-derived
//! from a context the simulated events would have changed before them (an
//! audience report dated before stored posts does not change their reach);
//! occasions and brand sales reports are not simulated (their effects
//! reach back through the log); a relationship missing on one side (new,
//! or a withdrawn consent) counts as 50, the neutral score, in deltas.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::fold::rules::{
    Contact, audience_growth, cause_impulse, purchase_impulse, review_impulse, service_impulse,
    talk_impulse,
};
use super::fold::{FoldState, normalised_associations, role_kind};
use super::live::LiveAt;
use super::model::{Component, ScoringModel};
use super::propagate::adjoint::{ExplanationDraft, explain_in, score_in};
use super::propagate::push::spread;
use super::propagate::view::{Impulse, PersonSums, ScoreView};
use super::shares::{attention_share, decayed};
use crate::domain::{EntityId, EntityKind, Event, EventKind, EventType};
use crate::graph::{EdgeKind, Handle};

/// The bit that marks an impulse's event reference as a simulated event's
/// index in [`Overlay::events`] (a log position never has it).
pub const SIMULATED: u64 = 1 << 63;

/// Events a simulation takes at most (more: the caller answers 413).
pub const MAX_EVENTS: usize = 10_000;

/// Relationships of a brand a model-only what-if rescores at most (in id
/// order; the answer says when it stopped there).
pub const MAX_RELATIONSHIPS: usize = 20_000;

/// Why a simulation did not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulateError {
    /// The caller's `stop` said the time bound was reached.
    #[error(
        "the simulation stopped at its time bound after {done} units of work; simulate fewer \
         events, or a brand with fewer relationships"
    )]
    OutOfTime {
        /// Units of work done (events folded, relationships scored).
        done: usize,
    },
    /// An event names an entity in a role its kind cannot play.
    #[error("event {index}: {message}")]
    Role {
        /// The event's index in the request.
        index: usize,
        /// Its field naming the entity.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// An event of a type the overlay does not simulate.
    #[error(
        "event {index}: {event_type} events are not simulated (their effects reach back \
         through the log); leave them out"
    )]
    Unsupported {
        /// The event's index in the request.
        index: usize,
        /// Its type's wire name.
        event_type: &'static str,
    },
}

/// A person's row: (entity, strength or share), sorted by id.
type Row = Vec<(Handle, f64)>;

/// One follow or association edit of the overlay.
#[derive(Debug, Clone, Copy)]
struct Edit {
    from: Handle,
    to: Handle,
    kind: EdgeKind,
    time: DateTime<Utc>,
    weight: Option<f64>,
}

impl Edit {
    /// Whether this simulated change of an edge holds at `at`: made by
    /// then, and not overridden by a later stored change of the same edge.
    /// A simulated event takes its place in the edge's history, as storing
    /// it would (red team: a simulated follow before a stored unfollow
    /// used to outlive the unfollow).
    fn holds_at(&self, base: &FoldState, base_len: usize, at: DateTime<Utc>) -> bool {
        self.time <= at
            && !(self.from.index() < base_len
                && self.to.index() < base_len
                && base
                    .graph
                    .edge_changed_between(self.from, self.to, self.kind, self.time, at))
    }
}

/// What simulated events add to a state (module docs). Built by
/// [`Overlay::fold`]; read through [`Overlaid`].
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    /// Handles from here on are the overlay's own entities.
    base_len: usize,
    names: Vec<(EntityId, EntityKind)>,
    index: FxHashMap<EntityId, Handle>,
    impulses: FxHashMap<Handle, Vec<Impulse>>,
    /// Edits by source, in canonical order.
    edits: FxHashMap<Handle, Vec<Edit>>,
    /// Follow edits by target (the forward walk's followers).
    followed: FxHashMap<Handle, Vec<Edit>>,
    audience: FxHashMap<Handle, Vec<(DateTime<Utc>, u64)>>,
    consent: FxHashMap<Handle, Vec<(DateTime<Utc>, bool)>>,
    /// (occasion, person): attendance the overlay recorded.
    joined: Vec<(Handle, Handle)>,
    /// The simulated events, in canonical order, with their request index.
    events: Vec<(usize, Event)>,
    /// People's sums built for this overlay's reads ([`SumsMemo`]).
    sums: SumsMemo,
}

/// The sums of the people an overlay's reads built, per person, for each
/// set of half-lives asked (`PersonSums::fits`): a person the overlay adds
/// impulses to, or a what-if that overrides a half-life, cannot use the
/// state's kept sums, and the walks of one simulation visit the same
/// people again and again (an influencer for every follower's
/// relationship); red team h39 measured such what-ifs 1.5 to 2.6 times
/// slower than with kept sums when each visit built them anew. Building
/// is a function of the person's impulses and the model, so which thread
/// builds first does not change a bit. Lives as long as its overlay (one
/// simulation); a clone starts empty.
#[derive(Debug, Default)]
struct SumsMemo(parking_lot::Mutex<FxHashMap<Handle, Vec<Arc<PersonSums>>>>);

impl Clone for SumsMemo {
    fn clone(&self) -> Self {
        SumsMemo::default()
    }
}

impl SumsMemo {
    /// The sums of `person` built for `model`'s half-lives, or built now.
    fn get(
        &self,
        person: Handle,
        model: &ScoringModel,
        build: impl FnOnce() -> Option<Arc<PersonSums>>,
    ) -> Option<Arc<PersonSums>> {
        if let Some(kept) = self
            .0
            .lock()
            .get(&person)
            .and_then(|all| all.iter().find(|s| s.fits(model)))
        {
            return Some(Arc::clone(kept));
        }
        let built = build()?;
        self.0
            .lock()
            .entry(person)
            .or_default()
            .push(Arc::clone(&built));
        Some(built)
    }
}

/// The state read through an overlay, scored with `model` (the state's, or
/// an overridden one): a [`ScoreView`].
#[derive(Debug, Clone, Copy)]
pub struct Overlaid<'a> {
    base: &'a FoldState,
    overlay: &'a Overlay,
    model: &'a ScoringModel,
}

impl Overlay {
    /// An overlay that adds nothing (model-only what-if).
    pub fn empty(base: &FoldState) -> Self {
        Self {
            base_len: base.table().len(),
            ..Self::default()
        }
    }

    /// The simulated events, in canonical order, with their request index.
    pub fn events(&self) -> &[(usize, Event)] {
        &self.events
    }

    /// The simulated event an impulse reference names (`SIMULATED` set).
    pub fn event(&self, reference: u64) -> Option<&(usize, Event)> {
        (reference & SIMULATED != 0)
            .then(|| self.events.get((reference & !SIMULATED) as usize))
            .flatten()
    }

    /// Folds `events` (with their index in the request) over `base`, in
    /// canonical order, by the fold's rules. A repeated id is one event
    /// (the first), as in the log. Errors: a role conflict, an event type
    /// not simulated, or `stop`.
    pub fn fold(
        base: &FoldState,
        mut events: Vec<(usize, Event)>,
        stop: impl Fn() -> bool + Sync,
    ) -> Result<Self, SimulateError> {
        let mut pending: HashMap<EntityId, EntityKind> = HashMap::new();
        for (index, e) in &events {
            if let Err(c) = base.check_roles(e, &mut pending) {
                return Err(SimulateError::Role {
                    index: *index,
                    field: c.field,
                    message: c.message,
                });
            }
            if matches!(
                e.kind.event_type(),
                EventType::Occasion | EventType::BrandSales
            ) {
                return Err(SimulateError::Unsupported {
                    index: *index,
                    event_type: e.kind.event_type().as_str(),
                });
            }
        }
        events.sort_by(|(_, a), (_, b)| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let mut seen = BTreeSet::new();
        events.retain(|(_, e)| seen.insert(e.id.clone()));
        let mut overlay = Overlay::empty(base);
        for (i, (_, event)) in events.iter().enumerate() {
            if stop() {
                return Err(SimulateError::OutOfTime { done: i });
            }
            for (id, role) in event.references() {
                let kind = pending.get(id).copied().unwrap_or(role_kind(role));
                overlay.ensure(base, id, kind);
            }
            overlay.apply(base, event, SIMULATED | i as u64);
        }
        overlay.events = events;
        Ok(overlay)
    }

    fn ensure(&mut self, base: &FoldState, id: &EntityId, kind: EntityKind) -> Handle {
        if let Some(h) = base.handle(id).or_else(|| self.index.get(id).copied()) {
            return h;
        }
        let h = Handle::from_index(
            u32::try_from(self.base_len + self.names.len()).expect("fewer than 2^32 entities"),
        );
        self.names.push((id.clone(), kind));
        self.index.insert(id.clone(), h);
        h
    }

    fn h(&self, base: &FoldState, id: &EntityId) -> Handle {
        base.handle(id)
            .or_else(|| self.index.get(id).copied())
            .expect("fold ensures every entity an event names")
    }

    fn kind(&self, base: &FoldState, h: Handle) -> EntityKind {
        match h.index().checked_sub(self.base_len) {
            Some(i) => self.names[i].1,
            None => base.table().kind(h),
        }
    }

    fn push(&mut self, person: Handle, imp: Impulse, direct: bool) {
        // As the fold: a spilled impulse of 0 (or not finite) is dropped,
        // a person's own interaction of 0 is kept (it makes the relationship).
        if !direct && (imp.amount == 0.0 || !imp.amount.is_finite()) {
            return;
        }
        self.impulses.entry(person).or_default().push(imp);
        // Sums built before this impulse would miss it.
        self.sums.0.get_mut().remove(&person);
    }

    fn edit(&mut self, e: Edit) {
        if e.kind == EdgeKind::Follow {
            self.followed.entry(e.to).or_default().push(e);
        }
        self.edits.entry(e.from).or_default().push(e);
    }

    /// What the fold's `fold_rules` does for `event`, into the overlay.
    fn apply(&mut self, base: &FoldState, event: &Event, reference: u64) {
        let model = base.model();
        let imp = model.impulse;
        let t = event.time;
        let impulse = |brand: Handle, component: Component, amount: f64| Impulse {
            brand,
            component,
            time: t,
            amount,
            event: reference,
            credit: None,
        };
        use EventKind::*;
        match &event.kind {
            Purchase {
                person,
                brand,
                amount,
                currency,
                ..
            } => {
                let (p, b) = (self.h(base, person), self.h(base, brand));
                let value = model.currency.to_base(*amount, *currency);
                let x = value.map_or(0.0, |v| purchase_impulse(&imp, v));
                self.push(p, impulse(b, Component::Sales, x), true);
            }
            Post {
                person,
                brand,
                sentiment,
                ..
            }
            | Mention {
                person,
                brand,
                sentiment,
                ..
            } => {
                let w = if event.kind.event_type() == EventType::Post {
                    imp.post
                } else {
                    imp.mention
                };
                let (p, b) = (self.h(base, person), self.h(base, brand));
                let reach = self.followers(base, p, t) as f64;
                let x = talk_impulse(&imp, w, sentiment.value, reach);
                self.push(p, impulse(b, Component::Sentiment, x), true);
            }
            Review {
                person,
                brand,
                rating,
                sentiment,
                ..
            } => {
                let (p, b) = (self.h(base, person), self.h(base, brand));
                let x = review_impulse(&imp, *rating, sentiment.map(|s| s.value));
                self.push(p, impulse(b, Component::Sentiment, x), true);
            }
            Service {
                person,
                brand,
                csat,
                effort,
                resolved,
                wait_seconds,
                transfers,
                ..
            } => {
                let contact = Contact {
                    csat: *csat,
                    effort: *effort,
                    resolved: *resolved,
                    wait_seconds: *wait_seconds,
                    transfers: *transfers,
                };
                let (p, b) = (self.h(base, person), self.h(base, brand));
                let x = service_impulse(&imp, &contact);
                self.push(p, impulse(b, Component::Service, x), true);
            }
            Endorsement {
                person,
                brand,
                strength,
            } => {
                let (p, b) = (self.h(base, person), self.h(base, brand));
                let x = imp.endorsement * strength;
                self.push(p, impulse(b, Component::Engagement, x), false);
                self.edit(Edit {
                    from: p,
                    to: b,
                    kind: EdgeKind::Association,
                    time: t,
                    weight: Some(*strength),
                });
            }
            Audience { person, followers } => {
                let p = self.h(base, person);
                let before = self.followers(base, p, t);
                self.audience.entry(p).or_default().push((t, *followers));
                if let Some(growth) = audience_growth(&imp, before, *followers) {
                    let view = self.view(base, model);
                    let shares = normalised_associations(view.associations(p, t));
                    for (b, share) in shares {
                        self.push(p, impulse(b, Component::Influence, growth * share), false);
                    }
                }
            }
            Follow {
                person,
                target,
                strength,
            } => {
                let (p, target) = (self.h(base, person), self.h(base, target));
                self.edit(Edit {
                    from: p,
                    to: target,
                    kind: EdgeKind::Follow,
                    time: t,
                    weight: Some(*strength),
                });
                if self.kind(base, target) == EntityKind::Brand {
                    let x = imp.follow_brand * strength;
                    self.push(p, impulse(target, Component::Engagement, x), false);
                }
            }
            Unfollow { person, target } => {
                let (p, target) = (self.h(base, person), self.h(base, target));
                let was = self.edge_weight(base, p, target, EdgeKind::Follow, t);
                self.edit(Edit {
                    from: p,
                    to: target,
                    kind: EdgeKind::Follow,
                    time: t,
                    weight: None,
                });
                if let (Some(w), EntityKind::Brand) = (was, self.kind(base, target)) {
                    let x = -imp.follow_brand * w;
                    self.push(p, impulse(target, Component::Engagement, x), false);
                }
            }
            Attendance { person, occasion } => {
                let (p, o) = (self.h(base, person), self.h(base, occasion));
                let joined = base.has_joined(o, p, false) || self.joined.contains(&(o, p));
                if !joined {
                    self.joined.push((o, p));
                    if let Some(host) = base.occasion_host(o) {
                        self.push(
                            p,
                            impulse(host, Component::Engagement, imp.attendance),
                            false,
                        );
                    }
                }
            }
            Cause {
                brand,
                tags,
                amount,
                currency,
            } => {
                let amount = model.currency.to_base(*amount, *currency).unwrap_or(0.0);
                let b = self.h(base, brand);
                let mut people: Vec<Handle> = Vec::new();
                for tag in tags {
                    people.extend(base.interested(&tag.to_lowercase()));
                }
                base.table().sort(&mut people);
                people.dedup();
                let x = cause_impulse(&imp, amount);
                for p in people {
                    self.push(p, impulse(b, Component::Values, x), false);
                }
            }
            Consent { person, granted } => {
                let p = self.h(base, person);
                self.consent.entry(p).or_default().push((t, *granted));
            }
            // Refused by `fold` before any event is applied.
            Occasion { .. } | BrandSales { .. } => {}
        }
    }

    /// Follower count of `p` at `t`: the overlay's latest audience report,
    /// else the state's.
    fn followers(&self, base: &FoldState, p: Handle, t: DateTime<Utc>) -> u64 {
        if let Some(series) = self.audience.get(&p) {
            let pos = series.partition_point(|(s, _)| *s <= t);
            if pos > 0 {
                return series[pos - 1].1;
            }
        }
        if p.index() < self.base_len {
            base.followers_h(p, t)
        } else {
            0
        }
    }

    fn edge_weight(
        &self,
        base: &FoldState,
        from: Handle,
        to: Handle,
        kind: EdgeKind,
        t: DateTime<Utc>,
    ) -> Option<f64> {
        let edit = self
            .edits
            .get(&from)
            .into_iter()
            .flatten()
            .rfind(|e| e.to == to && e.kind == kind && e.holds_at(base, self.base_len, t));
        match edit {
            Some(e) => e.weight,
            None if from.index() < self.base_len && to.index() < self.base_len => {
                base.graph.edge_weight(from, to, kind, t)
            }
            None => None,
        }
    }

    /// The state read through this overlay, scored with `model`.
    pub fn view<'a>(&'a self, base: &'a FoldState, model: &'a ScoringModel) -> Overlaid<'a> {
        Overlaid {
            base,
            overlay: self,
            model,
        }
    }

    /// Every (person, brand) whose inputs the overlay changes at or before
    /// `at`, with a magnitude to walk forward from (raw units): an
    /// impulse's weighted, decayed amount; a changed row's, or a consent
    /// change's, brands with magnitude 1 (they may move by anything).
    fn seeds(&self, view: &Overlaid<'_>, at: DateTime<Utc>) -> BTreeMap<(Handle, Handle), f64> {
        let mut seeds: BTreeMap<(Handle, Handle), f64> = BTreeMap::new();
        for (&p, list) in &self.impulses {
            for imp in list.iter().filter(|i| i.time <= at) {
                let v = decayed(view.model, imp.component, imp.amount, imp.time, at).abs();
                // A relationship the event makes is reached even at 0.
                *seeds.entry((p, imp.brand)).or_default() += v.max(f64::MIN_POSITIVE);
            }
        }
        let mut rows: Vec<(Handle, Handle)> = Vec::new();
        for (&p, edits) in &self.edits {
            for e in edits
                .iter()
                .filter(|e| e.holds_at(view.base, self.base_len, at))
            {
                rows.push((p, e.to));
            }
        }
        for (&p, changes) in &self.consent {
            if changes.iter().any(|(t, _)| *t <= at) {
                rows.push((p, p));
            }
        }
        for (p, other) in rows {
            for b in view
                .brands_of(p, at)
                .into_iter()
                .chain(view.brands_of(other, at))
            {
                seeds.insert((p, b), 1.0);
            }
        }
        seeds
    }
}

impl Overlaid<'_> {
    fn is_base(&self, h: Handle) -> bool {
        h.index() < self.overlay.base_len
    }

    fn kind(&self, h: Handle) -> EntityKind {
        self.overlay.kind(self.base, h)
    }

    /// Applies the overlay's edits of `kind` from `person` at `at` to the
    /// state's row, sorted by id.
    fn row(
        &self,
        person: Handle,
        kind: EdgeKind,
        at: DateTime<Utc>,
        mut row: Vec<(Handle, f64)>,
    ) -> Vec<(Handle, f64)> {
        let Some(edits) = self.overlay.edits.get(&person) else {
            return row;
        };
        let mut changed = false;
        for e in edits
            .iter()
            .filter(|e| e.kind == kind && e.holds_at(self.base, self.overlay.base_len, at))
        {
            row.retain(|(h, _)| *h != e.to);
            if let Some(w) = e.weight {
                row.push((e.to, w));
            }
            changed = true;
        }
        if changed {
            row.sort_by(|a, b| self.name(a.0).cmp(self.name(b.0)));
        }
        row
    }

    /// The people following `person` at `at`, with strengths.
    fn followers(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        let mut out = if self.is_base(person) {
            self.base.graph.followers(person, at)
        } else {
            Vec::new()
        };
        for e in self.overlay.followed.get(&person).into_iter().flatten() {
            if e.holds_at(self.base, self.overlay.base_len, at) {
                out.retain(|(q, _)| *q != e.from);
                if let Some(w) = e.weight {
                    out.push((e.from, w));
                }
            }
        }
        out
    }

    /// The brands `person` has impulses on or associations with at `at`.
    fn brands_of(&self, person: Handle, at: DateTime<Utc>) -> BTreeSet<Handle> {
        let mut out: BTreeSet<Handle> = BTreeSet::new();
        if self.kind(person).is_person() {
            self.for_each_impulse(person, at, |i| {
                out.insert(i.brand);
            });
            out.extend(self.associations(person, at).into_iter().map(|(b, _)| b));
        }
        out
    }

    /// The relationships the overlay reaches at `at` (module docs, 1),
    /// sorted by handle; `stop` is asked once a hop.
    fn reach(
        &self,
        at: DateTime<Utc>,
        stop: &(impl Fn() -> bool + Sync),
        done: usize,
    ) -> Result<BTreeSet<(Handle, Handle)>, SimulateError> {
        let model = self.model;
        let alpha_f = model.propagation.audience;
        let threshold = model.live_tolerance;
        let mut frontier = self.overlay.seeds(self, at);
        let mut reached: BTreeSet<(Handle, Handle)> = frontier.keys().copied().collect();
        let mut attention: FxHashMap<Handle, f64> = FxHashMap::default();
        // A person's rows, read once for all their brands.
        let mut rows: FxHashMap<Handle, (Row, Row)> = FxHashMap::default();
        for _hop in 0..model.max_hops {
            if stop() {
                return Err(SimulateError::OutOfTime { done });
            }
            let mut next: BTreeMap<(Handle, Handle), f64> = BTreeMap::new();
            for (&(p, b), &m) in &frontier {
                if !self.consents(p, at) {
                    continue;
                }
                let (followers, shares) = rows
                    .entry(p)
                    .or_insert_with(|| (self.followers(p, at), self.association_shares(p, at)));
                for &(q, w) in followers.iter() {
                    let total = *attention.entry(q).or_insert_with(|| {
                        self.followees(q, at).iter().map(|(_, w)| w).sum::<f64>()
                    });
                    let v = m * attention_share(alpha_f, w, total);
                    if v >= threshold {
                        *next.entry((q, b)).or_default() += v;
                    }
                }
                for &(b2, c) in shares.iter() {
                    if b2 != b && m * c >= threshold {
                        *next.entry((p, b2)).or_default() += m * c;
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            reached.extend(next.keys().copied());
            frontier = next;
        }
        Ok(reached)
    }
}

impl ScoreView for Overlaid<'_> {
    fn model(&self) -> &ScoringModel {
        self.model
    }
    fn name(&self, h: Handle) -> &EntityId {
        match h.index().checked_sub(self.overlay.base_len) {
            Some(i) => &self.overlay.names[i].0,
            None => self.base.table().name(h),
        }
    }
    fn handle(&self, id: &EntityId) -> Option<Handle> {
        self.base
            .handle(id)
            .or_else(|| self.overlay.index.get(id).copied())
    }
    fn consents(&self, person: Handle, at: DateTime<Utc>) -> bool {
        let base = self
            .is_base(person)
            .then(|| self.base.consent_change(person, at))
            .flatten();
        let own = self.overlay.consent.get(&person).and_then(|s| {
            let pos = s.partition_point(|(t, _)| *t <= at);
            pos.checked_sub(1).map(|i| s[i])
        });
        // The later change wins: a simulated one takes its place in the
        // person's consent history, as storing it would (a stored grant
        // after a simulated withdrawal still grants).
        match (base, own) {
            (Some((stored, granted)), Some((simulated, _))) if stored > simulated => granted,
            (_, Some((_, granted))) => granted,
            (Some((_, granted)), None) => granted,
            (None, None) => true,
        }
    }
    fn followees(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        let base = if self.is_base(person) {
            self.base.graph.followees(person, at)
        } else {
            Vec::new()
        };
        let mut row = self.row(person, EdgeKind::Follow, at, base);
        row.retain(|(h, _)| self.kind(*h).is_person());
        row
    }
    fn associations(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        let base = if self.is_base(person) {
            self.base.graph.associations(person, at)
        } else {
            Vec::new()
        };
        self.row(person, EdgeKind::Association, at, base)
    }
    fn for_each_impulse(&self, person: Handle, at: DateTime<Utc>, mut f: impl FnMut(Impulse)) {
        let own: &[Impulse] = self
            .overlay
            .impulses
            .get(&person)
            .map_or(&[], Vec::as_slice);
        let own = &own[..own.partition_point(|i| i.time <= at)];
        let mut next = 0;
        if self.is_base(person) {
            // Merged in time order; at equal times the state's come first
            // (canonical order would compare ids: bit-equal to storing the
            // events when they are later than the state's).
            self.base.for_each_impulse(person, at, |imp| {
                while next < own.len() && own[next].time < imp.time {
                    f(own[next]);
                    next += 1;
                }
                f(imp);
            });
        }
        for imp in &own[next..] {
            f(*imp);
        }
    }
    fn person_sums(&self, person: Handle) -> Option<Arc<PersonSums>> {
        // A person the overlay adds no impulse to has the state's list, so
        // the state's kept sums (the same bits as building them here),
        // unless the model overrides a half-life the sums decay by.
        if self.is_base(person)
            && !self.overlay.impulses.contains_key(&person)
            && let Some(sums) = self.base.person_sums(person)
            && sums.fits(self.model)
        {
            return Some(sums);
        }
        self.overlay.sums.get(person, self.model, || {
            crate::score::propagate::view::sums_of(self, person)
        })
    }
}

/// One relationship a simulation moved.
#[derive(Debug, Clone, Serialize)]
pub struct Mover {
    /// The person.
    pub person: EntityId,
    /// The brand.
    pub brand: EntityId,
    /// The score before (`None`: no relationship, or no consent).
    pub before: Option<f64>,
    /// The score after.
    pub after: Option<f64>,
    /// `after − before`, a missing side counted as 50 (neutral).
    pub delta: f64,
}

/// What a simulation moved for one brand.
#[derive(Debug, Clone, Serialize)]
pub struct BrandSummary {
    /// The brand.
    pub brand: EntityId,
    /// Relationships moved (a delta other than 0).
    pub moved: usize,
    /// Their mean delta, score points.
    pub mean_delta: f64,
    /// How many went up.
    pub up: usize,
    /// How many went down.
    pub down: usize,
}

/// The distribution of deltas across the relationships scored.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    /// Quantiles of the deltas: (q, value) for q in 0, 0.05, 0.25, 0.5,
    /// 0.75, 0.95, 1 (nearest rank); empty when nothing was scored.
    pub quantiles: Vec<(f64, f64)>,
    /// Counts of deltas per bin, `[lo, hi)` in score points (the first and
    /// last bins are open).
    pub histogram: Vec<Bin>,
}

/// One histogram bin.
#[derive(Debug, Clone, Serialize)]
pub struct Bin {
    /// Lower edge (`None`: unbounded).
    pub lo: Option<f64>,
    /// Upper edge (`None`: unbounded).
    pub hi: Option<f64>,
    /// Deltas in `[lo, hi)`.
    pub count: usize,
}

/// What a simulation answers (the engine finishes the movers' reasons).
#[derive(Debug)]
pub struct Simulation {
    /// The evaluation time.
    pub at: DateTime<Utc>,
    /// Relationships scored before and after.
    pub scored: usize,
    /// Whether a model-only what-if stopped at [`MAX_RELATIONSHIPS`].
    pub truncated: bool,
    /// The largest movers by |delta| (ties by person, brand), each with
    /// the after-state's explanation draft (`None` when it has no score).
    pub movers: Vec<(Mover, Option<ExplanationDraft>)>,
    /// Every brand with a moved relationship, by id.
    pub brands: Vec<BrandSummary>,
    /// The deltas' distribution over every relationship scored.
    pub distribution: Distribution,
    /// How exact the brand summaries and the distribution are.
    pub precision: Precision,
}

/// How exact a simulation's brand summaries and distribution are (the
/// movers' before, after, delta and reasons are always exact: the walks a
/// relationship read runs).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Precision {
    /// How the summaries' deltas were made.
    pub summaries: Summaries,
    /// Score points every delta of the summaries may be off by, at most,
    /// from the propagation series summed to convergence (what the live
    /// series and the rankings hold): the live series' error bound plus
    /// the push's, times the score's largest slope `50 / spread`; 0 when
    /// exact.
    pub error_bound: f64,
}

/// How a simulation's summaries were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Summaries {
    /// Every relationship was walked before and after, as a read does.
    Exact,
    /// The live series' scores before plus the overlay's difference pushed
    /// forward at the live tolerance ([`simulate`]).
    LiveTolerance,
}

impl Precision {
    /// Every relationship walked.
    pub const EXACT: Precision = Precision {
        summaries: Summaries::Exact,
        error_bound: 0.0,
    };

    /// Whether every relationship was walked.
    pub fn is_exact(&self) -> bool {
        self.summaries == Summaries::Exact
    }
}

/// The score changes `overlay` causes at `at` (module docs), scored with
/// `model` after (the state's model when not overridden), the top `top`
/// movers with reasons. `live` is the live series at `at`, when it
/// answers for it (caught up, `at` at or after the latest stored event):
/// with it and the state's model, the changes are the overlay's
/// difference pushed forward ([`difference`]) and only the movers are
/// walked; else every reached relationship is walked twice. `stop` is
/// asked between units of work.
pub fn simulate(
    base: &FoldState,
    overlay: &Overlay,
    model: &ScoringModel,
    live: Option<LiveAt<'_>>,
    at: DateTime<Utc>,
    top: usize,
    stop: impl Fn() -> bool + Sync,
) -> Result<Simulation, SimulateError> {
    let view = overlay.view(base, model);
    let done = overlay.events.len();
    // An overridden model rescores every relationship, which no
    // difference of the overlay says.
    if let Some(live) = live.filter(|_| std::ptr::eq(model, base.model())) {
        let (rows, error_bound) = difference(&view, live, at, &stop, done)?;
        let precision = Precision {
            summaries: Summaries::LiveTolerance,
            error_bound,
        };
        return summarise(base, &view, rows, at, top, false, precision, &stop);
    }
    let reached = view.reach(at, &stop, done)?;
    let mut pairs: Vec<(&EntityId, &EntityId)> = reached
        .iter()
        .filter(|(p, b)| view.kind(*p).is_person() && view.kind(*b) == EntityKind::Brand)
        .map(|(p, b)| (view.name(*p), view.name(*b)))
        .collect();
    pairs.sort();
    let rows = score_pairs(base, &view, &pairs, at, &stop, done)?;
    summarise(base, &view, rows, at, top, false, Precision::EXACT, &stop)
}

/// Model-only what-if: `brand`'s relationships (`people`, at most
/// [`MAX_RELATIONSHIPS`] of them in id order) scored with the state's model
/// and with `model`.
pub fn model_whatif(
    base: &FoldState,
    model: &ScoringModel,
    brand: &EntityId,
    people: &[EntityId],
    at: DateTime<Utc>,
    top: usize,
    stop: impl Fn() -> bool + Sync,
) -> Result<Simulation, SimulateError> {
    let overlay = Overlay::empty(base);
    let view = overlay.view(base, model);
    let mut people: Vec<&EntityId> = people.iter().collect();
    people.sort();
    people.dedup();
    let truncated = people.len() > MAX_RELATIONSHIPS;
    people.truncate(MAX_RELATIONSHIPS);
    let pairs: Vec<(&EntityId, &EntityId)> = people.into_iter().map(|p| (p, brand)).collect();
    let rows = score_pairs(base, &view, &pairs, at, &stop, 0)?;
    summarise(
        base,
        &view,
        rows,
        at,
        top,
        truncated,
        Precision::EXACT,
        &stop,
    )
}

/// Pairs per parallel task.
const CHUNK: usize = 64;

/// Each pair's score in the state and in the view, in parallel over chunks
/// of pairs (each pair's walks are sequential, so the bits do not depend on
/// the thread count), asking `stop` before each pair: one relationship's
/// two walks are the unit of work (about 0.1 s on a 1,000,000-event store).
fn score_pairs(
    base: &FoldState,
    view: &Overlaid<'_>,
    pairs: &[(&EntityId, &EntityId)],
    at: DateTime<Utc>,
    stop: &(impl Fn() -> bool + Sync),
    done: usize,
) -> Result<Vec<Mover>, SimulateError> {
    let chunks: Vec<Result<Vec<Mover>, SimulateError>> = pairs
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(k, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, (p, b))| {
                    if stop() {
                        return Err(SimulateError::OutOfTime {
                            done: done + k * CHUNK + i,
                        });
                    }
                    let before = score_in(base, p, b, at);
                    let after = score_in(view, p, b, at);
                    Ok(Mover {
                        person: (*p).clone(),
                        brand: (*b).clone(),
                        before,
                        after,
                        delta: after.unwrap_or(50.0) - before.unwrap_or(50.0),
                    })
                })
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in chunks {
        out.extend(chunk?);
    }
    Ok(out)
}

/// Pushes between two questions to `stop` in [`difference`].
const PUSHES_PER_STOP: usize = 1024;

/// The rows of a simulation from the live series (module docs, "the
/// difference"): every relationship the overlay's difference reaches, its
/// delta `score(before + Δ) − score(before)` with `before` the live
/// series' raw score at `at` (0 where it holds none: a missing side counts
/// as 50) and `Δ` the forward push of the difference at the model's
/// `live_tolerance` (their `before` and `after` are left `None`: only the
/// movers chosen from them are walked, `summarise`); and the bound on each
/// delta, in score points.
///
/// The series is linear in its inputs for a fixed graph, and for a changed
/// graph the push driver's edge-change rule (`propagate::push`, module
/// docs) gives the residual that keeps it exact: with `s` the series
/// before, the difference is the series of
/// `r(p,·) = x'(p,·) − x(p,·) + α(M'_p − M_p) s` over the new graph, which
/// is non-zero only in the rows the overlay changed: a person's new
/// impulses (`x' − x`, nothing else), and, for a person whose follows,
/// associations or consent it edits, the row's inputs after minus before
/// (one withdrawing consent loses the whole row, `−s(p,·)`; one granting
/// it gains `x'(p,·) + αM'_p s`). Pushed with the driver's arithmetic
/// (`push::spread`), FIFO, seeded in sorted order: the same bits whatever
/// the thread count.
fn difference(
    view: &Overlaid<'_>,
    live: LiveAt<'_>,
    at: DateTime<Utc>,
    stop: &(impl Fn() -> bool + Sync),
    done: usize,
) -> Result<(Vec<Mover>, f64), SimulateError> {
    let overlay = view.overlay;
    let model = view.model;
    let before_view = Before { view };
    // `s(p,·)`, the live series' row of `p` sorted by brand handle (the
    // order every sum over it follows), read once.
    let mut s_rows: FxHashMap<Handle, Row> = FxHashMap::default();
    let mut s = |p: Handle| -> Row {
        s_rows
            .entry(p)
            .or_insert_with(|| {
                let mut row = if view.is_base(p) {
                    live.row(p)
                } else {
                    Vec::new()
                };
                row.sort_unstable_by_key(|e| e.0);
                row
            })
            .clone()
    };
    // Rows the overlay edits (follows, associations) or whose consent it
    // changes, at or before `at`.
    let mut changed: BTreeSet<Handle> = BTreeSet::new();
    for (&p, edits) in &overlay.edits {
        if edits
            .iter()
            .any(|e| e.holds_at(view.base, overlay.base_len, at))
        {
            changed.insert(p);
        }
    }
    for (&p, changes) in &overlay.consent {
        if changes.iter().any(|(t, _)| *t <= at) {
            changed.insert(p);
        }
    }
    let mut seeds: BTreeMap<(Handle, Handle), f64> = BTreeMap::new();
    // Relationships an event names are reached even when it moves them by 0.
    let mut direct: BTreeSet<(Handle, Handle)> = BTreeSet::new();
    let mut people: Vec<Handle> = overlay.impulses.keys().copied().collect();
    people.sort_unstable();
    for p in people {
        if changed.contains(&p) || !view.consents(p, at) {
            continue;
        }
        for imp in overlay.impulses[&p].iter().filter(|i| i.time <= at) {
            let v = decayed(model, imp.component, imp.amount, imp.time, at);
            *seeds.entry((p, imp.brand)).or_default() += v;
            direct.insert((p, imp.brand));
        }
    }
    for &p in &changed {
        let had = view.is_base(p) && ScoreView::consents(view.base, p, at);
        let has = view.consents(p, at);
        let mut row: BTreeMap<Handle, f64> = BTreeMap::new();
        match (had, has) {
            (true, true) => {
                for imp in overlay.impulses.get(&p).into_iter().flatten() {
                    if imp.time <= at {
                        *row.entry(imp.brand).or_default() +=
                            decayed(model, imp.component, imp.amount, imp.time, at);
                    }
                }
                let after = spill_of(view, p, at, &mut s);
                let before = spill_of(&before_view, p, at, &mut s);
                for (b, v) in after {
                    *row.entry(b).or_default() += v;
                }
                for (b, v) in before {
                    *row.entry(b).or_default() -= v;
                }
            }
            (true, false) => {
                for (b, v) in s(p) {
                    row.insert(b, -v);
                }
            }
            (false, true) => {
                view.for_each_impulse(p, at, |imp| {
                    *row.entry(imp.brand).or_default() +=
                        decayed(model, imp.component, imp.amount, imp.time, at);
                });
                for (b, v) in spill_of(view, p, at, &mut s) {
                    *row.entry(b).or_default() += v;
                }
            }
            (false, false) => {}
        }
        if has {
            for imp in overlay.impulses.get(&p).into_iter().flatten() {
                if imp.time <= at {
                    direct.insert((p, imp.brand));
                }
            }
        }
        for (b, v) in row {
            *seeds.entry((p, b)).or_default() += v;
        }
    }
    let pushed = push_difference(view, seeds, &direct, at, stop, done)?;

    // The rows: every relationship pushed or named, by (person, brand) id.
    let mut rows: Vec<Mover> = Vec::new();
    for (p, changes) in pushed.rows {
        if !view.kind(p).is_person() {
            continue;
        }
        let before = s(p);
        for (b, change) in changes {
            if view.kind(b) != EntityKind::Brand {
                continue;
            }
            let before = value_of(&before, b);
            rows.push(Mover {
                person: view.name(p).clone(),
                brand: view.name(b).clone(),
                before: None,
                after: None,
                delta: model.score(before + change) - model.score(before),
            });
        }
    }
    rows.sort_by(|x, y| (&x.person, &x.brand).cmp(&(&y.person, &y.brand)));
    // The push leaves |r| ≤ tol per entry; the series of what it leaves is
    // at most max_p Σ_b |r(p,b)| / (1 − ρ) (`propagate::push`, error bound).
    let rho = model.propagation.audience + model.propagation.association;
    let raw_bound = live.error_bound() + pushed.worst_residual_row / (1.0 - rho);
    Ok((rows, raw_bound * 50.0 / model.spread))
}

/// The value of `b` in a row sorted by brand handle (0 when absent).
fn value_of(row: &[(Handle, f64)], b: Handle) -> f64 {
    row.binary_search_by_key(&b, |e| e.0)
        .map_or(0.0, |i| row[i].1)
}

/// The state before a simulation as a view of the overlaid one: the
/// state's rows (what `spill_of` reads before an edit).
struct Before<'a, 'b> {
    view: &'a Overlaid<'b>,
}

/// `α M_p s`: the spill person `p`'s row receives from `s` over `view`'s
/// graph at `at`, by brand (the push driver's `(MX)[p,b]`,
/// `propagate::push` module docs): `α_f F[p,f] s(f,b)` from each person
/// `p` follows and `α_a ā[p,b] Σ_{b'≠b} s(p,b')` from `p`'s own row.
fn spill_of(
    view: &impl SpillView,
    p: Handle,
    at: DateTime<Utc>,
    s: &mut impl FnMut(Handle) -> Row,
) -> BTreeMap<Handle, f64> {
    let mut out: BTreeMap<Handle, f64> = BTreeMap::new();
    let alpha_f = view.alpha_f();
    let followees = view.followees_at(p, at);
    let attention: f64 = followees.iter().map(|(_, w)| w).sum();
    for (f, w) in followees {
        let c = attention_share(alpha_f, w, attention);
        for (b, v) in s(f) {
            *out.entry(b).or_default() += c * v;
        }
    }
    let shares = view.shares_at(p, at);
    if !shares.is_empty() {
        let own = s(p);
        let total: f64 = own.iter().map(|(_, v)| v).sum();
        for (b, c) in shares {
            *out.entry(b).or_default() += c * (total - value_of(&own, b));
        }
    }
    out
}

/// The graph `spill_of` reads: the overlaid one, or the state's.
trait SpillView {
    fn alpha_f(&self) -> f64;
    fn followees_at(&self, p: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)>;
    fn shares_at(&self, p: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)>;
}

impl SpillView for Overlaid<'_> {
    fn alpha_f(&self) -> f64 {
        self.model.propagation.audience
    }
    fn followees_at(&self, p: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        self.followees(p, at)
    }
    fn shares_at(&self, p: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        self.association_shares(p, at)
    }
}

impl SpillView for Before<'_, '_> {
    fn alpha_f(&self) -> f64 {
        self.view.model.propagation.audience
    }
    fn followees_at(&self, p: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        if self.view.is_base(p) {
            self.view.base.followees(p, at)
        } else {
            Vec::new()
        }
    }
    fn shares_at(&self, p: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        if self.view.is_base(p) {
            ScoreView::association_shares(self.view.base, p, at)
        } else {
            Vec::new()
        }
    }
}

/// What [`push_difference`] answers.
struct Pushed {
    /// Each person reached, with the change of each of their relationships
    /// pushed or named (what was pushed there plus the residual left, its
    /// first term), sorted by brand handle.
    rows: Vec<(Handle, Row)>,
    /// `max_p Σ_b |r(p,b)|` of the residual left.
    worst_residual_row: f64,
}

/// One residual entry: brand, value, whether `(person, brand)` is queued.
type Residual = (Handle, f64, bool);

/// A person's followers `(number, strength)` in a push.
type Followers = Vec<(u32, f64)>;

/// The people a push reached, numbered densely in the order it met them
/// (a function of the seeds and the graph), with their rows read once.
#[derive(Default)]
struct Reached {
    number: FxHashMap<Handle, u32>,
    people: Vec<Handle>,
    /// Followers with consent `(number, strength)` and association shares,
    /// once the person has been pushed from.
    rows: Vec<Option<(Followers, Row)>>,
    /// Attention `Σw` over the person's followees.
    attention: Vec<f64>,
    residual: Vec<Vec<Residual>>,
    pushed: Vec<Row>,
}

impl Reached {
    fn number(&mut self, view: &Overlaid<'_>, p: Handle, at: DateTime<Utc>) -> u32 {
        if let Some(&i) = self.number.get(&p) {
            return i;
        }
        let i = u32::try_from(self.people.len()).expect("fewer than 2^32 people");
        self.number.insert(p, i);
        self.people.push(p);
        self.rows.push(None);
        self.attention
            .push(view.followees(p, at).iter().map(|(_, w)| w).sum());
        self.residual.push(Vec::new());
        self.pushed.push(Vec::new());
        i
    }
}

/// The index of brand `b` in a row sorted by brand, inserting `new()`
/// there first when absent.
fn entry_at<T>(
    row: &mut Vec<T>,
    b: Handle,
    brand: impl Fn(&T) -> Handle,
    new: impl FnOnce() -> T,
) -> usize {
    match row.binary_search_by_key(&b, brand) {
        Ok(i) => i,
        Err(i) => {
            row.insert(i, new());
            i
        }
    }
}

/// Pushes `seeds` over `view`'s graph at `at` until every residual is at
/// most the model's `live_tolerance`, as the live series' driver does
/// (`propagate::push`: its arithmetic, `push::spread`, and its layout,
/// people numbered densely with rows sorted by brand), FIFO, seeded in
/// sorted order. `direct` relationships are answered even when nothing is
/// pushed there. A person without consent has no follow or association
/// row (receives no spill).
fn push_difference(
    view: &Overlaid<'_>,
    seeds: BTreeMap<(Handle, Handle), f64>,
    direct: &BTreeSet<(Handle, Handle)>,
    at: DateTime<Utc>,
    stop: &(impl Fn() -> bool + Sync),
    done: usize,
) -> Result<Pushed, SimulateError> {
    let model = view.model;
    let tol = model.live_tolerance;
    let alpha_f = model.propagation.audience;
    let mut reached = Reached::default();
    let mut queue: VecDeque<(u32, Handle)> = VecDeque::new();
    // Adds `v` to r(p,b) and queues it if it crosses the tolerance.
    let bump = |residual: &mut Vec<Vec<Residual>>,
                queue: &mut VecDeque<(u32, Handle)>,
                p: u32,
                b: Handle,
                v: f64| {
        let row = &mut residual[p as usize];
        let k = entry_at(row, b, |e| e.0, || (b, 0.0, false));
        row[k].1 += v;
        if !row[k].2 && row[k].1.abs() > tol {
            row[k].2 = true;
            queue.push_back((p, b));
        }
    };
    for &(p, b) in direct {
        let i = reached.number(view, p, at) as usize;
        entry_at(&mut reached.pushed[i], b, |e| e.0, || (b, 0.0));
    }
    for ((p, b), v) in seeds {
        let i = reached.number(view, p, at);
        bump(&mut reached.residual, &mut queue, i, b, v);
    }
    let mut pushes = 0usize;
    while let Some((q, b)) = queue.pop_front() {
        let qi = q as usize;
        let row = &mut reached.residual[qi];
        let Ok(k) = row.binary_search_by_key(&b, |e| e.0) else {
            continue;
        };
        row[k].2 = false;
        let r = row[k].1;
        if r.abs() <= tol {
            continue;
        }
        row.remove(k);
        let k = entry_at(&mut reached.pushed[qi], b, |e| e.0, || (b, 0.0));
        reached.pushed[qi][k].1 += r;
        pushes += 1;
        if pushes.is_multiple_of(PUSHES_PER_STOP) && stop() {
            return Err(SimulateError::OutOfTime { done });
        }
        if reached.rows[qi].is_none() {
            let person = reached.people[qi];
            let mut followers = Vec::new();
            for (f, w) in view.followers(person, at) {
                if view.consents(f, at) {
                    followers.push((reached.number(view, f, at), w));
                }
            }
            let shares = if view.consents(person, at) {
                view.association_shares(person, at)
            } else {
                Vec::new()
            };
            reached.rows[qi] = Some((followers, shares));
        }
        let Reached {
            rows,
            attention,
            residual,
            ..
        } = &mut reached;
        let (followers, shares) = rows[qi].as_ref().expect("read above");
        spread(
            alpha_f,
            (q, b),
            r,
            followers,
            |f| attention[f as usize],
            shares,
            |p, b2, v| bump(residual, &mut queue, p, b2, v),
        );
    }
    let mut worst_residual_row = 0.0f64;
    let mut rows = Vec::with_capacity(reached.people.len());
    for (i, p) in reached.people.iter().enumerate() {
        let left = &reached.residual[i];
        worst_residual_row = worst_residual_row.max(left.iter().map(|e| e.1.abs()).sum());
        let mut changes = std::mem::take(&mut reached.pushed[i]);
        for (b, v) in changes.iter_mut() {
            if let Ok(k) = left.binary_search_by_key(b, |e| e.0) {
                *v += left[k].1;
            }
        }
        if !changes.is_empty() {
            rows.push((*p, changes));
        }
    }
    Ok(Pushed {
        rows,
        worst_residual_row,
    })
}

/// Movers, brand summaries and the distribution of scored rows. The top
/// movers are chosen by the rows' deltas; when the rows are not exact
/// (`precision`), each chosen one is walked before and after, as a read
/// does, so the movers listed are exact (and sorted again by their exact
/// delta). Their reasons are an explanation walk each (with every
/// simulated impulse a mover's sources carry: an influencer's 10,000
/// simulated posts made 1,000 movers' reasons take 25 s and 3.8 GB, red
/// team 2026-11-30), so `stop` is asked before each.
#[allow(clippy::too_many_arguments)]
fn summarise(
    base: &FoldState,
    view: &Overlaid<'_>,
    rows: Vec<Mover>,
    at: DateTime<Utc>,
    top: usize,
    truncated: bool,
    precision: Precision,
    stop: &(impl Fn() -> bool + Sync),
) -> Result<Simulation, SimulateError> {
    let scored = rows.len();
    let distribution = distribution(rows.iter().map(|m| m.delta).collect());
    let mut brands: BTreeMap<&EntityId, (usize, f64, usize, usize)> = BTreeMap::new();
    for m in rows.iter().filter(|m| m.delta != 0.0) {
        let s = brands.entry(&m.brand).or_default();
        s.0 += 1;
        s.1 += m.delta;
        s.2 += usize::from(m.delta > 0.0);
        s.3 += usize::from(m.delta < 0.0);
    }
    let brands = brands
        .into_iter()
        .map(|(brand, (moved, sum, up, down))| BrandSummary {
            brand: brand.clone(),
            moved,
            mean_delta: sum / moved as f64,
            up,
            down,
        })
        .collect();
    let mut moved: Vec<&Mover> = rows.iter().filter(|m| m.delta != 0.0).collect();
    sort_movers(&mut moved);
    moved.truncate(top);
    let exact = precision.is_exact();
    // One mover's walks are sequential and the movers come back in their
    // order, so the bits do not depend on the thread count.
    let movers: Vec<Result<_, SimulateError>> = moved
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            if stop() {
                return Err(SimulateError::OutOfTime { done: scored + i });
            }
            let draft = explain_in(view, &m.person, &m.brand, at);
            if exact {
                return Ok(((*m).clone(), draft));
            }
            let before = score_in(base, &m.person, &m.brand, at);
            let after = draft.as_ref().map(ExplanationDraft::score);
            let mover = Mover {
                person: m.person.clone(),
                brand: m.brand.clone(),
                before,
                after,
                delta: after.unwrap_or(50.0) - before.unwrap_or(50.0),
            };
            Ok((mover, draft))
        })
        .collect();
    let mut movers = movers.into_iter().collect::<Result<Vec<_>, _>>()?;
    if !exact {
        movers.retain(|(m, _)| m.delta != 0.0);
        movers.sort_by(|a, b| mover_order(&a.0, &b.0));
    }
    Ok(Simulation {
        at,
        scored,
        truncated,
        movers,
        brands,
        distribution,
        precision,
    })
}

/// Movers by |delta|, largest first, ties by (person, brand).
fn mover_order(a: &Mover, b: &Mover) -> std::cmp::Ordering {
    b.delta
        .abs()
        .total_cmp(&a.delta.abs())
        .then_with(|| (&a.person, &a.brand).cmp(&(&b.person, &b.brand)))
}

fn sort_movers(movers: &mut [&Mover]) {
    movers.sort_by(|a, b| mover_order(a, b));
}

/// Bin edges of the deltas' histogram, score points.
const EDGES: [f64; 10] = [-10.0, -5.0, -2.0, -1.0, -0.1, 0.1, 1.0, 2.0, 5.0, 10.0];

fn distribution(mut deltas: Vec<f64>) -> Distribution {
    deltas.sort_by(f64::total_cmp);
    let quantiles = if deltas.is_empty() {
        Vec::new()
    } else {
        [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]
            .into_iter()
            .map(|q| {
                let rank = (q * (deltas.len() - 1) as f64).round() as usize;
                (q, deltas[rank])
            })
            .collect()
    };
    let mut histogram: Vec<Bin> = (0..=EDGES.len())
        .map(|i| Bin {
            lo: i.checked_sub(1).map(|j| EDGES[j]),
            hi: EDGES.get(i).copied(),
            count: 0,
        })
        .collect();
    for d in deltas {
        let i = EDGES.partition_point(|e| *e <= d);
        histogram[i].count += 1;
    }
    Distribution {
        quantiles,
        histogram,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::score::ScoreState;

    fn story() -> Vec<Event> {
        include_str!("../../fixtures/seed_story.ndjson")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let model = ScoringModel::default_model();
                crate::ingest::validate(&v, &model.currency).unwrap().event
            })
            .collect()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Red team h39 measured what-ifs that override a half-life 1.5 to 2.6
    /// times slower than with the state's kept sums: each visit of a
    /// person built their sums anew. An overlay now builds them once per
    /// set of half-lives, and an impulse it adds to a person drops theirs.
    #[test]
    fn an_overlays_reads_build_a_persons_sums_once_per_set_of_half_lives() {
        let model = Arc::new(ScoringModel::default_model());
        let base = ScoreState::build(Arc::clone(&model), Vec::new(), story());
        let mut other = (*model).clone();
        other.half_life_days.sentiment *= 2.0;
        let artist = base
            .fold()
            .handle(&EntityId::new("artist").unwrap())
            .unwrap();
        let overlay = Overlay::empty(base.fold());
        let whatif = overlay.view(base.fold(), &other);
        let first = whatif.person_sums(artist).unwrap();
        assert!(first.fits(&other) && !first.fits(&model));
        let again = whatif.person_sums(artist).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "built again for the same model"
        );
        // The state's model reads the state's kept sums, beside the memo's.
        let plain = overlay.view(base.fold(), &model);
        assert!(plain.person_sums(artist).unwrap().fits(&model));
        assert!(Arc::ptr_eq(&whatif.person_sums(artist).unwrap(), &first));
    }

    /// The overlay of the story's last events over the state of the rest
    /// scores every relationship as the state of all of them does, to the
    /// bit (an audience report changing a later post's reach included).
    #[test]
    fn an_overlay_scores_as_the_state_that_holds_its_events() {
        let model = Arc::new(ScoringModel::default_model());
        let events = story();
        let cut = t("2026-11-05T00:00:00Z");
        let (early, late): (Vec<Event>, Vec<Event>) =
            events.iter().cloned().partition(|e| e.time < cut);
        assert!(late.len() >= 5);
        let base = ScoreState::build(Arc::clone(&model), Vec::new(), early);
        let all = ScoreState::build(Arc::clone(&model), Vec::new(), events);
        let late: Vec<(usize, Event)> = late.into_iter().enumerate().collect();
        let overlay = Overlay::fold(base.fold(), late, || false).unwrap();
        let view = overlay.view(base.fold(), &model);
        let at = t("2026-11-20T00:00:00Z");
        let entities = all.entities();
        let mut compared = 0;
        for (p, pk) in &entities {
            for (b, bk) in &entities {
                if !pk.is_person() || *bk != EntityKind::Brand {
                    continue;
                }
                let want = all.score_at(p, b, at);
                assert_eq!(
                    score_in(&view, p, b, at).map(f64::to_bits),
                    want.map(f64::to_bits),
                    "{p}/{b}"
                );
                compared += usize::from(want.is_some());
            }
        }
        assert!(compared > 10, "{compared}");
        // Walked everywhere, or from the live series with the movers walked:
        // the movers are exact either way.
        assert!(base.live_synced());
        for live in [None, base.live().at(at)] {
            let sim = simulate(base.fold(), &overlay, &model, live, at, 1000, || false).unwrap();
            assert_eq!(sim.precision.is_exact(), live.is_none());
            assert!(!sim.movers.is_empty());
            for (m, draft) in &sim.movers {
                assert_eq!(m.after, all.score_at(&m.person, &m.brand, at));
                assert_eq!(m.before, base.score_at(&m.person, &m.brand, at));
                assert_eq!(draft.as_ref().map(|d| d.score()), m.after);
            }
        }
    }

    /// The difference pushed from the live series moves every relationship
    /// as walking it before and after does, within the bound it answers
    /// plus the walk's own truncation (the walk stops at `max_hops` and
    /// prunes at `tolerance`; the series runs to convergence), for an
    /// overlay of impulses and for one that edits follows, associations and
    /// consent both ways.
    #[test]
    fn the_pushed_difference_agrees_with_the_walks_within_its_bound() {
        let model = Arc::new(ScoringModel::default_model());
        let parse = |lines: &[serde_json::Value]| -> Vec<Event> {
            lines
                .iter()
                .map(|v| crate::ingest::validate(v, &model.currency).unwrap().event)
                .collect()
        };
        let mut stored = story();
        stored.extend(parse(&[serde_json::json!({"id": "w-0", "type": "consent",
            "time": "2026-11-15T00:00:00Z", "person": "fan6", "granted": false})]));
        let base = ScoreState::build(Arc::clone(&model), Vec::new(), stored);
        assert!(base.live_synced());
        let at = t("2026-11-20T00:00:00Z");
        let impulses = parse(&[
            serde_json::json!({"id": "w-1", "type": "post", "time": "2026-11-16T10:00:00Z",
                "person": "artist", "brand": "bistro", "sentiment": 0.9}),
            serde_json::json!({"id": "w-2", "type": "purchase", "time": "2026-11-16T11:00:00Z",
                "person": "fan1", "brand": "sweater", "amount": 120, "currency": "USD"}),
        ]);
        let edits = parse(&[
            serde_json::json!({"id": "w-3", "type": "unfollow", "time": "2026-11-16T12:00:00Z",
                "person": "fan1", "target": "artist"}),
            serde_json::json!({"id": "w-4", "type": "follow", "time": "2026-11-16T13:00:00Z",
                "person": "fan2", "target": "fan3"}),
            serde_json::json!({"id": "w-5", "type": "endorsement", "time": "2026-11-16T14:00:00Z",
                "person": "artist", "brand": "bistro", "strength": 0.8}),
            serde_json::json!({"id": "w-6", "type": "consent", "time": "2026-11-16T15:00:00Z",
                "person": "fan4", "granted": false}),
            serde_json::json!({"id": "w-7", "type": "consent", "time": "2026-11-16T16:00:00Z",
                "person": "fan6", "granted": true}),
            serde_json::json!({"id": "w-8", "type": "post", "time": "2026-11-16T17:00:00Z",
                "person": "fan2", "brand": "sweater", "sentiment": -0.8}),
        ]);
        // The walk's truncation on the story, far below the push's bound.
        let walk_slack = 1e-6;
        let mut cases = 0;
        for events in [impulses.clone(), [impulses, edits].concat()] {
            let events: Vec<(usize, Event)> = events.into_iter().enumerate().collect();
            let overlay = Overlay::fold(base.fold(), events, || false).unwrap();
            let view = overlay.view(base.fold(), &model);
            let live = base.live().at(at).unwrap();
            let (rows, bound) = difference(&view, live, at, &|| false, 0).unwrap();
            assert!(rows.len() >= 5, "{}", rows.len());
            assert!((0.0..0.05).contains(&bound), "{bound}");
            for m in &rows {
                let before = score_in(base.fold(), &m.person, &m.brand, at);
                let after = score_in(&view, &m.person, &m.brand, at);
                let exact = after.unwrap_or(50.0) - before.unwrap_or(50.0);
                assert!(
                    (m.delta - exact).abs() <= bound + walk_slack,
                    "{}/{}: pushed {} walked {exact} bound {bound}",
                    m.person,
                    m.brand,
                    m.delta
                );
                cases += usize::from(exact.abs() > 0.01);
            }
        }
        assert!(cases > 10, "{cases}");
    }

    /// The same simulation on the same state answers the same bits on 1
    /// and on 4 threads (the push is sequential; each mover's walks are
    /// too, and they come back in their order).
    #[test]
    fn a_simulation_answers_the_same_bits_on_any_thread_count() {
        let model = Arc::new(ScoringModel::default_model());
        let events = story();
        let cut = t("2026-11-05T00:00:00Z");
        let (early, late): (Vec<Event>, Vec<Event>) =
            events.into_iter().partition(|e| e.time < cut);
        let base = ScoreState::build(Arc::clone(&model), Vec::new(), early);
        let late: Vec<(usize, Event)> = late.into_iter().enumerate().collect();
        let overlay = Overlay::fold(base.fold(), late, || false).unwrap();
        let at = t("2026-11-20T00:00:00Z");
        let answer = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let sim = pool.install(|| {
                simulate(
                    base.fold(),
                    &overlay,
                    &model,
                    base.live().at(at),
                    at,
                    1000,
                    || false,
                )
                .unwrap()
            });
            assert!(!sim.precision.is_exact());
            // Debug prints every float with its shortest round-trip digits:
            // equal text, equal bits.
            format!(
                "{:?} {:?} {:?} {:?}",
                sim.movers.iter().map(|(m, _)| m).collect::<Vec<_>>(),
                sim.brands,
                sim.distribution,
                sim.precision
            )
        };
        assert_eq!(answer(1), answer(4));
    }

    #[test]
    fn a_stop_answers_out_of_time() {
        let model = Arc::new(ScoringModel::default_model());
        let base = ScoreState::build(Arc::clone(&model), Vec::new(), story());
        let err = model_whatif(
            base.fold(),
            &model,
            &EntityId::new("bistro").unwrap(),
            &[EntityId::new("fan1").unwrap()],
            t("2026-11-20T00:00:00Z"),
            10,
            || true,
        )
        .unwrap_err();
        assert_eq!(err, SimulateError::OutOfTime { done: 0 });
    }

    /// The movers' reasons are work too: a stop asked after the last
    /// relationship was scored ends the simulation before the reasons
    /// (they took 25 s and 3.8 GB past the 5 s bound, red team 2026-11-30).
    #[test]
    fn a_stop_is_asked_before_the_movers_reasons() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let model = Arc::new(ScoringModel::default_model());
        let base = ScoreState::build(Arc::clone(&model), Vec::new(), story());
        let people = [
            EntityId::new("fan1").unwrap(),
            EntityId::new("fan2").unwrap(),
        ];
        let brand = EntityId::new("bistro").unwrap();
        let at = t("2026-11-20T00:00:00Z");
        let mut half = model.as_ref().clone();
        half.spread *= 2.0;
        let asked = AtomicUsize::new(0);
        let counted = || {
            asked.fetch_add(1, Ordering::SeqCst);
            false
        };
        let whole = model_whatif(base.fold(), &half, &brand, &people, at, 10, counted).unwrap();
        assert!(!whole.movers.is_empty(), "the override moves someone");
        let scoring = people.len();
        assert!(
            asked.load(Ordering::SeqCst) > scoring,
            "asked before each reason"
        );
        let calls = AtomicUsize::new(0);
        let after_scoring = || calls.fetch_add(1, Ordering::SeqCst) >= scoring;
        let err = model_whatif(base.fold(), &half, &brand, &people, at, 10, after_scoring);
        assert!(
            matches!(err, Err(SimulateError::OutOfTime { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn quantiles_and_bins_count_every_delta() {
        let d = distribution(vec![-12.0, -0.5, 0.0, 0.0, 3.0]);
        assert_eq!(d.quantiles[0], (0.0, -12.0));
        assert_eq!(d.quantiles[3], (0.5, 0.0));
        assert_eq!(d.quantiles[6], (1.0, 3.0));
        let counts: Vec<usize> = d.histogram.iter().map(|b| b.count).collect();
        assert_eq!(counts.iter().sum::<usize>(), 5);
        assert_eq!(d.histogram[0].count, 1); // below -10
        assert_eq!(d.histogram[5].count, 2); // [-0.1, 0.1)
    }
}
