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
//! person is first read, and kept while that person's impulses are the same
//! allocation (`Arc::make_mut` moves a person's impulses to a new one when
//! the fold adds to them while a `Weak` is held, so a kept entry can never
//! describe a list that changed). A snapshot holds none of it; a start
//! pays nothing until a read. Must not: do IO, read the clock, or be kept
//! past a change of the list it was built from.

use std::sync::{Arc, OnceLock, Weak};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::impulses::{Impulse, Impulses};
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
#[derive(Debug)]
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
#[derive(Debug, Default)]
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
#[derive(Debug)]
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
}

/// Heap bytes a vector holds.
fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
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

    /// The sums of `impulses`, given in canonical order.
    pub fn of(model: &ScoringModel, impulses: impl Iterator<Item = Impulse>) -> Self {
        let decays = Decays::of(model);
        let mut index: FxHashMap<(Handle, usize), u32> = FxHashMap::default();
        let mut series: Vec<Series> = Vec::new();
        let mut by_event = Vec::new();
        let mut multi_person = Vec::new();
        let mut events_nonzero = Vec::new();
        let mut last_nonzero: Option<u64> = None;
        let mut len = 0;
        for imp in impulses {
            len += 1;
            let c = imp.component;
            let s = *index.entry((imp.brand, c.index())).or_insert_with(|| {
                series.push(Series {
                    brand: imp.brand,
                    component: c,
                    half_life: half_life_seconds(model, c),
                    time: Vec::new(),
                    sum: Vec::new(),
                    amount: Vec::new(),
                    event: Vec::new(),
                    nonzero: Vec::new(),
                    firsts: Vec::new(),
                    firsts_nonzero: Vec::new(),
                    by_size: BySize::default(),
                });
                (series.len() - 1) as u32
            });
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
                multi_person.push((imp.event, s, i as u32));
            }
            if imp.amount != 0.0 && last_nonzero != Some(imp.event) {
                events_nonzero.push(imp.time);
                last_nonzero = Some(imp.event);
            }
            by_event.push((imp.event, s, i as u32, first));
        }
        by_event.sort_by_key(|&(e, ..)| e);
        let half_lives = half_lives_of(model);
        let longest = half_lives.iter().copied().fold(0.0, f64::max);
        let mut spanning = Vec::new();
        let mut spanning_by_size = Vec::new();
        let origin = series.first().map(|s| s.time[0]);
        for group in by_event.chunk_by(|a, b| a.0 == b.0) {
            if group.iter().all(|x| x.1 == group[0].1) {
                continue;
            }
            spanning.extend(group.iter().filter(|x| x.3).map(|x| (x.0, x.1, x.2)));
            let (mut total, mut time) = (0.0, None);
            for &(_, s, i, _) in group {
                let one = &series[s as usize];
                total += (one.amount[i as usize] * decays.decayed(one.component, 1.0, 0.0)).abs();
                time = time.max(Some(one.time[i as usize]));
            }
            if let (Some(time), Some(origin)) = (time, origin)
                && total > 0.0
            {
                let key = total.log2() + span_seconds(origin, time) / longest;
                spanning_by_size.push((key, group[0].0, time, total));
            }
        }
        spanning_by_size.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let by_event = by_event.into_iter().map(|x| (x.0, x.1, x.2)).collect();
        Self {
            series,
            by_event,
            events_nonzero,
            spanning,
            spanning_by_size,
            multi_person,
            len,
            half_lives,
            longest,
        }
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

/// Kept sums by the address of the impulses they were built from (with
/// their heap bytes), the size at which the next sweep drops those of
/// lists that are gone, and the bytes kept against `budget`.
#[derive(Debug)]
struct Kept {
    by_list: FxHashMap<usize, (Weak<Impulses>, Arc<PersonSums>, usize)>,
    sweep_at: usize,
    bytes: usize,
    budget: usize,
}

impl Default for Kept {
    fn default() -> Self {
        Kept {
            by_list: FxHashMap::default(),
            sweep_at: 0,
            bytes: 0,
            budget: MAX_BYTES,
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

/// The sums of the people read, shared by every clone of a state (module
/// docs: an entry is keyed by the allocation of the impulses it was built
/// from and holds it weakly, so it serves exactly while they are the same).
#[derive(Debug, Clone, Default)]
pub struct SumsCache {
    inner: Arc<Mutex<Kept>>,
}

impl SumsCache {
    /// The sums of `list` (a person's impulses), kept or built by `build`.
    pub(crate) fn get(
        &self,
        list: &Arc<Impulses>,
        build: impl FnOnce() -> PersonSums,
    ) -> Arc<PersonSums> {
        let key = Arc::as_ptr(list) as usize;
        if let Some((weak, sums, _)) = self.inner.lock().by_list.get(&key)
            && weak.upgrade().is_some_and(|l| Arc::ptr_eq(&l, list))
            && sums.len == list.len()
        {
            return Arc::clone(sums);
        }
        let sums = Arc::new(build());
        let bytes = sums.heap_bytes();
        let mut kept = self.inner.lock();
        let kept = &mut *kept;
        if bytes > kept.budget {
            // Larger than the whole budget: served, not kept.
            return sums;
        }
        if kept.by_list.len() >= kept.sweep_at.max(FIRST_SWEEP) {
            // Sums of lists that are gone (moved by the fold, of a state
            // replaced by a refold, of an erased person) are never served
            // again: swept whenever the cache doubled since the last sweep
            // (amortised O(1) a read), so they stay at most as many as
            // the live ones, not until the cache is full (red team h39).
            kept.by_list.retain(|_, (list, ..)| list.strong_count() > 0);
            kept.bytes = kept.by_list.values().map(|(.., b)| b).sum();
            kept.sweep_at = 2 * kept.by_list.len();
        }
        if kept.by_list.len() >= MAX_PEOPLE || kept.bytes + bytes > kept.budget {
            kept.by_list.clear();
            kept.bytes = 0;
            kept.sweep_at = 0;
        }
        let replaced = kept
            .by_list
            .insert(key, (Arc::downgrade(list), Arc::clone(&sums), bytes));
        kept.bytes = (kept.bytes + bytes).saturating_sub(replaced.map_or(0, |(.., b)| b));
        sums
    }

    /// An empty cache that keeps at most `budget` heap bytes of sums.
    #[cfg(test)]
    fn with_budget(budget: usize) -> Self {
        let cache = SumsCache::default();
        cache.inner.lock().budget = budget;
        cache
    }
}

#[cfg(test)]
mod tests {
    use super::super::impulses::{Credits, ImpulseList};
    use super::*;
    use crate::score::shares::decayed;

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
            cache.get(&l, || sums_of(&model, &l, &credits));
        }
        let kept = cache.inner.lock().by_list.len();
        assert!(kept <= FIRST_SWEEP, "{kept} sums of gone lists kept");
        // Live ones are kept through sweeps.
        let live: Vec<_> = (0..3 * FIRST_SWEEP as u64).map(list).collect();
        for l in &live {
            cache.get(l, || sums_of(&model, l, &credits));
        }
        for l in &live {
            cache.get(l, || panic!("the sums of a live list were swept"));
        }
    }

    /// The cache was bounded by people only (16,384), whose sums differ in
    /// size by orders of magnitude: now the kept bytes are bounded too,
    /// and sums larger than the budget are served, not kept.
    #[test]
    fn kept_sums_stay_within_the_byte_budget() {
        let model = ScoringModel::default_model();
        let credits = Credits::default();
        let list = |n: u64| {
            let mut l = Arc::new(Impulses::default());
            for k in 0..n {
                Arc::make_mut(&mut l).push(
                    Handle::from_index(1 + (k % 3) as u32),
                    Component::Sentiment,
                    t("2026-01-01T00:00:00Z") + chrono::Duration::seconds(k as i64),
                    1.0,
                    k,
                );
            }
            l
        };
        let one = list(100);
        let size = sums_of(&model, &one, &credits).heap_bytes();
        assert!(size >= 100 * 40, "{size} bytes for 100 impulses");
        let cache = SumsCache::with_budget(5 * size / 2);
        let lists: Vec<_> = (0..10).map(|_| list(100)).collect();
        for l in &lists {
            cache.get(l, || sums_of(&model, l, &credits));
            let kept = cache.inner.lock();
            assert!(
                kept.bytes <= kept.budget,
                "{} > {}",
                kept.bytes,
                kept.budget
            );
            let counted: usize = kept.by_list.values().map(|(.., b)| b).sum();
            assert_eq!(kept.bytes, counted);
        }
        // The newest is kept; larger than the whole budget is not.
        cache.get(&lists[9], || panic!("the newest sums were not kept"));
        let huge = list(1_000);
        cache.get(&huge, || sums_of(&model, &huge, &credits));
        let mut built = false;
        cache.get(&huge, || {
            built = true;
            sums_of(&model, &huge, &credits)
        });
        assert!(built, "sums larger than the budget were kept");
    }

    /// The cache serves a person's sums only while their impulses are the
    /// same: a fold that adds one moves the list (`Arc::make_mut` with a
    /// `Weak` held), and the next read builds the sums again with it.
    #[test]
    fn kept_sums_are_never_served_for_a_list_that_changed() {
        let model = ScoringModel::default_model();
        let credits = Credits::default();
        let b = Handle::from_index(1);
        let mut list = Arc::new(Impulses::default());
        Arc::make_mut(&mut list).push(b, Component::Sentiment, t("2026-01-01T00:00:00Z"), 1.0, 0);
        let cache = SumsCache::default();
        let first = cache.get(&list, || sums_of(&model, &list, &credits));
        let again = cache.get(&list, || panic!("kept sums were not served"));
        assert!(Arc::ptr_eq(&first, &again));
        Arc::make_mut(&mut list).push(b, Component::Sentiment, t("2026-01-02T00:00:00Z"), 2.0, 1);
        let after = cache.get(&list, || sums_of(&model, &list, &credits));
        assert!(!Arc::ptr_eq(&first, &after));
        assert_eq!(after.series[0].time.len(), 2);
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
