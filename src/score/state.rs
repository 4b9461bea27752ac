//! `ScoreState`: everything derived from the event log, built by folding the
//! events in canonical order (event time, then id). Each event's impulses are
//! computed from the context as it stood at that event's time (the follower
//! count before an audience change, the occasions before a sales report), so
//! the state is a function of the *set* of events: an event that arrives late
//! makes the state refold from the log (`apply` does that by itself), and a
//! late event never lands anywhere but where it belongs.
//!
//! Appending events later than everything seen is the common case and costs
//! only those events.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::live::{self, LiveScores};
use super::relspace::RelSnapshot;
use super::{Component, ScoringModel};
use crate::domain::{Entity, EntityId, EntityKind, Event, EventId, EventKind, EventType, Role};
use crate::graph::{EdgeKind, RelationGraph};

/// An impulse on the relationship (owner person, `brand`).
#[derive(Debug, Clone)]
pub(crate) struct Impulse {
    pub brand: EntityId,
    /// Position of the event in `ScoreState::events`.
    pub event: u32,
    pub time: DateTime<Utc>,
    pub component: Component,
    pub amount: f64,
}

/// A processed event as the explanations and timelines need it.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub event: &'a Event,
    pub position: u32,
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

#[derive(Debug, Clone)]
struct OccasionInfo {
    host: Option<EntityId>,
    time: DateTime<Utc>,
    /// (person, is performer), in the order they joined.
    participants: Vec<(EntityId, bool)>,
    /// The same, for membership tests.
    joined: FxHashSet<(EntityId, bool)>,
}

/// Service and sales figures of a brand, for its summary (seed 003's KPIs).
///
/// Every sum is of values validation bounded (`domain::bounds`), so none can
/// become infinite: the worst, `sales_amount`, adds converted amounts of at
/// most 1e27 each, under 2e46 after even 2^64 purchases.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BrandStats {
    pub purchases: u64,
    /// Sum of the purchases' amounts, in the model's base currency.
    pub sales_amount: f64,
    /// Sum of the brand_sales reports, in the model's base currency.
    pub reported_sales: f64,
    pub service_contacts: u64,
    pub csat_sum: f64,
    pub csat_count: u64,
    pub effort_sum: f64,
    pub effort_count: u64,
    pub resolved_count: u64,
    pub resolution_known: u64,
    pub first_contact_resolved: u64,
    pub wait_sum: f64,
    pub wait_count: u64,
    pub wait_max: f64,
    pub transfers_sum: u64,
    pub reviews: u64,
    pub rating_sum: f64,
}

#[derive(Debug, Clone)]
pub struct ScoreState {
    pub(crate) model: Arc<ScoringModel>,
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
    /// Every relationship's components now, kept per event (live.rs).
    pub(crate) live: LiveScores,
    /// What the folded events do to the live series, not applied yet
    /// (`sync_live` applies them off the write path), in canonical order.
    pending: VecDeque<PendingEvent>,
    /// Folds of events before this position record nothing for the live
    /// series (start-up and refolds: it is built at the latest checkpoint).
    live_from: Option<u32>,
    /// Whether the event being folded records its live operations.
    live_on: bool,
}

/// One folded event's operations on the live series.
#[derive(Debug, Clone)]
struct PendingEvent {
    position: u32,
    time: DateTime<Utc>,
    ops: Vec<LiveOp>,
}

type ImpulseInput = (EntityId, Component, f64, DateTime<Utc>);

/// An operation on the live series, with what it needs captured at fold time.
#[derive(Debug, Clone)]
enum LiveOp {
    Impulse(EntityId, EntityId, Component, f64),
    Follow(EntityId, EntityId, Option<f64>),
    Association(EntityId, EntityId, f64),
    Withdraw(EntityId, Vec<ImpulseInput>),
    Grant {
        person: EntityId,
        follows: Vec<(EntityId, f64)>,
        associations: Vec<(EntityId, f64)>,
        impulses: Vec<ImpulseInput>,
    },
}

/// Why an event cannot be applied (it names an entity in a role its kind
/// cannot play). Found before anything is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConflict {
    pub field: &'static str,
    pub message: String,
}

impl ScoreState {
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
            live: LiveScores::new(Arc::clone(&model)),
            pending: VecDeque::new(),
            live_from: None,
            live_on: true,
            model,
        }
    }

    /// Builds the state of a whole log, registrations first.
    pub fn build(model: Arc<ScoringModel>, entities: Vec<Entity>, mut events: Vec<Event>) -> Self {
        let mut state = Self::new(model);
        for e in entities {
            state.register_only(e);
        }
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        state.fix_kinds(&events);
        state.fold_all(events);
        state.sync_live(None);
        state
    }

    /// Folds a whole sorted log into a fresh state; the live series records
    /// nothing before the latest checkpoint (it starts from a build there,
    /// as an in-order fold would).
    fn fold_all(&mut self, events: Vec<Event>) {
        self.live_from = Some(live::checkpoint(&events).first_pending as u32);
        for e in events {
            self.fold(e);
        }
        self.live_from = None;
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

    pub fn model(&self) -> &ScoringModel {
        &self.model
    }

    /// The live series: every relationship now, kept per event.
    pub fn live(&self) -> &LiveScores {
        &self.live
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    pub fn contains(&self, id: &EventId) -> bool {
        self.positions.contains_key(id)
    }

    pub fn kind(&self, id: &EntityId) -> Option<EntityKind> {
        self.graph.kind(id)
    }

    pub fn registration(&self, id: &EntityId) -> Option<&Entity> {
        self.registrations.get(id)
    }

    pub fn entities(&self) -> Vec<(EntityId, EntityKind)> {
        self.graph.entities()
    }

    pub fn brand_stats(&self, brand: &EntityId) -> BrandStats {
        self.brand_stats.get(brand).cloned().unwrap_or_default()
    }

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

    /// The latest event time seen, if any.
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

    /// Normalised association weights of `person` at `at`: strength divided by
    /// max(1, total), so a person's associations sum to at most 1.
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

    /// Checks that every entity the event names can play its role there.
    /// `pending` holds kinds implied by earlier events of the same request.
    pub fn check_roles(
        &self,
        event: &Event,
        pending: &mut HashMap<EntityId, EntityKind>,
    ) -> Result<(), RoleConflict> {
        for (id, role) in event.references() {
            // A provisional person (only ever followed) may still turn out
            // to be a brand.
            let known = pending.get(id).copied().or_else(|| {
                (!(self.provisional.contains(id) && role != Role::Occasion))
                    .then(|| self.kind(id))
                    .flatten()
            });
            let field = field_of(event, id, role);
            let ok = match (role, known) {
                (_, None) => true,
                (Role::Person | Role::Influencer, Some(k)) => k.is_person(),
                (Role::Brand, Some(k)) => k == EntityKind::Brand,
                (Role::Occasion, Some(k)) => k == EntityKind::Occasion,
                (Role::FollowTarget, Some(k)) => k.is_person() || k == EntityKind::Brand,
            };
            if !ok {
                return Err(RoleConflict {
                    field,
                    message: format!(
                        "'{id}' is a {}, which cannot be the {field} of a {} event",
                        known.map(EntityKind::as_str).unwrap_or("?"),
                        event.kind.event_type().as_str()
                    ),
                });
            }
            if known.is_none() && role != Role::FollowTarget {
                pending.insert(id.clone(), role_kind(role));
            }
        }
        Ok(())
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

    /// Applies new events (not seen before). Events later than everything
    /// seen are folded in directly; an earlier one refolds the whole log in
    /// canonical order. Returns whether a refold happened.
    pub fn apply(&mut self, mut events: Vec<Event>) -> bool {
        // Seen before, or twice here: the first occurrence is the event.
        let mut ids = FxHashSet::default();
        events.retain(|e| !self.positions.contains_key(&e.id) && ids.insert(e.id.clone()));
        if events.is_empty() {
            return false;
        }
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let in_order = match self.events.last() {
            None => true,
            Some(last) => (events[0].time, &events[0].id) > (last.time, &last.id),
        } && !self.fixes_provisional(&events);
        if in_order {
            self.fix_kinds(&events);
            for e in events {
                self.fold(e);
            }
            false
        } else {
            let mut all = std::mem::take(&mut self.events);
            all.extend(events);
            self.refold(all);
            true
        }
    }

    /// Registers (or replaces) an entity; the log is refolded because a
    /// registration is context for every event (interests, follower baseline).
    pub fn register(&mut self, entity: Entity) {
        self.register_only(entity);
        let all = std::mem::take(&mut self.events);
        self.refold(all);
    }

    /// Forgets an entity and every event naming it, as if they had never been.
    pub fn erase(&mut self, id: &EntityId) {
        self.registrations.remove(id);
        let mut all = std::mem::take(&mut self.events);
        all.retain(|e| !e.mentions(id));
        let registrations = std::mem::take(&mut self.registrations);
        let mut fresh = Self::new(Arc::clone(&self.model));
        for e in registrations.into_values() {
            fresh.register_only(e);
        }
        *self = fresh;
        all.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        self.fix_kinds(&all);
        self.fold_all(all);
    }

    fn refold(&mut self, mut all: Vec<Event>) {
        all.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let registrations = std::mem::take(&mut self.registrations);
        let mut fresh = Self::new(Arc::clone(&self.model));
        for e in registrations.into_values() {
            fresh.register_only(e);
        }
        *self = fresh;
        self.fix_kinds(&all);
        self.fold_all(all);
    }

    fn register_only(&mut self, entity: Entity) {
        self.graph.set_kind(&entity.id, entity.kind);
        self.provisional.remove(&entity.id);
        if let Some(old) = self.registrations.get(&entity.id) {
            for tag in &old.interests {
                if let Some(set) = self.interests.get_mut(tag) {
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

    /// The impulse of a person's own interaction with a brand (purchase,
    /// post, mention, review, service contact). It is kept even when it is
    /// 0 (a free item, a neutral post): the interaction makes the
    /// relationship, which then reads 50 with the event among its reasons.
    fn push_direct(
        &mut self,
        person: &EntityId,
        brand: &EntityId,
        event: u32,
        time: DateTime<Utc>,
        component: Component,
        amount: f64,
    ) {
        if amount == 0.0 {
            self.keep_impulse(person, brand, event, time, component, 0.0);
        } else {
            self.push_impulse(person, brand, event, time, component, amount);
        }
    }

    /// An impulse on (person, brand); one of 0 moves nothing and is dropped.
    fn push_impulse(
        &mut self,
        person: &EntityId,
        brand: &EntityId,
        event: u32,
        time: DateTime<Utc>,
        component: Component,
        amount: f64,
    ) {
        if amount == 0.0 || !amount.is_finite() {
            return;
        }
        if self.live_on {
            self.record(LiveOp::Impulse(
                person.clone(),
                brand.clone(),
                component,
                amount,
            ));
        }
        self.keep_impulse(person, brand, event, time, component, amount);
    }

    /// Records an impulse in the state (not in the live series: callers
    /// decide, and one of 0 changes no sum there).
    fn keep_impulse(
        &mut self,
        person: &EntityId,
        brand: &EntityId,
        event: u32,
        time: DateTime<Utc>,
        component: Component,
        amount: f64,
    ) {
        let impulse = Impulse {
            brand: brand.clone(),
            event,
            time,
            component,
            amount,
        };
        match self.impulses.get_mut(person) {
            Some(list) => list.push(impulse),
            None => {
                self.impulses.insert(person.clone(), vec![impulse]);
            }
        }
    }

    /// Folds one event, later than or equal to every event folded so far.
    fn fold(&mut self, event: Event) {
        let pos = self.events.len() as u32;
        let t = event.time;
        self.live_on = self.live_from.is_none_or(|from| pos >= from);
        if self.live_on {
            self.pending.push_back(PendingEvent {
                position: pos,
                time: t,
                ops: Vec::new(),
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
        let imp = self.model.impulse;
        use EventKind::*;
        match &event.kind {
            Purchase {
                person,
                brand,
                amount,
                currency,
                ..
            } => {
                // In the base currency; a currency the table lacks (an event
                // stored before the table changed) is a purchase of unknown
                // value: it still makes the relationship, and adds nothing.
                let value = self.model.currency.to_base(*amount, *currency);
                let x = value.map_or(0.0, |v| imp.purchase * (1.0 + v / imp.purchase_unit).ln());
                self.push_direct(person, brand, pos, t, Component::Sales, x);
                let s = self.brand_stats.entry(brand.clone()).or_default();
                s.purchases += 1;
                s.sales_amount += value.unwrap_or(0.0);
            }
            BrandSales {
                brand,
                amount,
                currency,
            } => {
                // A report in a currency the table lacks is left out.
                if let Some(value) = self.model.currency.to_base(*amount, *currency) {
                    self.fold_brand_sales(brand, value, pos, t);
                }
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
                let reach = self.followers_at(person, t) as f64;
                let x = w * sentiment.value * (1.0 + imp.reach_boost * (1.0 + reach).log10());
                self.push_direct(person, brand, pos, t, Component::Sentiment, x);
            }
            Review {
                person,
                brand,
                rating,
                sentiment,
                ..
            } => {
                let mut x = (f64::from(*rating) - 3.0) * imp.review_star;
                if let Some(s) = sentiment {
                    x += s.value * imp.review_text;
                }
                self.push_direct(person, brand, pos, t, Component::Sentiment, x);
                let s = self.brand_stats.entry(brand.clone()).or_default();
                s.reviews += 1;
                s.rating_sum += f64::from(*rating);
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
                let mut x = 0.0;
                if let Some(c) = csat {
                    x += (f64::from(*c) - 3.0) * imp.service_csat;
                }
                if let Some(e) = effort {
                    x += (4.0 - f64::from(*e)) * imp.service_effort;
                }
                match resolved {
                    Some(true) => x += imp.service_resolved,
                    Some(false) => x -= imp.service_resolved,
                    None => {}
                }
                if let Some(w) = wait_seconds {
                    x -= imp.service_wait * (1.0 + w / 60.0).ln();
                }
                if let Some(n) = transfers {
                    x -= imp.service_transfer * f64::from(*n);
                }
                self.push_direct(person, brand, pos, t, Component::Service, x);
                let s = self.brand_stats.entry(brand.clone()).or_default();
                s.service_contacts += 1;
                if let Some(c) = csat {
                    s.csat_sum += f64::from(*c);
                    s.csat_count += 1;
                }
                if let Some(e) = effort {
                    s.effort_sum += f64::from(*e);
                    s.effort_count += 1;
                }
                if let Some(r) = resolved {
                    s.resolution_known += 1;
                    if *r {
                        s.resolved_count += 1;
                        if transfers.unwrap_or(0) == 0 {
                            s.first_contact_resolved += 1;
                        }
                    }
                }
                if let Some(w) = wait_seconds {
                    s.wait_sum += w;
                    s.wait_count += 1;
                    s.wait_max = s.wait_max.max(*w);
                }
                s.transfers_sum += u64::from(transfers.unwrap_or(0));
            }
            Endorsement {
                person,
                brand,
                strength,
            } => {
                self.push_impulse(
                    person,
                    brand,
                    pos,
                    t,
                    Component::Engagement,
                    imp.endorsement * strength,
                );
                self.set_association(person, brand, t, *strength);
            }
            Audience { person, followers } => {
                let before = self.followers_at(person, t);
                self.audience
                    .entry(person.clone())
                    .or_default()
                    .push((t, *followers));
                if before > 0 && *followers > 0 {
                    let growth = imp.audience_growth * (*followers as f64 / before as f64).ln();
                    for (brand, share) in self.associations_at(person, t) {
                        self.push_impulse(
                            person,
                            &brand,
                            pos,
                            t,
                            Component::Influence,
                            growth * share,
                        );
                    }
                }
            }
            Follow {
                person,
                target,
                strength,
            } => {
                self.graph
                    .set_edge(person, target, EdgeKind::Follow, t, Some(*strength));
                if self.live_on && self.kind(target).is_some_and(EntityKind::is_person) {
                    self.record(LiveOp::Follow(
                        person.clone(),
                        target.clone(),
                        Some(*strength),
                    ));
                }
                if self.kind(target) == Some(EntityKind::Brand) {
                    self.push_impulse(
                        person,
                        target,
                        pos,
                        t,
                        Component::Engagement,
                        imp.follow_brand * strength,
                    );
                }
            }
            Unfollow { person, target } => {
                let was = self.graph.follow_weight(person, target, t);
                self.graph
                    .set_edge(person, target, EdgeKind::Follow, t, None);
                if self.live_on && self.kind(target).is_some_and(EntityKind::is_person) {
                    self.record(LiveOp::Follow(person.clone(), target.clone(), None));
                }
                if let (Some(w), Some(EntityKind::Brand)) = (was, self.kind(target)) {
                    self.push_impulse(
                        person,
                        target,
                        pos,
                        t,
                        Component::Engagement,
                        -imp.follow_brand * w,
                    );
                }
            }
            Occasion {
                occasion,
                brand,
                performers,
                ..
            } => {
                self.graph
                    .set_edge(brand, occasion, EdgeKind::Hosts, t, Some(1.0));
                let info = self
                    .occasions
                    .entry(occasion.clone())
                    .or_insert_with(|| OccasionInfo::new(t));
                info.host = Some(brand.clone());
                info.time = t;
                let earlier: Vec<EntityId> = info
                    .participants
                    .iter()
                    .filter(|(_, performer)| !performer)
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in performers {
                    if info.joined.insert((p.clone(), true)) {
                        info.participants.push((p.clone(), true));
                    }
                }
                let hosted = self.hosted.entry(brand.clone()).or_default();
                if !hosted.contains(occasion) {
                    hosted.push(occasion.clone());
                }
                for p in performers {
                    self.graph
                        .set_edge(p, occasion, EdgeKind::Performs, t, Some(1.0));
                    self.push_impulse(p, brand, pos, t, Component::Engagement, imp.performance);
                    let current = self
                        .graph
                        .edge_weight(p, brand, EdgeKind::Association, t)
                        .unwrap_or(0.0);
                    if imp.performance_association > current {
                        self.set_association(p, brand, t, imp.performance_association);
                    }
                }
                // Attendance reported before the occasion itself now meets its host.
                for p in earlier {
                    self.push_impulse(&p, brand, pos, t, Component::Engagement, imp.attendance);
                }
            }
            Attendance { person, occasion } => {
                self.graph
                    .set_edge(person, occasion, EdgeKind::Attends, t, Some(1.0));
                let info = self
                    .occasions
                    .entry(occasion.clone())
                    .or_insert_with(|| OccasionInfo::new(t));
                let first = info.joined.insert((person.clone(), false));
                if first {
                    info.participants.push((person.clone(), false));
                    if let Some(host) = info.host.clone() {
                        self.push_impulse(
                            person,
                            &host,
                            pos,
                            t,
                            Component::Engagement,
                            imp.attendance,
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
                let amount = self
                    .model
                    .currency
                    .to_base(*amount, *currency)
                    .unwrap_or(0.0);
                let mut people: BTreeSet<EntityId> = BTreeSet::new();
                for tag in tags {
                    if let Some(set) = self.interests.get(&tag.to_lowercase()) {
                        people.extend(set.iter().cloned());
                    }
                }
                let x = imp.cause * (1.0 + 0.25 * (1.0 + amount).log10());
                for p in people {
                    self.push_impulse(&p, brand, pos, t, Component::Values, x);
                }
            }
            Consent { person, granted } => {
                self.consent
                    .entry(person.clone())
                    .or_default()
                    .push((t, *granted));
                if self.live_on {
                    self.consent_changed(person, *granted, t);
                }
            }
        }
        self.positions.insert(event.id.clone(), pos);
        self.events.push(event);
    }

    /// Sets person `p`'s association with `brand` in the graph and the live
    /// series.
    fn set_association(&mut self, p: &EntityId, brand: &EntityId, t: DateTime<Utc>, v: f64) {
        self.graph
            .set_edge(p, brand, EdgeKind::Association, t, Some(v));
        if self.live_on {
            self.record(LiveOp::Association(p.clone(), brand.clone(), v));
        }
    }

    /// Every impulse of `person`, as the live series takes them.
    fn impulses_of(&self, person: &EntityId) -> Vec<(EntityId, Component, f64, DateTime<Utc>)> {
        self.impulses
            .get(person)
            .into_iter()
            .flatten()
            .filter(|i| i.amount != 0.0)
            .map(|i| (i.brand.clone(), i.component, i.amount, i.time))
            .collect()
    }

    fn consent_changed(&mut self, person: &EntityId, granted: bool, t: DateTime<Utc>) {
        let impulses = self.impulses_of(person);
        let op = if granted {
            LiveOp::Grant {
                person: person.clone(),
                follows: self.graph.followees(person, t),
                associations: self.graph.associations(person, t),
                impulses,
            }
        } else {
            LiveOp::Withdraw(person.clone(), impulses)
        };
        self.record(op);
    }

    fn record(&mut self, op: LiveOp) {
        self.pending
            .back_mut()
            .expect("fold opened the event")
            .ops
            .push(op);
    }

    /// Folded events the live series has not applied yet.
    pub fn live_lag(&self) -> usize {
        self.pending.len()
    }

    /// Whether the live series has applied every folded event.
    pub fn live_synced(&self) -> bool {
        self.pending.is_empty() && self.live.checkpoint() == live::checkpoint(&self.events).at
    }

    /// The live series' components at `at` (live.rs), `None` while it has
    /// not caught up with the folded events or when `at` is before the
    /// latest event.
    pub fn live_components_at(
        &self,
        at: DateTime<Utc>,
    ) -> Option<Vec<((EntityId, EntityId), super::Components)>> {
        if !self.live_synced() {
            return None;
        }
        self.live.components_at(at)
    }

    /// Brings the live series up to date with the folded events, in
    /// canonical order: a build at the latest checkpoint if it is not there
    /// yet, then the pending events after it one by one. Stops after
    /// `deadline` (between two events); returns whether it caught up. The
    /// result is the same whenever and in how many slices it runs.
    pub fn sync_live(&mut self, deadline: Option<Instant>) -> bool {
        let target = live::checkpoint(&self.events);
        if self.live.checkpoint() != target.at {
            let Some((_, as_of)) = target.at else {
                return true;
            };
            self.checkpoint_live(as_of);
            self.live.set_checkpoint(target.at);
            let first = target.first_pending as u32;
            while self.pending.front().is_some_and(|e| e.position < first) {
                self.pending.pop_front();
            }
        }
        while let Some(event) = self.pending.pop_front() {
            self.live.advance(event.time);
            self.live.begin_event();
            for op in event.ops {
                match op {
                    LiveOp::Impulse(p, b, c, x) => self.live.impulse(&p, &b, c, x, event.time),
                    LiveOp::Follow(q, p, w) => self.live.set_follow(&q, &p, w),
                    LiveOp::Association(p, b, v) => self.live.set_association(&p, &b, Some(v)),
                    LiveOp::Withdraw(p, impulses) => self.live.withdraw(&p, &impulses),
                    LiveOp::Grant {
                        person,
                        follows,
                        associations,
                        impulses,
                    } => self.live.grant(&person, &follows, &associations, &impulses),
                }
            }
            self.live.end_event();
            // The drift check, at canonical positions where the inputs as of
            // this event's time are exactly those of the events up to it.
            let next_later = self
                .events
                .get(event.position as usize + 1)
                .is_none_or(|e| e.time > event.time);
            if (event.position + 1) % live::CHECK_EVERY == 0
                && next_later
                && self.live.check_drift()
            {
                let mark = self.live.checkpoint();
                self.checkpoint_live(event.time);
                self.live.set_checkpoint(mark);
                self.live.note_recompute();
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return self.pending.is_empty();
            }
        }
        true
    }

    /// Rebuilds the live series (a checkpoint, live.rs) from the state as it
    /// stood at `as_of` (follows, associations, consent, the impulses of
    /// events at or before it): the batch driver sums the series there, and
    /// the live series starts from that and its residual.
    fn checkpoint_live(&mut self, as_of: DateTime<Utc>) {
        let snapshot = RelSnapshot::build(self, as_of);
        let (s, r) = snapshot.seed();
        let (people, brands) = (snapshot.people(), snapshot.brands());
        let named = |list: &[((u32, u32), super::Components)]| -> Vec<_> {
            list.iter()
                .map(|((p, b), v)| (&people[*p as usize], &brands[*b as usize], *v))
                .collect()
        };
        let (s, r) = (named(&s), named(&r));
        let follows = self.graph.follow_edges(as_of);
        let mut associations = Vec::new();
        for (id, kind) in self.graph.entities() {
            if kind.is_person() {
                for (b, a) in self.graph.associations(&id, as_of) {
                    associations.push((id.clone(), b, a));
                }
            }
        }
        let mut withdrawn: Vec<EntityId> = self
            .consent
            .keys()
            .filter(|p| !self.consents(p, as_of))
            .cloned()
            .collect();
        withdrawn.sort_unstable();
        let live = LiveScores::build(
            Arc::clone(&self.model),
            as_of,
            &follows,
            &associations,
            &s,
            &r,
            &withdrawn,
            self.live.stats(),
        );
        self.live = live;
    }

    /// A full recompute of the live series on demand (what a checkpoint
    /// does): rebuilds it from the inputs at the latest event, keeping its
    /// checkpoint mark, so it carries on per event from there.
    pub fn recompute_live(&mut self) {
        self.sync_live(None);
        if let Some(latest) = self.latest_time() {
            let mark = self.live.checkpoint();
            self.checkpoint_live(latest);
            self.live.set_checkpoint(mark);
            self.live.note_recompute();
        }
    }

    /// A sales report: the lift over the brand's baseline is credited to the
    /// people who took part in its recent occasions (seed 004: "host an
    /// outdoor concert ... and, three days later, see an increase in sales").
    fn fold_brand_sales(&mut self, brand: &EntityId, amount: f64, pos: u32, t: DateTime<Utc>) {
        let imp = self.model.impulse;
        let history = self.sales.entry(brand.clone()).or_default();
        let baseline = {
            let n = history.len().min(imp.sales_baseline_periods);
            (n > 0).then(|| history[history.len() - n..].iter().sum::<f64>() / n as f64)
        };
        history.push(amount);
        self.brand_stats
            .entry(brand.clone())
            .or_default()
            .reported_sales += amount;
        let Some(baseline) = baseline.filter(|b| *b > 0.0) else {
            return;
        };
        let lift = (amount / baseline - 1.0).clamp(-1.0, 3.0);
        let window = Duration::milliseconds((imp.sales_window_days * 86_400_000.0) as i64);
        // Occasions are hosted in time order: walk back from the latest and
        // stop at the first that ended before the window.
        let mut credited: Vec<EntityId> = Vec::new();
        let mut seen: FxHashSet<&EntityId> = FxHashSet::default();
        for occ in self.hosted.get(brand).into_iter().flatten().rev() {
            let info = &self.occasions[occ];
            if info.time > t {
                continue;
            }
            if t - info.time > window {
                break;
            }
            for (p, _) in &info.participants {
                if seen.insert(p) {
                    credited.push(p.clone());
                }
            }
        }
        for p in credited {
            self.push_impulse(&p, brand, pos, t, Component::Sales, imp.sales_lift * lift);
        }
    }
}

fn role_kind(role: Role) -> EntityKind {
    match role {
        Role::Person | Role::FollowTarget => EntityKind::Consumer,
        Role::Influencer => EntityKind::Influencer,
        Role::Brand => EntityKind::Brand,
        Role::Occasion => EntityKind::Occasion,
    }
}

fn field_of(event: &Event, id: &EntityId, role: Role) -> &'static str {
    match (role, &event.kind) {
        (Role::FollowTarget, _) => "target",
        (Role::Brand, _) => "brand",
        (Role::Occasion, _) => "occasion",
        (Role::Influencer, EventKind::Occasion { performers, .. }) if performers.contains(id) => {
            "performers"
        }
        _ => "person",
    }
}
