//! Frees large values on a thread of its own: a state a refold replaced,
//! checkpoints let go. Freeing a fold state is a walk of every allocation
//! it holds (a third of the fold thread's time under a stream of single
//! events, `perf` on `benches/stream.sh`), and the fold thread would do it
//! before answering the writers of the round.
//!
//! At most `QUEUED` values wait: past that, the caller frees its value
//! itself, so memory stays bounded whatever the rate of refolds.
//!
//! Must not: hold a lock of the engine, keep a value it was given.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError};

/// Values waiting to be freed at most.
const QUEUED: usize = 2;

/// The freeing thread's queue; `None` when it could not be started.
static DROPPER: OnceLock<Option<SyncSender<Box<dyn Send>>>> = OnceLock::new();

/// Frees `value` on the freeing thread, or here when it is busy.
pub(super) fn drop_later<T: Send + 'static>(value: T) {
    let queue = DROPPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Box<dyn Send>>(QUEUED);
        std::thread::Builder::new()
            .name("fusion-drop".into())
            .spawn(move || {
                for value in rx {
                    drop(value);
                }
            })
            .ok()
            .map(|_| tx)
    });
    let value: Box<dyn Send> = Box::new(value);
    if let Some(queue) = queue
        && let Err(TrySendError::Full(value) | TrySendError::Disconnected(value)) =
            queue.try_send(value)
    {
        drop(value);
    }
}
