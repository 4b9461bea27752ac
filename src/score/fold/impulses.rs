//! Impulses as the fold keeps them, and the one way to read them: each
//! person's impulses in columns, in canonical event order, where a brand
//! sales report's lift (the same brand, time, amount and event for every
//! person it credits) is kept once, as a [`Credit`] row of the state's
//! [`Credits`], and each credited person holds its `u32` index. Every
//! reader (the adjoint walk's view, the batch, the deltas, snapshots) goes
//! through [`ImpulseList`], so this file alone knows the representation.
//! It must not decide what an impulse is worth (the rules do) nor read a
//! clock or do IO.
//!
//! Why: at 1,000,000 generated events 80 % of the impulses were sales
//! credits, copied to every participant of the brand's recent occasions
//! (33 B each, 174 B per event of the 219 the impulses took;
//! ARCHITECTURE.md, "Memory"). A credited person then held 4 B and one
//! bit per report; since task h37, one [`Run`] (8 B) per stretch of
//! consecutive reports of one brand that credited them, and one bit per
//! report: a participant of a brand's occasion is credited by every report
//! of the brand within the sales window, so at 1,000,000 events of issue
//! #10's 10M shape 2,352,404 indices (9.4 MB) became 144,706 runs
//! (1.2 MB); the indices grew faster than the events.
//!
//! A person's list is kept in [`Chunk`]s of at most [`CHUNK`] impulses,
//! the full ones shared (`Arc`) by every copy of the state, so that the
//! first write to a list after a checkpoint copies its latest chunk, not
//! the list (task h57). The chunks change nothing a reader sees: the same
//! impulses in the same order, and a snapshot encodes them joined, as one
//! list did.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, Weak};

use chrono::{DateTime, Utc};

use rustc_hash::FxHashMap;

use crate::domain::LogPosition;
use crate::graph::Handle;
use crate::score::model::Component;

/// One impulse as readers take it: `amount` on `component` of the
/// relationship with `brand`, at `time`, caused by the event `event` (a log
/// position, or an overlay's reference: `score::simulate::SIMULATED`).
#[derive(Debug, Clone, Copy)]
pub struct Impulse {
    /// The brand of the relationship it moves.
    pub brand: Handle,
    /// The component it moves.
    pub component: Component,
    /// Its event time.
    pub time: DateTime<Utc>,
    /// Its amount, before weight and decay.
    pub amount: f64,
    /// The event that caused it, by reference.
    pub event: u64,
    /// The sales credit it is, if it is one (`Credits`' index): the same
    /// impulse, held by every person it credits, so a reader may compute
    /// what depends only on the impulse once for all of them.
    pub credit: Option<u32>,
}

/// The component every sales credit moves.
pub(crate) const CREDIT_COMPONENT: Component = Component::Sales;

/// `Credits::next` of a brand's latest credit: none yet.
const NONE: u32 = u32::MAX;

/// Sales credits in columns, in the order the fold made them: credit `i` is
/// `amount[i]` on [`CREDIT_COMPONENT`] of the relationship with `brand[i]`,
/// at `time[i]`, caused by the sales report at log position `event[i]`,
/// for every person whose [`Impulses`] name `i`. One row per report that
/// credited anyone. Each brand's credits are chained (`next`, `ordinal`),
/// so that a person's [`Run`] names a stretch of them by its first; the
/// chain is a function of `brand` ([`Credits::from_columns`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Credits {
    pub(crate) brand: Vec<Handle>,
    pub(crate) time: Vec<DateTime<Utc>>,
    pub(crate) amount: Vec<f64>,
    pub(crate) event: Vec<LogPosition>,
    /// The next credit of the same brand; [`NONE`] for its latest.
    next: Vec<u32>,
    /// How many credits of the same brand come before it.
    ordinal: Vec<u32>,
    /// Each brand's latest credit and how many it has.
    latest: FxHashMap<Handle, (u32, u32)>,
}

impl Credits {
    /// Credits from their columns (a snapshot's), the brands' chains
    /// derived; `None` when the columns' lengths differ.
    pub(crate) fn from_columns(
        brand: Vec<Handle>,
        time: Vec<DateTime<Utc>>,
        amount: Vec<f64>,
        event: Vec<LogPosition>,
    ) -> Option<Credits> {
        let len = amount.len();
        if [brand.len(), time.len(), event.len()] != [len; 3] || u32::try_from(len).is_err() {
            return None;
        }
        let mut credits = Credits {
            time,
            amount,
            event,
            ..Credits::default()
        };
        for b in brand {
            credits.chain(b);
        }
        Some(credits)
    }

    /// Adds a credit; its index.
    ///
    /// # Panics
    /// Past `u32::MAX` credits (one per sales report: beyond any log this
    /// engine can hold in memory).
    pub(crate) fn push(
        &mut self,
        brand: Handle,
        time: DateTime<Utc>,
        amount: f64,
        event: LogPosition,
    ) -> u32 {
        self.time.push(time);
        self.amount.push(amount);
        self.event.push(event);
        self.chain(brand)
    }

    /// Appends `brand`'s column entry and chains it after the brand's
    /// latest credit; its index.
    fn chain(&mut self, brand: Handle) -> u32 {
        let i = u32::try_from(self.brand.len()).expect("fewer than 2^32 sales credits");
        self.brand.push(brand);
        self.next.push(NONE);
        let (latest, count) = self.latest.entry(brand).or_insert((NONE, 0));
        if *latest != NONE {
            self.next[*latest as usize] = i;
        }
        self.ordinal.push(*count);
        *latest = i;
        *count += 1;
        i
    }

    /// Whether `run` names credits that exist: its first and the `len - 1`
    /// of the same brand after it.
    fn holds(&self, run: Run) -> bool {
        let first = run.first as usize;
        first < self.len()
            && run.len > 0
            && self
                .latest
                .get(&self.brand[first])
                .is_some_and(|&(_, count)| {
                    u64::from(self.ordinal[first]) + u64::from(run.len) <= u64::from(count)
                })
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.amount.len()
    }

    /// Credit `i` as an impulse.
    #[inline(always)]
    fn get(&self, i: u32) -> Impulse {
        let i = i as usize;
        Impulse {
            brand: self.brand[i],
            component: CREDIT_COMPONENT,
            time: self.time[i],
            amount: self.amount[i],
            event: self.event[i],
            credit: Some(i as u32),
        }
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.brand.shrink_to_fit();
        self.time.shrink_to_fit();
        self.amount.shrink_to_fit();
        self.event.shrink_to_fit();
        self.next.shrink_to_fit();
        self.ordinal.shrink_to_fit();
    }
}

/// A stretch of a person's credits: `first` and the `len - 1` credits of
/// the same brand that follow it in [`Credits`]' chain of that brand (the
/// brand's consecutive reports that each credited the person).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first: u32,
    pub(crate) len: u32,
}

/// A person's own impulses (not credits), in columns: impulse `i` is
/// `amount[i]` on `component[i]` of the relationship with `brand[i]`, at
/// `time[i]`, caused by the event at log position `event[i]`. 33 bytes an
/// impulse.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Columns {
    pub(crate) brand: Vec<Handle>,
    pub(crate) component: Vec<Component>,
    pub(crate) time: Vec<DateTime<Utc>>,
    pub(crate) amount: Vec<f64>,
    pub(crate) event: Vec<LogPosition>,
}

/// Impulses a person's latest chunk holds before it is frozen: a first
/// write after a copy of the state (a checkpoint, a capture) copies at
/// most this many impulses of the person's, not the whole list. A
/// multiple of 64, so frozen chunks' order bits join word by word.
pub(crate) const CHUNK: usize = 128;

/// A stretch of a person's impulses, in the order they were folded: own
/// impulses in [`Columns`], credits as [`Run`]s of the state's
/// [`Credits`], and one bit per impulse saying which of the two comes next
/// (set: a credit).
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunk {
    own: Columns,
    /// The credits, in the order they were folded.
    runs: Vec<Run>,
    /// How many credits the runs hold.
    credits: usize,
    /// Bit `i % 64` of word `i / 64`: whether impulse `i` of the chunk is
    /// a credit.
    order: Vec<u64>,
    /// Whether the first run goes on with the last run of the chunks
    /// before (one run of the whole list, cut where a chunk was frozen).
    continues: bool,
}

impl Chunk {
    /// How many there are, own and credits.
    fn len(&self) -> usize {
        self.own.amount.len() + self.credits
    }

    /// Appends an own impulse: (brand, component, time, amount, event).
    fn push_own(&mut self, own: (Handle, Component, DateTime<Utc>, f64, LogPosition)) {
        self.mark(false);
        let c = &mut self.own;
        c.brand.push(own.0);
        c.component.push(own.1);
        c.time.push(own.2);
        c.amount.push(own.3);
        c.event.push(own.4);
    }

    /// Appends credit `credit`; `before` is the list's last run when this
    /// chunk has none yet. The last run grows when the credit follows it
    /// in its brand's chain.
    fn push_credit(&mut self, credit: u32, credits: &Credits, before: Option<Run>) {
        self.mark(true);
        self.credits += 1;
        if let Some(run) = self.runs.last_mut() {
            if run.followed_by(credit, credits) {
                run.len += 1;
                return;
            }
        } else if before.is_some_and(|r| r.followed_by(credit, credits)) {
            self.continues = true;
        }
        self.runs.push(Run {
            first: credit,
            len: 1,
        });
    }

    /// Sets the bit of the impulse about to be appended.
    fn mark(&mut self, credit: bool) {
        let i = self.len();
        if i.is_multiple_of(64) {
            self.order.push(0);
        }
        if credit {
            self.order[i / 64] |= 1 << (i % 64);
        }
    }

    /// How many own impulses are at or before `at` (their times ascend).
    fn own_until(&self, at: DateTime<Utc>) -> usize {
        self.own.time.partition_point(|t| *t <= at)
    }

    /// How many credits are at or before `at` (their times ascend): whole
    /// runs while the next one starts at or before `at`, then the one left
    /// credit by credit.
    fn credits_until(&self, at: DateTime<Utc>, credits: &Credits) -> usize {
        let times = &credits.time;
        let runs = &self.runs;
        let whole = runs
            .partition_point(|r| times[r.first as usize] <= at)
            .saturating_sub(1);
        let mut n: usize = runs[..whole].iter().map(|r| r.len as usize).sum();
        if let Some(r) = runs.get(whole) {
            let mut k = r.first;
            for _ in 0..r.len {
                if times[k as usize] > at {
                    break;
                }
                n += 1;
                k = credits.next[k as usize];
            }
        }
        n
    }

    /// Whether the parts fit together and with `credits`: the columns of
    /// equal length, one bit set per credit and none past the end, every
    /// run in range.
    fn fits(&self, credits: &Credits) -> bool {
        let c = &self.own;
        let len = c.amount.len();
        let n = self.len();
        let ones: u32 = self.order.iter().map(|w| w.count_ones()).sum();
        let tail_clear = match n % 64 {
            0 => true,
            r => self.order.last().is_none_or(|w| w >> r == 0),
        };
        [
            c.brand.len(),
            c.component.len(),
            c.time.len(),
            c.event.len(),
        ] == [len; 4]
            && self.order.len() == n.div_ceil(64)
            && tail_clear
            && ones as usize == self.credits
            && self.runs.iter().all(|&r| credits.holds(r))
    }

    fn shrink_to_fit(&mut self) {
        let c = &mut self.own;
        c.brand.shrink_to_fit();
        c.component.shrink_to_fit();
        c.time.shrink_to_fit();
        c.amount.shrink_to_fit();
        c.event.shrink_to_fit();
        self.runs.shrink_to_fit();
        self.order.shrink_to_fit();
    }
}

impl Run {
    /// Whether credit `c` is the next of this run's brand after it (the
    /// run would grow by it).
    fn followed_by(self, c: u32, credits: &Credits) -> bool {
        let (first, c) = (self.first as usize, c as usize);
        credits.brand[first] == credits.brand[c]
            && u64::from(credits.ordinal[first]) + u64::from(self.len)
                == u64::from(credits.ordinal[c])
    }
}

/// One person's impulses, in the order they were folded (canonical event
/// order, so their times ascend), in [`Chunk`]s: frozen ones, shared by
/// every copy of the state (`Arc`, never changed again), and the latest,
/// the only one appended to, which a copy of the list copies. So the first
/// write to a list shared with a checkpoint (`Arc::make_mut` on the
/// state's `Arc<Impulses>`) copies one pointer per frozen chunk and at
/// most [`CHUNK`] impulses, not the list (task h57: at 1,000,000 events
/// half of a round's fold was such copies of whole lists, mostly of the
/// participants a sales report credits). Read through [`ImpulseList`].
///
/// A copy (`Clone`: `Arc::make_mut` on a list a checkpoint or a capture
/// shares) starts a new [`Lineage`]; appends keep it.
#[derive(Debug, Default)]
pub(crate) struct Impulses {
    frozen: Vec<Arc<Chunk>>,
    /// How many impulses the frozen chunks hold.
    before: usize,
    latest: Chunk,
    lineage: Lineage,
}

impl Clone for Impulses {
    /// The same impulses in a new lineage, whose parent is this list's at
    /// its length now (`Lineage`).
    fn clone(&self) -> Self {
        Impulses {
            frozen: self.frozen.clone(),
            before: self.before,
            latest: self.latest.clone(),
            lineage: self.lineage.copy(self.len()),
        }
    }
}

/// Which lists are one list at different lengths (task h67, issue #11):
/// the values of one lineage follow one another by appends only, so the
/// sums built from one of them at length `n` (`sums.rs`) are those of the
/// first `n` impulses of every later one, and a read after an append
/// extends them instead of building them again. A list built from
/// scratch (`Default`, a snapshot's `from_parts`) starts one; a copy
/// starts another, with the copied list's lineage and length as its
/// [`Tag::parent`] (a copy's first impulses are the original's, but after
/// the copy each may get others: a refold folds another tail on a
/// checkpoint's copy). Nothing in the list changes in place but by an
/// append ([`Impulses::push`], [`Impulses::push_credit`], and the freezing
/// and shrinking that keep the contents).
///
/// The tag is made when a reader first asks ([`Self::tag`]), and a copy
/// gets one only when the original has one, so lists no one reads hold no
/// allocation. A reader keys by the tag's address and holds a `Weak` of
/// it: the address is not reused while that `Weak` lives, and the tag
/// lives exactly while a list of the lineage does (whichever allocation
/// the list is in: the cache holds no `Weak` of the list, so
/// `Arc::make_mut` appends in place).
#[derive(Debug, Default)]
pub(crate) struct Lineage(OnceLock<Arc<Tag>>);

/// A lineage's identity (its address) and where it was copied from.
#[derive(Debug)]
pub(crate) struct Tag {
    /// The lineage of the list this one was copied from and how many
    /// impulses it held then: its first that many are this one's.
    pub(crate) parent: Option<(Weak<Tag>, usize)>,
}

impl Lineage {
    /// The lineage's tag, made on the first call.
    pub(crate) fn tag(&self) -> &Arc<Tag> {
        self.0.get_or_init(|| Arc::new(Tag { parent: None }))
    }

    /// The lineage of a copy of a list of this one, `len` impulses long:
    /// a new one, with a tag naming this one only when this one has a tag
    /// (someone read it).
    fn copy(&self, len: usize) -> Lineage {
        match self.0.get() {
            None => Lineage::default(),
            Some(tag) => Lineage(OnceLock::from(Arc::new(Tag {
                parent: Some((Arc::downgrade(tag), len)),
            }))),
        }
    }
}

impl Impulses {
    /// Appends an impulse of the person's own.
    pub(crate) fn push(
        &mut self,
        brand: Handle,
        component: Component,
        time: DateTime<Utc>,
        amount: f64,
        event: LogPosition,
    ) {
        self.make_room(CHUNK);
        self.latest
            .push_own((brand, component, time, amount, event));
    }

    /// Appends credit `credit` of `credits` (the latest of its brand):
    /// the last run grows when the credit follows it in its brand's chain.
    pub(crate) fn push_credit(&mut self, credit: u32, credits: &Credits) {
        self.make_room(CHUNK);
        self.append_credit(credit, credits);
    }

    /// Appends credit `credit` to the latest chunk, which is told the
    /// list's last run when it has none of its own yet.
    fn append_credit(&mut self, credit: u32, credits: &Credits) {
        let before = if self.latest.runs.is_empty() {
            self.frozen
                .iter()
                .rev()
                .find_map(|c| c.runs.last().copied())
        } else {
            None
        };
        self.latest.push_credit(credit, credits, before);
    }

    /// Freezes the latest chunk once it holds `chunk` impulses.
    fn make_room(&mut self, chunk: usize) {
        if self.latest.len() >= chunk {
            let mut full = std::mem::take(&mut self.latest);
            full.shrink_to_fit();
            self.before += full.len();
            self.frozen.push(Arc::new(full));
        }
    }

    /// Impulses from a snapshot's parts (as [`Self::own`], [`Self::runs`]
    /// and [`Self::order`] give them), one frozen chunk; see
    /// [`Self::fits`].
    pub(crate) fn from_parts(own: Columns, runs: Vec<Run>, order: Vec<u64>) -> Impulses {
        let credits = runs.iter().map(|r| r.len as usize).sum();
        let chunk = Chunk {
            own,
            runs,
            credits,
            order,
            continues: false,
        };
        if chunk.len() == 0 {
            return Impulses {
                latest: chunk,
                ..Impulses::default()
            };
        }
        Impulses {
            before: chunk.len(),
            frozen: vec![Arc::new(chunk)],
            latest: Chunk::default(),
            lineage: Lineage::default(),
        }
    }

    /// The chunks, oldest first, the latest last.
    fn chunks(&self) -> impl Iterator<Item = &Chunk> + Clone {
        self.frozen
            .iter()
            .map(|c| &**c)
            .chain(std::iter::once(&self.latest))
    }

    /// Chunk `k` (0: the oldest; `frozen.len()`: the latest).
    #[inline]
    fn chunk(&self, k: usize) -> &Chunk {
        self.frozen.get(k).map_or(&self.latest, |c| &**c)
    }

    /// How many there are, own and credits.
    pub(crate) fn len(&self) -> usize {
        self.before + self.latest.len()
    }

    /// The own impulses' columns, chunk by chunk, oldest first: joined,
    /// the columns one list held before chunks (a snapshot's encoding).
    pub(crate) fn own(&self) -> impl Iterator<Item = &Columns> + Clone {
        self.chunks().map(|c| &c.own)
    }

    /// The runs as one list held them: a run cut where a chunk was frozen
    /// is joined again (a snapshot's encoding).
    pub(crate) fn runs(&self) -> Cow<'_, [Run]> {
        if self.frozen.is_empty() {
            return Cow::Borrowed(&self.latest.runs);
        }
        let mut runs: Vec<Run> = Vec::new();
        for c in self.chunks() {
            let mut rest = &c.runs[..];
            if c.continues
                && let (Some(last), Some(first)) = (runs.last_mut(), rest.first())
            {
                last.len += first.len;
                rest = &rest[1..];
            }
            runs.extend_from_slice(rest);
        }
        Cow::Owned(runs)
    }

    /// The order bits as one list held them: bit `i % 64` of word `i / 64`
    /// says whether impulse `i` is a credit (a snapshot's encoding).
    pub(crate) fn order(&self) -> Cow<'_, [u64]> {
        if self.frozen.is_empty() {
            return Cow::Borrowed(&self.latest.order);
        }
        let mut words: Vec<u64> = Vec::with_capacity(self.len().div_ceil(64));
        let mut bits = 0;
        for c in self.chunks() {
            let n = c.len();
            for (j, &w) in c.order.iter().enumerate() {
                let b = (n - 64 * j).min(64);
                let at = bits % 64;
                if at == 0 {
                    words.push(w);
                } else {
                    *words.last_mut().expect("a word begun") |= w << at;
                    if at + b > 64 {
                        words.push(w >> (64 - at));
                    }
                }
                bits += b;
            }
        }
        Cow::Owned(words)
    }

    /// Whether the parts fit together and with `credits` (a snapshot's
    /// check before the state is used): in each chunk, the columns of
    /// equal length, one bit set per credit and none past the end, every
    /// index in range.
    pub(crate) fn fits(&self, credits: &Credits) -> bool {
        self.chunks().all(|c| c.fits(credits))
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.frozen.shrink_to_fit();
        self.latest.shrink_to_fit();
    }

    /// The list's lineage ([`Lineage`]).
    pub(crate) fn lineage(&self) -> &Lineage {
        &self.lineage
    }
}

/// A person's impulses as every reader takes them: [`Impulses`] with the
/// [`Credits`] their references point into. Iterates in canonical event
/// order, the order the fold made them, so sums over it add in the same
/// order whatever the representation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImpulseList<'a> {
    list: &'a Impulses,
    credits: &'a Credits,
}

impl<'a> ImpulseList<'a> {
    pub(crate) fn new(list: &'a Impulses, credits: &'a Credits) -> Self {
        Self { list, credits }
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// How many are at or before `at` (they come first): those of the own
    /// impulses plus those of the credits, each in time order, chunk by
    /// chunk until a chunk's are not all at or before `at`.
    pub(crate) fn until(&self, at: DateTime<Utc>) -> usize {
        let mut own = 0;
        for c in self.list.chunks() {
            let k = c.own_until(at);
            own += k;
            if k < c.own.time.len() {
                break;
            }
        }
        let mut credits = 0;
        for c in self.list.chunks() {
            let k = c.credits_until(at, self.credits);
            credits += k;
            if k < c.credits {
                break;
            }
        }
        own + credits
    }

    /// Every impulse, in canonical event order.
    pub(crate) fn iter(&self) -> Iter<'a> {
        self.first(self.len())
    }

    /// The first `n` impulses (at most [`Self::len`]), in canonical event
    /// order.
    pub(crate) fn first(&self, n: usize) -> Iter<'a> {
        let mut it = Iter {
            list: self.list,
            credits: self.credits,
            chunk: &self.list.latest,
            next_chunk: 0,
            i: 0,
            own: 0,
            run: 0,
            at: 0,
            left: 0,
            end: 0,
            rest: n.min(self.len()),
        };
        it.advance();
        it
    }

    /// The impulses after the first `k` (none when `k` is at least
    /// [`Self::len`]), in canonical event order: what was appended to a
    /// list since it was `k` long. Whole chunks are passed unread.
    pub(crate) fn after(&self, k: usize) -> Iter<'a> {
        let mut it = self.iter();
        it.pass(k);
        it
    }

    /// The impulses at or before `at`, in canonical event order.
    pub(crate) fn up_to(&self, at: DateTime<Utc>) -> Iter<'a> {
        self.first(self.until(at))
    }

    /// The brand of every impulse (each credit's once per reference), in
    /// no particular order.
    pub(crate) fn brands(self) -> impl Iterator<Item = Handle> + 'a {
        let credits = self.credits;
        self.list.chunks().flat_map(move |c| {
            c.own
                .brand
                .iter()
                .copied()
                .chain(c.runs.iter().flat_map(move |r| {
                    std::iter::repeat_n(credits.brand[r.first as usize], r.len as usize)
                }))
        })
    }
}

/// The impulses of an [`ImpulseList`], in canonical event order.
#[derive(Debug, Clone)]
pub(crate) struct Iter<'a> {
    list: &'a Impulses,
    credits: &'a Credits,
    /// The chunk read, and the index of the one after it.
    chunk: &'a Chunk,
    next_chunk: usize,
    /// The chunk's next impulse.
    i: usize,
    /// The chunk's next own impulse.
    own: usize,
    /// The chunk's next run, the credit taken last and how many of its run
    /// are left after it.
    run: usize,
    at: u32,
    left: u32,
    /// Where the reading of the chunk ends, and how many impulses are to
    /// be read after it.
    end: usize,
    rest: usize,
}

impl Iter<'_> {
    /// Moves to the next chunk with impulses to read, while there is one
    /// and the chunk read is done.
    #[inline]
    fn advance(&mut self) {
        while self.i == self.end && self.rest > 0 {
            self.chunk = self.list.chunk(self.next_chunk);
            self.next_chunk += 1;
            self.i = 0;
            self.own = 0;
            self.run = 0;
            self.left = 0;
            self.end = self.chunk.len().min(self.rest);
            self.rest -= self.end;
        }
    }

    /// Passes the next `k` impulses (all when fewer are left): the
    /// chunks they fill whole by their lengths, the rest one by one.
    fn pass(&mut self, mut k: usize) {
        loop {
            let here = self.end - self.i;
            if k < here {
                break;
            }
            k -= here;
            self.i = self.end;
            if self.rest == 0 {
                return;
            }
            self.advance();
        }
        for _ in 0..k {
            self.take_next();
        }
    }

    /// The impulse at the cursor, which it then passes (`i < end`).
    #[inline(always)]
    fn take_next(&mut self) -> Impulse {
        let chunk = self.chunk;
        let is_credit = chunk.order[self.i / 64] >> (self.i % 64) & 1 == 1;
        self.i += 1;
        if is_credit {
            let k = if self.left == 0 {
                let r = chunk.runs[self.run];
                self.run += 1;
                self.left = r.len;
                r.first
            } else {
                self.credits.next[self.at as usize]
            };
            self.left -= 1;
            self.at = k;
            self.credits.get(k)
        } else {
            let (c, j) = (&chunk.own, self.own);
            self.own += 1;
            Impulse {
                brand: c.brand[j],
                component: c.component[j],
                time: c.time[j],
                amount: c.amount[j],
                event: c.event[j],
                credit: None,
            }
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = Impulse;

    #[inline]
    fn next(&mut self) -> Option<Impulse> {
        self.advance();
        (self.i < self.end).then(|| self.take_next())
    }

    /// The loop every `for_each` and sum runs, generic over its closure so
    /// that it is compiled into its caller: the read path's pass over the
    /// impulses called a shared `next` per impulse, and a relationship
    /// read at four times on 1,000,000 events took 1.6 times as long
    /// (`examples/read_split.rs`, `read_warm_us`). A chunk at a time.
    #[inline]
    fn fold<B, F: FnMut(B, Impulse) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = init;
        loop {
            while self.i < self.end {
                let imp = self.take_next();
                acc = f(acc, imp);
            }
            if self.rest == 0 {
                return acc;
            }
            self.advance();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.i + self.rest;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    /// Own impulses and credits interleave in the order they were pushed,
    /// across a word of order bits, and `until` counts both parts.
    #[test]
    fn own_impulses_and_credits_read_back_in_the_order_they_were_folded() {
        let mut credits = Credits::default();
        let mut list = Impulses::default();
        let b = Handle::from_index(3);
        let mut want = Vec::new();
        for k in 0..150_i64 {
            if k % 3 == 1 {
                let i = credits.push(b, t(k), k as f64, k as u64);
                list.push_credit(i, &credits);
                want.push((Component::Sales, k));
            } else {
                list.push(b, Component::Service, t(k), k as f64, k as u64);
                want.push((Component::Service, k));
            }
        }
        assert!(list.fits(&credits));
        let read = ImpulseList::new(&list, &credits);
        let got: Vec<(Component, i64)> = read
            .iter()
            .map(|i| {
                assert_eq!(i.amount, i.time.timestamp() as f64);
                assert_eq!(i.event, i.time.timestamp() as u64);
                (i.component, i.time.timestamp())
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(read.until(t(99)), 100);
        assert_eq!(read.up_to(t(64)).count(), 65);
        assert_eq!(read.until(t(-1)), 0);
        assert_eq!(read.brands().count(), 150);
    }

    /// A person credited by two brands' reports in turn, and skipped by
    /// some of them, reads back every credit in the order it was folded,
    /// as one index per credit did (task h37): a run grows only with the
    /// next report of its own brand, and `until` counts inside a run.
    #[test]
    fn credits_kept_as_runs_read_back_in_the_order_they_were_folded() {
        let mut credits = Credits::default();
        let (mut person, mut other) = (Impulses::default(), Impulses::default());
        let (a, b) = (Handle::from_index(1), Handle::from_index(2));
        let mut want = Vec::new();
        for k in 0..40_i64 {
            // Brand a reports every second, b every tenth; the person
            // misses a's report 7 and b's reports after 25.
            let brand = if k % 10 == 5 { b } else { a };
            let i = credits.push(brand, t(k), k as f64, k as u64);
            other.push_credit(i, &credits);
            if k != 7 && !(brand == b && k > 25) {
                person.push_credit(i, &credits);
                want.push((brand, k));
            }
            if k % 4 == 0 {
                person.push(a, Component::Service, t(k), -1.0, k as u64);
                want.push((a, -k - 1));
            }
        }
        assert!(person.fits(&credits) && other.fits(&credits));
        // a's stretches are cut by the miss and by each of b's reports.
        assert_eq!(person.runs().len(), 8, "{:?}", person.runs());
        let read = ImpulseList::new(&person, &credits);
        let got: Vec<(Handle, i64)> = read
            .iter()
            .map(|i| match i.credit {
                Some(c) => {
                    assert_eq!(i.time, credits.time[c as usize]);
                    (i.brand, i.time.timestamp())
                }
                None => (i.brand, -i.time.timestamp() - 1),
            })
            .collect();
        assert_eq!(got, want);
        for at in -1..42 {
            let by_time = want
                .iter()
                .filter(|(_, k)| if *k >= 0 { *k <= at } else { -k - 1 <= at })
                .count();
            assert_eq!(read.until(t(at)), by_time, "at {at}");
        }
        let brands = read.brands().filter(|x| *x == b).count();
        assert_eq!(brands, 3);
        // A run that names more credits than its brand has does not fit.
        let mut long = person.clone();
        long.latest.runs.last_mut().unwrap().len += 40;
        assert!(!long.fits(&credits));
    }

    /// A snapshot's parts that do not fit are found before they are read.
    #[test]
    fn impulses_that_do_not_fit_their_credits_are_found() {
        let mut credits = Credits::default();
        let mut list = Impulses::default();
        let i = credits.push(Handle::from_index(0), t(0), 1.0, 0);
        list.push_credit(i, &credits);
        assert!(list.fits(&credits));
        assert!(!list.fits(&Credits::default()));
        let mut extra_bit = list.clone();
        extra_bit.latest.order[0] |= 2;
        assert!(!extra_bit.fits(&credits));
        let mut short = list.clone();
        short.latest.own.time.push(t(0));
        assert!(!short.fits(&credits));
    }

    /// A copy of a list (a checkpoint's) then a write to it copies only the
    /// latest chunk: every frozen chunk is the same allocation in both,
    /// and the copy reads as it did (task h57: before, the first write
    /// after a checkpoint copied the whole list).
    #[test]
    fn a_write_after_a_copy_copies_only_the_latest_chunk() {
        let mut credits = Credits::default();
        let b = Handle::from_index(1);
        let mut list = Arc::new(Impulses::default());
        for k in 0..1000_i64 {
            if k % 2 == 0 {
                let i = credits.push(b, t(k), 1.0, k as u64);
                Arc::make_mut(&mut list).push_credit(i, &credits);
            } else {
                Arc::make_mut(&mut list).push(b, Component::Service, t(k), 2.0, k as u64);
            }
        }
        let checkpoint = Arc::clone(&list);
        let i = credits.push(b, t(1000), 1.0, 1000);
        Arc::make_mut(&mut list).push_credit(i, &credits);
        Arc::make_mut(&mut list).push(b, Component::Service, t(1000), 2.0, 1000);
        assert!(!Arc::ptr_eq(&list, &checkpoint));
        assert_eq!(checkpoint.frozen.len(), 1000 / CHUNK);
        assert!(checkpoint.latest.len() < CHUNK);
        for (old, new) in checkpoint.frozen.iter().zip(&list.frozen) {
            assert!(Arc::ptr_eq(old, new), "a frozen chunk was copied");
            assert_eq!(Arc::strong_count(old), 2);
        }
        assert_eq!(list.len(), 1002);
        assert_eq!(checkpoint.len(), 1000);
        let read = ImpulseList::new(&checkpoint, &credits);
        assert_eq!(read.iter().count(), 1000);
        assert_eq!(read.iter().last().map(|x| x.event), Some(999));
    }

    /// Lists in chunks read, count and encode as the previous
    /// representation, one list (chunks that never fill), did: on random
    /// sequences of own impulses and credits of three brands (a person
    /// skipping some reports, so runs break), at chunk sizes that cut runs
    /// and order words anywhere, and after a snapshot's parts are loaded
    /// and more is pushed.
    #[test]
    fn chunked_lists_read_and_encode_as_one_list_did() {
        // xorshift64*: a fixed sequence per seed.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move |n: u64| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        };
        let key = |i: Impulse| {
            (
                i.brand,
                i.component.index(),
                i.time,
                i.amount.to_bits(),
                i.event,
                i.credit,
            )
        };
        let same = |a: &Impulses, b: &Impulses, credits: &Credits| {
            let (ra, rb) = (ImpulseList::new(a, credits), ImpulseList::new(b, credits));
            assert_eq!(ra.len(), rb.len());
            let got: Vec<_> = ra.iter().map(key).collect();
            let want: Vec<_> = rb.iter().map(key).collect();
            assert_eq!(got, want);
            let mut stepped = Vec::new();
            let mut it = ra.iter();
            while let Some(i) = it.next() {
                assert_eq!(it.len(), ra.len() - stepped.len() - 1);
                stepped.push(key(i));
            }
            assert_eq!(stepped, want);
            let last = want.last().map_or(0, |k| k.2.timestamp());
            for at in -1..=last + 1 {
                assert_eq!(ra.until(t(at)), rb.until(t(at)), "at {at}");
                let got: Vec<_> = ra.up_to(t(at)).map(key).collect();
                assert_eq!(got[..], want[..rb.until(t(at))]);
            }
            for n in [0, 1, 63, 64, 65, 127, 128, 129, 200, usize::MAX] {
                let got: Vec<_> = ra.first(n).map(key).collect();
                assert_eq!(got[..], want[..n.min(want.len())], "first {n}");
            }
            let (mut ba, mut bb): (Vec<_>, Vec<_>) = (ra.brands().collect(), rb.brands().collect());
            ba.sort();
            bb.sort();
            assert_eq!(ba, bb);
            let joined = |l: &Impulses| {
                let mut c = Columns::default();
                for part in l.own() {
                    c.brand.extend(&part.brand);
                    c.component.extend(&part.component);
                    c.time.extend(&part.time);
                    c.amount.extend(&part.amount);
                    c.event.extend(&part.event);
                }
                c
            };
            assert_eq!(joined(a), joined(b));
            assert_eq!(a.runs(), b.runs());
            assert_eq!(a.order(), b.order());
            assert!(a.fits(credits) && b.fits(credits));
            Impulses::from_parts(joined(a), a.runs().into_owned(), a.order().into_owned())
        };
        let brands = [1, 2, 3].map(Handle::from_index);
        for chunk in [1, 3, 37, 64, CHUNK] {
            for _ in 0..4 {
                let mut credits = Credits::default();
                let (mut flat, mut chunked) = (Impulses::default(), Impulses::default());
                let mut loaded: Option<Impulses> = None;
                let mut time = 0;
                let n = 50 + next(400) as usize;
                for k in 0..n {
                    time += next(2) as i64;
                    let brand = brands[next(3) as usize];
                    let event = k as u64;
                    if next(5) < 2 {
                        let x = next(7) as f64 - 3.0;
                        let c = Component::ALL[next(6) as usize];
                        let own = (brand, c, t(time), x, event);
                        flat.latest.push_own(own);
                        if chunk == CHUNK {
                            chunked.push(brand, c, t(time), x, event);
                        } else {
                            chunked.make_room(chunk);
                            chunked.latest.push_own(own);
                        }
                        if let Some(l) = loaded.as_mut() {
                            l.make_room(chunk);
                            l.latest.push_own(own);
                        }
                    } else {
                        // A report; the person is credited by most.
                        let i = credits.push(brand, t(time), 0.5 + k as f64, event);
                        if next(6) > 0 {
                            flat.append_credit(i, &credits);
                            if chunk == CHUNK {
                                chunked.push_credit(i, &credits);
                            } else {
                                chunked.make_room(chunk);
                                chunked.append_credit(i, &credits);
                            }
                            if let Some(l) = loaded.as_mut() {
                                l.make_room(chunk);
                                l.append_credit(i, &credits);
                            }
                        }
                    }
                    if k == n / 2 {
                        loaded = Some(same(&chunked, &flat, &credits));
                    }
                }
                assert!(flat.frozen.is_empty());
                assert!(chunk > n || !chunked.frozen.is_empty());
                same(&chunked, &flat, &credits);
                same(loaded.as_ref().unwrap(), &flat, &credits);
            }
        }
    }
}
