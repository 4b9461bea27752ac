//! `UndoVec`: the push driver's per-person rows, able to go back to a
//! mark. Once marked ([`UndoVec::mark`]), the first mutable access to a
//! row saves its value as it was at the mark (once per row, a bit per row
//! says which are saved), and rows added after the mark are new; a
//! roll-back puts the saved rows back and drops the new ones, which gives
//! the rows exactly as they were at the mark (the same bits: the values
//! saved are the values). The live series marks its driver at each
//! checkpoint build, so a refold goes back to that build through the
//! rows its events changed instead of a whole copy of the build kept
//! beside the series (issue #10, ARCHITECTURE.md "Live series": one copy
//! in `serve`).
//!
//! Every mutable path goes through here (`IndexMut`, `iter_mut`, `&mut`
//! iteration, growing); there is no `DerefMut`, so no row can change
//! unsaved. It must not shrink (nothing shrinks the driver's rows).

use std::ops::{Deref, Index, IndexMut};

/// A vector whose changes since a mark can be undone (module docs).
#[derive(Debug, Clone, Default)]
pub struct UndoVec<T> {
    items: Vec<T>,
    undo: Option<Undo<T>>,
}

/// What a marked [`UndoVec`] needs to go back to its mark.
#[derive(Debug, Clone)]
struct Undo<T> {
    /// The length at the mark: rows from here on are new since.
    len: usize,
    /// One bit per row below `len`: saved already.
    saved_rows: Vec<u64>,
    /// `(row, value at the mark)`, each row once, in order of first change.
    saved: Vec<(u32, T)>,
}

impl<T: Clone> Undo<T> {
    #[inline]
    fn save(&mut self, i: usize, items: &[T]) {
        if i >= self.len {
            return;
        }
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.saved_rows[word] & bit == 0 {
            self.saved_rows[word] |= bit;
            self.saved.push((i as u32, items[i].clone()));
        }
    }
}

impl<T> From<Vec<T>> for UndoVec<T> {
    fn from(items: Vec<T>) -> Self {
        Self { items, undo: None }
    }
}

impl<T: Clone> UndoVec<T> {
    /// From now on, changes are undoable back to here (a mark already set
    /// is dropped with its saved rows).
    pub fn mark(&mut self) {
        let len = self.items.len();
        self.undo = Some(Undo {
            len,
            saved_rows: vec![0; len.div_ceil(64)],
            saved: Vec::new(),
        });
    }

    /// Whether a mark is set.
    pub fn marked(&self) -> bool {
        self.undo.is_some()
    }

    /// The length at the mark, if set.
    pub fn marked_len(&self) -> Option<usize> {
        self.undo.as_ref().map(|u| u.len)
    }

    /// The rows changed since the mark, with their values at it, in order
    /// of first change (rows added since are not among them).
    pub fn saved(&self) -> impl Iterator<Item = (usize, &T)> {
        self.undo
            .iter()
            .flat_map(|u| u.saved.iter().map(|(i, v)| (*i as usize, v)))
    }

    /// Rows saved since the mark.
    pub fn saved_count(&self) -> usize {
        self.undo.as_ref().map_or(0, |u| u.saved.len())
    }

    /// Bytes the mark holds: the saved rows' slots, `heap` of each saved
    /// row (what it holds on the heap), and the bits.
    pub fn saved_bytes(&self, heap: impl Fn(&T) -> usize) -> usize {
        self.undo.as_ref().map_or(0, |u| {
            u.saved.capacity() * std::mem::size_of::<(u32, T)>()
                + u.saved.iter().map(|(_, v)| heap(v)).sum::<usize>()
                + u.saved_rows.capacity() * 8
        })
    }

    /// Puts the rows back as they were at the mark, which stays set (with
    /// nothing saved); `false`, changing nothing, when no mark is set.
    pub fn roll_back(&mut self) -> bool {
        let Some(undo) = self.undo.as_mut() else {
            return false;
        };
        for (i, v) in undo.saved.drain(..) {
            self.items[i as usize] = v;
        }
        undo.saved_rows.fill(0);
        self.items.truncate(undo.len);
        true
    }

    /// Mutable rows, each saved first (a change to all of them: saves
    /// every row not saved yet).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        if let Some(undo) = self.undo.as_mut() {
            for i in 0..undo.len {
                undo.save(i, &self.items);
            }
        }
        self.items.iter_mut()
    }

    /// Grows to `len` rows made by `f` (never shrinks: rows past the mark
    /// are dropped by a roll-back).
    pub fn grow_with(&mut self, len: usize, f: impl FnMut() -> T) {
        debug_assert!(len >= self.items.len(), "an UndoVec does not shrink");
        if len > self.items.len() {
            self.items.resize_with(len, f);
        }
    }
}

impl<T> Deref for UndoVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> Index<usize> for UndoVec<T> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.items[i]
    }
}

impl<T: Clone> IndexMut<usize> for UndoVec<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        if let Some(undo) = self.undo.as_mut() {
            undo.save(i, &self.items);
        }
        &mut self.items[i]
    }
}

impl<'a, T> IntoIterator for &'a UndoVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<'a, T: Clone> IntoIterator for &'a mut UndoVec<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roll_back_gives_the_rows_at_the_mark() {
        let mut v: UndoVec<Vec<u32>> = vec![vec![1], vec![2, 3], vec![]].into();
        v.mark();
        v[1].push(4);
        v[1].push(5);
        v.grow_with(5, Vec::new);
        v[4].push(9);
        v[0].clear();
        assert_eq!(v.saved_count(), 2);
        assert!(v.roll_back());
        assert_eq!(&*v, &[vec![1], vec![2, 3], vec![]]);
        // Still marked, nothing saved: a second round goes back as well.
        for row in &mut v {
            row.push(7);
        }
        assert_eq!(v.saved_count(), 3);
        assert!(v.roll_back());
        assert_eq!(&*v, &[vec![1], vec![2, 3], vec![]]);
    }

    #[test]
    fn an_unmarked_vector_saves_nothing_and_cannot_roll_back() {
        let mut v: UndoVec<u8> = vec![1, 2].into();
        v[0] = 5;
        assert_eq!(v.saved_count(), 0);
        assert!(!v.roll_back());
        assert_eq!(&*v, &[5, 2]);
    }
}
