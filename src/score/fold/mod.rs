//! The fold: `FoldState`, everything derived from the event log by folding
//! the events in canonical order (event time, then id). Each event's
//! impulses are computed from the context as it stood at that event's time
//! (the follower count before an audience change, the occasions before a
//! sales report), so the state is a function of the *set* of events: an
//! event earlier than what is folded makes the log refold (`apply` does
//! that by itself), and a late event never lands anywhere but where it
//! belongs.
//!
//! It owns the entity graph, registrations, impulses, the per-entity series
//! the rules read (audience, consent, occasions, sales history) and the
//! brand KPIs; `rules.rs` holds what each event type does, `roles.rs` the
//! role checks, `brands.rs` the KPIs. It emits what it changes as deltas
//! (`deltas.rs`) for whoever maintains a view; it knows nothing of
//! propagation or the live series, and does no IO and reads no clock.
//!
//! Appending events later than everything seen is the common case and costs
//! only those events.

mod brands;
pub(crate) mod deltas;
mod roles;
mod rules;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};

pub use brands::BrandStats;
pub use deltas::{Delta, EventDeltas, ImpulseInput};
pub use roles::RoleConflict;
pub(crate) use roles::role_kind;

use super::model::{Component, ScoringModel};
use crate::domain::{Entity, EntityId, EntityKind, Event, EventId, Role};
use crate::graph::RelationGraph;

/// An impulse on the relationship (owner person, `brand`).
#[derive(Debug, Clone)]
pub(crate) struct Impulse {
    pub brand: EntityId,
    /// Position of the event in `FoldState::events`.
    pub event: u32,
    pub time: DateTime<Utc>,
    pub component: Component,
    pub amount: f64,
}

/// What the fold keeps of an occasion.
#[derive(Debug, Clone)]
struct OccasionInfo {
    host: Option<EntityId>,
    time: DateTime<Utc>,
    /// (person, is performer), in the order they joined.
    participants: Vec<(EntityId, bool)>,
    /// The same, for membership tests.
    joined: FxHashSet<(EntityId, bool)>,
}

impl OccasionInfo {
    fn new(time: DateTime<Utc>) -> Self {
        Self {
            host: None,
            time,
            participants: Vec::new(),
            joined: FxHashSet::default(),
        }
    }
}

/// Everything the fold derives from the event log and the registrations
/// (module docs). Cloning it is a deep copy.
#[derive(Debug, Clone)]
pub struct FoldState {
    model: Arc<ScoringModel>,
    pub(crate) graph: RelationGraph,
    registrations: BTreeMap<EntityId, Entity>,
    /// Processed events in canonical order.
    events: Vec<Event>,
    positions: FxHashMap<EventId, u32>,
    /// Impulses by the person whose relationship they move, in event order.
    pub(crate) impulses: FxHashMap<EntityId, Vec<Impulse>>,
    /// Event positions naming each entity, ascending.
    timeline: FxHashMap<EntityId, Vec<u32>>,
    audience: FxHashMap<EntityId, Vec<(DateTime<Utc>, u64)>>,
    occasions: FxHashMap<EntityId, OccasionInfo>,
    hosted: FxHashMap<EntityId, Vec<EntityId>>,
    sales: FxHashMap<EntityId, Vec<f64>>,
    consent: FxHashMap<EntityId, Vec<(DateTime<Utc>, bool)>>,
    interests: FxHashMap<String, BTreeSet<EntityId>>,
    brand_stats: FxHashMap<EntityId, BrandStats>,
    /// Entities seen only as follow targets so far: taken for people until
    /// an event names them in a role that fixes their kind (a brand).
    provisional: FxHashSet<EntityId>,
    /// Deltas of the folded events not taken yet, in canonical order.
    outbox: VecDeque<EventDeltas>,
    /// Events at or after this canonical position emit deltas; `None`:
    /// none do.
    emit_from: Option<u32>,
}

impl FoldState {
    /// An empty state scoring with `model`; it emits deltas from the first
    /// event on.
    pub fn new(model: Arc<ScoringModel>) -> Self {
        Self {
            graph: RelationGraph::default(),
            registrations: BTreeMap::new(),
            events: Vec::new(),
            positions: FxHashMap::default(),
            impulses: FxHashMap::default(),
            timeline: FxHashMap::default(),
            audience: FxHashMap::default(),
            occasions: FxHashMap::default(),
            hosted: FxHashMap::default(),
            sales: FxHashMap::default(),
            consent: FxHashMap::default(),
            interests: FxHashMap::default(),
            brand_stats: FxHashMap::default(),
            provisional: FxHashSet::default(),
            outbox: VecDeque::new(),
            emit_from: Some(0),
            model,
        }
    }

    /// Builds the state of a whole log, registrations first; events at or
    /// after canonical position `emit_from` emit deltas.
    pub fn build(
        model: Arc<ScoringModel>,
        entities: Vec<Entity>,
        mut events: Vec<Event>,
        emit_from: Option<u32>,
    ) -> Self {
        let mut state = Self::new(model);
        for e in entities {
            state.register_only(e);
        }
        sort_canonically(&mut events);
        state.emit_from = emit_from;
        state.fix_kinds(&events);
        for e in events {
            state.fold(e);
        }
        state.emit_from = Some(0);
        state
    }

    /// Gives every entity the kind its roles fix, before any event is folded,
    /// so a follow of a brand that is only named as a brand later in the log
    /// is a follow of a brand from the start.
    fn fix_kinds(&mut self, events: &[Event]) {
        for e in events {
            for (id, role) in e.references() {
                if role != Role::FollowTarget {
                    self.graph.ensure(id, role_kind(role));
                }
            }
        }
    }

    /// Whether folding `events` would give a provisional entity a kind other
    /// than person (then the log is refolded).
    fn fixes_provisional(&self, events: &[Event]) -> bool {
        events.iter().any(|e| {
            e.references().iter().any(|(id, role)| {
                matches!(role, Role::Brand | Role::Occasion) && self.provisional.contains(*id)
            })
        })
    }

    fn is_provisional(&self, id: &EntityId) -> bool {
        self.provisional.contains(id)
    }

    /// The model this state scores with.
    pub fn model(&self) -> &ScoringModel {
        &self.model
    }

    /// The model, shared.
    pub fn model_arc(&self) -> &Arc<ScoringModel> {
        &self.model
    }

    /// Number of events folded.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Whether the event with this id is folded.
    pub fn contains(&self, id: &EventId) -> bool {
        self.positions.contains_key(id)
    }

    /// The kind of an entity, if any event or registration named it.
    pub fn kind(&self, id: &EntityId) -> Option<EntityKind> {
        self.graph.kind(id)
    }

    /// The registration of an entity, if it was registered.
    pub fn registration(&self, id: &EntityId) -> Option<&Entity> {
        self.registrations.get(id)
    }

    /// Every registration, by id.
    pub fn registrations(&self) -> impl Iterator<Item = &Entity> {
        self.registrations.values()
    }

    /// Every entity with its kind, sorted by id.
    pub fn entities(&self) -> Vec<(EntityId, EntityKind)> {
        self.graph.entities()
    }

    /// The KPIs of a brand (zeros for a brand without any).
    pub fn brand_stats(&self, brand: &EntityId) -> BrandStats {
        self.brand_stats.get(brand).cloned().unwrap_or_default()
    }

    /// The event at a canonical position.
    pub fn event_at(&self, position: u32) -> &Event {
        &self.events[position as usize]
    }

    /// Every event, in canonical order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Positions of the events naming `id`, ascending (oldest first).
    pub fn timeline(&self, id: &EntityId) -> &[u32] {
        self.timeline.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The latest event time folded, if any.
    pub fn latest_time(&self) -> Option<DateTime<Utc>> {
        self.events.last().map(|e| e.time)
    }

    /// Whether `person` may be scored at `at` (no consent withdrawn then).
    pub fn consents(&self, person: &EntityId, at: DateTime<Utc>) -> bool {
        match self.consent.get(person) {
            None => true,
            Some(series) => {
                let pos = series.partition_point(|(t, _)| *t <= at);
                pos == 0 || series[pos - 1].1
            }
        }
    }

    /// The people who had withdrawn consent at `at`, sorted by id.
    pub fn withdrawn_at(&self, at: DateTime<Utc>) -> Vec<EntityId> {
        let mut out: Vec<EntityId> = self
            .consent
            .keys()
            .filter(|p| !self.consents(p, at))
            .cloned()
            .collect();
        out.sort_unstable();
        out
    }

    /// Follower count of `person` at `at`: the latest audience report, else
    /// the registered count, else 0.
    pub fn followers_at(&self, person: &EntityId, at: DateTime<Utc>) -> u64 {
        if let Some(series) = self.audience.get(person) {
            let pos = series.partition_point(|(t, _)| *t <= at);
            if pos > 0 {
                return series[pos - 1].1;
            }
        }
        self.registrations
            .get(person)
            .and_then(|e| e.followers)
            .unwrap_or(0)
    }

    /// Normalised association weights of `person` at `at`, sorted by brand
    /// id: strength divided by max(1, total), so a person's associations sum
    /// to at most 1 (only those above 0).
    pub(crate) fn associations_at(
        &self,
        person: &EntityId,
        at: DateTime<Utc>,
    ) -> Vec<(EntityId, f64)> {
        let raw = self.graph.associations(person, at);
        let total: f64 = raw.iter().map(|(_, w)| w).sum();
        let norm = total.max(1.0);
        raw.into_iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(b, w)| (b, w / norm))
            .collect()
    }

    /// Whether `apply(events)` would only fold them in (every new one later
    /// than everything seen), as opposed to refolding the log.
    pub fn appends_in_order(&self, events: &[Event]) -> bool {
        let Some(last) = self.events.last() else {
            return true;
        };
        !self.fixes_provisional(events)
            && events
                .iter()
                .filter(|e| !self.positions.contains_key(&e.id))
                .all(|e| (e.time, &e.id) > (last.time, &last.id))
    }

    /// Folds in new events later than everything folded. Events seen before
    /// (or twice here: the first occurrence is the event) are skipped.
    /// Returns `false`, changing nothing, when some new event is not later
    /// than everything folded or fixes a provisional entity's kind: then
    /// the log must be refolded (`refolded`).
    pub fn append(&mut self, events: &mut Vec<Event>) -> bool {
        let mut ids = FxHashSet::default();
        events.retain(|e| !self.positions.contains_key(&e.id) && ids.insert(e.id.clone()));
        if events.is_empty() {
            return true;
        }
        sort_canonically(events);
        let in_order = match self.events.last() {
            None => true,
            Some(last) => (events[0].time, &events[0].id) > (last.time, &last.id),
        } && !self.fixes_provisional(events);
        if !in_order {
            return false;
        }
        self.fix_kinds(events);
        for e in events.drain(..) {
            self.fold(e);
        }
        true
    }

    /// The state of the log plus `events` (not folded yet), refolded from
    /// scratch with the same registrations; events at or after canonical
    /// position `emit_from` of the whole log emit deltas.
    pub fn refolded(&self, events: Vec<Event>, emit_from: Option<u32>) -> Self {
        let mut all = self.events.clone();
        all.extend(events);
        Self::build(
            Arc::clone(&self.model),
            self.registrations.values().cloned().collect(),
            all,
            emit_from,
        )
    }

    /// Registers (or replaces) an entity in this state without refolding:
    /// a registration is context for every event, so callers refold.
    pub fn register_only(&mut self, entity: Entity) {
        self.graph.set_kind(&entity.id, entity.kind);
        self.provisional.remove(&entity.id);
        if let Some(old) = self.registrations.get(&entity.id) {
            // Indexed lowercased, so removed lowercased (an interest with
            // capitals stayed behind before issue #10).
            for tag in &old.interests {
                if let Some(set) = self.interests.get_mut(&tag.to_lowercase()) {
                    set.remove(&entity.id);
                }
            }
        }
        if entity.kind.is_person() {
            for tag in &entity.interests {
                self.interests
                    .entry(tag.to_lowercase())
                    .or_default()
                    .insert(entity.id.clone());
            }
        }
        self.registrations.insert(entity.id.clone(), entity);
    }

    /// Forgets a registration without refolding.
    pub fn unregister(&mut self, id: &EntityId) {
        self.registrations.remove(id);
    }

    /// Every event of this state that does not name `id`, in canonical order.
    pub fn events_without(&self, id: &EntityId) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| !e.mentions(id))
            .cloned()
            .collect()
    }

    /// Takes the deltas emitted so far, in canonical order.
    pub fn take_deltas(&mut self) -> VecDeque<EventDeltas> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether the event being folded emits deltas.
    fn emitting(&self) -> bool {
        self.outbox
            .back()
            .is_some_and(|e| e.index as usize == self.events.len())
    }

    fn emit(&mut self, delta: Delta) {
        if self.emitting() {
            self.outbox
                .back_mut()
                .expect("emitting() found it")
                .deltas
                .push(delta);
        }
    }

    /// Every impulse of `person` as deltas carry them, in event order
    /// (impulses of 0 left out: they change no sum).
    fn impulses_of(&self, person: &EntityId) -> Vec<ImpulseInput> {
        self.impulses
            .get(person)
            .into_iter()
            .flatten()
            .filter(|i| i.amount != 0.0)
            .map(|i| (i.brand.clone(), i.component, i.amount, i.time))
            .collect()
    }

    /// Folds one event, later than or equal to every event folded so far.
    fn fold(&mut self, event: Event) {
        let pos = self.events.len() as u32;
        if self.emit_from.is_some_and(|from| pos >= from) {
            self.outbox.push_back(EventDeltas {
                index: pos,
                time: event.time,
                deltas: Vec::new(),
            });
        }
        for (id, role) in event.references() {
            if role == Role::FollowTarget {
                if self.graph.kind(id).is_none() && !self.registrations.contains_key(id) {
                    self.provisional.insert(id.clone());
                }
            } else if !self.provisional.is_empty() {
                self.provisional.remove(id);
            }
            self.graph.ensure(id, role_kind(role));
            match self.timeline.get_mut(id) {
                Some(tl) => {
                    if tl.last() != Some(&pos) {
                        tl.push(pos);
                    }
                }
                None => {
                    self.timeline.insert(id.clone(), vec![pos]);
                }
            }
        }
        self.fold_rules(&event, pos);
        self.positions.insert(event.id.clone(), pos);
        self.events.push(event);
    }
}

/// Sorts events in the canonical order: event time, then id.
pub fn sort_canonically(events: &mut [Event]) {
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
}
