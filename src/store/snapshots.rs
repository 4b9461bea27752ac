//! Where snapshots of the derived state are kept (`score::snapshot` owns
//! their format; here they are opaque bytes with a few facts beside them).
//! The embedded store keeps them as files in `snapshots/` beside the log
//! ([`SnapshotDir`]); PostgreSQL in the `snapshots` table of the same
//! database, their bytes in `snapshot_chunks` (`postgres/snapshots.rs`,
//! migrations 0011 and 0014), so every server can use them. Must not know
//! scoring.
//!
//! **Streamed.** A snapshot is as large as the scoring state (over 3 GB at
//! 10M events of issue #10's shape), so its bytes go to and from a store in
//! pieces of at most [`PIECE`] bytes through a bounded channel
//! ([`SnapshotPieces`], [`SnapshotRead`]): neither side holds more than a
//! few pieces. A save keeps a snapshot only once its writer said
//! [`SnapshotPiece::End`]; a writer that stops before (it failed or was
//! dropped) leaves nothing.
//!
//! **Erasure reaches snapshots.** A snapshot may hold an erased person, so
//! the store's erasure deletes every snapshot, in the same erasure path. A
//! snapshot being written meanwhile must not come back after it: every
//! save names the erasure epoch its state reflects
//! (`EventStore::snapshot_epoch`, read before that state was built), and is
//! refused when an erasure came since; the check and the rename (the
//! insert) happen under the lock the erasure takes to bump the epoch and
//! delete. (The engine also refuses, on load, a snapshot whose event count
//! or registrations disagree with the store: a person erased by another
//! server on the same database is caught there.)

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::StoreError;
use crate::domain::LogPosition;

/// The largest piece of a snapshot's bytes sent at once, bytes.
pub const PIECE: usize = 1 << 20;
/// Pieces in flight between a snapshot's writer and its store (or its
/// store and its reader): what either side holds besides its own piece.
pub const PIECES_IN_FLIGHT: usize = 2;

/// A piece of a snapshot being saved.
#[derive(Debug)]
pub enum SnapshotPiece {
    /// The next bytes.
    Bytes(Vec<u8>),
    /// Every byte was sent: the snapshot may be kept.
    End,
}

/// A snapshot's bytes on their way to a store (module docs, "Streamed").
pub type SnapshotPieces = tokio::sync::mpsc::Receiver<SnapshotPiece>;

/// A kept snapshot's bytes read from a store, a piece at a time, in order;
/// the channel closes after the last piece (or after an error).
pub type SnapshotRead = tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>>;

/// `bytes` as the pieces of a save, ended.
pub fn pieces_of(bytes: Vec<u8>) -> SnapshotPieces {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.try_send(SnapshotPiece::Bytes(bytes))
        .expect("a new channel has room");
    tx.try_send(SnapshotPiece::End)
        .expect("a new channel has room");
    rx
}

/// Every piece of a read, put together (tests and small snapshots).
pub async fn read_whole(mut read: SnapshotRead) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    while let Some(piece) = read.recv().await {
        bytes.extend_from_slice(&piece?);
    }
    Ok(bytes)
}

/// Snapshots kept per scoring model and format; older ones are deleted
/// when a new one is saved. (Per model: a command run once with another
/// model must not push out the snapshots the service loads; per format: a
/// binary of another format must not push out this one's.)
pub const SNAPSHOTS_KEPT: usize = 2;

/// What the store records beside a snapshot's bytes (its header says the
/// same; PostgreSQL keeps them as columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The largest log position the snapshot covers.
    pub position: LogPosition,
    /// Events folded into it.
    pub events: u64,
    /// Its format version.
    pub format: u32,
    /// The scoring model's hash.
    pub model: [u8; 32],
    /// The latest change of the log's context (a registration, an
    /// erasure: `EventStore::context_position`) the state reflects; `None`
    /// for none. PostgreSQL refuses the save when the database's is
    /// another (another server's erasure since: red team h69); one
    /// process owns the embedded store, whose erasure epoch suffices.
    pub context: Option<LogPosition>,
}

/// Snapshots as files in a directory beside the embedded log: each written
/// to a temporary file, fsynced, renamed, and the directory fsynced; the
/// newest [`SNAPSHOTS_KEPT`] of each model and format are kept. Names sort
/// by the log position they cover, then the events folded; they end with
/// the model's hash and the format version (`{position}-{events}-{model}-v{format}.snapshot`).
///
/// Why the format is in the name (task h37's debt, found at 10M events):
/// names used to carry the model only, so a binary of the previous format
/// saving at the same position replaced the newer binary's snapshot (same
/// name), and each binary's pruning deleted the other's. The newer binary
/// then folded the whole log at its next start (15 minutes at 10M). Files
/// named the old way (no `-v`) are still read; the loader checks every
/// snapshot's header anyway.
#[derive(Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// Erasures so far (the epoch), and the lock that orders saves with them.
    epoch: Mutex<u64>,
    /// Held through a whole save, so saves in this process take turns (a
    /// save clears the temporary files of others, cut off).
    saving: Mutex<()>,
}

const SUFFIX: &str = ".snapshot";

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Internal(format!("cannot {what} {}: {e}", path.display()))
}

impl SnapshotDir {
    /// Snapshots in `data_dir/snapshots` (created at the first save).
    pub fn in_dir(data_dir: &Path) -> Self {
        SnapshotDir {
            dir: data_dir.join("snapshots"),
            epoch: Mutex::new(0),
            saving: Mutex::new(()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Erasures so far.
    pub fn epoch(&self) -> u64 {
        *self.epoch.lock()
    }

    /// Saves a snapshot (module docs); `false`, saving nothing, when an
    /// erasure came after `epoch`. Blocks on the file system.
    pub fn save(&self, bytes: &[u8], meta: SnapshotMeta, epoch: u64) -> Result<bool, StoreError> {
        self.save_with(meta, epoch, |file, temp| {
            use std::io::Write;
            file.write_all(bytes).map_err(|e| io("write", temp, e))
        })
    }

    /// [`Self::save`] of the bytes `pieces` bring (module docs,
    /// "Streamed"), written to the file as they come. Blocks on the file
    /// system and on the pieces (call it off the async runtime).
    pub fn save_pieces(
        &self,
        mut pieces: SnapshotPieces,
        meta: SnapshotMeta,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        self.save_with(meta, epoch, |file, temp| {
            use std::io::Write;
            while let Some(piece) = pieces.blocking_recv() {
                match piece {
                    SnapshotPiece::Bytes(bytes) => {
                        file.write_all(&bytes).map_err(|e| io("write", temp, e))?
                    }
                    SnapshotPiece::End => return Ok(()),
                }
            }
            Err(StoreError::Internal(
                "the snapshot's writer stopped before its end; nothing was kept".into(),
            ))
        })
    }

    /// A save whose bytes `write` puts in the temporary file.
    fn save_with(
        &self,
        meta: SnapshotMeta,
        epoch: u64,
        write: impl FnOnce(&mut std::fs::File, &Path) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        let _turn = self.saving.lock();
        std::fs::create_dir_all(&self.dir).map_err(|e| io("create", &self.dir, e))?;
        let kind = kind_tag(&meta);
        let name = format!("{:020}-{:020}-{kind}{SUFFIX}", meta.position, meta.events);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}.tmp"));
        {
            let mut file = std::fs::File::create(&temp).map_err(|e| io("create", &temp, e))?;
            if let Err(e) = write(&mut file, &temp) {
                drop(file);
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
            file.sync_all().map_err(|e| io("sync", &temp, e))?;
        }
        let current = self.epoch.lock();
        if *current != epoch {
            drop(current);
            let _ = std::fs::remove_file(&temp);
            return Ok(false);
        }
        std::fs::rename(&temp, &path).map_err(|e| io("rename", &temp, e))?;
        sync_dir(&self.dir)?;
        drop(current);
        // Temporary files of writes cut off (a process killed mid-write):
        // one process writes here at a time (redb locks the log) and its
        // saves take turns, so every other one is stale.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.filter_map(|e| e.ok()) {
                let stale = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".tmp"));
                if stale {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let same_kind = format!("-{kind}{SUFFIX}");
        let names = self
            .names()?
            .into_iter()
            .filter(|n| n.ends_with(&same_kind));
        for old in names.skip(SNAPSHOTS_KEPT) {
            let _ = std::fs::remove_file(self.dir.join(old));
        }
        Ok(true)
    }

    /// The snapshots' file names, newest first (temporary files left by a
    /// write that was cut off are not snapshots).
    fn names(&self) -> Result<Vec<String>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(SUFFIX))
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }

    /// The kept snapshots' bytes (of every model), newest first. Blocks on
    /// the file system.
    pub fn latest(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.names()?
            .into_iter()
            .map(|n| {
                let path = self.dir.join(n);
                std::fs::read(&path).map_err(|e| io("read", &path, e))
            })
            .collect()
    }

    /// The kept snapshot `rank` places from the newest, as [`Self::latest`]
    /// orders them, opened; `None` past the oldest. Blocks on the file
    /// system.
    pub fn open_nth(&self, rank: usize) -> Result<Option<std::fs::File>, StoreError> {
        let Some(name) = self.names()?.into_iter().nth(rank) else {
            return Ok(None);
        };
        let path = self.dir.join(name);
        std::fs::File::open(&path)
            .map(Some)
            .map_err(|e| io("read", &path, e))
    }

    /// An erasure: bumps the epoch and deletes every snapshot, temporary
    /// files included (module docs).
    pub fn erase_all(&self) -> Result<(), StoreError> {
        let mut epoch = self.epoch.lock();
        *epoch += 1;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("read", &self.dir, e)),
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| io("delete", &path, e))?;
        }
        sync_dir(&self.dir)
    }
}

/// Sends `file`'s bytes to `tx` in pieces of [`PIECE`] (module docs,
/// "Streamed"), until its end, a read error (sent) or the reader dropping
/// the channel. Blocks on the file and on the channel.
pub fn send_pieces(
    mut file: std::fs::File,
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, StoreError>>,
) {
    use std::io::Read;
    loop {
        let mut piece = vec![0u8; PIECE];
        let mut got = 0;
        while got < PIECE {
            match file.read(&mut piece[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(StoreError::Internal(format!(
                        "cannot read a snapshot: {e}"
                    ))));
                    return;
                }
            }
        }
        if got == 0 {
            return;
        }
        piece.truncate(got);
        if tx.blocking_send(Ok(piece)).is_err() || got < PIECE {
            return;
        }
    }
}

/// The end of a snapshot's name that says what can read it: the first 8
/// bytes of the model's hash in hex, then `-v` and the format version.
/// Snapshots of one kind replace and prune only each other.
fn kind_tag(meta: &SnapshotMeta) -> String {
    let model: String = meta.model[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{model}-v{}", meta.format)
}

/// Makes a rename or deletion in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(position: u64) -> SnapshotMeta {
        SnapshotMeta {
            position,
            events: position + 1,
            format: 1,
            model: [0; 32],
            context: None,
        }
    }

    #[test]
    fn the_newest_two_are_kept_stale_temporary_files_cleared_and_an_erasure_deletes_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::in_dir(dir.path());
        assert!(snaps.latest().unwrap().is_empty());
        std::fs::create_dir_all(snaps.dir()).unwrap();
        std::fs::write(snaps.dir().join("x.snapshot.tmp"), b"cut off").unwrap();
        for p in [5, 30, 200] {
            assert!(snaps.save(&[p as u8], meta(p), 0).unwrap());
        }
        // A temporary file left by a write cut off is cleared.
        assert!(!snaps.dir().join("x.snapshot.tmp").exists());
        assert_eq!(snaps.latest().unwrap(), vec![vec![200u8], vec![30u8]]);
        snaps.erase_all().unwrap();
        assert!(snaps.latest().unwrap().is_empty());
    }

    /// Task h37 found an older binary's save at the same position
    /// replacing a format-4 snapshot (the names carried the model only),
    /// and each binary's pruning deleting the other's snapshots.
    #[test]
    fn saves_of_another_format_neither_replace_nor_prune_this_formats_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::in_dir(dir.path());
        let of = |position, format| SnapshotMeta {
            format,
            ..meta(position)
        };
        assert!(snaps.save(b"v4 at 10", of(10, 4), 0).unwrap());
        // The same position and model in the previous format: its own file.
        assert!(snaps.save(b"v3 at 10", of(10, 3), 0).unwrap());
        for p in [20, 30, 40] {
            assert!(snaps.save(b"v3 later", of(p, 3), 0).unwrap());
        }
        let kept = snaps.latest().unwrap();
        assert!(kept.contains(&b"v4 at 10".to_vec()), "{kept:?}");
        // Format 3 keeps its newest two, format 4 its one.
        assert_eq!(kept.len(), SNAPSHOTS_KEPT + 1);
        // Newest first across formats: the loader tries them in this order.
        assert_eq!(kept[0], b"v3 later".to_vec());
        assert_eq!(kept.last().unwrap(), &b"v4 at 10".to_vec());
    }

    #[test]
    fn a_save_of_a_state_from_before_an_erasure_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::in_dir(dir.path());
        let epoch = snaps.epoch();
        snaps.erase_all().unwrap();
        assert!(!snaps.save(&[1], meta(1), epoch).unwrap());
        assert!(snaps.latest().unwrap().is_empty());
        assert!(std::fs::read_dir(snaps.dir()).unwrap().next().is_none());
    }
}
