//! The relationship-space batch driver: every relationship's score at one time
//! `at`, computed on a compact snapshot with rayon, without materialising a
//! relationship graph (ARCHITECTURE.md, "Scoring").
//!
//! It owns the snapshot (`RelSnapshot`: u32 ids, the follow matrix, the
//! association lists, all as they stood at `at`), the impulse matrix `X`
//! (people × brands, 6 components, decayed to `at`) and the hop loop. It must
//! not do IO, read the clock, or let the thread count reach a number: every
//! parallel task writes only its own output, sums in a fixed order, and the
//! outputs are concatenated in task order (no atomics, no shared
//! accumulators).
//!
//! It sums the same truncated series as the sequential forward walk it
//! replaced (`FoldState::batch_reference` below, kept as the oracle):
//! `s = Σ_k (αM)^k x`, where the frontier of hop k+1 keeps only the
//! relationships whose largest component reaches the model's `tolerance`, and
//! at most `max_hops` hops are taken. The numbers agree with the oracle to
//! rounding (the two add the audience and association shares of one
//! relationship in a different order); `tests/it/relspace.rs` checks 1e-9.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;

use crate::domain::EntityId;
use crate::graph::Handle;
use crate::score::fold::FoldState;
use crate::score::model::{Components, ScoringModel};
use crate::score::shares::{attention_share, decayed};

/// Score of one relationship in a batch evaluation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RelationScore {
    /// The Fusion Score, 0 to 100 (50 neutral).
    pub score: f64,
    /// The raw sum before `50 + 50·tanh(raw / spread)`.
    pub raw: f64,
    /// Weighted, decayed, propagated sum per component (they add up to `raw`).
    pub components: Components,
}

impl RelationScore {
    /// The score of weighted component sums: raw is their sum.
    pub fn from_components(model: &ScoringModel, components: Components) -> Self {
        let raw: f64 = components.iter().sum();
        Self {
            score: model.score(raw),
            raw,
            components,
        }
    }
}

/// Every relationship's score at one time, keyed by (person, brand).
#[derive(Debug, Clone)]
pub struct BatchScores {
    /// The evaluation time.
    pub at: DateTime<Utc>,
    /// Every relationship reached, in (person, brand) id order.
    pub scores: BTreeMap<(EntityId, EntityId), RelationScore>,
}

/// A sparse people × brands matrix with one value per component, as
/// `(key, components)` sorted by key. Column keys are `brand << 32 | person`
/// (the audience spill works per brand column); the association spill,
/// which works per person row, finds each person's entries by a counting
/// sort of their positions (`RelSnapshot::association`).
type Entries = Vec<(u64, Components)>;

/// Relationships `((person, brand), components)` in row order (person, then
/// brand), numbered as in the snapshot's id tables.
pub type Rows = Vec<((u32, u32), Components)>;

fn col_key(person: u32, brand: u32) -> u64 {
    (u64::from(brand) << 32) | u64::from(person)
}

fn high(key: u64) -> u32 {
    (key >> 32) as u32
}

fn low(key: u64) -> u32 {
    key as u32
}

/// The graph at `at` in the form one hop reads.
///
/// Ids are positions in the sorted id tables, so the numbering, and with it
/// every order the kernel sums in, depends only on the set of ids.
#[derive(Debug, Clone)]
pub struct RelSnapshot {
    /// The time the snapshot stands at.
    pub at: DateTime<Utc>,
    /// People and brands numbered by their position here (sorted by id):
    /// handles, and the ids `into_scores` answers with.
    people: Vec<Handle>,
    brands: Vec<Handle>,
    people_ids: Vec<EntityId>,
    brand_ids: Vec<EntityId>,
    /// The audience spill, transposed for sparse columns: for followee `p`,
    /// `spill_offsets[p]..spill_offsets[p + 1]` lists its consenting followers
    /// `q` (ascending) with `α_f · F[q,p]`. It is the pull CSR of `F` (rows
    /// `q`, columns `p`, built first so each row is normalised over q's
    /// attention) transposed by a stable counting sort; scattering the
    /// present `p` of a column in ascending order performs, for every `q`,
    /// exactly the additions of the pull sum `Σ_p F[q,p] X[p,b]` over q's
    /// followees in ascending order, but touches only the followers of the
    /// people present.
    spill_offsets: Vec<usize>,
    spill_targets: Vec<u32>,
    spill_coef: Vec<f64>,
    /// Per person (consenting only): associated brands ascending, with
    /// `α_a · ā[p,b]`.
    assoc_offsets: Vec<usize>,
    assoc_brands: Vec<u32>,
    assoc_coef: Vec<f64>,
    /// `X`: impulses up to `at` of consenting people, decayed to `at` and
    /// weighted, column keys.
    impulses: Entries,
    tolerance: f64,
    max_hops: u32,
}

/// Per-thread scratch of the audience spill: a dense accumulator over people
/// and the list of the entries touched, reset after every column. Its
/// contents never outlive one column, so which thread's scratch a column
/// uses changes nothing.
#[derive(Default)]
struct Scratch {
    acc: Vec<Components>,
    seen: Vec<bool>,
    touched: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl RelSnapshot {
    /// Snapshots `state` as it stood at `at`.
    pub fn build(state: &FoldState, at: DateTime<Utc>) -> Self {
        let model = state.model();
        let table = state.table();
        let alpha_f = model.propagation.audience;
        let follows = state.graph.follow_edges(at);

        // Canonical people table: everyone with impulses or in a follow.
        let mut people: Vec<Handle> = state.impulse_people().collect();
        for (q, p, _) in &follows {
            people.push(*q);
            people.push(*p);
        }
        // Unique first (by handle), then by id: fewer names compared.
        people.sort_unstable();
        people.dedup();
        table.sort(&mut people);
        let consents: Vec<bool> = people
            .par_iter()
            .map(|p| state.consents_h(*p, at))
            .collect();
        // Only consenting people are ever in a frontier, so only they need
        // their associations.
        let assoc_shares: Vec<Vec<(Handle, f64)>> = people
            .par_iter()
            .zip(&consents)
            .map(|(p, &ok)| {
                if ok {
                    state.association_shares(*p, at)
                } else {
                    Vec::new()
                }
            })
            .collect();

        let mut brands: Vec<Handle> = state
            .impulse_people()
            .filter_map(|p| state.impulse_list(p))
            .flat_map(|list| list.brands())
            .collect();
        brands.extend(assoc_shares.iter().flatten().map(|(b, _)| *b));
        brands.sort_unstable();
        brands.dedup();
        table.sort(&mut brands);

        // Dense maps handle -> number (u32::MAX: not in the snapshot).
        let mut person_id = vec![u32::MAX; table.len()];
        for (i, p) in people.iter().enumerate() {
            person_id[p.index()] = i as u32;
        }
        let mut brand_id = vec![u32::MAX; table.len()];
        for (i, b) in brands.iter().enumerate() {
            brand_id[b.index()] = i as u32;
        }
        let n = people.len();

        // Pull CSR of F: `follows` is sorted by (q, p), so its rows come in
        // order. Attention is summed over the row in that order.
        let mut rows: Vec<(u32, u32, f64)> = Vec::with_capacity(follows.len());
        let mut start = 0;
        while start < follows.len() {
            let q = follows[start].0;
            let mut end = start;
            let mut attention = 0.0;
            while end < follows.len() && follows[end].0 == q {
                attention += follows[end].2;
                end += 1;
            }
            let qi = person_id[q.index()];
            if consents[qi as usize] && attention > 0.0 {
                for (_, p, w) in &follows[start..end] {
                    rows.push((
                        qi,
                        person_id[p.index()],
                        attention_share(alpha_f, *w, attention),
                    ));
                }
            }
            start = end;
        }
        // Transpose by a stable counting sort on p: within each p the
        // followers keep ascending q.
        let mut spill_offsets = vec![0usize; n + 1];
        for &(_, p, _) in &rows {
            spill_offsets[p as usize + 1] += 1;
        }
        for i in 0..n {
            spill_offsets[i + 1] += spill_offsets[i];
        }
        let mut fill = spill_offsets.clone();
        let mut spill_targets = vec![0u32; rows.len()];
        let mut spill_coef = vec![0.0f64; rows.len()];
        for &(q, p, c) in &rows {
            let slot = &mut fill[p as usize];
            spill_targets[*slot] = q;
            spill_coef[*slot] = c;
            *slot += 1;
        }

        let mut assoc_offsets = Vec::with_capacity(n + 1);
        let mut assoc_brands = Vec::new();
        let mut assoc_coef = Vec::new();
        assoc_offsets.push(0);
        for list in &assoc_shares {
            // `association_shares` is sorted by id, hence by brand number.
            for (b, c) in list {
                assoc_brands.push(brand_id[b.index()]);
                assoc_coef.push(*c);
            }
            assoc_offsets.push(assoc_brands.len());
        }

        // X, per person in parallel; per relationship the impulses add up in
        // the person's event order (as the oracle does).
        let rows_x: Vec<Vec<(u64, Components)>> = people
            .par_iter()
            .enumerate()
            .map(|(pi, p)| {
                if !consents[pi] {
                    return Vec::new();
                }
                let Some(list) = state.impulse_list(*p) else {
                    return Vec::new();
                };
                let mut row: Vec<(u64, Components)> = Vec::new();
                for imp in list.up_to(at) {
                    let c = imp.component;
                    let v = decayed(model, c, imp.amount, imp.time, at);
                    let key = col_key(pi as u32, brand_id[imp.brand.index()]);
                    match row.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, acc)) => acc[c.index()] += v,
                        None => {
                            let mut acc = [0.0; 6];
                            acc[c.index()] += v;
                            row.push((key, acc));
                        }
                    }
                }
                row
            })
            .collect();
        // People ascending, each with at most one entry per brand: grouped
        // by brand (stably), they are in column order.
        let impulses = regroup(
            rows_x.iter().flatten(),
            brands.len(),
            high,
            (0, [0.0; 6]),
            |key, v| (key, *v),
        );
        drop(rows_x);

        RelSnapshot {
            at,
            people_ids: people.iter().map(|p| table.name(*p).clone()).collect(),
            brand_ids: brands.iter().map(|b| table.name(*b).clone()).collect(),
            people,
            brands,
            spill_offsets,
            spill_targets,
            spill_coef,
            assoc_offsets,
            assoc_brands,
            assoc_coef,
            impulses,
            tolerance: model.tolerance,
            max_hops: model.max_hops,
        }
    }

    /// The people, numbered by position (sorted by id).
    pub fn people(&self) -> &[EntityId] {
        &self.people_ids
    }

    /// The brands, numbered by position (sorted by id).
    pub fn brands(&self) -> &[EntityId] {
        &self.brand_ids
    }

    /// The people's handles, numbered as [`Self::people`].
    pub(crate) fn people_handles(&self) -> &[Handle] {
        &self.people
    }

    /// The brands' handles, numbered as [`Self::brands`].
    pub(crate) fn brand_handles(&self) -> &[Handle] {
        &self.brands
    }

    /// Stored follow entries (follower, followee pairs with a consenting follower).
    pub fn follow_count(&self) -> usize {
        self.spill_targets.len()
    }

    /// The impulse matrix `X`: `((person, brand), components)`, column order.
    pub fn impulses(&self) -> impl Iterator<Item = ((u32, u32), Components)> + '_ {
        self.impulses.iter().map(|(k, v)| ((low(*k), high(*k)), *v))
    }

    /// Runs the truncated series from `X` and returns every relationship
    /// reached, `((person, brand), components)`, in row order (person, then
    /// brand), which is id order.
    pub fn propagate(&self) -> Vec<((u32, u32), Components)> {
        self.to_rows(&self.total())
    }

    /// The truncated series, column keys.
    fn total(&self) -> Entries {
        let mut total = self.impulses.clone();
        let mut frontier = self.impulses.clone();
        // The sums are made into the other of two buffers, in turn (the
        // same additions as a new list per hop, without allocating and
        // faulting in one of the series' size at every hop).
        let mut spare = Entries::new();
        for _hop in 0..self.max_hops {
            let next = self.hop(&frontier);
            if next.is_empty() {
                break;
            }
            merge_add_into(&total, &next, |v| *v, &mut spare);
            std::mem::swap(&mut total, &mut spare);
            frontier = next;
        }
        total
    }

    /// Column-keyed entries as `((person, brand), components)` in row
    /// order: grouped by person (a stable counting sort), each person's
    /// brands stay ascending.
    fn to_rows(&self, entries: &[(u64, Components)]) -> Rows {
        regroup(
            entries,
            self.people.len(),
            low,
            ((0, 0), [0.0; 6]),
            |key, v| ((low(key), high(key)), *v),
        )
    }

    /// Where the live series starts at a checkpoint (live.rs): the series
    /// `s` as [`Self::propagate`] sums it, and its exact residual
    /// `r = x + αM s − s` (what the truncation left out, up to rounding),
    /// both in row order; `s + Σ_k (αM)^k r` is then the whole series.
    pub fn seed(&self) -> (Rows, Rows) {
        let total = self.total();
        let audience = self.audience(&total);
        let association = self.association(&total);
        let spill = merge_add(&audience, &association);
        drop((audience, association));
        let residual = merge_add(&self.impulses, &spill);
        drop(spill);
        // `− s` added without a negated copy of `s` (`x + (−y)`, the same
        // bits), and only the entries that are not zero kept: the build's
        // peak (docs/scale.md).
        let mut residual = merge_add_negated(&residual, &total);
        residual.retain(|(_, v)| v.iter().any(|x| *x != 0.0));
        let residual_rows = self.to_rows(&residual);
        drop(residual);
        (self.to_rows(&total), residual_rows)
    }

    /// One hop `αM` on a frontier (column keys), pruned to the tolerance.
    fn hop(&self, frontier: &[(u64, Components)]) -> Entries {
        let audience = self.audience(frontier);
        let association = self.association(frontier);
        let mut next = merge_add(&audience, &association);
        let tol = self.tolerance;
        next.retain(|(_, v)| v.iter().fold(0.0f64, |m, x| m.max(x.abs())) >= tol);
        next
    }

    /// `α_f F X`, column by column, brands in parallel.
    fn audience(&self, frontier: &[(u64, Components)]) -> Entries {
        let columns = ranges(frontier, high);
        let n = self.people.len();
        let parts: Vec<Entries> = columns
            .par_iter()
            .map(|&(lo, hi)| {
                SCRATCH.with(|cell| {
                    let mut s = cell.borrow_mut();
                    let s = &mut *s;
                    if s.acc.len() < n {
                        s.acc.resize(n, [0.0; 6]);
                        s.seen.resize(n, false);
                    }
                    let brand = high(frontier[lo].0);
                    for (key, v) in &frontier[lo..hi] {
                        let p = low(*key) as usize;
                        let span = self.spill_offsets[p]..self.spill_offsets[p + 1];
                        for (&q, &c) in self.spill_targets[span.clone()]
                            .iter()
                            .zip(&self.spill_coef[span])
                        {
                            let q = q as usize;
                            if !s.seen[q] {
                                s.seen[q] = true;
                                s.touched.push(q as u32);
                            }
                            for (acc, vi) in s.acc[q].iter_mut().zip(v) {
                                *acc += c * vi;
                            }
                        }
                    }
                    s.touched.sort_unstable();
                    let mut out = Vec::with_capacity(s.touched.len());
                    for &q in &s.touched {
                        let q = q as usize;
                        out.push((col_key(q as u32, brand), s.acc[q]));
                        s.acc[q] = [0.0; 6];
                        s.seen[q] = false;
                    }
                    s.touched.clear();
                    out
                })
            })
            .collect();
        parts.into_iter().flatten().collect()
    }

    /// `α_a assoc(X)`, person by person in parallel; column keys, sorted.
    fn association(&self, frontier: &[(u64, Components)]) -> Entries {
        // Each person's entries, by their positions in the frontier (a
        // stable counting sort of the positions, not of the entries: the
        // person's brands stay ascending), for the people with
        // associations only (the others spill nothing here).
        let n = self.people.len();
        let spreads = |p: usize| self.assoc_offsets[p] < self.assoc_offsets[p + 1];
        let mut start = vec![0usize; n + 1];
        for (key, _) in frontier {
            let p = low(*key) as usize;
            if spreads(p) {
                start[p + 1] += 1;
            }
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut order = vec![0usize; start[n]];
        for (i, (key, _)) in frontier.iter().enumerate() {
            let p = low(*key) as usize;
            if spreads(p) {
                order[fill[p]] = i;
                fill[p] += 1;
            }
        }
        drop(fill);
        let people: Vec<u32> = (0..n)
            .filter(|&p| start[p] < start[p + 1])
            .map(|p| p as u32)
            .collect();
        let parts: Vec<Entries> = people
            .par_iter()
            .with_min_len(64)
            .map(|&p| {
                let span = self.assoc_offsets[p as usize]..self.assoc_offsets[p as usize + 1];
                let row = &order[start[p as usize]..start[p as usize + 1]];
                let mut out = Vec::new();
                for (&b2, &a) in self.assoc_brands[span.clone()]
                    .iter()
                    .zip(&self.assoc_coef[span])
                {
                    let mut acc = [0.0; 6];
                    let mut any = false;
                    // Brands ascending, as the oracle visits them.
                    for &i in row {
                        let (key, v) = &frontier[i];
                        if high(*key) == b2 {
                            continue;
                        }
                        any = true;
                        for (x, vi) in acc.iter_mut().zip(v) {
                            *x += a * vi;
                        }
                    }
                    if any {
                        out.push((col_key(p, b2), acc));
                    }
                }
                out
            })
            .collect();
        // People ascending, each person's brands ascending: grouped by
        // brand (stably), in column order.
        regroup(
            parts.iter().flatten(),
            self.brands.len(),
            high,
            (0, [0.0; 6]),
            |key, v| (key, *v),
        )
    }
}

/// `entries` grouped by `part(key)` (below `groups`) by a stable counting
/// sort, each mapped by `make`: within a group they keep their order. A
/// list sorted by unique keys, grouped by one half of the key, is sorted
/// by that half and then the other (the transposes between column and row
/// order). Two passes and one list of the result's size (exactly: no room
/// to give back; made of `blank`, zeroed pages when it is all zero bits),
/// where a parallel comparison sort moved 56-byte entries (task h72). The
/// entries only move: nothing summed depends on it.
fn regroup<'a, T: Clone>(
    entries: impl IntoIterator<Item = &'a (u64, Components)> + Clone,
    groups: usize,
    part: fn(u64) -> u32,
    blank: T,
    make: impl Fn(u64, &Components) -> T,
) -> Vec<T> {
    let mut fill = vec![0usize; groups + 1];
    let mut len = 0;
    for (key, _) in entries.clone() {
        fill[part(*key) as usize + 1] += 1;
        len += 1;
    }
    for i in 0..groups {
        fill[i + 1] += fill[i];
    }
    let mut out = vec![blank; len];
    for (key, v) in entries {
        let slot = &mut fill[part(*key) as usize];
        out[*slot] = make(*key, v);
        *slot += 1;
    }
    out
}

/// Ranges of equal `part(key)` in a sorted entry list.
fn ranges(entries: &[(u64, Components)], part: fn(u64) -> u32) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut lo = 0;
    while lo < entries.len() {
        let g = part(entries[lo].0);
        let mut hi = lo + 1;
        while hi < entries.len() && part(entries[hi].0) == g {
            hi += 1;
        }
        out.push((lo, hi));
        lo = hi;
    }
    out
}

/// The sum of two sorted entry lists (keys unique in each), sorted; where a
/// key is in both, `a`'s value comes first in the addition.
fn merge_add(a: &[(u64, Components)], b: &[(u64, Components)]) -> Entries {
    merge_add_with(a, b, |v| *v)
}

/// `a − b` as [`merge_add`] of `a` and `b` negated (`x + (−y)` per lane,
/// `−y` where `a` has no entry), without a negated copy of `b`.
fn merge_add_negated(a: &[(u64, Components)], b: &[(u64, Components)]) -> Entries {
    merge_add_with(a, b, |v| v.map(|x| -x))
}

/// [`merge_add`] of `a` and `b`'s values mapped by `f`.
fn merge_add_with(
    a: &[(u64, Components)],
    b: &[(u64, Components)],
    f: impl Fn(&Components) -> Components,
) -> Entries {
    let mut out = Vec::new();
    merge_add_into(a, b, f, &mut out);
    out
}

/// [`merge_add_with`] into `out`, cleared first (its room kept).
fn merge_add_into(
    a: &[(u64, Components)],
    b: &[(u64, Components)],
    f: impl Fn(&Components) -> Components,
    out: &mut Entries,
) {
    out.clear();
    out.reserve(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (ka, kb) = (a[i].0, b[j].0);
        if ka < kb {
            out.push(a[i]);
            i += 1;
        } else if kb < ka {
            out.push((kb, f(&b[j].1)));
            j += 1;
        } else {
            let mut v = a[i].1;
            for (x, y) in v.iter_mut().zip(&f(&b[j].1)) {
                *x += y;
            }
            out.push((ka, v));
            i += 1;
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend(b[j..].iter().map(|(k, v)| (*k, f(v))));
}

impl FoldState {
    /// Every relationship's score at `at`: the relationship-space driver,
    /// parallel over brands and people.
    pub fn batch(&self, at: DateTime<Utc>) -> BatchScores {
        RelSnapshot::build(self, at).into_scores(self.model(), at)
    }

    /// The sequential forward walk from every impulse that `batch` replaced,
    /// kept as the oracle the parallel driver is tested against
    /// (`tests/it/relspace.rs`) and benched against. Not for serving.
    #[doc(hidden)]
    pub fn batch_reference(&self, at: DateTime<Utc>) -> BatchScores {
        let model = self.model();
        let alpha_f = model.propagation.audience;
        let tol = model.tolerance;

        let table = self.table();
        let name = |h: Handle| table.name(h).clone();
        let mut x: BTreeMap<(EntityId, EntityId), Components> = BTreeMap::new();
        let mut people: Vec<Handle> = self.impulse_people().collect();
        table.sort(&mut people);
        for p in people {
            if !self.consents_h(p, at) {
                continue;
            }
            for imp in self.impulse_list(p).into_iter().flat_map(|l| l.up_to(at)) {
                let c = imp.component;
                let v = decayed(model, c, imp.amount, imp.time, at);
                x.entry((name(p), name(imp.brand))).or_insert([0.0; 6])[c.index()] += v;
            }
        }

        // Followers of each person with their attention share.
        let mut attention: HashMap<EntityId, f64> = HashMap::new();
        let edges: Vec<(EntityId, EntityId, f64)> = self
            .graph
            .follow_edges(at)
            .into_iter()
            .map(|(q, p, w)| (name(q), name(p), w))
            .collect();
        for (q, _, w) in &edges {
            *attention.entry(q.clone()).or_insert(0.0) += w;
        }
        let mut followers: HashMap<EntityId, Vec<(EntityId, f64)>> = HashMap::new();
        for (q, p, w) in &edges {
            if self.consents(q, at) {
                followers
                    .entry(p.clone())
                    .or_default()
                    .push((q.clone(), attention_share(alpha_f, *w, attention[q])));
            }
        }
        let mut assoc_cache: HashMap<EntityId, Vec<(EntityId, f64)>> = HashMap::new();

        let mut total = x.clone();
        let mut frontier = x;
        for _hop in 0..model.max_hops {
            let mut next: BTreeMap<(EntityId, EntityId), Components> = BTreeMap::new();
            for ((p, b), v) in &frontier {
                if let Some(fs) = followers.get(p) {
                    for (q, share) in fs {
                        let e = next.entry((q.clone(), b.clone())).or_insert([0.0; 6]);
                        for (acc, vi) in e.iter_mut().zip(v) {
                            *acc += share * vi;
                        }
                    }
                }
                let shares = assoc_cache.entry(p.clone()).or_insert_with(|| {
                    let h = self.handle(p).expect("a person of the state");
                    self.association_shares(h, at)
                        .into_iter()
                        .map(|(b, c)| (name(b), c))
                        .collect()
                });
                for (b2, c) in shares.iter() {
                    if b2 == b {
                        continue;
                    }
                    let e = next.entry((p.clone(), b2.clone())).or_insert([0.0; 6]);
                    for (acc, vi) in e.iter_mut().zip(v) {
                        *acc += c * vi;
                    }
                }
            }
            next.retain(|_, v| v.iter().fold(0.0f64, |m, x| m.max(x.abs())) >= tol);
            if next.is_empty() {
                break;
            }
            for (k, v) in &next {
                let e = total.entry(k.clone()).or_insert([0.0; 6]);
                for (acc, vi) in e.iter_mut().zip(v) {
                    *acc += vi;
                }
            }
            frontier = next;
        }
        let scores = total
            .into_iter()
            .filter(|((p, _), _)| self.consents(p, at))
            .map(|(k, components)| (k, RelationScore::from_components(model, components)))
            .collect();
        BatchScores { at, scores }
    }
}

impl RelSnapshot {
    /// The id of person number `p` of [`Self::propagate`]'s rows.
    pub(crate) fn person_id(&self, p: u32) -> &EntityId {
        &self.people_ids[p as usize]
    }

    /// The id of brand number `b` of [`Self::propagate`]'s rows.
    pub(crate) fn brand_id(&self, b: u32) -> &EntityId {
        &self.brand_ids[b as usize]
    }

    /// Propagates and maps to scores. Needs no access to the state, so a
    /// caller can build snapshots under the state's read lock and do this
    /// part after releasing it.
    pub fn into_scores(self, model: &ScoringModel, at: DateTime<Utc>) -> BatchScores {
        let rows = self.propagate();
        let scores: BTreeMap<(EntityId, EntityId), RelationScore> = rows
            .into_iter()
            .map(|((p, b), components)| {
                (
                    (
                        self.people_ids[p as usize].clone(),
                        self.brand_ids[b as usize].clone(),
                    ),
                    RelationScore::from_components(model, components),
                )
            })
            .collect();
        BatchScores { at, scores }
    }
}
