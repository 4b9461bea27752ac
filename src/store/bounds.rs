//! Key ranges over ids a request names (alert rules, cursors of pages):
//! the bounds of "ids after this cursor" and "every row of this id" in a
//! table keyed by id, or by (id, ...). Owns only the bounds; must not read
//! a table.
//!
//! Why a module: such a bound was written `id + 1`, and an id or cursor
//! comes from the request, so `u64::MAX` overflowed (red team h38:
//! `DELETE /v1/alerts/18446744073709551615` answered 500). A bound here is
//! never arithmetic on the id: the range after the largest id is empty,
//! not a panic nor a wrap to 0.

use std::ops::Bound;

/// The ids after `cursor` (every id without one): the keys of a page that
/// resumes after its previous page's last id.
pub fn after(cursor: Option<u64>) -> (Bound<u64>, Bound<u64>) {
    match cursor {
        Some(c) => (Bound::Excluded(c), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

/// A key of a table keyed by an id and two strings.
pub type IdKey<'a> = (u64, &'a str, &'a str);

/// Every key `(id, a, b)` of one id, in a table keyed by the id and two
/// strings: from `(id, "", "")`, before the next id's first key (or to the
/// end, for the largest id).
pub fn rows_of<'a>(id: u64) -> (Bound<IdKey<'a>>, Bound<IdKey<'a>>) {
    let end = match id.checked_add(1) {
        Some(next) => Bound::Excluded((next, "", "")),
        None => Bound::Unbounded,
    };
    (Bound::Included((id, "", "")), end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::RangeBounds;

    #[test]
    fn the_largest_id_bounds_without_overflow() {
        let (start, end) = rows_of(u64::MAX);
        assert_eq!(start, Bound::Included((u64::MAX, "", "")));
        assert_eq!(end, Bound::Unbounded);
        assert!((start, end).contains(&(u64::MAX, "p", "b")));
        let (start, end) = rows_of(7);
        assert!((start, end).contains(&(7, "\u{10FFFF}", "")));
        assert!(!(start, end).contains(&(8, "", "")));
        assert!(!after(Some(u64::MAX)).contains(&u64::MAX));
        assert!(after(Some(u64::MAX - 1)).contains(&u64::MAX));
        assert!(after(None).contains(&0));
    }
}
