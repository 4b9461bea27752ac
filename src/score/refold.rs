//! Event-time checkpoints of the fold (issue #11, item 3): `FoldCheckpoint`,
//! a copy of the fold's state as it stood after some event K of canonical
//! order, and the state of that checkpoint's events plus a tail of later
//! ones (`FoldCheckpoint::refold`), so a late event later than K costs the
//! events after K instead of the whole log.
//!
//! Why the refold is the fold: the fold's state is a function of the set
//! of events folded in canonical order, and folding the events after K on a
//! copy of the state at K is exactly the canonical fold from K on (the
//! same rule `FoldState::append` applies to events later than everything
//! folded; it declines, and so does the refold, when an event of the tail
//! is not later than K or fixes the kind of an entity the checkpoint took
//! for a person). The live series of the result is a new one at the log's
//! canonical clock, as after a whole build (`live` module docs: it builds
//! at its checkpoint and applies the events after it), given the deltas of
//! the events from that checkpoint on: those up to K from the checkpoint's
//! journal (a snapshot keeps the same, `score::snapshot`; events up to K
//! keep their canonical positions and their deltas), the rest from the
//! refold.
//!
//! Memory: the copy shares the impulse columns with the state it was taken
//! from (`FoldState::impulses`, copied on write), as a snapshot's capture
//! does. Must not: do IO, read the clock, keep events (the refold hands
//! the events it folded back, `Refolded::tail`, for the fold thread's
//! memory of recent events, `engine/refold.rs`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashSet;

use super::fold::{EventDeltas, FoldState, sort_canonically};
use super::live::{LiveSeries, LogClock};
use super::scores::ScoreState;
use crate::domain::{EventId, Logged};

/// The fold's state after the events up to some event K in canonical order
/// (module docs), with the canonical clock there. Cheap to keep: its
/// impulse columns are shared.
#[derive(Debug, Clone)]
pub struct FoldCheckpoint {
    fold: FoldState,
    clock: LogClock,
    /// The deltas of the events from the live series' checkpoint at
    /// `clock` on (`LiveSeries::journal`).
    journal: Vec<EventDeltas>,
}

/// What a refold made: the state, and the earliest event it folded that
/// the state it replaces had not folded (nothing before it changed).
#[derive(Debug)]
pub struct Refolded {
    /// The state of the checkpoint's events and the tail.
    pub state: ScoreState,
    /// (time, id) of the earliest event the replaced state lacked, in
    /// canonical order; `None` when it lacked none.
    pub changed_from: Option<(DateTime<Utc>, EventId)>,
    /// The events of the tail folded on the checkpoint, in canonical
    /// order (the tail without repeats and without the checkpoint's own):
    /// with the checkpoint, exactly the result's events.
    pub tail: Vec<Logged>,
}

impl ScoreState {
    /// A checkpoint of this state's fold as it stands (module docs); its
    /// live series is left out.
    pub fn fold_checkpoint(&self) -> FoldCheckpoint {
        let mut fold = self.fold.clone();
        // Deltas not taken yet belong to this state's series.
        fold.outbox.clear();
        FoldCheckpoint {
            fold,
            clock: self.live.clock(),
            journal: self.live.journal(),
        }
    }
}

impl FoldCheckpoint {
    /// The last event folded into it, (time, id): a refold takes the events
    /// after it.
    pub fn latest(&self) -> Option<&(DateTime<Utc>, EventId)> {
        self.fold.latest.as_ref()
    }

    /// Events folded into it.
    pub fn event_count(&self) -> usize {
        self.fold.event_count()
    }

    /// Entities it knows. A refold keeps their handles; it gives those
    /// first named after it theirs in canonical order, which need not be
    /// the order the state it replaces gave them theirs in (red team h70:
    /// `Derived`'s refold checks, [`handles_kept`]).
    pub fn entity_count(&self) -> usize {
        self.fold.table().len()
    }

    /// Whether everything folded into it comes before (`time`, `id`) in
    /// canonical order.
    pub fn is_before(&self, time: DateTime<Utc>, id: &EventId) -> bool {
        self.latest().is_none_or(|(t, i)| (*t, i) < (time, id))
    }

    /// Whether a refold could take `event`: it is later than the
    /// checkpoint's latest in canonical order, or already folded into it.
    pub fn takes(&self, event: &Logged) -> bool {
        self.fold.folded(event.position) || self.is_before(event.event.time, &event.event.id)
    }

    /// The state of the checkpoint's events and `tail` (any order; events
    /// folded into the checkpoint and repeats are skipped), as a whole
    /// build of them would make it; `replaced` says which positions the
    /// state it will replace had folded (for `Refolded::changed_from`).
    /// `None`, nothing made, when an event of the tail is not later than
    /// the checkpoint's latest or fixes a provisional entity's kind (the
    /// log must then be folded whole), or when the live series' canonical
    /// checkpoint of the result falls before the checkpoint's journal (an
    /// equal time run reaching back past it: the whole build emits those
    /// deltas).
    pub fn refold(
        &self,
        mut tail: Vec<Logged>,
        replaced: impl Fn(u64) -> bool,
    ) -> Option<Refolded> {
        let mut seen = FxHashSet::default();
        tail.retain(|l| !self.fold.folded(l.position) && seen.insert(l.position));
        sort_canonically(&mut tail);
        if !self.fold.appends_in_order(&tail) {
            return None;
        }
        let mut clock = self.clock;
        for l in &tail {
            clock.tick(l.event.time);
        }
        let first_pending = clock.checkpoint().first_pending;
        let count = self.fold.event_count();
        let journaled = self.journal.first().map_or(count, |e| e.index as usize);
        if first_pending < journaled {
            return None;
        }
        let changed_from = tail
            .iter()
            .find(|l| !replaced(l.position))
            .map(|l| (l.event.time, l.event.id.clone()));
        let mut fold = self.fold.clone();
        fold.emit_from = Some(first_pending.max(count) as u32);
        let appended = fold.append_shared(&tail);
        debug_assert!(appended, "appends_in_order said so");
        fold.emit_from = Some(0);
        let mut live = LiveSeries::new(Arc::clone(fold.model_arc()), clock);
        let kept = self
            .journal
            .iter()
            .filter(|e| e.index as usize >= first_pending)
            .cloned();
        live.receive(kept.collect());
        live.receive(fold.take_deltas());
        Some(Refolded {
            state: ScoreState { fold, live },
            changed_from,
            tail,
        })
    }
}

/// Whether every entity `old` knows has the same handle in `new`, given
/// that the first `kept` of them have (a refold from a checkpoint that
/// knew `kept` entities, [`FoldCheckpoint::entity_count`]): what is kept by
/// handle across the two (the engine's walks, a live build or series
/// continued) names the same entities only then. Compares the names of
/// the entities after the first `kept`.
pub fn handles_kept(old: &FoldState, new: &FoldState, kept: usize) -> bool {
    let (old, new) = (old.table(), new.table());
    new.len() >= old.len() && old.handles().skip(kept).all(|h| old.name(h) == new.name(h))
}
