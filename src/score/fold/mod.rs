//! The fold: `FoldState`, everything derived from the event log by folding
//! the events in canonical order (event time, then id). Each event's
//! impulses are computed from the context as it stood at that event's time
//! (the follower count before an audience change, the occasions before a
//! sales report), so the state is a function of the *set* of events: an
//! event earlier than what is folded needs the log refolded (`append`
//! declines it), and a late event never lands anywhere but where it
//! belongs.
//!
//! It owns the entity graph (with the one string table: entities are `u32`
//! handles here), registrations, impulses (per person, in columns), the
//! per-entity series the rules read (audience, consent, occasions and their
//! participants, sales history) and the brand KPIs; `rules.rs` holds what
//! each event type does, `roles.rs` the role checks, `brands.rs` the KPIs,
//! `impulses.rs` how impulses are kept (a sales lift once, as a credit the
//! credited people name) and the one way to read them.
//! It emits what it changes as deltas (`deltas.rs`) for whoever maintains a
//! view; it knows nothing of propagation or the live series, and does no IO
//! and reads no clock.
//!
//! It keeps no event: what the rules need of past events is in those
//! series, impulses name their event by log position, and a bitmap says
//! which log positions are folded. Whoever holds the log (the engine: the
//! store) refolds it when `append` declines late events.
//!
//! Appending events later than everything seen is the common case and costs
//! only those events.

mod brands;
pub(crate) mod deltas;
pub(crate) mod impulses;
mod roles;
pub(crate) mod rules;
pub(crate) mod sums;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};

pub use brands::BrandStats;
pub use deltas::{Delta, EventDeltas, ImpulseInput};
pub use impulses::Impulse;
pub(crate) use impulses::{Credits, ImpulseList, Impulses};
pub use roles::RoleConflict;
pub(crate) use roles::role_kind;

use super::model::ScoringModel;
use crate::domain::{Entity, EntityId, EntityKind, Event, EventId, LogPosition, Logged, Role};
use crate::graph::{EntityTable, Handle, RelationGraph};

/// What the fold keeps of an occasion.
#[derive(Debug, Clone)]
pub(in crate::score) struct OccasionInfo {
    pub(in crate::score) host: Option<Handle>,
    pub(in crate::score) time: DateTime<Utc>,
    /// (person, is performer), in the order they joined.
    pub(in crate::score) participants: Vec<(Handle, bool)>,
    /// The same, for membership tests.
    pub(in crate::score) joined: FxHashSet<(Handle, bool)>,
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

    /// Adds a participant; false if they had joined in that role already.
    fn join(&mut self, person: Handle, performer: bool) -> bool {
        if !self.joined.insert((person, performer)) {
            return false;
        }
        self.participants.push((person, performer));
        true
    }
}

/// One entity's changes of a value in time order (audience reports,
/// consent), shared copy-on-write (`FoldState::audience`).
pub(in crate::score) type Series<T> = Arc<Vec<(DateTime<Utc>, T)>>;

/// Everything the fold derives from the event log and the registrations
/// (module docs): entities as handles of one string table, impulses in
/// columns per person, the per-entity series the rules read, brand KPIs.
/// Cloning it is a copy of plain data, but for the impulse columns, which
/// are shared until either copy changes them.
#[derive(Debug, Clone)]
pub struct FoldState {
    pub(in crate::score) model: Arc<ScoringModel>,
    pub(crate) graph: RelationGraph,
    pub(in crate::score) registrations: BTreeMap<EntityId, Entity>,
    /// Which log positions are folded.
    pub(in crate::score) folded: PositionSet,
    /// The log position of the latest change of the log's context (a
    /// registration, an erasure) the state reflects, from the store
    /// (`EventStore::context_position`): no event holds it, yet the state
    /// is past it (`Self::position`). Not in snapshots: a load reads it
    /// from the store, as a build does.
    pub(in crate::score) context: Option<LogPosition>,
    /// Events folded.
    pub(in crate::score) count: usize,
    /// The latest event folded, (time, id): canonical order's end.
    pub(in crate::score) latest: Option<(DateTime<Utc>, EventId)>,
    /// Impulses of the person whose relationships they move. Shared, copied
    /// on write ([`Arc::make_mut`]): they are most of the state, and a
    /// snapshot's capture then copies none of them (only the latest chunk
    /// of a person folded into while a capture holds them is copied:
    /// `impulses.rs`).
    pub(crate) impulses: FxHashMap<Handle, Arc<Impulses>>,
    /// Sales credits, which `impulses` name by index (`impulses.rs`);
    /// shared and copied on write as the impulses are.
    pub(crate) credits: Arc<Credits>,
    /// How many folded events name each entity, by handle.
    pub(in crate::score) event_counts: Vec<u32>,
    /// Audience reports per person, occasions, the occasions each brand
    /// hosted and consent changes per person: each entry shared, copied on
    /// write ([`Arc::make_mut`]) as the impulse columns are, so a copy of
    /// the state (a checkpoint every 0.5 s, a refold) copies no entry's
    /// contents (task h48: at 1,000,000 events the deep copies of these
    /// maps were 41 % of a checkpoint's 36 ms).
    pub(in crate::score) audience: FxHashMap<Handle, Series<u64>>,
    pub(in crate::score) occasions: FxHashMap<Handle, Arc<OccasionInfo>>,
    pub(in crate::score) hosted: FxHashMap<Handle, Arc<Vec<Handle>>>,
    /// The latest `sales_baseline_periods` reports of each brand, oldest
    /// first (the baseline reads no more).
    pub(in crate::score) sales: FxHashMap<Handle, VecDeque<f64>>,
    pub(in crate::score) consent: FxHashMap<Handle, Series<bool>>,
    /// People by registered interest, lowercased.
    pub(in crate::score) interests: FxHashMap<String, Vec<Handle>>,
    pub(in crate::score) brand_stats: FxHashMap<Handle, BrandStats>,
    /// Entities seen only as follow targets so far: taken for people until
    /// an event names them in a role that fixes their kind (a brand).
    pub(in crate::score) provisional: FxHashSet<Handle>,
    /// Deltas of the folded events not taken yet, in canonical order.
    pub(in crate::score) outbox: VecDeque<EventDeltas>,
    /// Events at or after this canonical position emit deltas; `None`:
    /// none do.
    pub(in crate::score) emit_from: Option<u32>,
    /// The people read, as sums per (brand, component) (`sums.rs`):
    /// derived from `impulses` on a read, shared by clones.
    pub(crate) sums: sums::SumsCache,
}

impl FoldState {
    /// An empty state scoring with `model`; it emits deltas from the first
    /// event on.
    pub fn new(model: Arc<ScoringModel>) -> Self {
        Self {
            graph: RelationGraph::default(),
            registrations: BTreeMap::new(),
            folded: PositionSet::default(),
            context: None,
            count: 0,
            latest: None,
            impulses: FxHashMap::default(),
            credits: Arc::default(),
            event_counts: Vec::new(),
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
            sums: Default::default(),
            model,
        }
    }

    /// An empty state with these registrations, to build from a log in two
    /// passes over it in canonical order: `fix_kinds` on every event, then
    /// `fold_built` on every event, then `built`.
    pub(crate) fn to_build(model: Arc<ScoringModel>, entities: Vec<Entity>) -> Self {
        let mut state = Self::new(model);
        for e in entities {
            state.register_only(e);
        }
        state.emit_from = None;
        state
    }

    /// The second pass of a build (`to_build`): folds events in canonical
    /// order; events at or after canonical position `emit_from` emit deltas.
    pub(crate) fn fold_built(&mut self, events: Vec<Logged>, emit_from: Option<u32>) {
        self.emit_from = emit_from;
        for l in events {
            self.fold(&l.event, l.position);
        }
    }

    /// The end of a build: emits deltas from now on, and gives back memory
    /// grown for appends (a state built in one go holds its columns at
    /// their length).
    pub(crate) fn built(&mut self) {
        self.emit_from = Some(0);
        self.shrink_to_fit();
    }

    fn shrink_to_fit(&mut self) {
        self.graph.shrink_to_fit();
        for list in self.impulses.values_mut() {
            Arc::make_mut(list).shrink_to_fit();
        }
        self.impulses.shrink_to_fit();
        Arc::make_mut(&mut self.credits).shrink_to_fit();
        self.event_counts.shrink_to_fit();
    }

    /// Gives every entity the kind its roles fix, before any event is folded,
    /// so a follow of a brand that is only named as a brand later in the log
    /// is a follow of a brand from the start (the first pass of a build;
    /// any order).
    pub(crate) fn fix_kinds<'e>(&mut self, events: impl IntoIterator<Item = &'e Event>) {
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
    fn fixes_provisional<'a>(&self, events: impl IntoIterator<Item = &'a Logged>) -> bool {
        events.into_iter().any(|l| {
            l.event.references().iter().any(|(id, role)| {
                matches!(role, Role::Brand | Role::Occasion) && self.is_provisional(id)
            })
        })
    }

    fn is_provisional(&self, id: &EntityId) -> bool {
        self.graph
            .handle(id)
            .is_some_and(|h| self.provisional.contains(&h))
    }

    /// The model this state scores with.
    pub fn model(&self) -> &ScoringModel {
        &self.model
    }

    /// The model, shared.
    pub fn model_arc(&self) -> &Arc<ScoringModel> {
        &self.model
    }

    /// The impulses of `person`, in canonical event order (`None`: none);
    /// the one way to read them (`impulses.rs`).
    pub(crate) fn impulse_list(&self, person: Handle) -> Option<ImpulseList<'_>> {
        let list = self.impulses.get(&person)?;
        Some(ImpulseList::new(list, &self.credits))
    }

    /// The impulses of `person` as sums per (brand, component)
    /// (`sums.rs`), kept and extended as the list grows (`None`: none).
    pub(crate) fn person_sums(&self, person: Handle) -> Option<Arc<sums::PersonSums>> {
        let list = self.impulses.get(&person)?;
        Some(self.sums.get(list, &self.credits, &self.model))
    }

    /// The people with impulses, in no particular order.
    pub(crate) fn impulse_people(&self) -> impl Iterator<Item = Handle> + '_ {
        self.impulses.keys().copied()
    }

    /// The entity table (handles and ids).
    pub fn table(&self) -> &EntityTable {
        self.graph.entities()
    }

    /// The handle of an entity, if any event or registration named it.
    pub fn handle(&self, id: &EntityId) -> Option<Handle> {
        self.graph.handle(id)
    }

    /// Number of events folded.
    pub fn event_count(&self) -> usize {
        self.count
    }

    /// The log position after the last one folded or reflected (0 for
    /// none): every position below it is folded, erased, or a change of
    /// the log's context the state reflects (`Self::set_context_position`).
    pub fn position(&self) -> LogPosition {
        self.max_position().map_or(0, |p| p + 1)
    }

    /// Whether the event at this log position is folded.
    pub fn folded(&self, position: LogPosition) -> bool {
        self.folded.contains(position)
    }

    /// The largest log position folded or reflected (`None`: none): the
    /// largest event folded, or the latest change of the log's context when
    /// it came after (an erasure of the latest events, a registration).
    /// What a rebuilt state publishes to the change feed is at this
    /// position or after, so the feed's ids never go back (red team h33,
    /// finding 3).
    pub fn max_position(&self) -> Option<LogPosition> {
        self.folded.max().max(self.context)
    }

    /// The latest change of the log's context the state reflects
    /// (`Self::set_context_position`; `None`: none known).
    pub fn context_position(&self) -> Option<LogPosition> {
        self.context
    }

    /// Records that the state reflects the change of the log's context at
    /// `position` (`EventStore::context_position`, read before the state's
    /// reads of the log), and every one before it.
    pub fn set_context_position(&mut self, position: Option<LogPosition>) {
        self.context = self.context.max(position);
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
        let table = self.table();
        let mut v: Vec<(EntityId, EntityKind)> = table
            .handles()
            .map(|h| (table.name(h).clone(), table.kind(h)))
            .collect();
        v.sort();
        v
    }

    /// The KPIs of a brand (zeros for a brand without any).
    pub fn brand_stats(&self, brand: &EntityId) -> BrandStats {
        self.handle(brand)
            .and_then(|h| self.brand_stats.get(&h).cloned())
            .unwrap_or_default()
    }

    /// How many folded events name the entity.
    pub fn events_naming(&self, id: &EntityId) -> usize {
        self.handle(id)
            .and_then(|h| self.event_counts.get(h.index()))
            .map_or(0, |n| *n as usize)
    }

    /// The latest event time folded, if any.
    pub fn latest_time(&self) -> Option<DateTime<Utc>> {
        self.latest.as_ref().map(|(t, _)| *t)
    }

    /// Whether `person` may be scored at `at` (no consent withdrawn then).
    pub fn consents(&self, person: &EntityId, at: DateTime<Utc>) -> bool {
        self.handle(person).is_none_or(|h| self.consents_h(h, at))
    }

    /// [`Self::consents`] of a handle.
    pub(crate) fn consents_h(&self, person: Handle, at: DateTime<Utc>) -> bool {
        match self.consent.get(&person) {
            None => true,
            Some(series) => {
                let pos = series.partition_point(|(t, _)| *t <= at);
                pos == 0 || series[pos - 1].1
            }
        }
    }

    /// The people who had withdrawn consent at `at`, sorted by id.
    pub(crate) fn withdrawn_at(&self, at: DateTime<Utc>) -> Vec<Handle> {
        let mut out: Vec<Handle> = self
            .consent
            .keys()
            .copied()
            .filter(|p| !self.consents_h(*p, at))
            .collect();
        self.table().sort(&mut out);
        out
    }

    /// Follower count of `person` at `at`: the latest audience report, else
    /// the registered count, else 0.
    pub fn followers_at(&self, person: &EntityId, at: DateTime<Utc>) -> u64 {
        match self.handle(person) {
            Some(h) => self.followers_h(h, at),
            None => self
                .registrations
                .get(person)
                .and_then(|e| e.followers)
                .unwrap_or(0),
        }
    }

    pub(crate) fn followers_h(&self, person: Handle, at: DateTime<Utc>) -> u64 {
        if let Some(series) = self.audience.get(&person) {
            let pos = series.partition_point(|(t, _)| *t <= at);
            if pos > 0 {
                return series[pos - 1].1;
            }
        }
        self.registrations
            .get(self.table().name(person))
            .and_then(|e| e.followers)
            .unwrap_or(0)
    }

    /// Normalised association weights of `person` at `at`, sorted by brand
    /// id: strength divided by max(1, total), so a person's associations sum
    /// to at most 1 (only those above 0).
    fn associations_at(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        normalised_associations(self.graph.associations(person, at))
    }

    /// The latest consent change of `person` at or before `at`, if any
    /// (what a view over this state combines with its own).
    pub(crate) fn consent_change(
        &self,
        person: Handle,
        at: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, bool)> {
        let series = self.consent.get(&person)?;
        let pos = series.partition_point(|(t, _)| *t <= at);
        pos.checked_sub(1).map(|i| series[i])
    }

    /// The people registered with interest `tag` (lowercased), in
    /// registration order.
    pub(crate) fn interested(&self, tag: &str) -> &[Handle] {
        self.interests.get(tag).map_or(&[], Vec::as_slice)
    }

    /// The brand hosting an occasion, once its occasion event is folded.
    pub(crate) fn occasion_host(&self, occasion: Handle) -> Option<Handle> {
        self.occasions.get(&occasion).and_then(|o| o.host)
    }

    /// Whether `person` has joined `occasion` (as performer or not).
    pub(crate) fn has_joined(&self, occasion: Handle, person: Handle, performer: bool) -> bool {
        self.occasions
            .get(&occasion)
            .is_some_and(|o| o.joined.contains(&(person, performer)))
    }

    /// Whether `append(events)` would fold them in (every new one later
    /// than everything folded), as opposed to declining them: the log must
    /// then be refolded.
    pub fn appends_in_order<'a>(
        &self,
        events: impl IntoIterator<Item = &'a Logged, IntoIter: Clone>,
    ) -> bool {
        let Some((t, id)) = &self.latest else {
            return true;
        };
        let events = events.into_iter();
        !self.fixes_provisional(events.clone())
            && events
                .filter(|l| !self.folded.contains(l.position))
                .all(|l| (l.event.time, &l.event.id) > (*t, id))
    }

    /// Folds in new events later than everything folded. Events seen before
    /// (or twice here: the first occurrence is the event) are skipped.
    /// Returns `false`, changing nothing, when some new event is not later
    /// than everything folded or fixes a provisional entity's kind: then
    /// the log must be refolded (`refolded`).
    pub fn append(&mut self, events: Vec<Logged>) -> bool {
        self.append_shared(&events)
    }

    /// `append` of events the caller keeps (`engine::refold` keeps the
    /// events it folds for later refolds): the same fold, the same bits,
    /// without a copy of them.
    pub fn append_shared(&mut self, events: &[Logged]) -> bool {
        let mut seen = FxHashSet::default();
        let mut events: Vec<&Logged> = events
            .iter()
            .filter(|l| !self.folded.contains(l.position) && seen.insert(l.position))
            .collect();
        if events.is_empty() {
            return true;
        }
        if !self.appends_in_order(events.iter().copied()) {
            return false;
        }
        // Stable, as `sort_canonically`: the same order.
        events.sort_by(|a, b| (a.event.time, &a.event.id).cmp(&(b.event.time, &b.event.id)));
        self.fix_kinds(events.iter().map(|l| &l.event));
        for l in events {
            self.fold(&l.event, l.position);
        }
        true
    }

    /// Registers (or replaces) an entity in this state without refolding:
    /// a registration is context for every event, so callers refold.
    pub fn register_only(&mut self, entity: Entity) {
        self.graph.set_kind(&entity.id, entity.kind);
        let h = self.graph.handle(&entity.id).expect("set_kind adds it");
        self.provisional.remove(&h);
        if let Some(old) = self.registrations.get(&entity.id) {
            // Indexed lowercased, so removed lowercased (an interest with
            // capitals stayed behind before issue #10).
            for tag in &old.interests {
                if let Some(people) = self.interests.get_mut(&tag.to_lowercase()) {
                    people.retain(|p| *p != h);
                }
            }
        }
        if entity.kind.is_person() {
            for tag in &entity.interests {
                let people = self.interests.entry(tag.to_lowercase()).or_default();
                if !people.contains(&h) {
                    people.push(h);
                }
            }
        }
        self.registrations.insert(entity.id.clone(), entity);
    }

    /// Takes the deltas emitted so far, in canonical order.
    pub fn take_deltas(&mut self) -> VecDeque<EventDeltas> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether the event being folded emits deltas.
    fn emitting(&self) -> bool {
        self.outbox
            .back()
            .is_some_and(|e| e.index as usize == self.count)
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
    fn impulses_of(&self, person: Handle) -> Vec<ImpulseInput> {
        self.impulse_list(person)
            .into_iter()
            .flat_map(|list| list.iter())
            .filter(|i| i.amount != 0.0)
            .map(|i| (i.brand, i.component, i.amount, i.time))
            .collect()
    }

    /// Folds one event, later than or equal to every event folded so far.
    fn fold(&mut self, event: &Event, position: LogPosition) {
        let pos = self.count as u32;
        if self.emit_from.is_some_and(|from| pos >= from) {
            self.outbox.push_back(EventDeltas {
                index: pos,
                time: event.time,
                position,
                event: event.id.clone(),
                deltas: Vec::new(),
            });
        }
        for (id, role) in event.references() {
            if role == Role::FollowTarget {
                if self.graph.handle(id).is_none() && !self.registrations.contains_key(id) {
                    let h = self.graph.ensure(id, role_kind(role));
                    self.provisional.insert(h);
                }
            } else if !self.provisional.is_empty()
                && let Some(h) = self.graph.handle(id)
            {
                self.provisional.remove(&h);
            }
            self.graph.ensure(id, role_kind(role));
        }
        let mut named: Vec<Handle> = event
            .references()
            .iter()
            .filter_map(|(id, _)| self.graph.handle(id))
            .collect();
        named.sort_unstable();
        named.dedup();
        for h in named {
            if self.event_counts.len() <= h.index() {
                self.event_counts.resize(h.index() + 1, 0);
            }
            self.event_counts[h.index()] += 1;
        }
        self.fold_rules(event, position);
        self.folded.insert(position);
        self.count += 1;
        self.latest = Some((event.time, event.id.clone()));
    }
}

/// Association strengths normalised by `max(1, total)`, the ones above 0
/// (a person's associations sum to at most 1): what the audience rule
/// spreads growth over.
pub(crate) fn normalised_associations(raw: Vec<(Handle, f64)>) -> Vec<(Handle, f64)> {
    let total: f64 = raw.iter().map(|(_, w)| w).sum();
    let norm = total.max(1.0);
    raw.into_iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(b, w)| (b, w / norm))
        .collect()
}

/// Sorts events in the canonical order: event time, then id.
pub fn sort_canonically(events: &mut [Logged]) {
    events.sort_by(|a, b| (a.event.time, &a.event.id).cmp(&(b.event.time, &b.event.id)));
}

/// A set of log positions: one bit each, up to the largest inserted (a
/// million positions take 125 kB).
#[derive(Debug, Clone, Default)]
pub(crate) struct PositionSet {
    pub(in crate::score) words: Vec<u64>,
}

impl PositionSet {
    /// Adds a position.
    pub(crate) fn insert(&mut self, p: LogPosition) {
        let w = (p / 64) as usize;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (p % 64);
    }

    /// The largest position added.
    pub(crate) fn max(&self) -> Option<LogPosition> {
        self.end().checked_sub(1)
    }

    /// The position after the largest added (0 for none).
    pub(crate) fn end(&self) -> LogPosition {
        let Some(i) = self.words.iter().rposition(|w| *w != 0) else {
            return 0;
        };
        i as LogPosition * 64 + (64 - self.words[i].leading_zeros()) as LogPosition
    }

    /// Whether a position was added.
    pub(crate) fn contains(&self, p: LogPosition) -> bool {
        self.words
            .get((p / 64) as usize)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }
}
