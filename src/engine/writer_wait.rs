//! Which brief readers may go ahead of a writer waiting for the state's
//! lock (red team h50, finding 1). A brief reader (`Derived::read_brief`)
//! that has waited its patience joins the readers holding the lock, ahead
//! of the waiting writer (task h49), only when no other brief reader went
//! ahead and still holds, or while the writer has waited less than
//! [`WRITER_PATIENCE`]. Why: brief readers that joined one another
//! without a gap (each before the last let go) held a writer off without
//! bound, and with it every acknowledgement; with this rule a writer
//! waits at most for the readers that held before it came, one brief read
//! after them, and [`WRITER_PATIENCE`]. Owns only that decision; must not
//! take the state's lock itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long brief readers may go ahead of a waiting writer all together;
/// after that only one at a time may (and only while no other that went
/// ahead holds). The order of a brief read's 20 ms target (issue #11).
pub(super) const WRITER_PATIENCE: Duration = Duration::from_millis(20);

/// The writers waiting for the lock, since when, and the brief readers
/// that went ahead of them and hold the lock (or are taking it).
#[derive(Debug, Default)]
pub(super) struct WriterWait {
    /// Writers waiting now, and since when the longest waiting of them
    /// has waited (restarted when one gets the lock and others still wait:
    /// a bound for each, not an exact age).
    waiting: Mutex<(usize, Option<Instant>)>,
    /// Brief readers that went ahead and have not let go yet.
    ahead: AtomicUsize,
    /// Leaves refused so far (a test tells a refused reader by it).
    refused: AtomicUsize,
}

/// A brief reader's leave to go ahead of a waiting writer: held until
/// after its read guard is dropped.
#[derive(Debug)]
pub(super) struct Ahead<'a>(&'a AtomicUsize);

impl Drop for Ahead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WriterWait {
    /// A writer starts to wait; call [`Self::end`] once it holds the lock.
    pub(super) fn begin(&self) {
        let mut w = self.waiting.lock();
        w.0 += 1;
        w.1.get_or_insert_with(Instant::now);
    }

    /// A writer got the lock.
    pub(super) fn end(&self) {
        let mut w = self.waiting.lock();
        w.0 -= 1;
        w.1 = (w.0 > 0).then(Instant::now);
    }

    /// Leave for a brief reader to go ahead of the waiting writers (module
    /// docs), or `None`: it waits its patience and asks again
    /// (`Derived::read_brief`).
    pub(super) fn go_ahead(&self) -> Option<Ahead<'_>> {
        let first = self
            .ahead
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if first {
            return Some(Ahead(&self.ahead));
        }
        let young = self
            .waiting
            .lock()
            .1
            .is_none_or(|since| since.elapsed() < WRITER_PATIENCE);
        if !young {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        self.ahead.fetch_add(1, Ordering::SeqCst);
        Some(Ahead(&self.ahead))
    }

    /// How long the longest waiting writer has waited, if one waits.
    #[cfg(test)]
    pub(super) fn waited(&self) -> Option<Duration> {
        self.waiting.lock().1.map(|since| since.elapsed())
    }

    /// Leaves refused so far ([`Self::go_ahead`]).
    #[cfg(test)]
    pub(super) fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}
