//! Snapshots of the derived state, the engine's side: loading the latest
//! valid one at open and folding the log after it, and writing new ones in
//! the background. `score::snapshot` owns the format (pure), the store
//! keeps the bytes (`store::snapshots`); this module does the IO between
//! them and must not score anything itself.
//!
//! **Loading** ([`load`]): the kept snapshots, newest first, each read
//! only when the one before it was refused; the first one that decodes
//! for this model and format, whose registrations are the
//! store's, is the state; the log after its position is read by position
//! (`EventStore::tail`) and appended as the fold thread appends (events
//! later than everything folded). The snapshot is given up, and the whole
//! log folded, when: it is refused (truncated, corrupted, another model or
//! format: logged at warn); a registration changed since; the tail holds
//! an event earlier than the snapshot's latest (a late event: the state is
//! a function of the event set folded in canonical order, so it is built
//! again, as the running engine does); or the store holds another number
//! of events than the snapshot plus its tail (an event committed before
//! the snapshot's position but not folded into it, or an erasure since).
//! After a full fold a new snapshot follows at once.
//!
//! **Streamed** both ways (`store::snapshots`, "Streamed"): a start decodes
//! the snapshot as its pieces come from the store ([`PiecesReader`]), and a
//! save encodes it on a thread of its own into pieces the store writes as
//! they come ([`PieceWriter`]), so neither holds the snapshot whole (at 10M
//! events of issue #10's shape it is over 3 GB; ARCHITECTURE.md,
//! "Snapshots").
//!
//! **Writing** ([`Writer`]): the fold thread, after a round that brought
//! the events folded `every` past the last snapshot, copies what a
//! snapshot holds (`ScoreState::capture`: the fold's state, not the live
//! series) under the read lock, which readers share, and hands it to the
//! `fusion-snapshot` thread, which encodes and saves it off every lock. A
//! capture while the writer is busy is skipped (the next round tries
//! again). Graceful shutdown and rescore write one and wait for it
//! (`Engine::write_snapshot`).
//!
//! **Erasure.** A save names the store's erasure epoch read before the
//! state was built (`Derived::epoch`), and the store refuses it after an
//! erasure (`store::snapshots`); a state swapped in by the recovery task
//! has no known epoch and is not saved until the next build.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::score::snapshot::registrations_match;
use crate::score::{Captured, ScoreState, ScoringModel};
use crate::store::snapshots::{PIECE, PIECES_IN_FLIGHT};
use crate::store::{EventStore, SCAN_CHUNK, SnapshotMeta, SnapshotPiece, SnapshotRead, StoreError};

use super::Derived;

/// `Derived::epoch` of a state whose erasure epoch is not known: never saved.
pub(super) const UNKNOWN_EPOCH: u64 = u64::MAX;

/// The state of the latest valid snapshot with the log after it folded
/// (module docs), its live series caught up when `sync_live` (else left
/// to be built: `EngineOptions::ready_before_live`); `None` when there is
/// none to use. Blocks on `rt` for the store's reads. Logs how long each
/// phase took (ARCHITECTURE.md, "Snapshots").
pub(super) fn load<S: EventStore>(
    store: &S,
    rt: &tokio::runtime::Handle,
    model: &Arc<ScoringModel>,
    sync_live: bool,
) -> Result<Option<ScoreState>, StoreError> {
    let started = Instant::now();
    let mut phases = super::Phases::start();
    // Before the log's reads, as a build reads it (`build_from_store`).
    let context = rt.block_on(store.context_position())?;
    // Newest first, one at a time: the next is read only when one is
    // refused (each is as large as the state).
    // Read and decoded at once: `read_seconds` finds the snapshot,
    // `decode_seconds` reads and decodes it.
    let (mut read_seconds, mut decode_seconds) = (0.0, 0.0);
    let mut found = None;
    for rank in 0.. {
        let read = match rt.block_on(store.snapshot_stream(rank)) {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(cause = %e, "cannot read the snapshots; folding the whole log");
                return Ok(None);
            }
        };
        read_seconds += phases.lap();
        let decoded = ScoreState::read_snapshot(PiecesReader::new(read), Arc::clone(model));
        decode_seconds += phases.lap();
        match decoded {
            Ok(ok) => {
                found = Some(ok);
                break;
            }
            Err(e) => tracing::warn!(cause = %e, "ignoring a snapshot of the scoring state"),
        }
    }
    let Some((header, mut state)) = found else {
        return Ok(None);
    };
    let entities = rt.block_on(store.entities())?;
    if !registrations_match(&state, &entities) {
        tracing::warn!("ignoring the snapshot: registrations changed since; folding the whole log");
        return Ok(None);
    }
    let mut after = Some(header.position);
    let mut tail = 0u64;
    loop {
        let chunk = rt.block_on(store.tail(after, SCAN_CHUNK))?;
        let Some(last) = chunk.last() else { break };
        after = Some(last.position);
        tail += chunk.len() as u64;
        if !state.apply(chunk) {
            tracing::warn!(
                "the log after the snapshot holds events earlier than it (late events); \
                 folding the whole log"
            );
            return Ok(None);
        }
    }
    let stored = rt.block_on(store.count())?;
    if stored != state.event_count() as u64 {
        tracing::warn!(
            stored,
            snapshot = header.events,
            tail,
            "the store's events are not the snapshot's and its tail; folding the whole log"
        );
        return Ok(None);
    }
    state.set_context_position(context);
    let tail_seconds = phases.lap();
    if sync_live {
        state.sync_live(|| false);
    }
    tracing::info!(
        events = header.events,
        tail,
        read_seconds,
        decode_seconds,
        tail_seconds,
        live_seconds = phases.lap(),
        seconds = started.elapsed().as_secs_f64(),
        "loaded the scoring state from a snapshot and the log after it"
    );
    Ok(Some(state))
}

/// Answers once a snapshot handed to the writer is saved, or is not.
pub(super) type Saved = tokio::sync::oneshot::Receiver<Result<bool, String>>;

/// A capture handed to the writer thread.
struct Job {
    captured: Captured,
    epoch: u64,
    done: Option<tokio::sync::oneshot::Sender<Result<bool, String>>>,
}

/// The background writer (module docs).
pub(super) struct Writer {
    /// Events folded between two periodic snapshots; 0: none periodic.
    every: u64,
    /// Events folded at the last capture.
    last: AtomicU64,
    /// The store's erasure epoch now.
    epoch_now: Box<dyn Fn() -> u64 + Send + Sync>,
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl Writer {
    /// Starts the `fusion-snapshot` thread saving to `store`; the state
    /// holds `events` now (the next periodic snapshot is `every` past them).
    pub(super) fn start<S: EventStore>(
        store: Arc<S>,
        rt: tokio::runtime::Handle,
        every: u64,
        events: u64,
    ) -> std::io::Result<Writer> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let for_epoch = Arc::clone(&store);
        std::thread::Builder::new()
            .name("fusion-snapshot".into())
            .spawn(move || {
                for job in rx {
                    let outcome = save(&*store, &rt, &job.captured, job.epoch);
                    if let Err(e) = &outcome {
                        tracing::warn!(cause = %e, "cannot write a snapshot of the scoring state");
                    }
                    if let Some(done) = job.done {
                        let _ = done.send(outcome);
                    }
                    // The capture and the bytes are freed: give them back.
                    drop(job.captured);
                    super::release::return_freed_memory();
                }
            })?;
        Ok(Writer {
            every,
            last: AtomicU64::new(events),
            epoch_now: Box::new(move || for_epoch.snapshot_epoch()),
            jobs,
        })
    }

    /// The store's erasure epoch now (read before a build).
    pub(super) fn epoch_now(&self) -> u64 {
        (self.epoch_now)()
    }

    /// After a fold round (and at open after a full fold, `force`): hands
    /// a capture to the writer when one is due and the writer is free.
    /// Called on the fold thread (or before it starts).
    pub(super) fn after_round(&self, derived: &Derived, force: bool) {
        self.hand(derived, force, None);
    }

    /// `after_round` at open after a full fold: answers when the snapshot
    /// is saved (or will not be), for the live series' first build to wait
    /// for (`Derived::open_build`): the two are the largest transients of
    /// a start, and the snapshot is what makes the next start fast (at 10M
    /// events of the shape the build outgrew the machine before
    /// the snapshot beside it was saved: ARCHITECTURE.md, "Snapshots").
    pub(super) fn first(&self, derived: &Derived) -> Option<Saved> {
        let (done, saved) = tokio::sync::oneshot::channel();
        self.hand(derived, true, Some(done)).then_some(saved)
    }

    /// Hands a capture to the writer when one is due and the writer is
    /// free; whether it was handed.
    fn hand(
        &self,
        derived: &Derived,
        force: bool,
        done: Option<tokio::sync::oneshot::Sender<Result<bool, String>>>,
    ) -> bool {
        let epoch = derived.epoch.load(Ordering::SeqCst);
        if epoch == UNKNOWN_EPOCH || (self.every == 0 && !force) {
            return false;
        }
        let slot = derived.slot.read();
        if slot.broken.is_some() {
            return false;
        }
        let events = slot.state.event_count() as u64;
        let last = self.last.load(Ordering::SeqCst);
        // Fewer events than at the last snapshot: an erasure deleted it.
        let due = force || events < last || events >= last.saturating_add(self.every);
        if !due || events == 0 {
            return false;
        }
        let captured = slot.state.capture();
        drop(slot);
        let job = Job {
            captured,
            epoch,
            done,
        };
        let handed = self.jobs.try_send(job).is_ok();
        if handed {
            self.last.store(events, Ordering::SeqCst);
        }
        handed
    }

    /// Captures the state now and waits until it is saved: `true` when a
    /// snapshot was written.
    pub(super) async fn now(&self, derived: &Derived) -> Result<bool, String> {
        let job = {
            // Between two changes, so the epoch is the state's.
            let _fold = derived.fold.lock();
            let epoch = derived.epoch.load(Ordering::SeqCst);
            let slot = derived.slot.read();
            if epoch == UNKNOWN_EPOCH || slot.broken.is_some() {
                return Ok(false);
            }
            self.last
                .store(slot.state.event_count() as u64, Ordering::SeqCst);
            let (done, answer) = tokio::sync::oneshot::channel();
            (
                Job {
                    captured: slot.state.capture(),
                    epoch,
                    done: Some(done),
                },
                answer,
            )
        };
        let (job, answer) = job;
        let jobs = self.jobs.clone();
        // Waits while the writer is busy with a periodic snapshot.
        let sent = tokio::task::spawn_blocking(move || jobs.send(job).is_ok())
            .await
            .map_err(|e| e.to_string())?;
        if !sent {
            return Err("the snapshot writer has stopped".into());
        }
        answer
            .await
            .map_err(|_| "the snapshot writer has stopped".to_string())?
    }
}

/// Encodes and saves one capture; `false` when there was nothing to save
/// or the store refused it (an erasure since). The encoding runs on a
/// thread of its own, its pieces saved as they come (module docs).
fn save<S: EventStore>(
    store: &S,
    rt: &tokio::runtime::Handle,
    captured: &Captured,
    epoch: u64,
) -> Result<bool, String> {
    let started = Instant::now();
    let Some(header) = captured.header() else {
        return Ok(false);
    };
    let meta = SnapshotMeta {
        position: header.position,
        events: header.events,
        format: header.format,
        model: header.model,
        context: captured.context_position(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(PIECES_IN_FLIGHT);
    let (saved, encoded) = std::thread::scope(|scope| {
        let encoder = std::thread::Builder::new()
            .name("fusion-snap-enc".into())
            .spawn_scoped(scope, move || -> Result<u64, String> {
                // The encoding is background work, holding no lock of the
                // state (`priority.rs`). Only this leaf is lowered: the
                // writer thread above reaches the store through tokio,
                // which may start a blocking-pool thread from it, and a
                // thread started from a lowered one is lowered too (a
                // pool thread left lowered for every later task held the
                // write lock for seconds under the stream).
                if let Err(e) = super::priority::lower_this_thread() {
                    tracing::warn!(cause = %e, "cannot lower the snapshot encoder's priority");
                }
                let pieces = PieceWriter {
                    tx,
                    piece: Vec::with_capacity(PIECE),
                    sent: 0,
                };
                let (pieces, _) = captured
                    .encode_to(pieces)
                    .map_err(|e| e.to_string())?
                    .ok_or("the state became empty")?;
                pieces.end()
            });
        let saved = rt.block_on(store.save_snapshot_stream(rx, meta, epoch));
        let encoded = match encoder {
            Ok(encoder) => encoder
                .join()
                .unwrap_or_else(|_| Err("the snapshot's encoder panicked".into())),
            Err(e) => Err(format!("cannot start the snapshot's encoder: {e}")),
        };
        (saved, encoded)
    });
    // A store that refused early (an erasure since) stopped the encoder:
    // that is a refusal, not a failure; a store's error and an encoder's
    // are both said.
    let len = match (saved, encoded) {
        (Ok(false), _) => {
            tracing::info!("a snapshot was not kept: an erasure came after its state");
            return Ok(false);
        }
        (Ok(true), Ok(len)) => len,
        (Ok(true), Err(e)) => return Err(e),
        (Err(s), Ok(_)) => return Err(s.to_string()),
        (Err(s), Err(e)) => return Err(format!("{s} (the encoder: {e})")),
    };
    tracing::info!(
        events = header.events,
        position = header.position,
        bytes = len,
        seconds = started.elapsed().as_secs_f64(),
        "wrote a snapshot of the scoring state"
    );
    Ok(true)
}

/// A snapshot's bytes as written, sent to the store in pieces of [`PIECE`]
/// (blocking while [`PIECES_IN_FLIGHT`] wait): the encoder's side of a save.
struct PieceWriter {
    tx: tokio::sync::mpsc::Sender<SnapshotPiece>,
    piece: Vec<u8>,
    /// Bytes sent so far.
    sent: u64,
}

impl PieceWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE));
        self.sent += piece.len() as u64;
        self.tx
            .blocking_send(SnapshotPiece::Bytes(piece))
            .map_err(|_| std::io::Error::other("the store stopped taking the snapshot"))
    }

    /// The last piece and the end: the store may keep the snapshot. Answers
    /// the bytes sent.
    fn end(mut self) -> Result<u64, String> {
        self.send().map_err(|e| e.to_string())?;
        self.tx
            .blocking_send(SnapshotPiece::End)
            .map_err(|_| "the store stopped taking the snapshot".to_string())?;
        Ok(self.sent)
    }
}

impl std::io::Write for PieceWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(PIECE - self.piece.len());
        self.piece.extend_from_slice(&bytes[..n]);
        if self.piece.len() == PIECE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A snapshot's bytes as the store sends them, read as they come (blocking
/// on the channel: call it off the async runtime). A store's error ends
/// the read with it.
struct PiecesReader {
    read: SnapshotRead,
    piece: Vec<u8>,
    at: usize,
}

impl PiecesReader {
    fn new(read: SnapshotRead) -> Self {
        PiecesReader {
            read,
            piece: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for PiecesReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.piece.len() {
            match self.read.blocking_recv() {
                None => return Ok(0),
                Some(Ok(piece)) => {
                    self.piece = piece;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
