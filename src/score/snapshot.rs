//! Snapshots of the derived state: a `ScoreState` as bytes and back, so a
//! start folds only the log after the snapshot instead of the whole log.
//! This module owns the format; it must not do IO or read the clock (the
//! engine writes and reads the bytes, the store keeps them).
//!
//! **What is saved.** The fold's state (`FoldState`: the entity table and
//! graph with its edge histories, registrations, the folded positions,
//! impulses in their columns with the sales credits they name, the
//! per-entity series, brand KPIs, provisional kinds), the live series'
//! canonical clock, and the deltas of
//! the events from the live series' latest checkpoint on (fewer than
//! `CHECKPOINT_EVENTS` plus a run of equal times). Not the live series
//! itself: it is as large as the relationships, and it is a function of the
//! fold's state at its checkpoint plus those deltas, so it is rebuilt after
//! a load (one batch evaluation) and syncs to the same bits as a build of
//! the whole log.
//!
//! **Format** (version [`FORMAT_VERSION`]), written and read as a stream
//! so that neither side ever holds the whole snapshot (at 10M events of
//! issue #10's shape it was over 3 GB before the sales credits were kept
//! once, 545 MB since a person's credits are runs, and encoding it into
//! one growing buffer asked for twice its size at once): a fixed header, little-endian,
//! [`HEADER_LEN`] bytes: magic `FUSNSNAP`, format version `u32`, the
//! model's hash (SHA-256, [`model_hash`]), the largest log position folded
//! `u64`, the events folded `u64`. Then the body in frames: each a length
//! `u32` (1 to [`FRAME_MAX`]) and that many bytes, ended by a length 0.
//! Then the SHA-256 of every byte before it (header and frames). The
//! frames' bytes, put together, are [`postcard`] of `Body`, structs of this
//! module only. Handles are the table's `u32` indices, times `(seconds, nanos)`,
//! kinds and components small integers. The domain types' serde derives
//! (the wire and the stored events' format) are never used: a change of
//! them must not change what a snapshot means. `BrandStats`, a
//! score-internal struct of plain numbers, is stored with its derive.
//! A change of any struct here, or of what the fold keeps, bumps
//! `FORMAT_VERSION`; the unit test `the_encoding_of_a_fixed_state_is_pinned`
//! fails until it is.
//!
//! **What is refused** ([`SnapshotError`]): a short or truncated stream
//! (a write cut off: no end frame or checksum), another magic, format
//! version or model hash, bytes whose checksum does not match (or frames
//! that do not parse: corrupted), a body that does not decode or whose
//! parts do not fit together (a handle out of range). The caller then
//! folds the whole log. The checksum is checked after the body is decoded
//! (the stream is read once): a body that fails to decode is read to its
//! end first, so a corrupted one is reported as such.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fold::impulses::{Columns, Run};
use super::fold::{
    BrandStats, Credits, Delta, EventDeltas, FoldState, Impulses, OccasionInfo, PositionSet,
};
use super::live::{LiveSeries, LogClock};
use super::model::{Component, ScoringModel};
use super::scores::ScoreState;
use crate::domain::{Entity, EntityId, EntityKind, EventId, LogPosition};
use crate::graph::{EdgeKind, Handle, RelationGraph};

/// The snapshot format's version; a snapshot of another is ignored.
/// Version 2: a sales report's lift credited to many people is stored once
/// (`credits`), each person's impulses naming it (`fold/impulses.rs`).
/// Version 3: the body in frames and the checksum after it, so that a
/// snapshot is written and read as a stream (task h32); the body's bytes
/// are version 2's. Version 4: a person's credits as runs of their
/// brand's consecutive reports instead of one index per report (task h37).
pub const FORMAT_VERSION: u32 = 4;
/// The first bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"FUSNSNAP";
/// Bytes of the header before the body's frames.
pub const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 8;
/// The largest frame of the body, bytes: what an encoder buffers before it
/// writes (and what a reader is refused beyond, as corrupted).
pub const FRAME_MAX: usize = 1 << 20;
/// Bytes of the checksum at the end.
const CHECKSUM_LEN: usize = 32;
/// The longest string of the body (ids, names), bytes.
const SCRATCH: usize = 64 * 1024;
/// Bytes of the body read ahead of its decoder.
const BODY_BUFFER: usize = 64 * 1024;

/// Why a snapshot cannot be used (the caller folds the whole log instead).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// The stream ended before its end (a write cut off halfway), after
    /// this many bytes.
    #[error("the snapshot is truncated after {0} bytes (its write was cut off)")]
    Truncated(u64),
    /// Not a snapshot.
    #[error("not a fusion snapshot (bad magic)")]
    Magic,
    /// Written by another version of the format.
    #[error("the snapshot's format is version {0}, this build reads version {FORMAT_VERSION}")]
    Format(u32),
    /// Written with another scoring model.
    #[error("the snapshot was made with another scoring model")]
    Model,
    /// The bytes do not match their checksum, or their frames do not parse
    /// (a corrupted file).
    #[error("the snapshot's checksum does not match its bytes (corrupted)")]
    Checksum,
    /// The body does not decode, or its parts do not fit together.
    #[error("the snapshot's body is invalid: {0}")]
    Body(String),
    /// The writer the snapshot was encoded into failed.
    #[error("cannot write the snapshot: {0}")]
    Write(String),
}

/// What a snapshot's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The format version.
    pub format: u32,
    /// The scoring model's hash ([`model_hash`]).
    pub model: [u8; 32],
    /// The largest log position folded: a start folds the log after it.
    pub position: LogPosition,
    /// Events folded.
    pub events: u64,
}

impl SnapshotHeader {
    fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.format.to_le_bytes());
        out[12..44].copy_from_slice(&self.model);
        out[44..52].copy_from_slice(&self.position.to_le_bytes());
        out[52..60].copy_from_slice(&self.events.to_le_bytes());
        out
    }

    /// Reads the header at the start of `bytes`, checking the magic only.
    pub fn read(bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        if bytes.len() < HEADER_LEN {
            return Err(SnapshotError::Truncated(bytes.len() as u64));
        }
        if bytes[..8] != MAGIC {
            return Err(SnapshotError::Magic);
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(SnapshotHeader {
            format: u32_at(8),
            model: bytes[12..44].try_into().expect("32 bytes"),
            position: u64_at(44),
            events: u64_at(52),
        })
    }
}

/// Writes the body's bytes in frames of at most [`FRAME_MAX`] (module
/// docs), hashing everything it writes; the one buffer is a frame.
struct FrameWriter<W: Write> {
    out: W,
    frame: Vec<u8>,
    /// The largest frame: [`FRAME_MAX`] (smaller in tests).
    max: usize,
    hash: Sha256,
}

impl<W: Write> FrameWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    fn emit(&mut self) -> std::io::Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let frame = std::mem::take(&mut self.frame);
        self.put(&(frame.len() as u32).to_le_bytes())?;
        self.put(&frame)?;
        self.frame = frame;
        self.frame.clear();
        Ok(())
    }

    /// The last frame, the end frame and the checksum.
    fn finish(mut self) -> std::io::Result<W> {
        self.emit()?;
        self.put(&0u32.to_le_bytes())?;
        let sum: [u8; CHECKSUM_LEN] = self.hash.finalize_reset().into();
        self.out.write_all(&sum)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = self.max - self.frame.len();
        let n = bytes.len().min(room);
        self.frame.extend_from_slice(&bytes[..n]);
        if self.frame.len() == self.max {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the body's bytes out of its frames (module docs), hashing every
/// byte it reads, header included; notes a stream cut off and frames that
/// do not parse instead of failing on them, so that the caller can say
/// which it was once the body is read.
struct FrameReader<R: Read> {
    input: std::io::BufReader<R>,
    hash: Sha256,
    /// Bytes read so far.
    read: u64,
    /// Bytes left in the current frame.
    left: usize,
    /// The end frame was read.
    ended: bool,
    /// The stream ended early.
    cut: bool,
    /// A frame length out of range.
    corrupt: bool,
}

impl<R: Read> FrameReader<R> {
    fn new(input: R) -> Self {
        FrameReader {
            input: std::io::BufReader::with_capacity(256 * 1024, input),
            hash: Sha256::new(),
            read: 0,
            left: 0,
            ended: false,
            cut: false,
            corrupt: false,
        }
    }

    /// Fills `buf` from the stream, hashing it; `false` when it ended first
    /// (noted as cut off).
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.hash.update(&buf[..got]);
        self.read += got as u64;
        if got < buf.len() {
            self.cut = true;
        }
        got == buf.len()
    }

    fn stopped(&self) -> bool {
        self.ended || self.cut || self.corrupt
    }

    /// Reads the rest of the body (after a decode that stopped early or
    /// left bytes over); answers the body bytes left over.
    fn drain(&mut self) -> u64 {
        let mut buf = vec![0u8; 64 * 1024];
        let mut over = 0;
        loop {
            match self.read(&mut buf) {
                Ok(0) | Err(_) => return over,
                Ok(n) => over += n as u64,
            }
        }
    }

    /// After the end frame: reads the checksum (not hashed) and says
    /// whether the stream was whole and matched it.
    fn verdict(mut self) -> Result<(), SnapshotError> {
        if self.corrupt {
            return Err(SnapshotError::Checksum);
        }
        if self.cut || !self.ended {
            return Err(SnapshotError::Truncated(self.read));
        }
        let computed: [u8; CHECKSUM_LEN] = self.hash.finalize_reset().into();
        let mut stored = [0u8; CHECKSUM_LEN];
        let mut got = 0;
        while got < CHECKSUM_LEN {
            match self.input.read(&mut stored[got..]) {
                Ok(0) | Err(_) => return Err(SnapshotError::Truncated(self.read + got as u64)),
                Ok(n) => got += n,
            }
        }
        let mut past = [0u8; 1];
        if matches!(self.input.read(&mut past), Ok(n) if n > 0) {
            // Bytes after the checksum: not what was written.
            return Err(SnapshotError::Checksum);
        }
        if stored != computed {
            return Err(SnapshotError::Checksum);
        }
        Ok(())
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.left == 0 {
            if self.stopped() {
                return Ok(0);
            }
            let mut len = [0u8; 4];
            if !self.fill(&mut len) {
                return Ok(0);
            }
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 {
                self.ended = true;
            } else if len > FRAME_MAX {
                self.corrupt = true;
            } else {
                self.left = len;
            }
        }
        let n = buf.len().min(self.left);
        if !self.fill(&mut buf[..n]) {
            return Ok(0);
        }
        self.left -= n;
        Ok(n)
    }
}

/// The body's bytes as postcard takes them (its `Flavor`): a byte, or a
/// few for an `f64` or a string, at a time, from a buffer refilled from
/// the frames in blocks. postcard's own reader over `std::io::Read` asks
/// for each byte with `read_exact`, through a buffered reader, and the
/// decode ran at about 40 MB/s, most of a 10M restart's decoding (task
/// h37).
struct BodyBytes<R> {
    input: R,
    buf: Box<[u8]>,
    at: usize,
    end: usize,
    /// A string or number that straddles two fills, put together.
    scratch: Vec<u8>,
}

impl<R: Read> BodyBytes<R> {
    fn new(input: R) -> Self {
        BodyBytes {
            input,
            buf: vec![0u8; BODY_BUFFER].into_boxed_slice(),
            at: 0,
            end: 0,
            scratch: Vec::new(),
        }
    }

    /// Refills the empty buffer; an error at the end of the body.
    fn fill(&mut self) -> postcard::Result<()> {
        loop {
            match self.input.read(&mut self.buf) {
                Ok(0) => return Err(postcard::Error::DeserializeUnexpectedEnd),
                Ok(n) => {
                    (self.at, self.end) = (0, n);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(postcard::Error::DeserializeUnexpectedEnd),
            }
        }
    }
}

impl<'de, R: Read + 'de> postcard::de_flavors::Flavor<'de> for BodyBytes<R> {
    /// Bytes read from the frames and not taken.
    type Remainder = usize;
    type Source = ();

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        if self.at == self.end {
            self.fill()?;
        }
        let byte = self.buf[self.at];
        self.at += 1;
        Ok(byte)
    }

    /// Borrowing from the input for the whole decode: the body has no
    /// borrowed field, so nothing asks.
    fn try_take_n(&mut self, _: usize) -> postcard::Result<&'de [u8]> {
        Err(postcard::Error::DeserializeUnexpectedEnd)
    }

    #[inline]
    fn try_take_n_temp<'a>(&'a mut self, ct: usize) -> postcard::Result<&'a [u8]>
    where
        'de: 'a,
    {
        if self.end - self.at >= ct {
            let at = self.at;
            self.at += ct;
            return Ok(&self.buf[at..at + ct]);
        }
        if ct > SCRATCH {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        self.scratch.clear();
        while self.scratch.len() < ct {
            if self.at == self.end {
                self.fill()?;
            }
            let n = (ct - self.scratch.len()).min(self.end - self.at);
            self.scratch
                .extend_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
        }
        Ok(&self.scratch)
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.end - self.at)
    }
}

/// The scoring model's hash: SHA-256 of its `Debug` text, which names every
/// field and prints every f64 in its shortest exact form (maps in it are
/// `BTreeMap`s, so the text is a function of the model).
pub fn model_hash(model: &ScoringModel) -> [u8; 32] {
    Sha256::digest(format!("{model:?}").as_bytes()).into()
}

/// What a snapshot is made from, copied out of a `ScoreState`
/// ([`ScoreState::capture`]: the fold's state without the live series) so
/// that it can be encoded off every lock.
#[derive(Debug, Clone)]
pub struct Captured {
    fold: FoldState,
    clock: LogClock,
    journal: Vec<EventDeltas>,
}

impl Captured {
    /// Events folded.
    pub fn events(&self) -> u64 {
        self.fold.count as u64
    }

    /// The latest change of the log's context the state reflects
    /// (`FoldState::context_position`).
    pub fn context_position(&self) -> Option<crate::domain::LogPosition> {
        self.fold.context_position()
    }

    /// The largest log position folded; `None` for an empty state.
    pub fn position(&self) -> Option<LogPosition> {
        self.fold.folded.max()
    }

    /// The header this capture's snapshot has; `None` for an empty state,
    /// which needs no snapshot.
    pub fn header(&self) -> Option<SnapshotHeader> {
        Some(SnapshotHeader {
            format: FORMAT_VERSION,
            model: model_hash(&self.fold.model),
            position: self.position()?,
            events: self.events(),
        })
    }

    /// Writes the snapshot (module docs) to `out` as it is encoded, holding
    /// one frame ([`FRAME_MAX`]) of it at a time, the largest part (the
    /// impulses) encoded straight from the state's columns; answers `out`
    /// and the header written, `None` (nothing written) for an empty state.
    /// Errors: `out` failed ([`SnapshotError::Write`]).
    pub fn encode_to<W: Write>(
        &self,
        out: W,
    ) -> Result<Option<(W, SnapshotHeader)>, SnapshotError> {
        self.encode_framed(out, FRAME_MAX)
    }

    /// [`Self::encode_to`] in frames of at most `max` bytes.
    fn encode_framed<W: Write>(
        &self,
        out: W,
        max: usize,
    ) -> Result<Option<(W, SnapshotHeader)>, SnapshotError> {
        let Some(header) = self.header() else {
            return Ok(None);
        };
        let failed = |e: std::io::Error| SnapshotError::Write(e.to_string());
        let mut frames = FrameWriter {
            out,
            frame: Vec::with_capacity(max),
            max,
            hash: Sha256::new(),
        };
        frames.put(&header.bytes()).map_err(failed)?;
        let frames = postcard::to_io(&Body::of(self), frames)
            .map_err(|e| SnapshotError::Write(e.to_string()))?;
        let out = frames.finish().map_err(failed)?;
        Ok(Some((out, header)))
    }

    /// The whole snapshot in memory (tests, small states); `None` for an
    /// empty state. A service writes it with [`Self::encode_to`].
    pub fn encode(&self) -> Option<Vec<u8>> {
        self.encode_to(Vec::new())
            .expect("a Vec takes every write")
            .map(|(bytes, _)| bytes)
    }
}

impl ScoreState {
    /// Copies what a snapshot holds (module docs), leaving the live series'
    /// scores out. The impulse columns are shared with the state, not
    /// copied (`FoldState::impulses`: the fold copies a person's columns
    /// before it changes them while a capture holds them).
    pub fn capture(&self) -> Captured {
        Captured {
            fold: self.fold.clone(),
            clock: self.live.clock(),
            journal: self.live.journal(),
        }
    }

    /// The state a snapshot holds, scoring with `model`, its live series to
    /// be rebuilt when it first syncs; the header with it. Refused (module
    /// docs) when it was made with another model or format, or is
    /// truncated or corrupted.
    pub fn from_snapshot(
        bytes: &[u8],
        model: Arc<ScoringModel>,
    ) -> Result<(SnapshotHeader, ScoreState), SnapshotError> {
        Self::read_snapshot(bytes, model)
    }

    /// [`Self::from_snapshot`] read from a stream, once, holding a buffer
    /// and one string of it at a time besides what it decodes (a snapshot
    /// can be larger than the memory left).
    pub fn read_snapshot(
        input: impl Read,
        model: Arc<ScoringModel>,
    ) -> Result<(SnapshotHeader, ScoreState), SnapshotError> {
        let mut frames = FrameReader::new(input);
        let mut head = [0u8; HEADER_LEN];
        if !frames.fill(&mut head) {
            return Err(SnapshotError::Truncated(frames.read));
        }
        let header = SnapshotHeader::read(&head)?;
        if header.format != FORMAT_VERSION {
            return Err(SnapshotError::Format(header.format));
        }
        if header.model != model_hash(&model) {
            return Err(SnapshotError::Model);
        }
        let mut de = postcard::Deserializer::from_flavor(BodyBytes::new(&mut frames));
        let decoded = Body::deserialize(&mut de).map_err(|e| SnapshotError::Body(e.to_string()));
        let buffered = de.finalize().unwrap_or(0) as u64;
        // Read to the end whatever happened: the checksum decides whether
        // a body that did not decode was corrupted or cut off.
        let over = buffered + frames.drain();
        frames.verdict()?;
        let body = decoded?;
        if over > 0 {
            return Err(SnapshotError::Body(format!("{over} bytes after the body")));
        }
        let state = body.into_state(model).map_err(SnapshotError::Body)?;
        if state.fold.count as u64 != header.events
            || state.fold.folded.max() != Some(header.position)
        {
            return Err(SnapshotError::Body(
                "the header's counts are not the body's".into(),
            ));
        }
        Ok((header, state))
    }
}

/// A time: seconds since the epoch and nanoseconds.
type Time = (i64, u32);

fn time(t: DateTime<Utc>) -> Time {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

fn from_time((s, n): Time) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp(s, n).ok_or_else(|| format!("time {s}.{n} out of range"))
}

fn kind_code(k: EntityKind) -> u8 {
    match k {
        EntityKind::Consumer => 0,
        EntityKind::Influencer => 1,
        EntityKind::Brand => 2,
        EntityKind::Occasion => 3,
    }
}

fn kind_of(c: u8) -> Result<EntityKind, String> {
    Ok(match c {
        0 => EntityKind::Consumer,
        1 => EntityKind::Influencer,
        2 => EntityKind::Brand,
        3 => EntityKind::Occasion,
        _ => return Err(format!("entity kind {c}")),
    })
}

fn component_of(c: u8) -> Result<Component, String> {
    Component::ALL
        .get(c as usize)
        .copied()
        .ok_or_else(|| format!("component {c}"))
}

fn id(s: String) -> Result<EntityId, String> {
    EntityId::new(s).map_err(|e| e.to_string())
}

/// Everything but the header (module docs). Maps are stored as vectors
/// sorted by key, so equal states encode to equal bytes. The impulses are
/// `I`: decoded into [`ImpulseColumns`], encoded from the state's own
/// columns ([`ImpulsesView`], the same bytes).
#[derive(Serialize, Deserialize)]
struct Body<I = Vec<(u32, ImpulseColumns)>> {
    names: Vec<String>,
    kinds: Vec<u8>,
    edges: Vec<EdgeRow>,
    registrations: Vec<Registration>,
    folded: Vec<u64>,
    count: u64,
    latest: Option<(Time, String)>,
    credits: CreditColumns,
    impulses: I,
    event_counts: Vec<u32>,
    audience: Vec<(u32, Vec<(Time, u64)>)>,
    occasions: Vec<(u32, Occasion)>,
    hosted: Vec<(u32, Vec<u32>)>,
    sales: Vec<(u32, Vec<f64>)>,
    consent: Vec<(u32, Vec<(Time, bool)>)>,
    interests: Vec<(String, Vec<u32>)>,
    brand_stats: Vec<(u32, BrandStats)>,
    provisional: Vec<u32>,
    clock: Clock,
    journal: Vec<JournalEvent>,
}

#[derive(Serialize, Deserialize)]
struct EdgeRow {
    from: u32,
    to: u32,
    /// 0 follow, 1 association.
    kind: u8,
    history: Vec<(Time, Option<f64>)>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Registration {
    id: String,
    kind: u8,
    name: Option<String>,
    followers: Option<u64>,
    interests: Vec<String>,
}

impl Registration {
    fn of(e: &Entity) -> Self {
        Registration {
            id: e.id.as_str().to_string(),
            kind: kind_code(e.kind),
            name: e.name.clone(),
            followers: e.followers,
            interests: e.interests.clone(),
        }
    }

    fn entity(self) -> Result<Entity, String> {
        Ok(Entity {
            id: id(self.id)?,
            kind: kind_of(self.kind)?,
            name: self.name,
            followers: self.followers,
            interests: self.interests,
        })
    }
}

/// A person's impulses: the own ones in columns, their credits as runs
/// (first credit, how many of its brand's chain), the order bits
/// (`fold::Impulses`).
#[derive(Serialize, Deserialize)]
struct ImpulseColumns {
    brand: Vec<u32>,
    component: Vec<u8>,
    time: Vec<Time>,
    amount: Vec<f64>,
    event: Vec<u64>,
    runs: Vec<(u32, u32)>,
    order: Vec<u64>,
}

/// The sales credits (`fold::Credits`).
#[derive(Serialize, Deserialize)]
struct CreditColumns {
    brand: Vec<u32>,
    time: Vec<Time>,
    amount: Vec<f64>,
    event: Vec<u64>,
}

impl CreditColumns {
    fn of(c: &Credits) -> Self {
        CreditColumns {
            brand: c.brand.iter().map(|x| h(*x)).collect(),
            time: c.time.iter().map(|t| time(*t)).collect(),
            amount: c.amount.clone(),
            event: c.event.clone(),
        }
    }

    fn into_credits(self, hd: impl Fn(u32) -> Result<Handle, String>) -> Result<Credits, String> {
        Credits::from_columns(
            self.brand.into_iter().map(hd).collect::<Result<_, _>>()?,
            self.time
                .into_iter()
                .map(from_time)
                .collect::<Result<_, _>>()?,
            self.amount,
            self.event,
        )
        .ok_or_else(|| "credit columns of unequal lengths".into())
    }
}

/// Every person's impulse columns, borrowed from the state, sorted by
/// handle: encodes as `Vec<(u32, ImpulseColumns)>` does.
struct ImpulsesView<'a>(Vec<(u32, &'a Impulses)>);

impl Serialize for ImpulsesView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, c)| (*k, ColumnsView(c))))
    }
}

/// One person's columns, borrowed: encodes as [`ImpulseColumns`] does.
struct ColumnsView<'a>(&'a Impulses);

impl Serialize for ColumnsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let list = self.0;
        let mut st = s.serialize_struct("ImpulseColumns", 7)?;
        st.serialize_field(
            "brand",
            &Joined(|| list.own().map(|c| &c.brand[..]), |x: &Handle| h(*x)),
        )?;
        st.serialize_field(
            "component",
            &Joined(
                || list.own().map(|c| &c.component[..]),
                |x: &Component| x.index() as u8,
            ),
        )?;
        st.serialize_field(
            "time",
            &Joined(
                || list.own().map(|c| &c.time[..]),
                |t: &DateTime<Utc>| time(*t),
            ),
        )?;
        st.serialize_field(
            "amount",
            &Joined(|| list.own().map(|c| &c.amount[..]), |x: &f64| *x),
        )?;
        st.serialize_field(
            "event",
            &Joined(|| list.own().map(|c| &c.event[..]), |x: &u64| *x),
        )?;
        st.serialize_field("runs", &Mapped(&list.runs(), |r: &Run| (r.first, r.len)))?;
        st.serialize_field("order", &*list.order())?;
        st.end()
    }
}

/// A slice encoded as the `Vec` of its elements mapped by `F`, without
/// that `Vec`.
struct Mapped<'a, T, F>(&'a [T], F);

impl<T, U: Serialize, F: Fn(&T) -> U> Serialize for Mapped<'_, T, F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(&self.1))
    }
}

/// Slices (`P` gives them, each time asked) encoded as the one `Vec` of
/// their elements mapped by `F`, joined, without that `Vec`: a person's
/// columns, kept in chunks, encode as one list's did.
struct Joined<P, F>(P, F);

impl<'a, T: 'a, U, I, P, F> Serialize for Joined<P, F>
where
    U: Serialize,
    I: Iterator<Item = &'a [T]>,
    P: Fn() -> I,
    F: Fn(&T) -> U,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let len = (self.0)().map(<[T]>::len).sum();
        let mut seq = s.serialize_seq(Some(len))?;
        for part in (self.0)() {
            for x in part {
                seq.serialize_element(&(self.1)(x))?;
            }
        }
        seq.end()
    }
}

#[derive(Serialize, Deserialize)]
struct Occasion {
    host: Option<u32>,
    time: Time,
    participants: Vec<(u32, bool)>,
}

#[derive(Serialize, Deserialize)]
struct Clock {
    count: u64,
    last: Option<(Time, u64)>,
    mark: Option<(u64, Time, u64)>,
}

#[derive(Serialize, Deserialize)]
struct JournalEvent {
    index: u32,
    time: Time,
    /// Its log position and id: what the change feed names as a cause.
    position: u64,
    event: String,
    deltas: Vec<DeltaRow>,
}

/// An impulse as deltas carry it: brand, component, amount, time.
type ImpulseRow = (u32, u8, f64, Time);

#[derive(Serialize, Deserialize)]
enum DeltaRow {
    Impulse(u32, u32, u8, f64),
    Follow(u32, u32, Option<f64>),
    Association(u32, u32, f64),
    ConsentWithdrawn(u32, Vec<ImpulseRow>),
    ConsentGranted(u32, Vec<(u32, f64)>, Vec<(u32, f64)>, Vec<ImpulseRow>),
}

fn h(x: Handle) -> u32 {
    x.index() as u32
}

/// Sorted by key, as the body keeps maps.
fn sorted<'a, K: Copy + Ord, V, W>(
    map: &'a FxHashMap<K, V>,
    f: impl Fn(&'a V) -> W,
) -> Vec<(K, W)> {
    let mut v: Vec<(K, W)> = map.iter().map(|(k, x)| (*k, f(x))).collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

impl<'a> Body<ImpulsesView<'a>> {
    fn of(c: &'a Captured) -> Self {
        let f = &c.fold;
        let (names, kinds, edges) = f.graph.to_parts();
        let impulse_row = |(b, comp, amount, t): &(Handle, Component, f64, DateTime<Utc>)| {
            (h(*b), comp.index() as u8, *amount, time(*t))
        };
        let pairs = |v: &[(Handle, f64)]| v.iter().map(|(x, w)| (h(*x), *w)).collect();
        let mut interests: Vec<(String, Vec<u32>)> = f
            .interests
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|x| h(*x)).collect()))
            .collect();
        interests.sort_by(|a, b| a.0.cmp(&b.0));
        let mut provisional: Vec<u32> = f.provisional.iter().map(|x| h(*x)).collect();
        provisional.sort_unstable();
        Body {
            names: names.iter().map(|n| n.as_str().to_string()).collect(),
            kinds: kinds.iter().map(|k| kind_code(*k)).collect(),
            edges: edges
                .into_iter()
                .map(|(from, to, kind, history)| EdgeRow {
                    from: h(from),
                    to: h(to),
                    kind: match kind {
                        EdgeKind::Follow => 0,
                        EdgeKind::Association => 1,
                    },
                    history: history.iter().map(|(t, w)| (time(*t), *w)).collect(),
                })
                .collect(),
            registrations: f.registrations.values().map(Registration::of).collect(),
            folded: f.folded.words.clone(),
            count: f.count as u64,
            latest: f
                .latest
                .as_ref()
                .map(|(t, id)| (time(*t), id.as_str().to_string())),
            credits: CreditColumns::of(&f.credits),
            impulses: ImpulsesView(
                sorted(&f.impulses, |i| &**i)
                    .into_iter()
                    .map(|(k, v)| (h(k), v))
                    .collect(),
            ),
            event_counts: f.event_counts.clone(),
            audience: sorted(&f.audience, |s| {
                s.iter().map(|(t, n)| (time(*t), *n)).collect()
            })
            .into_iter()
            .map(|(k, v)| (h(k), v))
            .collect(),
            occasions: sorted(&f.occasions, |o| Occasion {
                host: o.host.map(h),
                time: time(o.time),
                participants: o.participants.iter().map(|(p, b)| (h(*p), *b)).collect(),
            })
            .into_iter()
            .map(|(k, v)| (h(k), v))
            .collect(),
            hosted: sorted(&f.hosted, |v| v.iter().map(|x| h(*x)).collect())
                .into_iter()
                .map(|(k, v)| (h(k), v))
                .collect(),
            sales: sorted(&f.sales, |v| v.iter().copied().collect())
                .into_iter()
                .map(|(k, v)| (h(k), v))
                .collect(),
            consent: sorted(&f.consent, |s| {
                s.iter().map(|(t, g)| (time(*t), *g)).collect()
            })
            .into_iter()
            .map(|(k, v)| (h(k), v))
            .collect(),
            interests,
            brand_stats: sorted(&f.brand_stats, BrandStats::clone)
                .into_iter()
                .map(|(k, v)| (h(k), v))
                .collect(),
            provisional,
            clock: Clock {
                count: c.clock.count as u64,
                last: c.clock.last.map(|(t, i)| (time(t), i as u64)),
                mark: c.clock.mark.map(|(p, t, r)| (p as u64, time(t), r as u64)),
            },
            journal: c
                .journal
                .iter()
                .map(|e| JournalEvent {
                    index: e.index,
                    time: time(e.time),
                    position: e.position,
                    event: e.event.as_str().to_owned(),
                    deltas: e
                        .deltas
                        .iter()
                        .map(|d| match d {
                            Delta::Impulse {
                                person,
                                brand,
                                component,
                                amount,
                            } => DeltaRow::Impulse(
                                h(*person),
                                h(*brand),
                                component.index() as u8,
                                *amount,
                            ),
                            Delta::Follow {
                                follower,
                                followee,
                                strength,
                            } => DeltaRow::Follow(h(*follower), h(*followee), *strength),
                            Delta::Association {
                                person,
                                brand,
                                strength,
                            } => DeltaRow::Association(h(*person), h(*brand), *strength),
                            Delta::ConsentWithdrawn { person, impulses } => {
                                DeltaRow::ConsentWithdrawn(
                                    h(*person),
                                    impulses.iter().map(impulse_row).collect(),
                                )
                            }
                            Delta::ConsentGranted {
                                person,
                                follows,
                                associations,
                                impulses,
                            } => DeltaRow::ConsentGranted(
                                h(*person),
                                pairs(follows),
                                pairs(associations),
                                impulses.iter().map(impulse_row).collect(),
                            ),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl Body {
    fn into_state(self, model: Arc<ScoringModel>) -> Result<ScoreState, String> {
        let n = self.names.len();
        let hd = |x: u32| -> Result<Handle, String> {
            if (x as usize) < n {
                Ok(Handle::from_index(x))
            } else {
                Err(format!("handle {x} out of {n}"))
            }
        };
        let names = self
            .names
            .into_iter()
            .map(id)
            .collect::<Result<Vec<_>, _>>()?;
        let kinds = self
            .kinds
            .into_iter()
            .map(kind_of)
            .collect::<Result<Vec<_>, _>>()?;
        let edges = self
            .edges
            .into_iter()
            .map(|e| {
                let kind = match e.kind {
                    0 => EdgeKind::Follow,
                    1 => EdgeKind::Association,
                    k => return Err(format!("edge kind {k}")),
                };
                let history = e
                    .history
                    .into_iter()
                    .map(|(t, w)| Ok((from_time(t)?, w)))
                    .collect::<Result<Vec<_>, String>>()?;
                Ok((e.from, e.to, kind, history))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let graph = RelationGraph::from_parts(names, kinds, edges)
            .ok_or("the entity table or an edge does not fit")?;
        let mut registrations = BTreeMap::new();
        for r in self.registrations {
            let e = r.entity()?;
            registrations.insert(e.id.clone(), e);
        }
        let keyed = |k: u32| hd(k);
        let credits = self.credits.into_credits(hd)?;
        let mut impulses = FxHashMap::default();
        for (k, c) in self.impulses {
            let list = Impulses::from_parts(
                Columns {
                    brand: c.brand.into_iter().map(hd).collect::<Result<_, _>>()?,
                    component: c
                        .component
                        .into_iter()
                        .map(component_of)
                        .collect::<Result<_, _>>()?,
                    time: c
                        .time
                        .into_iter()
                        .map(from_time)
                        .collect::<Result<_, _>>()?,
                    amount: c.amount,
                    event: c.event,
                },
                c.runs
                    .into_iter()
                    .map(|(first, len)| Run { first, len })
                    .collect(),
                c.order,
            );
            if !list.fits(&credits) {
                return Err("a person's impulses do not fit together or with the credits".into());
            }
            impulses.insert(keyed(k)?, Arc::new(list));
        }
        let series = |v: Vec<(Time, u64)>| -> Result<Vec<(DateTime<Utc>, u64)>, String> {
            v.into_iter().map(|(t, x)| Ok((from_time(t)?, x))).collect()
        };
        let mut audience = FxHashMap::default();
        for (k, v) in self.audience {
            audience.insert(keyed(k)?, Arc::new(series(v)?));
        }
        let mut occasions = FxHashMap::default();
        for (k, o) in self.occasions {
            let participants: Vec<(Handle, bool)> = o
                .participants
                .into_iter()
                .map(|(p, b)| Ok((hd(p)?, b)))
                .collect::<Result<_, String>>()?;
            let joined: FxHashSet<(Handle, bool)> = participants.iter().copied().collect();
            occasions.insert(
                keyed(k)?,
                Arc::new(OccasionInfo {
                    host: o.host.map(hd).transpose()?,
                    time: from_time(o.time)?,
                    participants,
                    joined,
                }),
            );
        }
        let mut hosted = FxHashMap::default();
        for (k, v) in self.hosted {
            hosted.insert(
                keyed(k)?,
                Arc::new(v.into_iter().map(hd).collect::<Result<_, _>>()?),
            );
        }
        let mut sales = FxHashMap::default();
        for (k, v) in self.sales {
            sales.insert(keyed(k)?, VecDeque::from(v));
        }
        let mut consent = FxHashMap::default();
        for (k, v) in self.consent {
            let s = v
                .into_iter()
                .map(|(t, g)| Ok((from_time(t)?, g)))
                .collect::<Result<Vec<_>, String>>()?;
            consent.insert(keyed(k)?, Arc::new(s));
        }
        let mut interests = FxHashMap::default();
        for (k, v) in self.interests {
            interests.insert(k, v.into_iter().map(hd).collect::<Result<_, _>>()?);
        }
        let mut brand_stats = FxHashMap::default();
        for (k, v) in self.brand_stats {
            brand_stats.insert(keyed(k)?, v);
        }
        let provisional = self
            .provisional
            .into_iter()
            .map(hd)
            .collect::<Result<FxHashSet<_>, _>>()?;
        let latest = match self.latest {
            None => None,
            Some((t, e)) => Some((from_time(t)?, EventId::new(e).map_err(|e| e.to_string())?)),
        };
        let mut fold = FoldState::new(Arc::clone(&model));
        fold.graph = graph;
        fold.registrations = registrations;
        fold.folded = PositionSet { words: self.folded };
        fold.count = usize::try_from(self.count).map_err(|e| e.to_string())?;
        fold.latest = latest;
        fold.impulses = impulses;
        fold.credits = Arc::new(credits);
        fold.event_counts = self.event_counts;
        fold.audience = audience;
        fold.occasions = occasions;
        fold.hosted = hosted;
        fold.sales = sales;
        fold.consent = consent;
        fold.interests = interests;
        fold.brand_stats = brand_stats;
        fold.provisional = provisional;
        let to_usize = |x: u64| usize::try_from(x).map_err(|e| e.to_string());
        let clock = LogClock {
            count: to_usize(self.clock.count)?,
            last: match self.clock.last {
                None => None,
                Some((t, i)) => Some((from_time(t)?, to_usize(i)?)),
            },
            mark: match self.clock.mark {
                None => None,
                Some((p, t, r)) => Some((to_usize(p)?, from_time(t)?, to_usize(r)?)),
            },
        };
        if clock.count != fold.count {
            return Err("the live clock's count is not the fold's".into());
        }
        let impulse = |(b, c, a, t): ImpulseRow| -> Result<_, String> {
            Ok((hd(b)?, component_of(c)?, a, from_time(t)?))
        };
        let pairs = |v: Vec<(u32, f64)>| -> Result<Vec<(Handle, f64)>, String> {
            v.into_iter().map(|(x, w)| Ok((hd(x)?, w))).collect()
        };
        let mut journal = Vec::with_capacity(self.journal.len());
        for e in self.journal {
            let deltas = e
                .deltas
                .into_iter()
                .map(|d| {
                    Ok(match d {
                        DeltaRow::Impulse(p, b, c, amount) => Delta::Impulse {
                            person: hd(p)?,
                            brand: hd(b)?,
                            component: component_of(c)?,
                            amount,
                        },
                        DeltaRow::Follow(a, b, strength) => Delta::Follow {
                            follower: hd(a)?,
                            followee: hd(b)?,
                            strength,
                        },
                        DeltaRow::Association(p, b, strength) => Delta::Association {
                            person: hd(p)?,
                            brand: hd(b)?,
                            strength,
                        },
                        DeltaRow::ConsentWithdrawn(p, v) => Delta::ConsentWithdrawn {
                            person: hd(p)?,
                            impulses: v.into_iter().map(impulse).collect::<Result<_, _>>()?,
                        },
                        DeltaRow::ConsentGranted(p, f, a, v) => Delta::ConsentGranted {
                            person: hd(p)?,
                            follows: pairs(f)?,
                            associations: pairs(a)?,
                            impulses: v.into_iter().map(impulse).collect::<Result<_, _>>()?,
                        },
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            journal.push(EventDeltas {
                index: e.index,
                time: from_time(e.time)?,
                position: e.position,
                event: EventId::from(e.event),
                deltas,
            });
        }
        // The journal holds every event from the checkpoint's first pending
        // position on; one that does not (written before the checkpoint of
        // a log of a multiple of `CHECKPOINT_EVENTS` events began at the
        // latest time's run, red team h63, F2) would leave the series
        // without those events: refused, the log is folded whole.
        let first_pending = clock.checkpoint().first_pending;
        if journal.len() != clock.count - first_pending.min(clock.count) {
            return Err("the live journal does not reach back to its checkpoint".into());
        }
        fold.built();
        let live = LiveSeries::resume(model, clock, journal);
        Ok(ScoreState { fold, live })
    }
}

/// The registrations a snapshot holds, as they compare with a store's
/// (`Registrations::matches`): a snapshot made before a registration
/// changed is not used.
pub fn registrations_match(state: &ScoreState, entities: &[Entity]) -> bool {
    let held: Vec<Registration> = state
        .fold
        .registrations
        .values()
        .map(Registration::of)
        .collect();
    let mut given: Vec<Registration> = entities.iter().map(Registration::of).collect();
    given.sort_by(|a, b| a.id.cmp(&b.id));
    held == given
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Logged;

    /// The seed story's state.
    fn state() -> ScoreState {
        let model = ScoringModel::default_model();
        let values: Vec<serde_json::Value> = include_str!("../../fixtures/seed_story.ndjson")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("the seed story is JSON"))
            .collect();
        let valid = crate::ingest::validate_all(&values, &model.currency);
        assert!(valid.rejected.is_empty(), "{:?}", valid.rejected);
        let log: Vec<Logged> = valid
            .good
            .into_iter()
            .enumerate()
            .map(|(i, (_, event))| Logged {
                position: i as u64,
                event,
            })
            .collect();
        ScoreState::from_log(Arc::new(model), Vec::new(), log)
    }

    #[test]
    fn a_snapshot_gives_back_the_state_it_was_made_of() {
        let s = state();
        let bytes = s.capture().encode().expect("not empty");
        let (header, back) = ScoreState::from_snapshot(&bytes, Arc::clone(s.model_arc())).unwrap();
        assert_eq!(header.events, s.event_count() as u64);
        // Encoding the loaded state gives the same bytes: nothing was lost.
        assert_eq!(back.capture().encode().unwrap(), bytes);
    }

    /// People's impulses kept in chunks (task h57) encode as one list
    /// each: a generated state whose longest lists span several chunks
    /// (runs and order words cut where chunks were frozen) loads, as one
    /// chunk per person, into a state that encodes to the same bytes and
    /// reads the same impulses.
    #[test]
    fn lists_in_many_chunks_encode_and_load_as_one_list_each() {
        let model = Arc::new(ScoringModel::default_model());
        let events = crate::generate::small_generated_events(&model);
        let s = ScoreState::build(Arc::clone(&model), Vec::new(), events);
        let longest = s.fold.impulses.values().map(|l| l.len()).max();
        assert!(
            longest > Some(2 * crate::score::fold::impulses::CHUNK),
            "{longest:?}"
        );
        let bytes = s.capture().encode().expect("not empty");
        let (_, back) = ScoreState::from_snapshot(&bytes, model).unwrap();
        assert_eq!(back.capture().encode().unwrap(), bytes);
        for (p, list) in &s.fold.impulses {
            let key = |i: crate::score::fold::impulses::Impulse| {
                (i.brand, i.component, i.time, i.amount.to_bits(), i.event)
            };
            let a: Vec<_> = s.fold.impulse_list(*p).unwrap().iter().map(key).collect();
            let b: Vec<_> = back
                .fold
                .impulse_list(*p)
                .unwrap()
                .iter()
                .map(key)
                .collect();
            assert_eq!(a.len(), list.len());
            assert_eq!(a, b);
        }
    }

    /// The seed story's log in canonical order, positions in that order.
    fn canonical_log() -> (Arc<ScoringModel>, Vec<Logged>) {
        let s = state();
        let model = Arc::clone(s.model_arc());
        let values: Vec<serde_json::Value> = include_str!("../../fixtures/seed_story.ndjson")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("the seed story is JSON"))
            .collect();
        let mut events: Vec<_> = crate::ingest::validate_all(&values, &model.currency)
            .good
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let log = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Logged {
                position: i as u64,
                event,
            })
            .collect();
        (model, log)
    }

    /// A capture shares the impulse columns instead of copying them (they
    /// were most of a snapshot write's transient, issue #10), so a fold
    /// after it must copy a person's columns before changing them: the
    /// capture still encodes what it captured, and the state holds the
    /// impulses a fold of the whole log holds.
    #[test]
    fn a_capture_shares_the_impulse_columns_and_a_later_fold_leaves_it_as_captured() {
        let (model, log) = canonical_log();
        let (head, tail) = log.split_at(log.len() - 3);
        let mut s = ScoreState::from_log(Arc::clone(&model), Vec::new(), head.to_vec());
        let captured = s.capture();
        for (p, list) in &s.fold.impulses {
            assert!(Arc::ptr_eq(list, &captured.fold.impulses[p]));
        }
        assert!(Arc::ptr_eq(&s.fold.credits, &captured.fold.credits));
        assert!(
            s.fold.credits.len() > 0,
            "the seed story credits sales lifts"
        );
        let bytes = captured.encode().unwrap();
        assert!(s.apply(tail.to_vec()));
        let copied = s
            .fold
            .impulses
            .iter()
            .filter(|(p, list)| {
                captured
                    .fold
                    .impulses
                    .get(p)
                    .is_some_and(|c| !Arc::ptr_eq(list, c))
            })
            .count();
        assert!(copied > 0, "the tail adds impulses to a captured person");
        assert_eq!(captured.encode().unwrap(), bytes);
        let whole = ScoreState::from_log(model, Vec::new(), log);
        // Every impulse as read, amounts by their bits.
        let columns = |s: &ScoreState| {
            let mut v: Vec<_> = s
                .fold
                .impulse_people()
                .map(|p| {
                    let list: Vec<_> = s
                        .fold
                        .impulse_list(p)
                        .unwrap()
                        .iter()
                        .map(|i| (i.brand, i.component, i.time, i.amount.to_bits(), i.event))
                        .collect();
                    (p, list)
                })
                .collect();
            v.sort_by_key(|x| x.0);
            v
        };
        assert_eq!(columns(&s), columns(&whole));
    }

    #[test]
    fn truncated_flipped_and_foreign_snapshots_are_refused() {
        let s = state();
        let bytes = s.capture().encode().unwrap();
        let model = Arc::clone(s.model_arc());
        let half = &bytes[..bytes.len() / 2];
        assert!(matches!(
            ScoreState::from_snapshot(half, Arc::clone(&model)),
            Err(SnapshotError::Truncated(..))
        ));
        assert!(matches!(
            ScoreState::from_snapshot(&bytes[..10], Arc::clone(&model)),
            Err(SnapshotError::Truncated(..))
        ));
        let mut flipped = bytes.clone();
        let i = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
        flipped[i] ^= 0x40;
        assert_eq!(
            ScoreState::from_snapshot(&flipped, Arc::clone(&model)).err(),
            Some(SnapshotError::Checksum)
        );
        let mut other = ScoringModel::default_model();
        other.spread *= 1.5;
        assert_eq!(
            ScoreState::from_snapshot(&bytes, Arc::new(other)).err(),
            Some(SnapshotError::Model)
        );
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            ScoreState::from_snapshot(&newer, model).err(),
            Some(SnapshotError::Format(FORMAT_VERSION + 1))
        );
    }

    /// The body's bytes: the frames' bytes put together (module docs).
    fn body_of(bytes: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut at = HEADER_LEN;
        loop {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 4;
            if len == 0 {
                break;
            }
            body.extend_from_slice(&bytes[at..at + len]);
            at += len;
        }
        assert_eq!(at + CHECKSUM_LEN, bytes.len(), "the checksum ends it");
        body
    }

    /// A snapshot of many frames (issue #10 at 10M: over 3 GB, written and
    /// read as a stream, task h32) reads back as one of one frame does,
    /// through a reader that gives a byte at a time; and cut at any frame's
    /// boundary, or with a frame's length changed, it is refused.
    #[test]
    fn a_snapshot_of_many_frames_reads_back_and_cut_or_corrupted_between_frames_is_refused() {
        let s = state();
        let captured = s.capture();
        let whole = captured.encode().unwrap();
        let (many, header) = captured.encode_framed(Vec::new(), 97).unwrap().unwrap();
        assert_eq!(Some(header), captured.header());
        assert_eq!(body_of(&many), body_of(&whole), "the same body");
        let frames = body_of(&many).len().div_ceil(97);
        assert!(frames > 10, "{frames} frames");
        /// A reader that gives one byte per call.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let model = Arc::clone(s.model_arc());
        let (_, back) = ScoreState::read_snapshot(Trickle(&many), Arc::clone(&model)).unwrap();
        assert_eq!(back.capture().encode().unwrap(), whole);
        // Cut after the header, after each of the first frames (its length
        // and bytes), before the end frame, before and inside the checksum.
        let frame = 4 + 97;
        let body_end = many.len() - CHECKSUM_LEN - 4;
        let mut cuts: Vec<usize> = (0..5).map(|i| HEADER_LEN + i * frame).collect();
        cuts.extend([body_end, body_end + 4, many.len() - 1]);
        for cut in cuts {
            assert!(
                matches!(
                    ScoreState::from_snapshot(&many[..cut], Arc::clone(&model)),
                    Err(SnapshotError::Truncated(_))
                ),
                "cut at {cut} of {}",
                many.len()
            );
        }
        // A frame's length changed: refused, as corrupted or cut off.
        for len in [0u32, 1, 96, 98, FRAME_MAX as u32 + 1] {
            let mut bad = many.clone();
            let at = HEADER_LEN + 3 * frame;
            bad[at..at + 4].copy_from_slice(&len.to_le_bytes());
            let got = ScoreState::from_snapshot(&bad, Arc::clone(&model)).err();
            assert!(
                matches!(
                    got,
                    Some(SnapshotError::Checksum | SnapshotError::Truncated(_))
                ),
                "length {len}: {got:?}"
            );
        }
        // Bytes after the checksum are not what was written.
        let mut longer = many.clone();
        longer.push(0);
        assert_eq!(
            ScoreState::from_snapshot(&longer, model).err(),
            Some(SnapshotError::Checksum)
        );
    }

    /// Pins the encoding: when this fails, the snapshot format changed, so
    /// bump `FORMAT_VERSION` (old snapshots must be ignored, not misread)
    /// and update the hash. The body's bytes are pinned (the frames around
    /// them by the test above).
    #[test]
    fn the_encoding_of_a_fixed_state_is_pinned() {
        let bytes = state().capture().encode().unwrap();
        let hash: [u8; 32] = Sha256::digest(body_of(&bytes)).into();
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!((FORMAT_VERSION, hex.as_str()), (4, PINNED));
    }

    /// Re-pinned for version 2: sales credits are stored once and named
    /// by each credited person's impulses (task h24, issue #10); version 1
    /// was "600baa37035727faf748318dae715190c22135864d5489809ab274178eca3fe3".
    /// Version 3 (frames, task h32) kept version 2's body bytes,
    /// "5b42f19851b47197dcd6fc450c9f0c34ec6130bee7dd7eeea957ba65d5f05940";
    /// version 4 keeps a person's credits as runs (task h37).
    const PINNED: &str = "feaf613ebe4388d21305db9fe6cb077e2c9f240b57b5f975f60ad29a20cd0df7";
}
