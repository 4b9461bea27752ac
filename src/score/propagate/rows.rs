//! How the push driver (`push.rs`) stores one person's row of `s` or `r`:
//! `(brand, value)` entries ascending brand, each with one flag (the
//! residual's "queued"). [`DenseRow`] keeps every value whole (the `f64`
//! driver); [`LaneRow`] keeps only the nonzero lanes of six-lane
//! [`Components`] (issue #10: at 1M events of the 10M shape a live row
//! used 2.66 of its 6 lanes on average, docs/scale.md).
//!
//! A row never changes a value's bits: it hands back exactly what was put
//! in. A lane is stored when its **bits** are nonzero (so `-0.0` is
//! kept, and an absent lane reads `+0.0`, which is what a dense row held
//! there). Arithmetic happens on whole values outside the row, so the
//! driver's sums are the same whichever row it runs on. No IO.

use crate::score::model::Components;

/// One person's sorted `(brand, value, flag)` entries (module docs). An
/// entry may hold a value that is zero in every lane: it stays until it
/// is removed, as in a dense row.
pub trait Row<V: Copy>: Clone + Default + std::fmt::Debug {
    /// Entries held.
    fn len(&self) -> usize;
    /// No entry held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The position of `brand` (`Ok`), or where it would go (`Err`).
    fn search(&self, brand: u32) -> Result<usize, usize>;
    /// The brand of entry `i`.
    fn brand(&self, i: usize) -> u32;
    /// The value of entry `i`, bit for bit as last set.
    fn value(&self, i: usize) -> V;
    /// Replaces the value of entry `i` (its flag stays).
    fn set_value(&mut self, i: usize, v: V);
    /// Replaces the value `v` of entry `i` by `f(v)`; answers the new one.
    fn update(&mut self, i: usize, f: impl FnOnce(V) -> V) -> V {
        let v = f(self.value(i));
        self.set_value(i, v);
        v
    }
    /// Inserts `(brand, v)` at `i` (from [`Self::search`]), flag off.
    fn insert(&mut self, i: usize, brand: u32, v: V);
    /// Removes entry `i`.
    fn remove(&mut self, i: usize);
    /// The flag of entry `i`.
    fn flag(&self, i: usize) -> bool;
    /// Sets the flag of entry `i`.
    fn set_flag(&mut self, i: usize, on: bool);
    /// The entries `(brand, value)`, ascending brand.
    fn iter(&self) -> impl Iterator<Item = (u32, V)> + '_;
    /// Replaces every value `v` by `f(v)` and drops the entries for which
    /// `keep` of the new value is false.
    fn map_retain(&mut self, f: impl Fn(&V) -> V, keep: impl Fn(&V) -> bool);
    /// Gives back spare capacity (after a build).
    fn shrink(&mut self);
    /// Bytes this row holds on the heap (capacities, not lengths).
    fn heap_bytes(&self) -> usize;
}

/// Entries kept whole: `(brand, value, flag)`.
#[derive(Clone, Debug)]
pub struct DenseRow<V> {
    entries: Vec<(u32, V, bool)>,
}

impl<V> Default for DenseRow<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V: Copy + std::fmt::Debug> Row<V> for DenseRow<V> {
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn search(&self, brand: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&brand, |e| e.0)
    }
    fn brand(&self, i: usize) -> u32 {
        self.entries[i].0
    }
    fn value(&self, i: usize) -> V {
        self.entries[i].1
    }
    fn set_value(&mut self, i: usize, v: V) {
        self.entries[i].1 = v;
    }
    fn insert(&mut self, i: usize, brand: u32, v: V) {
        self.entries.insert(i, (brand, v, false));
    }
    fn remove(&mut self, i: usize) {
        self.entries.remove(i);
    }
    fn flag(&self, i: usize) -> bool {
        self.entries[i].2
    }
    fn set_flag(&mut self, i: usize, on: bool) {
        self.entries[i].2 = on;
    }
    fn iter(&self) -> impl Iterator<Item = (u32, V)> + '_ {
        self.entries.iter().map(|e| (e.0, e.1))
    }
    fn map_retain(&mut self, f: impl Fn(&V) -> V, keep: impl Fn(&V) -> bool) {
        for e in self.entries.iter_mut() {
            e.1 = f(&e.1);
        }
        self.entries.retain(|e| keep(&e.1));
    }
    fn shrink(&mut self) {
        self.entries.shrink_to_fit();
    }
    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u32, V, bool)>()
    }
}

/// The flag's bit in a [`LaneRow`] mask; bits 0 to 5 say which lanes are
/// stored.
const FLAG: u8 = 0x80;
/// The lane bits of a mask.
const LANES: u8 = 0x3f;

/// Entries per block of a [`LaneRow`]'s index of where lanes start.
const BLOCK: usize = 64;

/// Six-lane entries keeping only the lanes whose bits are nonzero: the
/// brands, one mask byte per entry (lanes present, and the flag in bit
/// 7), and the present lanes of every entry packed in entry order. About
/// `5 + 8·lanes` bytes an entry against 56 for a dense one.
///
/// Where an entry's lanes start is the count of the lanes before it. So
/// that finding it costs one block of masks (8 popcount words), not every
/// mask before it (a person with thousands of brands paid that at every
/// push that reached its row: red team h58), a row longer than [`BLOCK`]
/// entries keeps where the lanes of each block after the first start,
/// behind its brands in the same vector (a short row pays nothing, and no
/// row a fourth vector's header).
#[derive(Clone, Debug, Default)]
pub struct LaneRow {
    /// The entries' brands, then the lane start of blocks `1, 2, ..`
    /// (`brands[len + k - 1]` for entries `k·BLOCK..`).
    brands: Vec<u32>,
    masks: Vec<u8>,
    lanes: Vec<f64>,
}

/// The lanes present in `v` (bits nonzero).
fn mask_of(v: &Components) -> u8 {
    let mut m = 0;
    for (c, x) in v.iter().enumerate() {
        if x.to_bits() != 0 {
            m |= 1 << c;
        }
    }
    m
}

impl LaneRow {
    /// Sets entry `i`, its lanes starting at `at`, to `v`.
    fn set_at(&mut self, i: usize, at: usize, v: Components) {
        let old = self.masks[i] & LANES;
        let new = mask_of(&v);
        let (n_old, n_new) = (old.count_ones() as usize, new.count_ones() as usize);
        let (lanes, n) = packed(&v, new);
        debug_assert_eq!(n, n_new);
        if n_old == n_new {
            self.lanes[at..at + n].copy_from_slice(&lanes[..n]);
        } else {
            self.lanes
                .splice(at..at + n_old, lanes[..n].iter().copied());
            // The blocks after entry i start that many lanes later.
            let n = self.masks.len();
            for start in &mut self.brands[n + i / BLOCK..] {
                *start = start.wrapping_add(n_new as u32).wrapping_sub(n_old as u32);
            }
        }
        self.masks[i] = (self.masks[i] & FLAG) | new;
    }

    /// Where entry `i` (at most the length) has its lanes start in
    /// `lanes`: its block's start plus the lanes of the entries before it
    /// in its block.
    fn offset(&self, i: usize) -> usize {
        let n = self.masks.len();
        if i == n {
            return self.lanes.len();
        }
        let k = i / BLOCK;
        let start = if k == 0 {
            0
        } else {
            self.brands[n + k - 1] as usize
        };
        start + lanes_of(&self.masks[k * BLOCK..i])
    }

    /// The block starts again for the blocks from the one after entry
    /// `from`'s on, after entries were inserted or removed at `from` (the
    /// brands vector then holds the old number of starts behind the
    /// brands, shifted with them).
    fn reindex(&mut self, from: usize) {
        let n = self.masks.len();
        let had = self.brands.len() - n;
        let blocks = n.saturating_sub(1) / BLOCK;
        self.brands.resize(n + blocks, 0);
        let first = (from / BLOCK + 1).min(had + 1);
        if first > blocks {
            return;
        }
        let mut at = if first == 1 {
            0
        } else {
            self.brands[n + first - 2] as usize
        };
        for k in first..=blocks {
            at += lanes_of(&self.masks[(k - 1) * BLOCK..k * BLOCK]);
            self.brands[n + k - 1] = u32::try_from(at).expect("a row holds fewer than 2^32 lanes");
        }
    }

    /// The value of mask `m` whose lanes start at `at`.
    fn unpack(&self, m: u8, at: usize) -> Components {
        let mut v = [0.0; 6];
        let mut k = at;
        for (c, x) in v.iter_mut().enumerate() {
            if m & (1 << c) != 0 {
                *x = self.lanes[k];
                k += 1;
            }
        }
        v
    }
}

/// The lanes present in `masks`, counted eight masks at a time.
fn lanes_of(masks: &[u8]) -> usize {
    let mut chunks = masks.chunks_exact(8);
    let mut n = 0;
    for c in &mut chunks {
        let word = u64::from_le_bytes(c.try_into().expect("eight bytes"));
        n += (word & 0x3f3f_3f3f_3f3f_3f3f).count_ones() as usize;
    }
    for m in chunks.remainder() {
        n += (m & LANES).count_ones() as usize;
    }
    n
}

/// The present lanes of `v` (mask `m`), in lane order, and their count:
/// a slice of known length, so a splice moves the tail once and
/// allocates nothing.
fn packed(v: &Components, m: u8) -> ([f64; 6], usize) {
    let mut out = [0.0; 6];
    let mut n = 0;
    for (c, x) in v.iter().enumerate() {
        if m & (1 << c) != 0 {
            out[n] = *x;
            n += 1;
        }
    }
    (out, n)
}

impl Row<Components> for LaneRow {
    fn len(&self) -> usize {
        self.masks.len()
    }
    fn search(&self, brand: u32) -> Result<usize, usize> {
        self.brands[..self.masks.len()].binary_search(&brand)
    }
    fn brand(&self, i: usize) -> u32 {
        self.brands[i]
    }
    fn value(&self, i: usize) -> Components {
        self.unpack(self.masks[i] & LANES, self.offset(i))
    }
    fn set_value(&mut self, i: usize, v: Components) {
        let at = self.offset(i);
        self.set_at(i, at, v);
    }
    fn update(&mut self, i: usize, f: impl FnOnce(Components) -> Components) -> Components {
        let at = self.offset(i);
        let v = f(self.unpack(self.masks[i] & LANES, at));
        self.set_at(i, at, v);
        v
    }
    fn insert(&mut self, i: usize, brand: u32, v: Components) {
        let m = mask_of(&v);
        let at = self.offset(i);
        self.brands.insert(i, brand);
        self.masks.insert(i, m);
        let (lanes, n) = packed(&v, m);
        self.lanes.splice(at..at, lanes[..n].iter().copied());
        self.reindex(i);
    }
    fn remove(&mut self, i: usize) {
        let at = self.offset(i);
        let n = (self.masks[i] & LANES).count_ones() as usize;
        self.lanes.drain(at..at + n);
        self.brands.remove(i);
        self.masks.remove(i);
        self.reindex(i);
    }
    fn flag(&self, i: usize) -> bool {
        self.masks[i] & FLAG != 0
    }
    fn set_flag(&mut self, i: usize, on: bool) {
        if on {
            self.masks[i] |= FLAG;
        } else {
            self.masks[i] &= !FLAG;
        }
    }
    fn iter(&self) -> impl Iterator<Item = (u32, Components)> + '_ {
        let mut at = 0;
        self.brands.iter().zip(&self.masks).map(move |(&b, &m)| {
            let m = m & LANES;
            let v = self.unpack(m, at);
            at += m.count_ones() as usize;
            (b, v)
        })
    }
    fn map_retain(
        &mut self,
        f: impl Fn(&Components) -> Components,
        keep: impl Fn(&Components) -> bool,
    ) {
        // Rebuilt in place: entry `i` is read before anything at or past
        // its lanes is written (the kept lanes never outnumber the read).
        let (mut read, mut write, mut kept) = (0, 0, 0);
        for i in 0..self.masks.len() {
            let m = self.masks[i] & LANES;
            let v = f(&self.unpack(m, read));
            read += m.count_ones() as usize;
            if !keep(&v) {
                continue;
            }
            let new = mask_of(&v);
            // Writing past the lanes read would overwrite entries not yet
            // read (only when `f` fills absent lanes): copy instead.
            if write + new.count_ones() as usize > read {
                return self.map_retain_copy(
                    i,
                    kept,
                    write,
                    read - m.count_ones() as usize,
                    f,
                    keep,
                );
            }
            let (lanes, n) = packed(&v, new);
            self.lanes[write..write + n].copy_from_slice(&lanes[..n]);
            write += n;
            self.brands[kept] = self.brands[i];
            self.masks[kept] = (self.masks[i] & FLAG) | new;
            kept += 1;
        }
        self.brands.truncate(kept);
        self.masks.truncate(kept);
        self.lanes.truncate(write);
        self.reindex(0);
    }
    fn shrink(&mut self) {
        self.brands.shrink_to_fit();
        self.masks.shrink_to_fit();
        self.lanes.shrink_to_fit();
    }
    fn heap_bytes(&self) -> usize {
        self.brands.capacity() * 4 + self.masks.capacity() + self.lanes.capacity() * 8
    }
}

impl LaneRow {
    /// [`Row::map_retain`] from entry `i` on (its lanes at `read`) into
    /// fresh vectors, the first `kept` entries (`write` lanes) done in place.
    fn map_retain_copy(
        &mut self,
        i: usize,
        kept: usize,
        write: usize,
        read: usize,
        f: impl Fn(&Components) -> Components,
        keep: impl Fn(&Components) -> bool,
    ) {
        let mut out = LaneRow {
            brands: self.brands[..kept].to_vec(),
            masks: self.masks[..kept].to_vec(),
            lanes: self.lanes[..write].to_vec(),
        };
        out.reindex(0);
        let mut at = read;
        for j in i..self.masks.len() {
            let m = self.masks[j] & LANES;
            let v = f(&self.unpack(m, at));
            at += m.count_ones() as usize;
            if keep(&v) {
                let n = out.masks.len();
                out.insert(n, self.brands[j], v);
                out.masks[n] |= self.masks[j] & FLAG;
            }
        }
        *self = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &Components) -> [u64; 6] {
        v.map(f64::to_bits)
    }

    /// Every operation on a lane row and a dense row, side by side: the
    /// same entries, values and flags, bit for bit (−0.0 and subnormals
    /// among the values).
    #[test]
    fn a_lane_row_keeps_every_bit_a_dense_row_keeps() {
        let values: Vec<Components> = vec![
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, -0.0, 0.0, 2.5, 0.0, 1e-310],
            [0.0; 6],
            [-0.0; 6],
            [3.0, 1.0, 4.0, 1.0, 5.0, 9.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, -7.0],
        ];
        let (mut lane, mut dense) = (LaneRow::default(), DenseRow::<Components>::default());
        let same = |lane: &LaneRow, dense: &DenseRow<Components>| {
            assert_eq!(lane.len(), dense.len());
            let a: Vec<_> = lane.iter().map(|(b, v)| (b, bits(&v))).collect();
            let d: Vec<_> = dense.iter().map(|(b, v)| (b, bits(&v))).collect();
            assert_eq!(a, d);
            for i in 0..lane.len() {
                assert_eq!(bits(&lane.value(i)), bits(&dense.value(i)));
                assert_eq!(lane.flag(i), dense.flag(i));
                assert_eq!(lane.brand(i), dense.brand(i));
            }
        };
        // A deterministic walk over inserts, sets, flags and removes.
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..2000 {
            let brand = next(40) as u32;
            let v = values[next(values.len())];
            match (lane.search(brand), next(4)) {
                (Ok(i), 0) => {
                    lane.remove(i);
                    dense.remove(i);
                }
                (Ok(i), 1) => {
                    let on = next(2) == 0;
                    lane.set_flag(i, on);
                    dense.set_flag(i, on);
                }
                (Ok(i), _) => {
                    let mut w = lane.value(i);
                    for (a, b) in w.iter_mut().zip(&v) {
                        *a += b;
                    }
                    lane.set_value(i, w);
                    dense.set_value(i, w);
                }
                (Err(i), _) => {
                    assert_eq!(dense.search(brand), Err(i));
                    lane.insert(i, brand, v);
                    dense.insert(i, brand, v);
                }
            }
            same(&lane, &dense);
        }
        assert!(lane.len() > 10, "the walk keeps a row of some length");
        // Scaling (shrinking lanes to zero drops them) and a map that
        // fills absent lanes (the copying path).
        let keep = |v: &Components| v.iter().any(|x| *x != 0.0);
        for f in [
            (|v: &Components| v.map(|x| x * 0.5)) as fn(&Components) -> Components,
            |v| v.map(|x| x * 1e-320),
            |v| v.map(|x| x + 1.0),
        ] {
            lane.map_retain(f, keep);
            dense.map_retain(f, keep);
            same(&lane, &dense);
        }
        lane.shrink();
        assert_eq!(
            lane.heap_bytes(),
            lane.len() * 5 + lane.lanes.len() * 8,
            "shrunk to what it holds"
        );
    }

    /// What a dense row holds, as `(brand, lane bits, flag)` per entry,
    /// read through `iter`, `value`, `brand` and `flag` of a lane row: the
    /// two must agree on every one.
    fn same(lane: &LaneRow, dense: &DenseRow<Components>) {
        assert_eq!(lane.len(), dense.len());
        let a: Vec<_> = lane.iter().map(|(b, v)| (b, bits(&v))).collect();
        let d: Vec<_> = dense.iter().map(|(b, v)| (b, bits(&v))).collect();
        assert_eq!(a, d);
        for i in 0..lane.len() {
            assert_eq!(bits(&lane.value(i)), bits(&dense.value(i)), "entry {i}");
            assert_eq!(lane.flag(i), dense.flag(i), "entry {i}");
            assert_eq!(lane.brand(i), dense.brand(i), "entry {i}");
        }
        // The packed lanes are exactly the present ones, nothing stale, and
        // every block starts where the lanes before it end.
        let present: usize = lane
            .masks
            .iter()
            .map(|m| (m & LANES).count_ones() as usize)
            .sum();
        assert_eq!(lane.lanes.len(), present);
        let n = lane.len();
        let starts: Vec<u32> = (1..=n.saturating_sub(1) / BLOCK)
            .map(|k| lanes_of(&lane.masks[..k * BLOCK]) as u32)
            .collect();
        assert_eq!(lane.brands[n..], starts[..], "block starts");
    }

    /// The value whose lanes are present where `mask` has a bit, each a
    /// distinct number (so a lane read from the wrong slot shows).
    fn patterned(mask: u8, seed: u32) -> Components {
        std::array::from_fn(|c| {
            if mask & (1 << c) != 0 {
                f64::from(seed) * 8.0 + c as f64 + 0.5
            } else {
                0.0
            }
        })
    }

    /// Red team h58: rows past the popcount's chunks (8 masks a word) and
    /// past 64 entries, with every one of the 64 lane patterns, brands at
    /// both ends of `u32` (0 and `u32::MAX`), entries inserted at the
    /// front, the middle and the back, lanes that come and go on the same
    /// entry, and removals down to an empty row from either end.
    #[test]
    fn a_wide_row_keeps_every_bit_past_the_popcount_chunks_and_the_ends_of_u32() {
        let (mut lane, mut dense) = (LaneRow::default(), DenseRow::<Components>::default());
        let mut brands: Vec<u32> = vec![0, u32::MAX, 1, u32::MAX - 1];
        brands.extend((0..196u32).map(|k| k.wrapping_mul(2_654_435_761) | 2));
        for (k, &b) in brands.iter().enumerate() {
            let v = patterned((k % 64) as u8, k as u32);
            let i = match lane.search(b) {
                Ok(i) => {
                    lane.set_value(i, v);
                    dense.set_value(i, v);
                    i
                }
                Err(i) => {
                    assert_eq!(dense.search(b), Err(i));
                    lane.insert(i, b, v);
                    dense.insert(i, b, v);
                    i
                }
            };
            let on = k % 3 == 0;
            lane.set_flag(i, on);
            dense.set_flag(i, on);
            same(&lane, &dense);
        }
        assert!(lane.len() > 130, "{} entries", lane.len());
        assert_eq!((lane.brand(0), lane.brand(lane.len() - 1)), (0, u32::MAX));
        // Every entry through every lane count and back, in place: a lane
        // set to −0.0 stays, one set to +0.0 goes.
        for i in (0..lane.len()).rev().step_by(7) {
            for m in [0u8, 0x3f, 0x01, 0x20, 0x15] {
                let mut v = patterned(m, i as u32);
                v[3] = if m & 0x08 != 0 { -0.0 } else { v[3] };
                lane.set_value(i, v);
                dense.set_value(i, v);
                same(&lane, &dense);
            }
        }
        while !lane.is_empty() {
            let i = if lane.len() % 2 == 0 {
                lane.len() - 1
            } else {
                0
            };
            lane.remove(i);
            dense.remove(i);
            same(&lane, &dense);
        }
        assert!(lane.lanes.is_empty() && lane.masks.is_empty());
    }

    /// Red team h58, a regression of the block starts: removing an entry
    /// past the first block of a row of 65 left no block start to read
    /// (the index ran past the brands), which `benches/wide_rows.sh`
    /// hit at once and the tests above did not. Every removal and
    /// insertion at the blocks' edges, rows of 63 to 66 and 127 to 130.
    #[test]
    fn an_entry_removed_or_inserted_at_a_block_edge_keeps_the_block_starts() {
        for len in (63..=66).chain(127..=130) {
            for at in [0, 1, 62, 63, 64, 65, len - 2, len - 1, len] {
                if at > len {
                    continue;
                }
                let (mut lane, mut dense) = (LaneRow::default(), DenseRow::<Components>::default());
                for k in 0..len {
                    let v = patterned((k % 64) as u8, k as u32);
                    lane.insert(k, 2 * k as u32, v);
                    dense.insert(k, 2 * k as u32, v);
                }
                same(&lane, &dense);
                if at < len {
                    lane.remove(at);
                    dense.remove(at);
                    same(&lane, &dense);
                }
                let b = 2 * at as u32 + 1;
                let i = lane.search(b).unwrap_err();
                lane.insert(i, b, patterned(0x2a, 7));
                dense.insert(i, b, patterned(0x2a, 7));
                same(&lane, &dense);
            }
        }
    }

    /// The ways a rescale or a map can go: nothing kept, everything kept,
    /// the copying path (a map that fills absent lanes) starting at the
    /// first, a middle and the last entry, flags carried along.
    #[test]
    fn map_retain_keeps_flags_and_bits_on_every_path() {
        let build = || {
            let (mut lane, mut dense) = (LaneRow::default(), DenseRow::<Components>::default());
            for k in 0..80u32 {
                // Entries 0 and 79 have no lanes at all; the rest a few.
                let m = if k == 0 || k == 79 {
                    0
                } else {
                    (k % 5 + 1) as u8
                };
                let v = patterned(m, k);
                lane.insert(k as usize, k * 3, v);
                dense.insert(k as usize, k * 3, v);
                lane.set_flag(k as usize, k % 2 == 1);
                dense.set_flag(k as usize, k % 2 == 1);
            }
            (lane, dense)
        };
        type Map = fn(&Components) -> Components;
        type Keep = fn(&Components) -> bool;
        let cases: [(Map, Keep); 6] = [
            (|v| v.map(|x| x * 0.0), |v| v.iter().any(|x| *x != 0.0)),
            (|v| *v, |_| true),
            (|v| v.map(|x| x + 1.0), |_| true),
            // Fills absent lanes only from the fortieth entry's value on.
            (
                |v| {
                    if v[0] > 150.0 || v[1] > 150.0 || v[2] > 150.0 {
                        v.map(|x| x + 2.0)
                    } else {
                        *v
                    }
                },
                |v| v.iter().any(|x| x.to_bits() != 0),
            ),
            // Only the last entry (no lanes) is filled.
            (
                |v| {
                    if v.iter().all(|x| x.to_bits() == 0) {
                        [1.0; 6]
                    } else {
                        *v
                    }
                },
                |v| v[0] != 2.5,
            ),
            (
                |v| v.map(|x| -x),
                |v| v.iter().filter(|x| **x < 0.0).count() % 2 == 0,
            ),
        ];
        for (k, (f, keep)) in cases.into_iter().enumerate() {
            let (mut lane, mut dense) = build();
            lane.map_retain(f, keep);
            dense.map_retain(f, keep);
            same(&lane, &dense);
            let kept: Vec<bool> = (0..dense.len()).map(|i| dense.flag(i)).collect();
            assert_eq!(
                kept,
                (0..lane.len()).map(|i| lane.flag(i)).collect::<Vec<_>>(),
                "case {k}"
            );
        }
    }

    /// Lane values for the property below: zeros of both signs, the
    /// smallest subnormal, values that underflow when scaled, the largest.
    const PALETTE: [f64; 8] = [0.0, -0.0, 1.0, -2.5, 5e-324, -1e-310, 1e300, f64::MAX];
    /// Scale factors per lane (the driver's are >= 0): some underflow.
    const FACTORS: [f64; 5] = [0.5, 1e-300, 0.0, 1.0, 1e-10];

    /// One operation of the property below.
    #[derive(Clone, Debug)]
    enum Op {
        /// Set (or insert) a value at a brand.
        Put(u32, [usize; 6]),
        /// Add a value lane by lane at a brand (inserted when absent), as
        /// the driver's `add_to_row`.
        Add(u32, [usize; 6]),
        /// Remove the entry at this position (modulo the length).
        Remove(usize),
        /// Set the flag of the entry at this position.
        Flag(usize, bool),
        /// Scale every lane, dropping the entries that become zero (the
        /// driver's `scale`).
        Scale([usize; 6]),
        /// Add 1 to every lane of every entry whose first lane is not
        /// positive, keep all (the copying path of `map_retain`).
        Fill,
    }

    fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
        use proptest::prelude::*;
        let brand = prop_oneof![0u32..200, (u32::MAX - 3)..=u32::MAX];
        let value = [0usize..8, 0..8, 0..8, 0..8, 0..8, 0..8];
        let op = prop_oneof![
            4 => (brand.clone(), value.clone()).prop_map(|(b, v)| Op::Put(b, v)),
            4 => (brand, value).prop_map(|(b, v)| Op::Add(b, v)),
            2 => any::<usize>().prop_map(Op::Remove),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, on)| Op::Flag(i, on)),
            1 => [0usize..5, 0..5, 0..5, 0..5, 0..5, 0..5].prop_map(Op::Scale),
            1 => Just(Op::Fill),
        ];
        proptest::collection::vec(op, 1..300)
    }

    proptest::proptest! {
        /// Red team h58: any sequence of the driver's operations on a lane
        /// row and a dense row leaves the same entries, bits and flags
        /// (rows of up to 200 brands and the ends of `u32`).
        #[test]
        fn any_operations_leave_a_lane_row_with_a_dense_rows_bits(ops in ops()) {
            let (mut lane, mut dense) = (LaneRow::default(), DenseRow::<Components>::default());
            let of = |ix: &[usize; 6]| -> Components { ix.map(|k| PALETTE[k]) };
            for op in ops {
                match op {
                    Op::Put(b, v) | Op::Add(b, v) if lane.search(b).is_err() => {
                        let i = lane.search(b).unwrap_err();
                        lane.insert(i, b, of(&v));
                        dense.insert(i, b, of(&v));
                    }
                    Op::Put(b, v) => {
                        let i = lane.search(b).unwrap();
                        lane.set_value(i, of(&v));
                        dense.set_value(i, of(&v));
                    }
                    Op::Add(b, v) => {
                        let i = lane.search(b).unwrap();
                        let add = |mut x: Components| {
                            for (a, y) in x.iter_mut().zip(&of(&v)) {
                                *a += y;
                            }
                            x
                        };
                        let (x, y) = (lane.update(i, add), dense.update(i, add));
                        proptest::prop_assert_eq!(bits(&x), bits(&y));
                    }
                    Op::Remove(i) if !lane.is_empty() => {
                        let i = i % lane.len();
                        lane.remove(i);
                        dense.remove(i);
                    }
                    Op::Flag(i, on) if !lane.is_empty() => {
                        let i = i % lane.len();
                        lane.set_flag(i, on);
                        dense.set_flag(i, on);
                    }
                    Op::Remove(_) | Op::Flag(..) => {}
                    Op::Scale(f) => {
                        let f = f.map(|k| FACTORS[k]);
                        let times = |v: &Components| -> Components {
                            std::array::from_fn(|c| v[c] * f[c])
                        };
                        let keep = |v: &Components| v.iter().any(|x| *x != 0.0);
                        lane.map_retain(times, keep);
                        dense.map_retain(times, keep);
                    }
                    Op::Fill => {
                        let fill = |v: &Components| -> Components {
                            if v[0] > 0.0 { *v } else { v.map(|x| x + 1.0) }
                        };
                        lane.map_retain(fill, |_| true);
                        dense.map_retain(fill, |_| true);
                    }
                }
                same(&lane, &dense);
            }
        }
    }
}
