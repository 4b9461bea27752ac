//! Rankings: every relationship's score at one time with its trends,
//! grouped by brand and by person (`Ranking`), as brand listings, brand
//! summaries and the dashboard read them. Owns the ranking's shape and its
//! making from a current and past evaluations (`rank`): each brand's rows
//! are ordered once per build for every sort a listing offers
//! (`ListingSort`) and summarised, so a listing page is a slice from its
//! cursor and a summary a lookup (task h42: before, every read filtered and
//! sorted the brand's rows again). Does no IO and reads no clock: the
//! engine builds, times and shares rankings (`Engine::ranking`).

use std::cmp::Ordering;
use std::collections::{HashMap, btree_map};
use std::iter::Peekable;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use crate::domain::{EntityId, EntityKind};
use crate::score::{BatchScores, RelationScore};

/// Trend of a score: now minus 1, 7 and 30 days before.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Trend {
    pub d1: f64,
    pub d7: f64,
    pub d30: f64,
}

/// One ranked relationship.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RankedRelation {
    pub person: EntityId,
    pub brand: EntityId,
    pub kind: EntityKind,
    #[serde(flatten)]
    pub score: RelationScore,
    pub trend: Trend,
}

/// Every relationship's score at `as_of`, with trends, grouped by brand and
/// by person. Built from one batch evaluation per trend point.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub as_of: DateTime<Utc>,
    pub version: u64,
    /// The log position of the state it was built from.
    pub position: u64,
    /// `Derived::generation` of that state.
    pub generation: u64,
    /// When it was taken (its staleness is measured from here).
    pub taken: Instant,
    pub by_brand: HashMap<EntityId, BrandRanking>,
    /// Each person's brands and scores, in brand id order.
    pub by_person: HashMap<EntityId, Vec<(EntityId, f64)>>,
    pub relationships: usize,
    /// Whether its scores are its log's whatever the timing: from the
    /// live series, or a batch evaluation at a time before the latest
    /// event; `false` for a batch evaluation standing in for a live
    /// series still catching up (`ScoreState::live_owes`), within the
    /// series' bound but not its bits.
    pub settled: bool,
}

/// An order a brand listing offers (`GET /v1/brands/{brand}/relationships`,
/// `sort`): by a value in a direction, then by person id ascending. A
/// brand's people are distinct, so it is a total order and a page is the
/// same whatever order the rows came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingSort {
    /// `-score`, the default.
    ScoreDescending,
    /// `score`.
    ScoreAscending,
    /// `-trend7d`.
    Trend7dDescending,
    /// `trend7d`.
    Trend7dAscending,
}

impl ListingSort {
    /// Every sort, in the order of `BrandRanking`'s orders.
    const ALL: [ListingSort; 4] = [
        ListingSort::ScoreDescending,
        ListingSort::ScoreAscending,
        ListingSort::Trend7dDescending,
        ListingSort::Trend7dAscending,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The value it sorts by: the score, or the 7-day trend (points).
    pub fn value(self, r: &RankedRelation) -> f64 {
        match self {
            ListingSort::ScoreDescending | ListingSort::ScoreAscending => r.score.score,
            ListingSort::Trend7dDescending | ListingSort::Trend7dAscending => r.trend.d7,
        }
    }

    fn descending(self) -> bool {
        matches!(
            self,
            ListingSort::ScoreDescending | ListingSort::Trend7dDescending
        )
    }

    /// Where `r` stands against a listed (value, person) in this order
    /// (`f64::total_cmp` on values, then person ids).
    fn against(self, r: &RankedRelation, value: f64, person: &EntityId) -> Ordering {
        let v = self.value(r);
        let o = if self.descending() {
            value.total_cmp(&v)
        } else {
            v.total_cmp(&value)
        };
        o.then_with(|| r.person.cmp(person))
    }
}

/// What a brand summary says of its scores (`GET /v1/brands/{brand}`),
/// made once per ranking. Quantiles are of the ascending scores, the
/// nearest rank (`(n - 1) q`, rounded); the mean sums them in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreSummary {
    /// Relationships of the brand.
    pub relationships: usize,
    /// Mean score, none without relationships.
    pub mean: Option<f64>,
    pub p10: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    /// Scores per 10 points: `[0, 10)`, ..., `[90, 100]`.
    pub histogram: [u64; 10],
    /// Scores at or above 60.
    pub advocates: usize,
    /// Scores below 40.
    pub at_risk: usize,
}

impl ScoreSummary {
    /// The summary of `ascending` scores (`f64::total_cmp` order).
    fn of(ascending: &[f64]) -> Self {
        let n = ascending.len();
        let quantile = |q: f64| (n > 0).then(|| ascending[((n - 1) as f64 * q).round() as usize]);
        let mut histogram = [0u64; 10];
        for s in ascending {
            histogram[((s / 10.0) as usize).min(9)] += 1;
        }
        ScoreSummary {
            relationships: n,
            mean: (n > 0).then(|| ascending.iter().sum::<f64>() / n as f64),
            p10: quantile(0.1),
            p50: quantile(0.5),
            p90: quantile(0.9),
            histogram,
            advocates: ascending.iter().filter(|s| **s >= 60.0).count(),
            at_risk: ascending.iter().filter(|s| **s < 40.0).count(),
        }
    }
}

/// A brand's relationships in a ranking: its rows in person id order,
/// their order for each `ListingSort`, and its summary. Reads as its rows
/// (`Deref`).
#[derive(Debug, Clone)]
pub struct BrandRanking {
    rows: Vec<RankedRelation>,
    /// Row numbers in each `ListingSort`'s order (`ListingSort::index`).
    orders: [Vec<u32>; 4],
    summary: ScoreSummary,
}

/// `f64::total_cmp`'s order as an integer's: comparing these compares the
/// floats (what `total_cmp` does inside), so a sort compares integers.
fn total_order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

impl BrandRanking {
    /// Orders and summarises `rows`, which are in person id order (so a
    /// row number breaks ties as the person id does). Each value is
    /// sorted once, descending; its ascending order is that reversed with
    /// each run of equal values put back in row order (the same order a
    /// second sort gives, for half the sorting: task h46).
    fn new(rows: Vec<RankedRelation>) -> Self {
        debug_assert!(rows.windows(2).all(|w| w[0].person < w[1].person));
        let both = |descending: ListingSort| {
            let keys: Vec<i64> = rows
                .iter()
                .map(|r| total_order_key(descending.value(r)))
                .collect();
            // Descending by value, still ascending by row: the key
            // reversed (`!` reverses an i64's order).
            let mut keyed: Vec<(i64, u32)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (!k, i as u32))
                .collect();
            keyed.sort_unstable();
            let down: Vec<u32> = keyed.into_iter().map(|(_, i)| i).collect();
            let mut up: Vec<u32> = down.iter().rev().copied().collect();
            up.chunk_by_mut(|a, b| keys[*a as usize] == keys[*b as usize])
                .for_each(|run| run.reverse());
            (down, up)
        };
        let (score_down, score_up) = both(ListingSort::ScoreDescending);
        let (trend_down, trend_up) = both(ListingSort::Trend7dDescending);
        // In `ListingSort::ALL`'s order.
        let orders: [Vec<u32>; 4] = [score_down, score_up, trend_down, trend_up];
        debug_assert!(
            ListingSort::ALL
                .iter()
                .enumerate()
                .all(|(n, s)| s.index() == n && s.descending() == (n % 2 == 0))
        );
        let ascending: Vec<f64> = orders[ListingSort::ScoreAscending.index()]
            .iter()
            .map(|&i| rows[i as usize].score.score)
            .collect();
        let summary = ScoreSummary::of(&ascending);
        BrandRanking {
            rows,
            orders,
            summary,
        }
    }

    /// The rows in `sort`'s order.
    pub fn sorted(&self, sort: ListingSort) -> impl Iterator<Item = &RankedRelation> {
        self.orders[sort.index()]
            .iter()
            .map(|&i| &self.rows[i as usize])
    }

    /// The rows in `sort`'s order after a listed (value, person), a
    /// page's cursor (keyset pagination), found by bisection; all of them
    /// without one.
    pub fn after(
        &self,
        sort: ListingSort,
        cursor: Option<(f64, &EntityId)>,
    ) -> impl Iterator<Item = &RankedRelation> {
        let order = &self.orders[sort.index()];
        let from = cursor.map_or(0, |(value, person)| {
            order.partition_point(|&i| {
                sort.against(&self.rows[i as usize], value, person) != Ordering::Greater
            })
        });
        order[from..].iter().map(|&i| &self.rows[i as usize])
    }

    /// The summary of its scores.
    pub fn summary(&self) -> &ScoreSummary {
        &self.summary
    }
}

impl std::ops::Deref for BrandRanking {
    type Target = [RankedRelation];
    fn deref(&self) -> &[RankedRelation] {
        &self.rows
    }
}

impl<'a> IntoIterator for &'a BrandRanking {
    type Item = &'a RankedRelation;
    type IntoIter = std::slice::Iter<'a, RankedRelation>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

/// A past evaluation read alongside the current one, both in (person,
/// brand) order: a merge walk, one comparison per row, where a lookup per
/// row and column cost a search of the whole map each.
struct PastColumn<'a> {
    rows: Peekable<btree_map::Iter<'a, (EntityId, EntityId), RelationScore>>,
}

impl PastColumn<'_> {
    /// The score of `key` then (50, neutral, if it had none); keys must
    /// come in ascending order.
    fn score(&mut self, key: &(EntityId, EntityId)) -> f64 {
        while self.rows.next_if(|(k, _)| *k < key).is_some() {}
        match self.rows.peek() {
            Some((k, s)) if *k == key => s.score,
            _ => 50.0,
        }
    }
}

/// The ranking of `current` with trends against `past` (1, 7 and 30 days
/// before); `kinds`: the kind of every entity that is not a consumer (a
/// person absent is one); `taken`: the state's version, position and
/// generation, and when it was read.
pub(super) fn rank(
    current: BatchScores,
    past: &[BatchScores],
    kinds: &HashMap<EntityId, EntityKind>,
    (version, position, generation, taken): (u64, u64, u64, Instant),
) -> Ranking {
    let now = current.at;
    let mut columns: Vec<PastColumn> = past
        .iter()
        .map(|p| PastColumn {
            rows: p.scores.iter().peekable(),
        })
        .collect();
    let mut rows: HashMap<EntityId, Vec<RankedRelation>> = HashMap::new();
    // Rows come by person: each person's brands are one run, in brand order.
    let mut by_person: Vec<(EntityId, Vec<(EntityId, f64)>)> = Vec::new();
    let relationships = current.scores.len();
    let mut kind = (None::<EntityId>, EntityKind::Consumer);
    for (key, score) in current.scores {
        let mut then = |i: usize| columns[i].score(&key);
        let trend = Trend {
            d1: score.score - then(0),
            d7: score.score - then(1),
            d30: score.score - then(2),
        };
        let (person, brand) = key;
        // Rows come by person: one lookup and one run per person.
        if kind.0.as_ref() != Some(&person) {
            let k = kinds.get(&person).copied().unwrap_or(EntityKind::Consumer);
            kind = (Some(person.clone()), k);
            by_person.push((person.clone(), Vec::new()));
        }
        if let Some((_, brands)) = by_person.last_mut() {
            brands.push((brand.clone(), score.score));
        }
        rows.entry(brand.clone()).or_default().push(RankedRelation {
            person,
            brand,
            kind: kind.1,
            score,
            trend,
        });
    }
    Ranking {
        as_of: now,
        version,
        position,
        generation,
        taken,
        relationships,
        // Each brand on its own: in parallel (on the caller's pool, the
        // background one for a build), the same rows whatever the threads.
        by_brand: rows
            .into_par_iter()
            .map(|(brand, rows)| (brand, BrandRanking::new(rows)))
            .collect(),
        by_person: by_person.into_iter().collect(),
        settled: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(person: &str, score: f64, d7: f64) -> RankedRelation {
        RankedRelation {
            person: EntityId::new(person).unwrap(),
            brand: EntityId::new("b").unwrap(),
            kind: EntityKind::Consumer,
            score: RelationScore {
                score,
                ..RelationScore::from_components(
                    &crate::score::ScoringModel::default_model(),
                    [0.0; 6],
                )
            },
            trend: Trend {
                d1: 0.0,
                d7,
                d30: 0.0,
            },
        }
    }

    /// The people of `rows` sorted with the listing's comparator for
    /// `sort` (the order every listing had before orders were kept).
    fn by_the_comparator(rows: &[RankedRelation], sort: ListingSort) -> Vec<&str> {
        let mut sorted: Vec<&RankedRelation> = rows.iter().collect();
        sorted.sort_by(|a, b| sort.against(a, sort.value(b), &b.person));
        sorted.iter().map(|r| r.person.as_str()).collect()
    }

    /// Each order is what sorting the rows with the listing's comparator
    /// gives (the order every listing had before orders were kept), ties
    /// and signed zeros included.
    #[test]
    fn each_kept_order_is_the_listing_comparators() {
        let values: [f64; 10] = [50.0, 71.5, -0.0, 0.0, 50.0, 12.25, 99.0, 50.0, -3.5, 71.5];
        let rows: Vec<RankedRelation> = values
            .iter()
            .enumerate()
            .map(|(i, v)| row(&format!("p{i:02}"), v.abs(), *v - 10.0 * (i % 3) as f64))
            .collect();
        let b = BrandRanking::new(rows.clone());
        for sort in ListingSort::ALL {
            let want = by_the_comparator(&rows, sort);
            let got: Vec<&str> = b.sorted(sort).map(|r| r.person.as_str()).collect();
            assert_eq!(got, want, "{sort:?}");
            // After each row as a cursor: exactly the rows after it.
            for (n, r) in b.sorted(sort).enumerate() {
                let after: Vec<&str> = b
                    .after(sort, Some((sort.value(r), &r.person)))
                    .map(|r| r.person.as_str())
                    .collect();
                assert_eq!(after, want[n + 1..], "{sort:?} after {}", r.person);
            }
        }
    }

    /// The ascending orders, derived from the descending ones (task h46),
    /// are the comparator's on rows with long runs of equal values and
    /// signed zeros, as the second sort they replace gave.
    #[test]
    fn ascending_orders_from_the_descending_ones_are_the_listing_comparators() {
        let values = [50.0, 0.0, -0.0, 12.5, 50.0, 100.0];
        let rows: Vec<RankedRelation> = (0..300)
            .map(|i| {
                row(
                    &format!("p{i:03}"),
                    values[i * 7 % 6],
                    values[i * 5 % 4] - 50.0,
                )
            })
            .collect();
        let b = BrandRanking::new(rows.clone());
        for sort in ListingSort::ALL {
            let want = by_the_comparator(&rows, sort);
            let got: Vec<&str> = b.sorted(sort).map(|r| r.person.as_str()).collect();
            assert_eq!(got, want, "{sort:?}");
        }
    }

    #[test]
    fn a_summary_of_no_scores_says_none() {
        assert_eq!(ScoreSummary::of(&[]), ScoreSummary::default());
        let s = ScoreSummary::of(&[10.0, 40.0, 60.0, 100.0]);
        assert_eq!(s.relationships, 4);
        assert_eq!(s.mean, Some(52.5));
        assert_eq!((s.advocates, s.at_risk), (2, 1));
        assert_eq!(s.histogram[9], 1);
    }
}
