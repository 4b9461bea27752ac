//! `PersonSums`: a person's impulses summed per (brand, component) as
//! running decayed sums by time, so that the relationship read
//! (`score::propagate::adjoint`, issue #11) values everything a person
//! contributes at any time `at` in `O(log n)` per (brand, component), not
//! by decaying every impulse to `at`; and `SumsCache`, the sums of the
//! people read, kept beside the fold's state.
//!
//! The sum: for one (brand, component) series with impulses `x_1..x_n` at
//! `t_1 ≤ .. ≤ t_n` (canonical order),
//! `D_j = D_{j-1}·2^(-(t_j − t_{j-1})/h) + x_j`, so `Σ_{i≤j} x_i 2^(-(at − t_i)/h) = D_j · 2^(-(at − t_j)/h)` for
//! `at ≥ t_j`. This is forward decay (Cormode et al., "Forward decay",
//! ICDE 2009) with the landmark moved to every impulse: no factor is ever
//! above 1, so no span of event time (a 0001-01-01 placeholder beside 2026,
//! `tests/it/numerics.rs`) can overflow, and the sums are a function of the
//! person's impulse list alone. Summing before weighting reassociates the
//! per-impulse sum, so a score differs from the per-impulse one in its last
//! bits; every reader of the explanation reads these (ARCHITECTURE.md,
//! "The relationship read").
//!
//! The reasons: per series, the impulses ordered by forward magnitude
//! `log2|x| + t/h` (built when first asked): at any `at` after them, their
//! decayed values come in that order, so the largest contributions are the
//! first ones at or before `at`; and every impulse by event, to sum one
//! event's exact share.
//!
//! Derived, not persisted: built from `FoldState::impulse_list` when a
//! person is first read, and kept by the list's lineage
//! (`impulses::Lineage`): the lists of one lineage follow one another by
//! appends only, so a read after the fold appended extends the kept sums
//! by the appended impulses ([`PersonSums::extended`], the same bits as a
//! build; task h67: before, the cache keyed by the list's allocation,
//! which `Arc::make_mut` moved on every append while the cache held a
//! `Weak` of it, and an influencer's sums were built whole again after
//! each of their events, per read). A snapshot holds none of it; a start
//! pays nothing until a read. Must not: do IO, read the clock, or serve
//! sums of a list that is not their list's continuation.

use std::sync::{Arc, OnceLock, Weak};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::impulses::{Credits, Impulse, ImpulseList, Impulses, Tag};
use crate::graph::Handle;
use crate::score::model::{Component, ScoringModel};
use crate::score::shares::{
    Decays, half_life_seconds, nanos, seconds_between, seconds_between_nanos,
};

/// Event time from `from` to `to` in seconds, as `shares::seconds_between`
/// counts it (whole milliseconds), by nanoseconds where both fit.
#[inline]
pub fn span_seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    match (nanos(from), nanos(to)) {
        (Some(a), Some(b)) => seconds_between_nanos(a, b),
        _ => seconds_between(from, to),
    }
}

/// One (brand, component) of a person: its impulses in canonical order with
/// their running decayed sums (module docs).
#[derive(Debug, Clone)]
pub struct Series {
    /// The brand of the relationship its impulses move.
    pub brand: Handle,
    /// The component they move.
    pub component: Component,
    /// The component's half-life the sums decay by, in seconds: the
    /// model's the sums were built with ([`PersonSums::fits`]).
    half_life: f64,
    /// Each impulse's event time, non-decreasing.
    time: Vec<DateTime<Utc>>,
    /// `D_j`, in amount units (before weight).
    sum: Vec<f64>,
    /// Each impulse's amount.
    amount: Vec<f64>,
    /// Each impulse's event, by reference.
    event: Vec<u64>,
    /// `1 +` the index of the latest impulse at or before each with a
    /// nonzero amount (0: none).
    nonzero: Vec<u32>,
    /// How many impulses at or before each are the first of their event in
    /// the series: all of them, and those with a nonzero amount.
    firsts: Vec<u32>,
    firsts_nonzero: Vec<u32>,
    /// Indices by forward magnitude, largest first (built when first
    /// asked): the first [`TOP`] alone, then, if a reader goes past them,
    /// all of them ([`Series::largest`]).
    by_size: BySize,
}

/// How many of a series' largest impulses are ordered first
/// ([`Series::largest`]): a read takes each series' largest while they are
/// among the `3 · top_contributions` largest seen, so it seldom goes past
/// them, and a series of `n` impulses costs `O(n)` instead of a sort of
/// all `n` (task h49: under a stream every read rebuilt the sums of the
/// influencers it reached, and sorting their series was a tenth of the
/// HTTP workers' CPU).
const TOP: usize = 64;

/// A series' order by forward magnitude, built in two steps (`TOP`).
#[derive(Debug, Clone, Default)]
struct BySize {
    /// The first `TOP` of the order (all of it for a short series).
    top: OnceLock<Vec<u32>>,
    /// The whole order, built when a reader goes past `top`.
    all: OnceLock<Vec<u32>>,
}

/// What a series holds at a time: the index of its latest impulse then.
#[derive(Debug, Clone, Copy)]
pub struct Upto(usize);

impl Series {
    /// The latest impulse at or before `at`, if any.
    #[inline]
    pub fn upto(&self, at: DateTime<Utc>) -> Option<Upto> {
        let n = self.time.len();
        if self.time[n - 1] <= at {
            return Some(Upto(n - 1));
        }
        self.time
            .partition_point(|t| *t <= at)
            .checked_sub(1)
            .map(Upto)
    }

    /// Whether some impulse up to `j` makes the relationship: one with a
    /// nonzero amount, or any one when `own` (the person's own interaction
    /// with the brand of 0, a free item, still makes it).
    #[inline]
    pub fn counts(&self, j: Upto, own: bool) -> bool {
        own || self.nonzero[j.0] > 0
    }

    /// `Σ_{i≤j} x_i 2^(-(at − t_i)/h)`, weighted: `D_j` decayed from `t_j`
    /// to `at` ([`Decays::decayed`], the one decay).
    #[inline]
    pub fn value(&self, decays: &Decays, j: Upto, at: DateTime<Utc>) -> f64 {
        decays.decayed(
            self.component,
            self.sum[j.0],
            span_seconds(self.time[j.0], at),
        )
    }

    /// The time of the latest impulse up to `j` that makes the
    /// relationship ([`Self::counts`]).
    pub fn latest(&self, j: Upto, own: bool) -> Option<DateTime<Utc>> {
        if own {
            Some(self.time[j.0])
        } else {
            self.nonzero[j.0]
                .checked_sub(1)
                .map(|i| self.time[i as usize])
        }
    }

    /// How many of the impulses up to `j` that make the relationship are
    /// the first of their event in the series (an event that has impulses
    /// elsewhere too is in [`PersonSums::shared`]).
    pub fn events(&self, j: Upto, own: bool) -> usize {
        (if own {
            self.firsts[j.0]
        } else {
            self.firsts_nonzero[j.0]
        }) as usize
    }

    /// The impulses up to `j`, largest weighted value at any time after
    /// them first, as (event, amount, time); zeros only when `own`. The
    /// order is by the half-life the sums were built with, the only one
    /// they may be read with ([`PersonSums::fits`]).
    pub fn largest(
        &self,
        j: Upto,
        own: bool,
    ) -> impl Iterator<Item = (u64, f64, DateTime<Utc>)> + '_ {
        let order = Order {
            series: self,
            next: 0,
        };
        order
            .filter(move |&i| i <= j.0 && (own || self.amount[i] != 0.0))
            .map(|i| (self.event[i], self.amount[i], self.time[i]))
    }

    /// Each impulse's forward magnitude `log2|x| + (t − t_0)/h` (`-∞` for a
    /// zero): the order of their decayed values at any later time.
    fn magnitudes(&self) -> Vec<f64> {
        let h = self.half_life;
        let origin = self.time[0];
        self.amount
            .iter()
            .zip(&self.time)
            .map(|(x, t)| {
                let x = x.abs();
                if x == 0.0 {
                    f64::NEG_INFINITY
                } else {
                    x.log2() + span_seconds(origin, *t) / h
                }
            })
            .collect()
    }

    /// The first `k` indices (all when `k` is at least the length) by
    /// magnitude, largest first, ties by index: a strict total order, so
    /// the first `k` of it are the first `k` of the whole order, whatever
    /// `k`.
    fn largest_indices(&self, k: usize) -> Vec<u32> {
        let keys = self.magnitudes();
        let by = |a: &u32, b: &u32| {
            keys[*b as usize]
                .total_cmp(&keys[*a as usize])
                .then(a.cmp(b))
        };
        let mut order: Vec<u32> = (0..self.time.len() as u32).collect();
        if k < order.len() {
            order.select_nth_unstable_by(k, by);
            order.truncate(k);
        }
        order.sort_unstable_by(by);
        order
    }

    /// The impulse at `i` as (amount, time).
    pub fn at(&self, i: u32) -> (f64, DateTime<Utc>) {
        (self.amount[i as usize], self.time[i as usize])
    }
}

/// A series' impulse indices by forward magnitude, largest first: the
/// first [`TOP`] from [`BySize::top`], the rest from [`BySize::all`],
/// built only when reached.
struct Order<'a> {
    series: &'a Series,
    next: usize,
}

impl Iterator for Order<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let s = self.series;
        let top = s.by_size.top.get_or_init(|| s.largest_indices(TOP));
        let i = match top.get(self.next) {
            Some(&i) => i,
            None if top.len() < TOP => return None,
            None => *s
                .by_size
                .all
                .get_or_init(|| s.largest_indices(usize::MAX))
                .get(self.next)?,
        };
        self.next += 1;
        Some(i as usize)
    }
}

/// A person's impulses as sums per (brand, component) (module docs).
#[derive(Debug, Clone)]
pub struct PersonSums {
    /// The series, in the order their first impulses come.
    pub series: Vec<Series>,
    /// Every impulse as (event, series, index in it), by event (then in
    /// list order): an event's share is found without a pass.
    by_event: Vec<(u64, u32, u32)>,
    /// The time of each event with a nonzero impulse, in list order: how
    /// many events moved a relationship every series of this person
    /// reaches.
    events_nonzero: Vec<DateTime<Utc>>,
    /// The event of the latest impulse with a nonzero amount, which an
    /// extension's first such impulse is counted against.
    last_nonzero: Option<u64>,
    /// The impulses (each the first of its event in its series) of events
    /// that have impulses in several series, as (event, series, index):
    /// what a read that reaches some of those series but not all counts
    /// once (an audience change moves every associated brand).
    pub spanning: Vec<(u64, u32, u32)>,
    /// Events with impulses in several series, as (bound key, event,
    /// time, Σ|w_c·x|), largest bound first: the key `log2 Σ|w_c·x| +
    /// t/H`, `H` the model's longest half-life, orders
    /// `Σ|w_c·x|·2^(-(at − t)/H)` (at least the event's share here, before
    /// the walk's weight) alike at every `at` after them.
    spanning_by_size: Vec<(f64, u64, DateTime<Utc>, f64)>,
    /// The impulses of the rules that move several people with one event
    /// (`rules.rs`: a brand's sales lift, a credit; a cause, Values; an
    /// occasion, Engagement), as (event, series, index): a read counts
    /// such an event once however many people of its walk hold it. The
    /// test that a read counts what a pass over every impulse counts
    /// (`adjoint.rs`) fails if another rule does.
    pub multi_person: Vec<(u64, u32, u32)>,
    /// Impulses summed (the list's length).
    len: usize,
    /// The half-life of each component the sums decay by, in seconds (in
    /// `Component::index` order): the model's they were built with.
    half_lives: [f64; 6],
    /// The longest of them, in seconds.
    longest: f64,
    /// The model's half-lives and weights they were built with, which an
    /// extension goes on with ([`Self::extended`]).
    decays: Decays,
}

/// Heap bytes a vector holds.
fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Merges `new` into `old`, both ordered by `le` (a total preorder), as a
/// stable sort of `old` then `new` would order them: an entry of `old`
/// before an equal one of `new`. Appends when `new` comes after.
fn merge<T: Copy>(old: &mut Vec<T>, new: &[T], le: impl Fn(&T, &T) -> bool) {
    let (Some(last), Some(first)) = (old.last(), new.first()) else {
        old.extend_from_slice(new);
        return;
    };
    if le(last, first) {
        old.extend_from_slice(new);
        return;
    }
    let mut merged = Vec::with_capacity(old.len() + new.len());
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        if le(x, y) {
            merged.push(**x);
            a.next();
        } else {
            merged.push(**y);
            b.next();
        }
    }
    merged.extend(a);
    merged.extend(b);
    *old = merged;
}

impl Series {
    /// Heap bytes, the reason order counted as if built (`u32` per impulse).
    fn heap_bytes(&self) -> usize {
        vec_bytes(&self.time)
            + vec_bytes(&self.sum)
            + vec_bytes(&self.amount)
            + vec_bytes(&self.event)
            + vec_bytes(&self.nonzero)
            + vec_bytes(&self.firsts)
            + vec_bytes(&self.firsts_nonzero)
            + self.time.len() * std::mem::size_of::<u32>()
    }
}

impl PersonSums {
    /// Heap bytes the sums hold (vectors' capacities), for the cache's
    /// budget (`SumsCache`).
    pub fn heap_bytes(&self) -> usize {
        vec_bytes(&self.series)
            + self.series.iter().map(Series::heap_bytes).sum::<usize>()
            + vec_bytes(&self.by_event)
            + vec_bytes(&self.events_nonzero)
            + vec_bytes(&self.spanning)
            + vec_bytes(&self.spanning_by_size)
            + vec_bytes(&self.multi_person)
    }

    /// The sums of `impulses`, given in canonical order: the sums of none,
    /// extended by them ([`Self::extend`], so that sums built at once and
    /// sums extended piece by piece are one computation).
    pub fn of(model: &ScoringModel, impulses: impl Iterator<Item = Impulse>) -> Self {
        let half_lives = half_lives_of(model);
        let mut sums = PersonSums {
            series: Vec::new(),
            by_event: Vec::new(),
            events_nonzero: Vec::new(),
            last_nonzero: None,
            spanning: Vec::new(),
            spanning_by_size: Vec::new(),
            multi_person: Vec::new(),
            len: 0,
            half_lives,
            longest: half_lives.iter().copied().fold(0.0, f64::max),
            decays: Decays::of(model),
        };
        sums.extend(impulses);
        sums
    }

    /// These sums extended by `appended`, the impulses that follow the
    /// ones they were built from (task h67): the same bits as
    /// [`Self::of`] on the whole list, which is this computation from
    /// nothing. Readers of `self` keep it as it is.
    pub fn extended(&self, appended: impl Iterator<Item = Impulse>) -> Self {
        let mut sums = self.clone();
        sums.extend(appended);
        sums
    }

    /// Adds `appended`, the impulses that follow the ones summed, in
    /// canonical order, as [`Self::of`] would have had them with the
    /// others: the running sums go on from each series' last, the index
    /// by event and the spanning events take the new events in where
    /// their orders put them (an event of the list already summed, which
    /// a fold never appends, has its group computed again), and the
    /// reasons' order of each series that grew is built again when asked.
    fn extend(&mut self, appended: impl Iterator<Item = Impulse>) {
        let decays = self.decays;
        let series = &mut self.series;
        let mut index: FxHashMap<(Handle, usize), u32> = series
            .iter()
            .enumerate()
            .map(|(s, one)| ((one.brand, one.component.index()), s as u32))
            .collect();
        let mut grown = vec![false; series.len()];
        let mut new_by_event = Vec::new();
        for imp in appended {
            self.len += 1;
            let c = imp.component;
            let s = *index.entry((imp.brand, c.index())).or_insert_with(|| {
                series.push(Series {
                    brand: imp.brand,
                    component: c,
                    half_life: self.half_lives[c.index()],
                    time: Vec::new(),
                    sum: Vec::new(),
                    amount: Vec::new(),
                    event: Vec::new(),
                    nonzero: Vec::new(),
                    firsts: Vec::new(),
                    firsts_nonzero: Vec::new(),
                    by_size: BySize::default(),
                });
                grown.push(false);
                (series.len() - 1) as u32
            });
            grown[s as usize] = true;
            let one = &mut series[s as usize];
            let i = one.time.len();
            // An event's impulses on one person come together (one fold).
            let first = i == 0 || one.event[i - 1] != imp.event;
            let sum = match i.checked_sub(1) {
                None => imp.amount,
                Some(p) => {
                    let d = decays.decay(c, span_seconds(one.time[p], imp.time));
                    one.sum[p] * d + imp.amount
                }
            };
            let prev = |v: &Vec<u32>| i.checked_sub(1).map_or(0, |p| v[p]);
            let nonzero = if imp.amount != 0.0 {
                i as u32 + 1
            } else {
                prev(&one.nonzero)
            };
            let firsts = prev(&one.firsts) + u32::from(first);
            let firsts_nonzero = prev(&one.firsts_nonzero) + u32::from(first && imp.amount != 0.0);
            one.time.push(imp.time);
            one.sum.push(sum);
            one.amount.push(imp.amount);
            one.event.push(imp.event);
            one.nonzero.push(nonzero);
            one.firsts.push(firsts);
            one.firsts_nonzero.push(firsts_nonzero);
            if imp.credit.is_some() || matches!(c, Component::Values | Component::Engagement) {
                self.multi_person.push((imp.event, s, i as u32));
            }
            if imp.amount != 0.0 && self.last_nonzero != Some(imp.event) {
                self.events_nonzero.push(imp.time);
                self.last_nonzero = Some(imp.event);
            }
            new_by_event.push((imp.event, s, i as u32));
        }
        for (one, grown) in series.iter_mut().zip(grown) {
            if grown {
                one.by_size = BySize::default();
            }
        }
        if new_by_event.is_empty() {
            return;
        }
        // By event, then in list order (a stable sort).
        new_by_event.sort_by_key(|&(e, ..)| e);
        // Events summed before that got more impulses: their groups are
        // computed again, over all of their impulses.
        let summed = |e: u64| {
            let i = self.by_event.partition_point(|x| x.0 < e);
            self.by_event.get(i).is_some_and(|x| x.0 == e)
        };
        let again: Vec<u64> = new_by_event
            .chunk_by(|a, b| a.0 == b.0)
            .map(|g| g[0].0)
            .filter(|&e| summed(e))
            .collect();
        if !again.is_empty() {
            let redo = |e: &u64| again.binary_search(e).is_ok();
            self.spanning.retain(|x| !redo(&x.0));
            self.spanning_by_size.retain(|x| !redo(&x.1));
        }
        merge(&mut self.by_event, &new_by_event, |a, b| a.0 <= b.0);
        let series = &self.series;
        let origin = series.first().map(|s| s.time[0]);
        let longest = self.longest;
        let mut spanning = Vec::new();
        let mut spanning_by_size = Vec::new();
        for new in new_by_event.chunk_by(|a, b| a.0 == b.0) {
            let e = new[0].0;
            let group = if again.binary_search(&e).is_ok() {
                let from = self.by_event.partition_point(|x| x.0 < e);
                let to = self.by_event.partition_point(|x| x.0 <= e);
                &self.by_event[from..to]
            } else {
                new
            };
            if group.iter().all(|x| x.1 == group[0].1) {
                continue;
            }
            // The first impulse of the event in its series.
            let first = |&&(e, s, i): &&(u64, u32, u32)| {
                i == 0 || series[s as usize].event[i as usize - 1] != e
            };
            spanning.extend(group.iter().filter(first));
            let (mut total, mut time) = (0.0, None);
            for &(_, s, i) in group {
                let one = &series[s as usize];
                total += (one.amount[i as usize] * decays.decayed(one.component, 1.0, 0.0)).abs();
                time = time.max(Some(one.time[i as usize]));
            }
            if let (Some(time), Some(origin)) = (time, origin)
                && total > 0.0
            {
                let key = total.log2() + span_seconds(origin, time) / longest;
                spanning_by_size.push((key, e, time, total));
            }
        }
        merge(&mut self.spanning, &spanning, |a, b| a.0 <= b.0);
        let by_size = |a: &(f64, u64, DateTime<Utc>, f64), b: &(f64, u64, DateTime<Utc>, f64)| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
        };
        spanning_by_size.sort_by(by_size);
        merge(&mut self.spanning_by_size, &spanning_by_size, |a, b| {
            by_size(a, b).is_le()
        });
    }

    /// Whether these sums may be read with `model`: its half-lives are
    /// the ones they were built with, to the bit. A running sum `D_j` is
    /// decayed from impulse to impulse by them, so read with other
    /// half-lives (a what-if's overridden model) it is neither model's
    /// score (red team h39: `tests/it/redteam5.rs`); weights apply at
    /// read time and may differ.
    pub fn fits(&self, model: &ScoringModel) -> bool {
        let h = half_lives_of(model);
        self.half_lives
            .iter()
            .zip(&h)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// How many events with a nonzero impulse came at or before `at`.
    pub fn events_until(&self, at: DateTime<Utc>) -> usize {
        self.events_nonzero.partition_point(|t| *t <= at)
    }

    /// The events with impulses in several series that may have a share
    /// of at least `edge` at `at` through weights at most `weight` in
    /// magnitude, largest bound first (`spanning_by_size`).
    pub fn spanning_candidates(
        &self,
        at: DateTime<Utc>,
        weight: f64,
        edge: f64,
    ) -> impl Iterator<Item = u64> + '_ {
        let longest = self.longest;
        self.spanning_by_size
            .iter()
            .filter(move |x| x.2 <= at)
            .take_while(move |x| {
                let bound = weight * x.3 * (-span_seconds(x.2, at).max(0.0) / longest).exp2();
                bound >= edge
            })
            .map(|x| x.1)
    }

    /// The impulses of `event`, as (series, amount, time), in list order.
    pub fn of_event(&self, event: u64) -> impl Iterator<Item = (&Series, f64, DateTime<Utc>)> {
        let from = self.by_event.partition_point(|&(e, ..)| e < event);
        self.by_event[from..]
            .iter()
            .take_while(move |&&(e, ..)| e == event)
            .map(|&(_, s, i)| {
                let series = &self.series[s as usize];
                let (amount, time) = series.at(i);
                (series, amount, time)
            })
    }
}

/// The half-life of each component of `model`, in seconds, in
/// `Component::index` order.
fn half_lives_of(model: &ScoringModel) -> [f64; 6] {
    let mut h = [0.0; 6];
    for c in Component::ALL {
        h[c.index()] = half_life_seconds(model, c);
    }
    h
}

/// A kept entry: a `Weak` of the tag of the lineage whose list the sums
/// were built from (`impulses::Lineage`), the sums, their heap bytes.
#[derive(Debug)]
struct Entry {
    tag: Weak<Tag>,
    sums: Arc<PersonSums>,
    bytes: usize,
}

/// Kept sums by the address of their lineage's tag, the size at which the
/// next sweep drops those of lineages that are gone, the bytes kept
/// against `budget`, and how the sums asked for were found (`Found`).
#[derive(Debug)]
struct Kept {
    by_lineage: FxHashMap<usize, Entry>,
    sweep_at: usize,
    bytes: usize,
    budget: usize,
    found: Found,
}

/// How many times the sums asked for were served as kept, extended by
/// what was appended to the list, or built from the whole list (the
/// cache's tests count them; a read's cost is in which).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Found {
    served: u64,
    extended: u64,
    built: u64,
}

impl Kept {
    /// The sums kept for the lineage at `key` (whose tag is `tag`), or
    /// those of its parent when they sum no more than the impulses the
    /// copy took: these move to `key` (the copy is the one the fold goes on
    /// appending to; the parent's list, a checkpoint's, is seldom read).
    fn find(&mut self, key: usize, tag: &Arc<Tag>) -> Option<Arc<PersonSums>> {
        if let Some(e) = self.by_lineage.get(&key) {
            return Some(Arc::clone(&e.sums));
        }
        let (parent, copied) = tag.parent.as_ref()?;
        let from = parent.as_ptr() as usize;
        if self.by_lineage.get(&from)?.sums.len > *copied {
            return None;
        }
        let mut e = self.by_lineage.remove(&from)?;
        e.tag = Arc::downgrade(tag);
        let sums = Arc::clone(&e.sums);
        self.by_lineage.insert(key, e);
        Some(sums)
    }
}

impl Default for Kept {
    fn default() -> Self {
        Kept {
            by_lineage: FxHashMap::default(),
            sweep_at: 0,
            bytes: 0,
            budget: MAX_BYTES,
            found: Found::default(),
        }
    }
}

/// The smallest size a sweep waits for.
const FIRST_SWEEP: usize = 64;

/// People's sums kept at most; emptied when it would grow past this.
const MAX_PEOPLE: usize = 16_384;

/// Heap bytes of sums kept at most (256 MiB); emptied when it would grow
/// past this. Why bytes too: a person's sums are about 70 to 100 bytes per
/// impulse, people's impulse counts differ by orders of magnitude (an
/// influencer of issue #10's 10M shape authors about 600 events, each with
/// impulses on several series; a consumer a few dozen), and reads that
/// rotate over many relationships reach most influencers: a bound by
/// people alone does not bound memory.
const MAX_BYTES: usize = 256 << 20;

/// The sums of the people read, shared by every clone of a state, by the
/// lineage of the list they were built from (`impulses::Lineage`, task
/// h67): a list of the same lineage as long is served them, a longer one
/// (the fold appended) gets them extended by the impulses appended, a copy
/// of a list (a checkpoint shared it when the fold appended) takes them
/// over from its parent when they sum no more than the copied impulses;
/// anything else builds them from the whole list.
#[derive(Debug, Clone, Default)]
pub struct SumsCache {
    inner: Arc<Mutex<Kept>>,
}

impl SumsCache {
    /// The sums of `list` (a person's impulses, whose credits are in
    /// `credits`) with `model`: kept, extended or built.
    pub(crate) fn get(
        &self,
        list: &Impulses,
        credits: &Credits,
        model: &ScoringModel,
    ) -> Arc<PersonSums> {
        let read = ImpulseList::new(list, credits);
        let tag = list.lineage().tag();
        let key = Arc::as_ptr(tag) as usize;
        let decays = Decays::of(model).bits();
        let found = {
            let mut kept = self.inner.lock();
            let found = kept
                .find(key, tag)
                .filter(|s| s.len <= read.len() && s.decays.bits() == decays);
            if let Some(sums) = found.as_ref()
                && sums.len == read.len()
            {
                kept.found.served += 1;
                return Arc::clone(sums);
            }
            found
        };
        let extended = found.is_some();
        let sums = match found {
            Some(sums) => Arc::new(sums.extended(read.after(sums.len))),
            None => Arc::new(PersonSums::of(model, read.iter())),
        };
        self.keep(key, tag, &sums, extended);
        sums
    }

    /// Keeps `sums` for the lineage at `key` unless longer ones are kept;
    /// `extended`: whether they were extended, not built.
    fn keep(&self, key: usize, tag: &Arc<Tag>, sums: &Arc<PersonSums>, extended: bool) {
        let bytes = sums.heap_bytes();
        let mut kept = self.inner.lock();
        let kept = &mut *kept;
        if extended {
            kept.found.extended += 1;
        } else {
            kept.found.built += 1;
        }
        if bytes > kept.budget {
            // Larger than the whole budget: served, not kept.
            return;
        }
        if let Some(e) = kept.by_lineage.get(&key) {
            if e.sums.len >= sums.len && e.sums.decays.bits() == sums.decays.bits() {
                // Another reader kept them first.
                return;
            }
            kept.bytes -= e.bytes;
            kept.by_lineage.remove(&key);
        }
        if kept.by_lineage.len() >= kept.sweep_at.max(FIRST_SWEEP) {
            // Sums of lineages that are gone (of a state replaced by a
            // refold, of an erased person, of a checkpoint dropped) are
            // never served again: swept whenever the cache doubled since
            // the last sweep (amortised O(1) a read), so they stay at most
            // as many as the live ones, not until the cache is full (red
            // team h39).
            kept.by_lineage.retain(|_, e| e.tag.strong_count() > 0);
            kept.bytes = kept.by_lineage.values().map(|e| e.bytes).sum();
            kept.sweep_at = 2 * kept.by_lineage.len();
        }
        if kept.by_lineage.len() >= MAX_PEOPLE || kept.bytes + bytes > kept.budget {
            kept.by_lineage.clear();
            kept.bytes = 0;
            kept.sweep_at = 0;
        }
        kept.by_lineage.insert(
            key,
            Entry {
                tag: Arc::downgrade(tag),
                sums: Arc::clone(sums),
                bytes,
            },
        );
        kept.bytes += bytes;
    }

    /// An empty cache that keeps at most `budget` heap bytes of sums.
    #[cfg(test)]
    fn with_budget(budget: usize) -> Self {
        let cache = SumsCache::default();
        cache.inner.lock().budget = budget;
        cache
    }

    /// How the sums asked for so far were found.
    #[cfg(test)]
    fn found(&self) -> Found {
        self.inner.lock().found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::shares::decayed;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sums_of(model: &ScoringModel, list: &Impulses, credits: &Credits) -> PersonSums {
        PersonSums::of(model, ImpulseList::new(list, credits).iter())
    }

    /// A series' running sum read at a time is the impulses decayed one by
    /// one (to rounding), at, between and after them; a 0001-01-01
    /// placeholder beside 2026 neither overflows nor poisons the sum (the
    /// live series' landmark once panicked on it: `tests/it/numerics.rs`).
    #[test]
    fn a_running_sum_is_its_impulses_decayed_alone_across_any_span() {
        let model = ScoringModel::default_model();
        let decays = Decays::of(&model);
        let b = Handle::from_index(2);
        let c = Component::Sales;
        let impulses = [
            ("0001-01-01T00:00:00Z", 5.0),
            ("2026-01-01T00:00:00Z", 1.5),
            ("2026-01-01T00:00:00Z", -0.25),
            ("2026-02-10T12:00:00Z", 3.0),
        ];
        let mut list = Impulses::default();
        for (k, (time, x)) in impulses.iter().enumerate() {
            list.push(b, c, t(time), *x, k as u64);
        }
        let sums = sums_of(&model, &list, &Credits::default());
        let series = &sums.series[0];
        for at in [
            "0001-01-01T00:00:00Z",
            "1990-06-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "2026-01-20T00:00:00Z",
            "2026-11-30T00:00:00Z",
        ] {
            let at = t(at);
            let want: f64 = impulses
                .iter()
                .filter(|(time, _)| t(time) <= at)
                .map(|(time, x)| decayed(&model, c, *x, t(time), at))
                .sum();
            let j = series.upto(at).unwrap();
            let got = series.value(&decays, j, at);
            assert!(got.is_finite(), "{at}: {got}");
            assert!(
                (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "{at}: {got} against {want}"
            );
        }
        assert!(series.upto(t("0000-06-01T00:00:00Z")).is_none());
    }

    /// Sums of lists that are gone (a refold replaced the state, a person
    /// was erased) do not stay until the cache is full: a sweep at each
    /// doubling drops them (red team h39: before, up to 16,384 people's
    /// sums of gone lists stayed in memory, an erased person's included).
    #[test]
    fn sums_of_gone_lists_are_swept_before_the_cache_is_full() {
        let model = ScoringModel::default_model();
        let credits = Credits::default();
        let cache = SumsCache::default();
        let list = |k: u64| {
            let mut l = Arc::new(Impulses::default());
            Arc::make_mut(&mut l).push(
                Handle::from_index(1),
                Component::Sentiment,
                t("2026-01-01T00:00:00Z"),
                1.0,
                k,
            );
            l
        };
        for k in 0..10 * FIRST_SWEEP as u64 {
            // Each list is dropped right after its read.
            let l = list(k);
            cache.get(&l, &credits, &model);
        }
        let kept = cache.inner.lock().by_lineage.len();
        assert!(kept <= FIRST_SWEEP, "{kept} sums of gone lists kept");
        // Live ones are kept through sweeps, and through appends (the
        // lineage lives on: task h67).
        let mut live: Vec<_> = (0..3 * FIRST_SWEEP as u64).map(list).collect();
        for l in &live {
            cache.get(l, &credits, &model);
        }
        let built = cache.found().built;
        for (k, l) in live.iter_mut().enumerate() {
            Arc::make_mut(l).push(
                Handle::from_index(1),
                Component::Sentiment,
                t("2026-01-02T00:00:00Z"),
                2.0,
                1_000 + k as u64,
            );
        }
        for l in &live {
            cache.get(l, &credits, &model);
        }
        for l in &live {
            cache.get(l, &credits, &model);
        }
        let found = cache.found();
        assert_eq!(found.built, built, "the sums of a live list were swept");
        assert_eq!(found.extended, live.len() as u64);
    }

    /// The cache was bounded by people only (16,384), whose sums differ in
    /// size by orders of magnitude: now the kept bytes are bounded too,
    /// and sums larger than the budget are served, not kept; extended sums
    /// replace their shorter ones in the count.
    #[test]
    fn kept_sums_stay_within_the_byte_budget() {
        let model = ScoringModel::default_model();
        let credits = Credits::default();
        let push = |l: &mut Arc<Impulses>, k: u64| {
            Arc::make_mut(l).push(
                Handle::from_index(1 + (k % 3) as u32),
                Component::Sentiment,
                t("2026-01-01T00:00:00Z") + chrono::Duration::seconds(k as i64),
                1.0,
                k,
            );
        };
        let list = |n: u64| {
            let mut l = Arc::new(Impulses::default());
            for k in 0..n {
                push(&mut l, k);
            }
            l
        };
        let one = list(100);
        let size = sums_of(&model, &one, &credits).heap_bytes();
        assert!(size >= 100 * 40, "{size} bytes for 100 impulses");
        let cache = SumsCache::with_budget(5 * size / 2);
        let mut lists: Vec<_> = (0..10).map(|_| list(100)).collect();
        let check = |cache: &SumsCache| {
            let kept = cache.inner.lock();
            assert!(
                kept.bytes <= kept.budget,
                "{} > {}",
                kept.bytes,
                kept.budget
            );
            let counted: usize = kept.by_lineage.values().map(|e| e.bytes).sum();
            assert_eq!(kept.bytes, counted);
        };
        for l in &lists {
            cache.get(l, &credits, &model);
            check(&cache);
        }
        // The newest is kept, and when extended counted once.
        let built = cache.found().built;
        cache.get(&lists[9], &credits, &model);
        assert_eq!(cache.found().built, built, "the newest sums were not kept");
        push(&mut lists[9], 100);
        cache.get(&lists[9], &credits, &model);
        assert_eq!(cache.found().extended, 1);
        check(&cache);
        // Larger than the whole budget is not kept.
        let huge = list(1_000);
        cache.get(&huge, &credits, &model);
        cache.get(&huge, &credits, &model);
        assert_eq!(
            cache.found().built,
            built + 2,
            "sums larger than the budget were kept"
        );
    }

    /// Two sums are the same, field by field and bit for bit, the reasons'
    /// order of every series included (which builds it on both).
    fn assert_same(got: &PersonSums, want: &PersonSums) {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(got.len, want.len);
        assert_eq!(got.series.len(), want.series.len());
        for (k, (a, b)) in got.series.iter().zip(&want.series).enumerate() {
            assert_eq!((a.brand, a.component), (b.brand, b.component), "series {k}");
            assert_eq!(a.half_life.to_bits(), b.half_life.to_bits());
            assert_eq!(a.time, b.time, "series {k}");
            assert_eq!(bits(&a.sum), bits(&b.sum), "series {k}");
            assert_eq!(bits(&a.amount), bits(&b.amount), "series {k}");
            assert_eq!(a.event, b.event, "series {k}");
            assert_eq!(a.nonzero, b.nonzero, "series {k}");
            assert_eq!(a.firsts, b.firsts, "series {k}");
            assert_eq!(a.firsts_nonzero, b.firsts_nonzero, "series {k}");
            let last = Upto(a.time.len() - 1);
            for own in [false, true] {
                let order = |s: &Series| {
                    s.largest(last, own)
                        .map(|(e, x, t)| (e, x.to_bits(), t))
                        .collect::<Vec<_>>()
                };
                assert_eq!(order(a), order(b), "series {k}, own {own}");
            }
        }
        assert_eq!(got.by_event, want.by_event);
        assert_eq!(got.events_nonzero, want.events_nonzero);
        assert_eq!(got.last_nonzero, want.last_nonzero);
        assert_eq!(got.spanning, want.spanning);
        let by_size = |s: &PersonSums| {
            s.spanning_by_size
                .iter()
                .map(|x| (x.0.to_bits(), x.1, x.2, x.3.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(by_size(got), by_size(want));
        assert_eq!(got.multi_person, want.multi_person);
        assert_eq!(bits(&got.half_lives), bits(&want.half_lives));
        assert_eq!(got.longest.to_bits(), want.longest.to_bits());
        assert_eq!(got.decays.bits(), want.decays.bits());
    }

    /// One event's impulses on the person: (brand, component, amount,
    /// whether a sales credit), after a step of hours from the one before.
    type Ev = (i64, Vec<(u32, usize, f64, bool)>);

    /// A person's list of `evs` (event references in `ids`), with the
    /// credits it names; some reports credit only others, so runs break.
    fn list_of(evs: &[Ev], ids: &[u64]) -> (Impulses, Credits) {
        let mut credits = Credits::default();
        let mut list = Impulses::default();
        let mut time = t("2026-01-01T00:00:00Z");
        for ((step, impulses), &event) in evs.iter().zip(ids) {
            time += chrono::Duration::hours(*step);
            for &(b, c, x, credit) in impulses {
                let brand = Handle::from_index(b);
                if credit {
                    let i = credits.push(brand, time, x, event);
                    if x > -2.0 {
                        list.push_credit(i, &credits);
                    }
                } else {
                    list.push(brand, Component::ALL[c], time, x, event);
                }
            }
        }
        (list, credits)
    }

    fn events() -> impl Strategy<Value = (Vec<Ev>, Vec<u64>)> {
        let amount = prop_oneof![Just(0.0), Just(1.5), Just(-0.25), -3.0..3.0_f64];
        let impulse = (0_u32..3, 0_usize..6, amount, prop::bool::weighted(0.3));
        prop::collection::vec((0_i64..3, prop::collection::vec(impulse, 1..5)), 1..60)
            .prop_flat_map(|evs| {
                let ids: Vec<u64> = (0..evs.len() as u64).map(|k| 3 * k + 1).collect();
                (Just(evs), Just(ids).prop_shuffle())
            })
    }

    proptest! {
        /// Sums extended by the impulses appended since are the sums of
        /// the whole list, bit for bit (task h67): in one or two steps,
        /// cut anywhere (inside an event too, which a fold never does),
        /// over own impulses and credits, zero amounts, several brands
        /// and components, events in several series, ties of time and
        /// event references in any order; and reasons read from the
        /// shorter sums before do not stay in the longer ones.
        #[test]
        fn sums_extended_by_appended_impulses_are_the_sums_of_the_whole_list(
            (evs, ids) in events(),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let model = ScoringModel::default_model();
            let (list, credits) = list_of(&evs, &ids);
            let read = ImpulseList::new(&list, &credits);
            let n = read.len();
            let (a, b) = (a.index(n + 1), b.index(n + 1));
            let (a, b) = (a.min(b), a.max(b));
            let first = PersonSums::of(&model, read.first(a));
            for s in &first.series {
                let _ = s.largest(Upto(s.time.len() - 1), true).count();
            }
            let middle = first.extended(read.after(a).take(b - a));
            assert_same(&middle, &PersonSums::of(&model, read.first(b)));
            let whole = middle.extended(read.after(b));
            assert_same(&whole, &PersonSums::of(&model, read.iter()));
            assert_same(&first.extended(read.after(a)), &whole);
        }
    }

    /// The fold appends to a person's list in place and the next read
    /// extends the kept sums by the appended impulses (task h67: the
    /// cache held a `Weak` of the list, so `Arc::make_mut` moved it on
    /// every append and each read after built the sums whole); a copy the
    /// fold made of a list a checkpoint shared takes the sums over from
    /// it; a refolded copy, as long as the list read but with other
    /// impulses, is built, whether the refold copied the checkpoint's
    /// list or appended to it in place (the checkpoint gone).
    #[test]
    fn an_appended_list_is_extended_and_a_refolded_copy_is_built() {
        let model = ScoringModel::default_model();
        let credits = Credits::default();
        let cache = SumsCache::default();
        let start = t("2026-01-01T00:00:00Z");
        let push = |l: &mut Arc<Impulses>, k: i64, x: f64| {
            let c = if k % 3 == 0 {
                Component::Service
            } else {
                Component::Sentiment
            };
            let b = Handle::from_index(1 + (k % 2) as u32);
            Arc::make_mut(l).push(b, c, start + chrono::Duration::hours(k), x, k as u64);
        };
        let whole = |l: &Impulses| sums_of(&model, l, &credits);
        let found = |served, extended, built| Found {
            served,
            extended,
            built,
        };
        let mut live = Arc::new(Impulses::default());
        for k in 0..300 {
            push(&mut live, k, 1.0);
        }
        let first = cache.get(&live, &credits, &model);
        assert!(Arc::ptr_eq(&first, &cache.get(&live, &credits, &model)));
        assert_eq!(cache.found(), found(1, 0, 1));
        let at = Arc::as_ptr(&live);
        push(&mut live, 300, 2.0);
        assert_eq!(Arc::as_ptr(&live), at, "an append moved the list");
        let after = cache.get(&live, &credits, &model);
        assert_eq!(cache.found(), found(1, 1, 1));
        assert_same(&after, &whole(&live));
        assert_eq!(first.len, 300, "readers' sums changed");
        cache.get(&live, &credits, &model);
        assert_eq!(cache.found(), found(2, 1, 1));
        for keep_checkpoint in [true, false] {
            // A checkpoint shares the list; the fold's next append copies
            // it, and the copy's sums are extended from the original's.
            let checkpoint = Arc::clone(&live);
            push(&mut live, 400, 3.0);
            assert!(!Arc::ptr_eq(&live, &checkpoint));
            let before = cache.found();
            let read = cache.get(&live, &credits, &model);
            assert_eq!(cache.found().extended, before.extended + 1);
            assert_eq!(cache.found().built, before.built);
            assert_same(&read, &whole(&live));
            // A refold folds another tail on the checkpoint's list: as
            // long as the live one, other impulses.
            let mut refolded = Arc::clone(&checkpoint);
            if !keep_checkpoint {
                drop(checkpoint);
            }
            push(&mut refolded, 400, -5.0);
            assert_eq!(refolded.len(), live.len());
            let read = cache.get(&refolded, &credits, &model);
            assert_eq!(cache.found().built, before.built + 1);
            assert_same(&read, &whole(&refolded));
            let again = cache.get(&live, &credits, &model);
            assert_same(&again, &whole(&live));
            live = refolded;
        }
    }

    /// A series' largest impulses come in the order of a sort of all of
    /// them by forward magnitude (ties by index), as they did before task
    /// h49 ordered only the first `TOP` until a reader goes past them: at
    /// times before, among and after the impulses, with and without zeros,
    /// for a series longer than `TOP` with ties and zeros; and a reader
    /// that stops among the first `TOP` leaves the whole order unbuilt.
    #[test]
    fn a_series_largest_come_in_the_order_of_a_sort_of_all_of_them() {
        let model = ScoringModel::default_model();
        let b = Handle::from_index(1);
        let c = Component::Sentiment;
        let start = t("2026-01-01T00:00:00Z");
        let mut list = Impulses::default();
        for k in 0..(3 * TOP as u64 + 7) {
            // Repeating amounts (ties of magnitude at one time), zeros and
            // signs, two impulses per hour (ties of time).
            let x = match k % 7 {
                0 => 0.0,
                r => (r as f64 - 3.5) * (1.0 + (k % 5) as f64),
            };
            let time = start + chrono::Duration::minutes(30 * (k as i64 / 2));
            list.push(b, c, time, x, k);
        }
        let sums = sums_of(&model, &list, &Credits::default());
        let series = &sums.series[0];
        // The order as it was: every impulse's key, all sorted.
        let whole = |j: Upto, own: bool| {
            let (h, origin) = (series.half_life, series.time[0]);
            let key = |i: usize| {
                let x = series.amount[i].abs();
                if x == 0.0 {
                    f64::NEG_INFINITY
                } else {
                    x.log2() + span_seconds(origin, series.time[i]) / h
                }
            };
            let mut order: Vec<usize> = (0..series.time.len()).collect();
            order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
            order
                .into_iter()
                .filter(|&i| i <= j.0 && (own || series.amount[i] != 0.0))
                .map(|i| (series.event[i], series.amount[i], series.time[i]))
                .collect::<Vec<_>>()
        };
        let few: Vec<_> = series
            .largest(
                series.upto(start + chrono::Duration::days(30)).unwrap(),
                false,
            )
            .take(10)
            .collect();
        assert_eq!(few.len(), 10);
        assert!(
            series.by_size.all.get().is_none(),
            "a reader of the first few ordered all of the impulses"
        );
        for at in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T07:00:00Z",
            "2026-01-03T00:00:00Z",
            "2026-02-01T00:00:00Z",
        ] {
            let j = series.upto(t(at)).unwrap();
            for own in [false, true] {
                let got: Vec<_> = series.largest(j, own).collect();
                assert_eq!(got, whole(j, own), "at {at}, own {own}");
            }
        }
    }
}
