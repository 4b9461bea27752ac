//! The fold thread's event-time checkpoints (issue #11, item 3): late
//! events cost the events after a checkpoint, not the whole log.
//!
//! `Checkpoints` keeps a few copies of the fold's state
//! (`score::FoldCheckpoint`), taken after rounds at least `EVERY` apart, so
//! the newest is at most that old and the oldest covers events late by up
//! to about `EVERY × KEEP` of arrival. A round holding an event earlier
//! than the latest folded refolds from the newest checkpoint that every
//! event of the round comes after: the checkpoint plus the events the
//! state holds after it and the round's, folded off the write lock and
//! swapped in (`Derived::replace`). The result is the canonical fold of
//! those events (`score/refold.rs`). An event older than every checkpoint,
//! a registration or an erasure (which changes the context of every event)
//! builds the whole state again, and the checkpoints start over from it.
//!
//! **The tail comes from memory** (task h55). `Recent` keeps the events
//! the state folded after a point at or before the oldest checkpoint, in
//! canonical order, each once: a round folded in place adds its new events
//! (the fold folds them by reference, `ScoreState::apply_shared`, so the
//! kept ones are the only copy), a refold puts back the tail it folded
//! (`Refolded::tail`), trimmed as the oldest checkpoint goes. So the
//! events after a checkpoint are a split of it, moved, not copied: the
//! store's read (289–323 ms of a 1 s batch refold on redb, 70 % of a
//! refold on PostgreSQL) is gone. It holds what the state holds and nothing
//! else: events come to the fold only once stored (`Engine::writes`; a
//! refused atomic request sends none), a follower's events come through
//! the same rounds, and a whole build (an erasure, a registration, a
//! restore) clears it with the checkpoints. A refold that would not hold
//! exactly the state's events plus the round's new ones (`made` against
//! `held + new`) was given a wrong tail: it is thrown away and the state
//! built from the store (counted, `fusion_fold_refold_tails_total{source=
//! "mismatch"}`). The store is read instead (`read_tail`, as before) when
//! the memory does not reach back to the checkpoint: cut at `RECENT_CAP`
//! events, or none kept yet.
//!
//! Copies are taken under the fold lock and the read lock (readers go on;
//! the fold and live threads wait) and share the impulse columns; they
//! are taken after a round's answers, and freed off the fold thread
//! (`dropper.rs`).
//!
//! Must not: keep an event the state does not hold, answer writers, hold
//! the write lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Derived, dropper};
use crate::domain::{EventId, EventKind, FreeObject, Logged};
use crate::score::FoldCheckpoint;
use crate::store::{EventStore, SCAN_CHUNK, StoreError};

/// Least time between two checkpoints.
const EVERY: Duration = Duration::from_millis(500);
/// Checkpoints kept at most (the oldest goes first).
const KEEP: usize = 6;
/// Events `Recent` keeps at most: past it the oldest go, and a refold from
/// a checkpoint before them reads the store. Six checkpoints 0.5 s apart
/// at 20,000 events/s are about 60,000 events; this is four times that
/// (about 60 MB of generated events, `fusion_fold_recent_bytes`).
pub(super) const RECENT_CAP: usize = 262_144;

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

/// An event's place in canonical order.
type Key = (DateTime<Utc>, EventId);

/// Whether `l` comes at or before `key` in canonical order (`None`: before
/// everything).
fn at_or_before(l: &Logged, key: Option<&Key>) -> bool {
    key.is_some_and(|(t, id)| (l.event.time, &l.event.id) <= (*t, id))
}

/// The events the state folded after a point (module docs), in canonical
/// order, each once.
#[derive(Default)]
struct Recent {
    /// `None`: nothing known, refolds read the store. `Some(k)`: every
    /// event the state folded after `k` (`None`: from the first) is in
    /// `events`, and nothing else.
    after: Option<Option<Key>>,
    events: VecDeque<Logged>,
    /// Estimated bytes of `events` (`event_bytes`).
    bytes: usize,
}

impl Recent {
    /// Knows the state's events after `after`: none (the state is a
    /// checkpoint's, taken at `after`).
    fn start(&mut self, after: Option<Key>) {
        self.clear();
        self.after = Some(after);
    }

    /// Knows nothing.
    fn clear(&mut self) {
        self.after = None;
        self.bytes = 0;
        dropper::drop_later(std::mem::take(&mut self.events));
    }

    /// Whether it holds every event the state folded after `latest`.
    fn covers(&self, latest: Option<&Key>) -> bool {
        self.after.as_ref().is_some_and(|a| a.as_ref() <= latest)
    }

    /// Adds events the state just folded, each later than every one held
    /// (in canonical order), then keeps the newest `RECENT_CAP`.
    fn push(&mut self, events: Vec<Logged>) {
        if self.after.is_none() {
            return dropper::drop_later(events);
        }
        debug_assert!(
            events
                .windows(2)
                .all(|w| !at_or_before(&w[1], Some(&key(&w[0])))),
            "in canonical order"
        );
        debug_assert!(match (self.events.back(), events.first()) {
            (Some(last), Some(first)) => !at_or_before(first, Some(&key(last))),
            _ => true,
        });
        self.bytes += events.iter().map(event_bytes).sum::<usize>();
        self.events.extend(events);
        if self.events.len() > RECENT_CAP {
            let cut = self.events.len() - RECENT_CAP;
            self.forget(cut);
        }
    }

    /// Moves out the events after `latest` (which it covers).
    fn split_after(&mut self, latest: Option<&Key>) -> Vec<Logged> {
        let at = self.events.partition_point(|l| at_or_before(l, latest));
        let tail = Vec::from(self.events.split_off(at));
        self.bytes -= tail.iter().map(event_bytes).sum::<usize>();
        tail
    }

    /// Forgets the events at or before `oldest` (the oldest checkpoint
    /// kept now): no refold needs them.
    fn trim(&mut self, oldest: Option<&Key>) {
        if self.covers(oldest) {
            let n = self.events.partition_point(|l| at_or_before(l, oldest));
            self.forget(n);
            self.after = Some(oldest.cloned());
        }
    }

    /// Forgets the `n` oldest events; it then covers from the last of them.
    fn forget(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let gone: Vec<Logged> = self.events.drain(..n).collect();
        self.bytes -= gone.iter().map(event_bytes).sum::<usize>();
        self.after = Some(gone.last().map(key));
        dropper::drop_later(gone);
    }
}

fn key(l: &Logged) -> Key {
    (l.event.time, l.event.id.clone())
}

/// An estimate of the memory an event kept takes: the struct, its ids,
/// texts, tags and free objects (allocators' rounding left out).
fn event_bytes(l: &Logged) -> usize {
    let e = &l.event;
    let ids: usize = e.references().iter().map(|(id, _)| id.as_str().len()).sum();
    let text = match &e.kind {
        EventKind::Post { text, .. }
        | EventKind::Mention { text, .. }
        | EventKind::Review { text, .. } => text.as_ref().map_or(0, String::len),
        EventKind::Occasion { tags, .. } | EventKind::Cause { tags, .. } => {
            tags.iter().map(String::len).sum()
        }
        _ => 0,
    };
    let objects = e
        .extra
        .iter()
        .chain(&e.attributes)
        .map(object_bytes)
        .sum::<usize>();
    std::mem::size_of::<Logged>() + e.id.as_str().len() + ids + text + objects
}

fn object_bytes(o: &FreeObject) -> usize {
    o.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

fn value_bytes(v: &serde_json::Value) -> usize {
    std::mem::size_of::<serde_json::Value>()
        + match v {
            serde_json::Value::String(s) => s.len(),
            serde_json::Value::Array(a) => a.iter().map(value_bytes).sum(),
            serde_json::Value::Object(o) => object_bytes(o),
            _ => 0,
        }
}

/// One kept checkpoint and when it was taken.
struct Kept {
    taken: Instant,
    checkpoint: FoldCheckpoint,
}

/// The fold thread's checkpoints and the events folded since the oldest
/// (module docs).
#[derive(Default)]
pub(super) struct Checkpoints {
    kept: VecDeque<Kept>,
    recent: Recent,
}

/// A refold's tail: the events after its checkpoint and the round's.
pub(super) struct RefoldTail {
    /// The events, in no order (the refold sorts them and skips repeats).
    pub(super) events: Vec<Logged>,
    /// Taken from memory (else read from the store).
    pub(super) from_memory: bool,
}

impl Checkpoints {
    /// After a round (or at start): takes a checkpoint of the state when
    /// none is kept, or when `EVERY` has passed since the newest and
    /// events were folded since.
    pub(super) fn after_round(&mut self, derived: &Derived) {
        crate::telemetry::record_fold_recent(self.recent.events.len(), self.recent.bytes);
        if self.kept.back().is_some_and(|k| k.taken.elapsed() < EVERY) {
            return;
        }
        let started = Instant::now();
        // The fold lock keeps the live thread's slices waiting on it, not
        // on the write lock, where they would hold readers back meanwhile.
        let _fold = derived.fold.lock();
        let slot = derived.slot.read();
        // The wait on its own: a live plan holds the fold lock for a whole
        // read of the state (seconds at 1,000,000 events), and which of a
        // round's `lock` or a checkpoint waits it out is timing (task h59).
        crate::telemetry::record_fold_round("checkpoint_lock", started.elapsed());
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
        if self.kept.is_empty() {
            // The state is the checkpoint's (only this thread folds).
            self.recent.start(checkpoint.latest().cloned());
        }
        self.kept.push_back(Kept {
            taken: Instant::now(),
            checkpoint,
        });
        if self.kept.len() > KEEP {
            dropper::drop_later(self.kept.pop_front());
            let oldest = self.kept.front().and_then(|k| k.checkpoint.latest());
            self.recent.trim(oldest);
        }
    }

    /// Forgets every checkpoint and the events kept (the state was built
    /// whole: they may hold what it no longer does, or lack an earlier
    /// event it holds).
    pub(super) fn clear(&mut self) {
        dropper::drop_later(std::mem::take(&mut self.kept));
        self.recent.clear();
    }

    /// After a round folded in place: `events`, the new ones in canonical
    /// order (`fold_in_slices`), are the state's now.
    pub(super) fn folded_in_place(&mut self, events: Vec<Logged>) {
        if self.kept.is_empty() {
            return dropper::drop_later(events);
        }
        self.recent.push(events);
    }

    /// The newest checkpoint every one of `events` comes after (or is
    /// folded into), by its index: where a refold of them starts.
    pub(super) fn for_events(&self, events: &[Logged]) -> Option<usize> {
        self.kept
            .iter()
            .rposition(|k| events.iter().all(|e| k.checkpoint.takes(e)))
    }

    /// The checkpoint at `index` and the tail of a refold of `round` from
    /// it: the kept events after it (moved out: a refold puts them back,
    /// `after_refold`, anything else clears them) and `round`; else, when
    /// the memory does not reach back to it, what `read` reads from the
    /// store after its time.
    pub(super) fn refold_tail(
        &mut self,
        index: usize,
        mut round: Vec<Logged>,
        read: &Tail,
    ) -> Result<(&FoldCheckpoint, RefoldTail), String> {
        let checkpoint = &self.kept[index].checkpoint;
        let latest = checkpoint.latest();
        if self.recent.covers(latest) {
            let mut events = self.recent.split_after(latest);
            events.append(&mut round);
            let tail = RefoldTail {
                events,
                from_memory: true,
            };
            return Ok((checkpoint, tail));
        }
        let events = read(latest.map(|l| l.0))?;
        let tail = RefoldTail {
            events,
            from_memory: false,
        };
        Ok((checkpoint, tail))
    }

    /// After the refold from the checkpoint at `index` whose result holds
    /// exactly the replaced state's events and the ones it added: `tail`
    /// (`Refolded::tail`) is what the state holds after it now. When it
    /// added events from `first` (time, id) on, a checkpoint at or after
    /// that lacks an event before its end, so it is no prefix of the log
    /// any more: dropped.
    pub(super) fn after_refold(
        &mut self,
        index: usize,
        tail: Vec<Logged>,
        first: Option<&(DateTime<Utc>, EventId)>,
    ) {
        let latest = self.kept[index].checkpoint.latest();
        if !self.recent.covers(latest) {
            // Read from the store: the memory starts over at the checkpoint.
            self.recent.start(latest.cloned());
        }
        debug_assert!(
            self.recent
                .events
                .back()
                .is_none_or(|l| at_or_before(l, latest)),
            "the tail after the checkpoint was moved out"
        );
        self.recent.push(tail);
        let Some(first) = first else {
            return;
        };
        let (kept, gone) = std::mem::take(&mut self.kept)
            .into_iter()
            .partition(|k| k.checkpoint.is_before(first.0, &first.1));
        self.kept = kept;
        dropper::drop_later::<VecDeque<Kept>>(gone);
    }
}

#[cfg(test)]
mod tests {
    //! `Recent`'s bookkeeping: what it covers after starts, pushes, splits,
    //! trims and cuts.
    use super::*;
    use crate::score::ScoringModel;

    /// A purchase at minute `minute` of a day, logged at `position`.
    fn at(position: u64, minute: u32, id: &str) -> Logged {
        let value = serde_json::json!({"id": id, "type": "purchase",
            "time": format!("2026-10-01T00:{minute:02}:00Z"), "person": "p",
            "brand": "b", "amount": 1});
        let currency = ScoringModel::default_model().currency;
        let mut valid = crate::ingest::validate_all(&[value], &currency);
        assert!(valid.rejected.is_empty(), "{:?}", valid.rejected);
        Logged {
            position,
            event: valid.good.remove(0).1,
        }
    }

    fn ids(events: &[Logged]) -> Vec<&str> {
        events.iter().map(|l| l.event.id.as_str()).collect()
    }

    #[test]
    fn recent_covers_from_its_start_splits_after_a_key_and_trims_to_the_oldest() {
        let mut recent = Recent::default();
        assert!(!recent.covers(None), "nothing known before a start");
        recent.push(vec![at(0, 1, "a")]);
        assert!(recent.events.is_empty(), "nothing kept before a start");

        let a = at(0, 1, "a");
        recent.start(Some(key(&a)));
        assert!(recent.covers(Some(&key(&a))));
        assert!(!recent.covers(None), "not the events before its start");
        // Ties at one time are ordered by id.
        recent.push(vec![at(2, 2, "b"), at(1, 2, "c"), at(3, 5, "d")]);
        assert_eq!(
            recent.bytes,
            recent.events.iter().map(event_bytes).sum::<usize>()
        );
        let c = at(1, 2, "c");
        assert!(recent.covers(Some(&key(&c))));
        let tail = recent.split_after(Some(&key(&c)));
        assert_eq!(ids(&tail), ["d"]);
        assert_eq!(ids(recent.events.make_contiguous()), ["b", "c"]);
        assert_eq!(
            recent.bytes,
            recent.events.iter().map(event_bytes).sum::<usize>()
        );
        recent.push(tail);

        let b = at(2, 2, "b");
        recent.trim(Some(&key(&b)));
        assert_eq!(ids(recent.events.make_contiguous()), ["c", "d"]);
        assert!(recent.covers(Some(&key(&b))));
        assert!(!recent.covers(Some(&key(&a))), "trimmed past a");

        recent.forget(1);
        assert!(recent.covers(Some(&key(&c))));
        assert!(!recent.covers(Some(&key(&b))), "cut past b");
        recent.clear();
        assert!(!recent.covers(Some(&key(&c))));
        assert_eq!((recent.events.len(), recent.bytes), (0, 0));
    }
}
