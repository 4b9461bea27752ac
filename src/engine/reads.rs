//! The relationship read's cache of adjoint walks (issue #11: a read must
//! not cost a full walk): `Walks`, the walks of recently read pairs, given
//! again to `score::propagate::adjoint::read_in` for any time their span
//! covers, on the state they were taken on or a later one that did not
//! change the graph there.
//!
//! Why a walk outlives a state version: it depends only on the graph rows
//! and consents of the people it visited, over its span, never on impulses.
//! A fold in place adds events no earlier than the latest folded
//! (`FoldState::latest_time`), so it changes no row before that time;
//! anything that reaches further back (a late event, an erasure, a fixed
//! kind) is a new state generation, which empties the cache. So a walk
//! taken at version v stays right for every later version of its
//! generation wherever its span ends at a change it saw, and up to the
//! latest event time of its state where its span was open. A new
//! generation that only added events from some time T on (a refold from an
//! event-time checkpoint, `lineage.rs`) leaves every row before T as it
//! was, so a walk of an earlier generation still serves times before T
//! (`Lineage::unchanged_at`, the one rule); anything else (a whole build,
//! an erasure, a fixed kind) leaves it nothing.
//!
//! `Reasons`: the stored events that relationship reads listed as reasons,
//! by log position, so a read does not go to the store for them again (a
//! store read was about 140 µs of a read's 800 under the rotation of
//! `benches/http_read.sh`). A position holds one event for as long as the
//! events are kept, so an entry is right for every generation that only
//! added events (`Lineage::only_added`); any other generation (a whole
//! build: after an erasure, a restore) empties it, so an erased event
//! is neither served nor kept once the state without it is read.
//!
//! Must not: serve a walk at a time its generation's successors changed;
//! serve or keep a reason's event across a generation that may have
//! removed events; grow without bound.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::lineage::Lineage;
use super::{Engine, EngineError};
use crate::domain::{EntityId, Event};
use crate::score::Walk;
use crate::store::EventStore;

/// Pairs kept at most; the cache is emptied when it would grow past this
/// (as `http::cache::ReadCache` is): a walk of an ordinary relationship is
/// a few hundred people.
const MAX_PAIRS: usize = 4_096;
/// Walks kept per pair (the read's time and its trend points when the
/// graph changed between them); the oldest goes first.
const MAX_WALKS: usize = 4;

/// What a walk was taken on: the state's generation and version, and the
/// state's own counts (a version is read beside the state, not from it, so
/// the counts tell two states of one version apart), and its latest event
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Taken {
    pub generation: u64,
    pub version: u64,
    pub events: usize,
    pub position: u64,
    pub latest: Option<DateTime<Utc>>,
}

impl Taken {
    /// Whether `now` is the very state this was taken on.
    pub fn same_state(&self, now: &Taken) -> bool {
        self.generation == now.generation
            && self.version == now.version
            && self.events == now.events
            && self.position == now.position
    }

    /// Whether what was derived at time `t` from the state this was taken
    /// on holds for the later state `now` (the one rule of caches of past
    /// times): no later generation changed `t` (`Lineage::unchanged_at`),
    /// and it is the same state or `t` is before the latest event time it
    /// was taken with, since a fold in place only adds events no earlier
    /// than that (`FoldState::appends_in_order`).
    pub fn holds_at(&self, now: &Taken, t: DateTime<Utc>, lineage: &Lineage) -> bool {
        lineage.unchanged_at(self.generation, now.generation, t)
            && (self.same_state(now) || self.latest.is_some_and(|l| t < l))
    }
}

struct Kept {
    walk: Arc<Walk>,
    taken: Taken,
}

impl Kept {
    /// Whether this walk is the walk at `t` on the state `now`.
    fn serves(&self, now: &Taken, t: DateTime<Utc>, lineage: &Lineage) -> bool {
        let span = self.walk.span();
        if !span.covers(t) || !lineage.unchanged_at(self.taken.generation, now.generation, t) {
            return false;
        }
        // A span that ends ends at a change already folded: later folds in
        // place come after it. An open one holds for later states only
        // before the latest event time it was taken with.
        span.until.is_some() || self.taken.holds_at(now, t, lineage)
    }
}

/// The cache (module docs).
#[derive(Default)]
pub(super) struct Walks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pairs: HashMap<(EntityId, EntityId), Vec<Kept>>,
}

impl Walks {
    /// A kept walk of (person, brand) that is the walk at `t` on `now`
    /// (`lineage`: what the generations since each walk changed).
    pub fn get(
        &self,
        now: &Taken,
        lineage: &Lineage,
        person: &EntityId,
        brand: &EntityId,
        t: DateTime<Utc>,
    ) -> Option<Arc<Walk>> {
        let inner = self.inner.lock();
        // A borrowed key cannot look up a tuple of owned ids; the clones
        // are two short strings.
        let kept = inner.pairs.get(&(person.clone(), brand.clone()))?;
        kept.iter()
            .find(|k| k.serves(now, t, lineage))
            .map(|k| Arc::clone(&k.walk))
    }

    /// Keeps the walks a read of (person, brand) used on `now`.
    pub fn put(&self, now: &Taken, person: &EntityId, brand: &EntityId, walks: &[Arc<Walk>]) {
        let mut inner = self.inner.lock();
        if inner.pairs.len() >= MAX_PAIRS {
            inner.pairs.clear();
        }
        let kept = inner
            .pairs
            .entry((person.clone(), brand.clone()))
            .or_default();
        for walk in walks {
            if kept.iter().any(|k| Arc::ptr_eq(&k.walk, walk)) {
                continue;
            }
            if kept.len() >= MAX_WALKS {
                kept.remove(0);
            }
            kept.push(Kept {
                walk: Arc::clone(walk),
                taken: *now,
            });
        }
    }
}

/// Reasons' events kept at most (about 300 bytes each: a few MB); the
/// cache is emptied when it would grow past this.
const MAX_REASONS: usize = 16_384;

/// The reasons' events (module docs).
#[derive(Default)]
pub(super) struct Reasons {
    inner: Mutex<KeptReasons>,
}

#[derive(Default)]
struct KeptReasons {
    /// The generation the entries were last checked against.
    generation: u64,
    events: HashMap<u64, Arc<Event>>,
}

impl Reasons {
    /// Brings the entries to `generation` (emptied unless every generation
    /// since only added events); `false` when `generation` is older than
    /// theirs (the caller's state was replaced meanwhile: it must not add).
    fn to_generation(kept: &mut KeptReasons, generation: u64, lineage: &Lineage) -> bool {
        if generation < kept.generation {
            return false;
        }
        if generation > kept.generation {
            if !lineage.only_added(kept.generation, generation) {
                kept.events.clear();
            }
            kept.generation = generation;
        }
        true
    }
}

impl<S: EventStore> Engine<S> {
    /// The stored events at `positions` (the reasons of a draft taken on
    /// a state of `generation`), by position: kept ones, the rest read
    /// from the store and kept. An event the store no longer holds is
    /// absent (the draft then leaves it out, as before).
    pub(super) async fn reasons_events(
        &self,
        generation: u64,
        positions: Vec<u64>,
    ) -> Result<HashMap<u64, Arc<Event>>, EngineError> {
        let lineage = &self.derived.lineage;
        let mut found = HashMap::with_capacity(positions.len());
        let mut missing = Vec::new();
        {
            let mut kept = self.reasons.inner.lock();
            let current = Reasons::to_generation(&mut kept, generation, lineage);
            for p in positions {
                match kept.events.get(&p).filter(|_| current) {
                    Some(e) => {
                        found.insert(p, Arc::clone(e));
                    }
                    None => missing.push(p),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let read = self.store.events_at(missing).await?;
        let mut kept = self.reasons.inner.lock();
        // Checked again: an erasure may have begun a generation while the
        // store was read, and what was read then is not kept.
        let current = Reasons::to_generation(&mut kept, generation, lineage);
        if current && kept.events.len() + read.len() > MAX_REASONS {
            kept.events.clear();
        }
        for l in read {
            let event = Arc::new(l.event);
            if current {
                kept.events.insert(l.position, Arc::clone(&event));
            }
            found.insert(l.position, event);
        }
        Ok(found)
    }
}
