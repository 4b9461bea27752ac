//! The write queue's back-pressure (issue #11, item 5): writes that are
//! counted from before their commit until their events are folded, by
//! events and by age, and a new write refused (`EngineError::Overloaded`,
//! 503 `overloaded`, before anything is stored) past either bound.
//!
//! Why a bound in time besides the one in events: what an event costs
//! varies by two orders of magnitude (a 500-event batch folds at about
//! 18,000 events/s under `benches/stream.sh`, single events at about
//! 1,500/s), so 50,000 queued events are a second and a half of batches
//! and half a minute of single events. The age of the oldest waiting write
//! is what a client's acknowledgement waits for; bounding it keeps
//! acknowledgements bounded whatever the mix.
//!
//! Must not: store, fold, or refuse a write once it is stored (a refusal
//! comes before the append, so it never follows an acknowledgement).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::EngineError;

/// Writes between their arrival checks and their fold.
#[derive(Default)]
pub(super) struct FoldQueue {
    events: AtomicUsize,
    next: AtomicU64,
    /// When each waiting write entered, by ticket (the first is the oldest).
    since: Mutex<BTreeMap<u64, Instant>>,
}

impl FoldQueue {
    /// Counts a write of `events` in, or refuses it: when the events
    /// waiting and its own would pass `limit`, or when the oldest write
    /// waiting has waited longer than `max_wait` (zero: no bound in time).
    pub(super) fn enter(
        self: &Arc<Self>,
        events: usize,
        limit: usize,
        max_wait: Duration,
    ) -> Result<Queued, EngineError> {
        let now = Instant::now();
        if !max_wait.is_zero()
            && let Some(oldest) = self.since.lock().values().next().copied()
        {
            let waited = now.saturating_duration_since(oldest);
            if waited > max_wait {
                crate::telemetry::record_overloaded(events);
                return Err(EngineError::OverloadedWait {
                    waited_ms: waited.as_millis() as u64,
                    limit_ms: max_wait.as_millis() as u64,
                });
            }
        }
        self.events
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q + events <= limit).then_some(q + events)
            })
            .map_err(|queued| {
                crate::telemetry::record_overloaded(events);
                EngineError::Overloaded {
                    queued,
                    events,
                    limit,
                }
            })?;
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.since.lock().insert(ticket, now);
        Ok(Queued {
            queue: Arc::clone(self),
            events,
            ticket,
        })
    }
}

/// A write counted in the queue until it is dropped (after its change is
/// folded, or where the write ends early).
pub(super) struct Queued {
    queue: Arc<FoldQueue>,
    events: usize,
    ticket: u64,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.queue.events.fetch_sub(self.events, Ordering::SeqCst);
        self.queue.since.lock().remove(&self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_refused_once_the_oldest_waiting_one_is_older_than_the_bound() {
        let queue = Arc::new(FoldQueue::default());
        let bound = Duration::from_millis(1);
        let first = queue.enter(1, 100, bound).expect("an empty queue takes it");
        // Past the bound by the monotonic clock, without sleeping: the
        // entry's time is moved back.
        *queue.since.lock().values_mut().next().unwrap() -= Duration::from_millis(50);
        assert!(matches!(
            queue.enter(1, 100, bound),
            Err(EngineError::OverloadedWait { .. })
        ));
        assert!(
            queue.enter(1, 100, Duration::ZERO).is_ok(),
            "zero: no bound in time"
        );
        drop(first);
        assert!(
            queue.enter(1, 100, bound).is_ok(),
            "the old write is folded"
        );
    }

    #[test]
    fn a_write_is_refused_when_its_events_would_pass_the_bound_in_events() {
        let queue = Arc::new(FoldQueue::default());
        let held = queue.enter(60, 100, Duration::ZERO).unwrap();
        assert!(matches!(
            queue.enter(41, 100, Duration::ZERO),
            Err(EngineError::Overloaded { queued: 60, .. })
        ));
        drop(held);
        assert!(queue.enter(100, 100, Duration::ZERO).is_ok());
    }
}
