//! Late events: whether events earlier than the latest folded can be folded
//! in place, giving the state one canonical fold of every event would give,
//! or the log must be refolded ([`FoldState::placement`]).
//!
//! An event folded late is folded by the same rules as any other; its
//! impulses land in the per-person columns at their canonical place, and
//! every series a rule reads is indexed by time, so it reads the context as
//! it stood at its time. What remains is what the events folded after it
//! read: an event may be folded in place only when no folded event later
//! than it read anything it writes. This module decides that per event type
//! and per entity it touches, from what the state keeps of its readers
//! ([`LateGuards`]: the latest time each entity's audience, associations,
//! sales history and occasion participants were read), the graph's edge
//! histories and the consent series. Rare context changes (an occasion)
//! always decline.
//!
//! Equal times are where canonical order falls back to the event id, which
//! the state does not keep: an event whose time equals that of something
//! folded that it would be ordered against (an impulse in a column it adds
//! to, a change of an edge it reads or writes, a read of what it writes)
//! declines. Events of one call are placed in canonical order among
//! themselves, so only what was folded before the call counts.
//!
//! No IO, no clock. Must not fold: it only decides.

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;

use super::FoldState;
use crate::domain::{Event, EventKind, Logged};
use crate::graph::{EdgeKind, Handle};

/// The latest time each entity's context was read by a folded event (the
/// readers of what a late event would write). Maxima, so they do not depend
/// on the order events were folded in.
#[derive(Debug, Clone, Default)]
pub(crate) struct LateGuards {
    /// Person: latest post, mention or audience report (they read the
    /// follower count).
    pub(in crate::score) reach: FxHashMap<Handle, DateTime<Utc>>,
    /// Person: latest audience report or performance (they read the
    /// person's associations).
    pub(in crate::score) associations: FxHashMap<Handle, DateTime<Utc>>,
    /// Brand: latest sales report (it reads the sales history and the
    /// participants of the brand's recent occasions).
    pub(in crate::score) sales: FxHashMap<Handle, DateTime<Utc>>,
    /// Occasion: latest join (attendance, or its performers at the
    /// occasion itself).
    pub(in crate::score) joins: FxHashMap<Handle, DateTime<Utc>>,
    /// Nothing is known of the readers of events at or before this time (a
    /// state restored from a snapshot, which does not keep the guards):
    /// every late event at or before it declines until a refold.
    pub(in crate::score) unknown_until: Option<DateTime<Utc>>,
}

impl LateGuards {
    /// Notes a read of `h`'s context at `t`.
    pub(in crate::score) fn note(
        map: &mut FxHashMap<Handle, DateTime<Utc>>,
        h: Handle,
        t: DateTime<Utc>,
    ) {
        let e = map.entry(h).or_insert(t);
        *e = (*e).max(t);
    }

    /// Whether `h`'s context in `map` was read at `t` or after.
    fn read_since(map: &FxHashMap<Handle, DateTime<Utc>>, h: Handle, t: DateTime<Utc>) -> bool {
        map.get(&h).is_some_and(|r| *r >= t)
    }
}

/// How the fold takes some events ([`FoldState::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every new event is folded into the state as it is; `late` of them
    /// are earlier than the latest folded.
    InPlace {
        /// New events earlier than the latest folded.
        late: usize,
    },
    /// Some event cannot be placed: the log must be refolded, at least
    /// from `from` on (the earliest time of an event that declined; `None`:
    /// the whole log, for a kind fixed late).
    Refold {
        /// The earliest time a refold must start from, when known.
        from: Option<DateTime<Utc>>,
    },
}

impl FoldState {
    /// How `append(events)` would take `events` (module docs): in place,
    /// or declined because the log must be refolded. Events folded already
    /// are left out.
    pub fn placement(&self, events: &[Logged]) -> Placement {
        let Some((t, id)) = &self.latest else {
            return Placement::InPlace { late: 0 };
        };
        if self.fixes_provisional(events) {
            return Placement::Refold { from: None };
        }
        let mut late = 0;
        let mut from: Option<DateTime<Utc>> = None;
        for l in events.iter().filter(|l| !self.folded.contains(l.position)) {
            if (l.event.time, &l.event.id) > (*t, id) {
                continue;
            }
            late += 1;
            if !self.commutes(&l.event) {
                from = Some(from.map_or(l.event.time, |f| f.min(l.event.time)));
            }
        }
        match from {
            None => Placement::InPlace { late },
            Some(from) => Placement::Refold { from: Some(from) },
        }
    }

    /// Whether `event`, earlier than the latest folded, may be folded in
    /// place (module docs): nothing folded after it read what it writes,
    /// and nothing folded at its very time is ordered against it.
    fn commutes(&self, event: &Event) -> bool {
        let t = event.time;
        if self.late.unknown_until.is_some_and(|u| t <= u) {
            return false;
        }
        let g = &self.late;
        // Entities an event names are in the graph once folded; one the
        // state has never seen has no context to guard.
        let h = |id| self.graph.handle(id);
        use EventKind::*;
        match &event.kind {
            Purchase { person, .. } | Review { person, .. } | Service { person, .. } => {
                h(person).is_none_or(|p| !self.impulse_at(p, t))
            }
            Post { person, .. } | Mention { person, .. } => {
                h(person).is_none_or(|p| !self.impulse_at(p, t) && !self.audience_at(p, t))
            }
            Cause { tags, .. } => tags.iter().all(|tag| {
                self.interested(&tag.to_lowercase())
                    .iter()
                    .all(|p| !self.impulse_at(*p, t))
            }),
            Follow { person, target, .. } | Unfollow { person, target } => {
                match (h(person), h(target)) {
                    (Some(p), Some(q)) => {
                        !self.edge_changed_since(p, q, EdgeKind::Follow, t)
                            && !self.impulse_at(p, t)
                    }
                    _ => true,
                }
            }
            Endorsement { person, brand, .. } => match (h(person), h(brand)) {
                (Some(p), Some(b)) => {
                    !self.edge_changed_since(p, b, EdgeKind::Association, t)
                        && !LateGuards::read_since(&g.associations, p, t)
                        && !self.impulse_at(p, t)
                }
                _ => true,
            },
            Audience { person, .. } => h(person).is_none_or(|p| {
                !LateGuards::read_since(&g.reach, p, t)
                    && !self.graph.association_changed_at(p, t)
                    && !self.impulse_at(p, t)
            }),
            Attendance { person, occasion } => {
                let Some(o) = h(occasion) else {
                    return true;
                };
                let Some(info) = self.occasions.get(&o) else {
                    return true;
                };
                let person = h(person);
                if person.is_some_and(|p| info.joined.contains(&(p, false))) {
                    // The later attendance was the first in canonical order.
                    return false;
                }
                match info.host {
                    // The occasion read its earlier attendance.
                    Some(_) if info.time >= t => false,
                    Some(host) => {
                        !LateGuards::read_since(&g.sales, host, t)
                            && person.is_none_or(|p| !self.impulse_at(p, t))
                    }
                    None => true,
                }
            }
            BrandSales { brand, .. } => {
                let Some(b) = h(brand) else {
                    return true;
                };
                if LateGuards::read_since(&g.sales, b, t) {
                    return false;
                }
                // The occasions this report credits must have had no one
                // join since (a participant who joined after it would be
                // credited); and their columns no impulse at its time.
                self.credited_occasions(b, t).all(|o| {
                    !LateGuards::read_since(&g.joins, o, t)
                        && self.occasions[&o]
                            .participants
                            .iter()
                            .all(|(p, _)| !self.impulse_at(*p, t))
                })
            }
            Consent { person, .. } => h(person).is_none_or(|p| {
                self.consent
                    .get(&p)
                    .and_then(|s| s.last())
                    .is_none_or(|(last, _)| *last < t)
            }),
            // It reads and writes the participants, associations and
            // impulses of many people: rare enough to refold.
            Occasion { .. } => false,
        }
    }

    /// Whether `person`'s column holds an impulse at exactly `t`.
    fn impulse_at(&self, person: Handle, t: DateTime<Utc>) -> bool {
        self.impulses.get(&person).is_some_and(|list| {
            let i = list.time.partition_point(|x| *x < t);
            list.time.get(i).is_some_and(|x| *x == t)
        })
    }

    /// Whether `person`'s audience series has a report at exactly `t`.
    fn audience_at(&self, person: Handle, t: DateTime<Utc>) -> bool {
        self.audience.get(&person).is_some_and(|s| {
            let i = s.partition_point(|(x, _)| *x < t);
            s.get(i).is_some_and(|(x, _)| *x == t)
        })
    }

    /// Whether the edge changed at `t` or after.
    fn edge_changed_since(
        &self,
        from: Handle,
        to: Handle,
        kind: EdgeKind,
        t: DateTime<Utc>,
    ) -> bool {
        self.graph
            .last_change(from, to, kind)
            .is_some_and(|last| last >= t)
    }
}
