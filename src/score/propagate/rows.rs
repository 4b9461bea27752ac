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

/// Six-lane entries keeping only the lanes whose bits are nonzero: the
/// brands, one mask byte per entry (lanes present, and the flag in bit
/// 7), and the present lanes of every entry packed in entry order. About
/// `5 + 8·lanes` bytes an entry against 56 for a dense one.
#[derive(Clone, Debug, Default)]
pub struct LaneRow {
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
        }
        self.masks[i] = (self.masks[i] & FLAG) | new;
    }

    /// Where entry `i`'s lanes start in `lanes`: the lanes of the entries
    /// before it, counted eight masks at a time.
    fn offset(&self, i: usize) -> usize {
        let masks = &self.masks[..i];
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
        self.brands.len()
    }
    fn search(&self, brand: u32) -> Result<usize, usize> {
        self.brands.binary_search(&brand)
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
    }
    fn remove(&mut self, i: usize) {
        let at = self.offset(i);
        let n = (self.masks[i] & LANES).count_ones() as usize;
        self.lanes.drain(at..at + n);
        self.brands.remove(i);
        self.masks.remove(i);
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
        for i in 0..self.brands.len() {
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
        let mut at = read;
        for j in i..self.brands.len() {
            let m = self.masks[j] & LANES;
            let v = f(&self.unpack(m, at));
            at += m.count_ones() as usize;
            if keep(&v) {
                let n = out.brands.len();
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
}
