//! Reading the whole log for a build (`engine::build_from_store`): chunks in
//! canonical order handed to a consumer, with the next chunk already being
//! read while the consumer works on this one. Knows nothing of scoring; the
//! consumer is any `FnMut(Vec<Logged>)`.
//!
//! Why a reader thread: a build reads the log twice, and each chunk costs
//! the store's server time, the transfer and the bodies' decode, then the
//! fold's time. Read one after the other, a build pays their sum; with the
//! next chunk read on another thread (and, on PostgreSQL, the server
//! producing rows while the previous ones decode) it pays about the
//! largest. Measured with `benches/log_scan.sh` (README, "Figures").

use crate::domain::Logged;

use super::{EventStore, SCAN_CHUNK, StoreError};

/// Chunks read ahead of the consumer, beyond the one it holds and the one
/// being read: bounds the memory a build's read takes to about three
/// chunks (a few megabytes each).
const CHUNKS_AHEAD: usize = 1;

/// Reads every stored event in canonical order (`EventStore::scan_from`),
/// a chunk of `SCAN_CHUNK` at a time, and hands each to `f`, in order, on
/// the calling thread, while a reader thread reads the next ones. Blocks
/// on `rt` for the store's reads: call it where blocking is allowed (not
/// inside the runtime's own workers). A read error ends the scan with that
/// error; `f` has then seen a prefix of the log. A panic in `f` ends the
/// reader too and is resumed here.
pub fn for_each_chunk<S: EventStore>(
    store: &S,
    rt: &tokio::runtime::Handle,
    mut f: impl FnMut(Vec<Logged>),
) -> Result<(), StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Logged>, StoreError>>(CHUNKS_AHEAD);
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("fusion-log-reader".into())
            .spawn_scoped(scope, move || {
                let mut after = None;
                loop {
                    let chunk = rt.block_on(store.scan_from(after.take(), SCAN_CHUNK));
                    after = match &chunk {
                        Ok(c) => c.last().map(|l| (l.event.time, l.event.id.clone())),
                        Err(_) => None,
                    };
                    // The consumer is gone (an error or a panic there), or
                    // this was the last chunk (empty) or an error.
                    if tx.send(chunk).is_err() || after.is_none() {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the log reader: {e}")))?;
        for chunk in rx {
            let chunk = chunk?;
            if chunk.is_empty() {
                break;
            }
            f(chunk);
        }
        Ok(())
    })
}
