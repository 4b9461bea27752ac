//! The fold thread's event-time checkpoints (issue #11, item 3): late
//! events cost the events after a checkpoint, not the whole log.
//!
//! `Checkpoints` keeps a few copies of the fold's state
//! (`score::FoldCheckpoint`), taken after rounds at least `EVERY` apart, so
//! the newest is at most that old and the oldest covers events late by up
//! to about `EVERY × KEEP` of arrival. A round holding an event earlier
//! than the latest folded refolds from the newest checkpoint that every
//! event of the round comes after: the checkpoint plus the events the store
//! holds after it (`Tail`, read from the store, on both backends: the
//! checkpoint keeps no event), folded off the write lock and swapped in
//! (`Derived::replace`). The result is the canonical fold of the log
//! (`score/refold.rs`). An event older than every checkpoint, a
//! registration or an erasure (which changes the context of every event)
//! builds the whole state again, and the checkpoints start over from it.
//!
//! Copies are taken under the fold lock and the read lock (readers go on;
//! the fold and live threads wait) and share the impulse columns; they
//! are taken after a round's answers, and freed off the fold thread
//! (`dropper.rs`).
//!
//! Must not: keep events, answer writers, hold the write lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Derived, dropper};
use crate::domain::{EventId, Logged};
use crate::score::FoldCheckpoint;
use crate::store::{EventStore, SCAN_CHUNK, StoreError};

/// Least time between two checkpoints.
const EVERY: Duration = Duration::from_millis(500);
/// Checkpoints kept at most (the oldest goes first).
const KEEP: usize = 6;

/// Every stored event from the microsecond of a time on (`None`: every
/// one), in canonical order (a few earlier ones may come too: a refold
/// skips those it folded and declines on any other).
pub(super) type Tail =
    Arc<dyn Fn(Option<DateTime<Utc>>) -> Result<Vec<Logged>, String> + Send + Sync>;

/// Reads [`Tail`] from a store: the store keys events by microsecond
/// (`EventStore::scan_from`), so the scan starts before `from`'s.
pub(super) fn read_tail<S: EventStore>(
    store: &S,
    rt: &tokio::runtime::Handle,
    from: Option<DateTime<Utc>>,
) -> Result<Vec<Logged>, StoreError> {
    let start = from.and_then(|t| DateTime::from_timestamp_micros(t.timestamp_micros() - 1));
    let mut after = start.map(|t| (t, EventId::new("0").expect("a valid id")));
    let mut out = Vec::new();
    loop {
        let chunk = rt.block_on(store.scan_from(after.take(), SCAN_CHUNK))?;
        let Some(last) = chunk.last() else {
            return Ok(out);
        };
        after = Some((last.event.time, last.event.id.clone()));
        out.extend(chunk);
    }
}

/// One kept checkpoint and when it was taken.
struct Kept {
    taken: Instant,
    checkpoint: FoldCheckpoint,
}

/// The fold thread's checkpoints (module docs).
#[derive(Default)]
pub(super) struct Checkpoints {
    kept: VecDeque<Kept>,
}

impl Checkpoints {
    /// After a round (or at start): takes a checkpoint of the state when
    /// none is kept, or when `EVERY` has passed since the newest and
    /// events were folded since.
    pub(super) fn after_round(&mut self, derived: &Derived) {
        if self.kept.back().is_some_and(|k| k.taken.elapsed() < EVERY) {
            return;
        }
        let started = Instant::now();
        // The fold lock keeps the live thread's slices waiting on it, not
        // on the write lock, where they would hold readers back meanwhile.
        let _fold = derived.fold.lock();
        let slot = derived.slot.read();
        if slot.broken.is_some()
            || self
                .kept
                .back()
                .is_some_and(|k| k.checkpoint.event_count() == slot.state.event_count())
        {
            return;
        }
        let checkpoint = slot.state.fold_checkpoint();
        drop(slot);
        crate::telemetry::record_fold_round("checkpoint", started.elapsed());
        self.kept.push_back(Kept {
            taken: Instant::now(),
            checkpoint,
        });
        if self.kept.len() > KEEP {
            dropper::drop_later(self.kept.pop_front());
        }
    }

    /// Forgets every checkpoint (the state was built whole: they may hold
    /// what it no longer does, or lack an earlier event it holds).
    pub(super) fn clear(&mut self) {
        dropper::drop_later(std::mem::take(&mut self.kept));
    }

    /// The newest checkpoint every one of `events` comes after (or is
    /// folded into): where a refold of them starts.
    pub(super) fn for_events(&self, events: &[Logged]) -> Option<&FoldCheckpoint> {
        self.kept
            .iter()
            .rev()
            .map(|k| &k.checkpoint)
            .find(|c| events.iter().all(|e| c.takes(e)))
    }

    /// After a refold that added events from `first` (time, id) on: a
    /// checkpoint at or after it lacks an event before its end, so it is
    /// no prefix of the log any more.
    pub(super) fn after_refold(&mut self, first: &(DateTime<Utc>, EventId)) {
        let (kept, gone) = std::mem::take(&mut self.kept)
            .into_iter()
            .partition(|k| k.checkpoint.is_before(first.0, &first.1));
        self.kept = kept;
        dropper::drop_later::<VecDeque<Kept>>(gone);
    }
}
