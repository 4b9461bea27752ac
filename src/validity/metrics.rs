//! Metrics of a predictor against outcomes: ROC AUC (ties count one half),
//! Spearman's rank correlation, top-fraction lift, rates by band, and the
//! bootstrap that gives their intervals.
//!
//! Owns only arithmetic on aligned slices (one value per relationship); it
//! knows nothing of events, scores or outcomes' meanings. Every function is
//! deterministic: sums run in a fixed order, ties are resolved by their
//! expected value under random tie-breaking (never by position), and the
//! bootstrap draws from ChaCha8 streams numbered by replicate, so the result
//! does not depend on the thread count.
//!
//! A label is `Option<bool>`: `None` means the outcome is not defined for
//! that item (churn of a relationship that never purchased) and the item is
//! left out of that outcome's metrics. Weights are bootstrap multiplicities
//! (1.0 each for the point estimate).

use std::ops::Range;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Which end of a predictor is expected to carry the outcome: `High` for a
/// good outcome of a health score (a purchase), `Low` for a bad one (churn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    High,
    Low,
}

/// Items ordered by a predictor's value, ascending, with their tie groups.
/// Built once per predictor; every metric and bootstrap replicate then runs
/// in one pass over it.
#[derive(Debug, Clone)]
pub struct Ranked {
    order: Vec<u32>,
    /// Start of each group of equal values in `order`, then `order.len()`.
    bounds: Vec<u32>,
}

impl Ranked {
    /// Orders `values` (no NaN; `-inf` is allowed and ranks lowest).
    ///
    /// # Panics
    /// On a NaN value: a predictor without a value must be given one
    /// explicitly by its caller (e.g. `-inf` for "never purchased").
    pub fn new(values: &[f64]) -> Ranked {
        assert!(
            values.iter().all(|v| !v.is_nan()),
            "a predictor value is NaN"
        );
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_by(|&a, &b| values[a as usize].total_cmp(&values[b as usize]));
        let mut bounds = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            // -0.0 and 0.0 are one value.
            if k == 0 || values[i as usize] != values[order[k - 1] as usize] {
                bounds.push(k as u32);
            }
        }
        bounds.push(order.len() as u32);
        Ranked { order, bounds }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Tie groups in ascending order of value, as ranges of `order`.
    fn groups(&self) -> impl DoubleEndedIterator<Item = &[u32]> + '_ {
        self.bounds
            .windows(2)
            .map(|w| &self.order[w[0] as usize..w[1] as usize])
    }

    /// Per tie group (ascending): (positive weight, negative weight).
    fn group_weights<'a>(
        &'a self,
        labels: &'a [Option<bool>],
        weights: &'a [f64],
    ) -> impl DoubleEndedIterator<Item = (f64, f64)> + 'a {
        self.groups().map(move |g| {
            let (mut pos, mut neg) = (0.0, 0.0);
            for &i in g {
                match labels[i as usize] {
                    Some(true) => pos += weights[i as usize],
                    Some(false) => neg += weights[i as usize],
                    None => {}
                }
            }
            (pos, neg)
        })
    }
}

/// ROC AUC: the probability that a random positive item is ranked above a
/// random negative one by the predictor (in `direction`), ties counting one
/// half (Hanley & McNeil 1982; the Mann–Whitney U over n₊n₋). `None` when
/// there are no positives or no negatives.
pub fn roc_auc(
    ranked: &Ranked,
    labels: &[Option<bool>],
    weights: &[f64],
    direction: Direction,
) -> Option<f64> {
    let (mut num, mut neg_below, mut pos_total) = (0.0, 0.0, 0.0);
    for (pos, neg) in ranked.group_weights(labels, weights) {
        num += pos * neg_below + 0.5 * pos * neg;
        neg_below += neg;
        pos_total += pos;
    }
    let pairs = pos_total * neg_below;
    if pairs <= 0.0 {
        return None;
    }
    let auc = num / pairs;
    Some(match direction {
        Direction::High => auc,
        // Reversing the order swaps "above" and "below"; ties keep one half.
        Direction::Low => 1.0 - auc,
    })
}

/// Lift of the top `fraction` of items (by the predictor, in `direction`):
/// the rate of positives there over the rate in all items. Items tied at the
/// boundary enter in proportion to the room left, which is the expected
/// value under random tie-breaking. `None` when there are no positives.
pub fn lift(
    ranked: &Ranked,
    labels: &[Option<bool>],
    weights: &[f64],
    direction: Direction,
    fraction: f64,
) -> Option<f64> {
    let groups: Vec<(f64, f64)> = ranked.group_weights(labels, weights).collect();
    let (pos_total, total) = groups
        .iter()
        .fold((0.0, 0.0), |(p, t), (pos, neg)| (p + pos, t + pos + neg));
    if pos_total <= 0.0 || total <= 0.0 {
        return None;
    }
    let room = fraction * total;
    let (mut left, mut taken_pos) = (room, 0.0);
    let mut take = |(pos, neg): &(f64, f64)| {
        let size = pos + neg;
        if left <= 0.0 || size <= 0.0 {
            return;
        }
        let share = (left / size).min(1.0);
        taken_pos += share * pos;
        left -= share * size;
    };
    match direction {
        Direction::High => groups.iter().rev().for_each(&mut take),
        Direction::Low => groups.iter().for_each(&mut take),
    }
    Some((taken_pos / room) / (pos_total / total))
}

/// Ranks 1..n with ties given their average rank.
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let ranked = Ranked::new(values);
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0usize;
    for g in ranked.groups() {
        // Positions start..start+len hold ranks start+1..=start+len.
        let average = start as f64 + (g.len() as f64 + 1.0) / 2.0;
        for &i in g {
            ranks[i as usize] = average;
        }
        start += g.len();
    }
    ranks
}

/// Spearman's rank correlation: Pearson's correlation of the average ranks
/// (the standard treatment of ties). `None` when either side is constant or
/// there are fewer than two items.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "spearman needs aligned slices");
    if x.len() < 2 {
        return None;
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// One band of a calibration table: items whose value is in `[from, to)`
/// (the last band includes `to`), and the rate of each outcome among those
/// for which it is defined (`None` where none is).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub items: usize,
    pub rates: Vec<Option<f64>>,
}

/// Rates of each labelled outcome by band of `values`. `edges` are
/// ascending; values outside them are clamped into the first or last band.
/// Empty bands are kept (a reader sees where nothing is).
pub fn bands(values: &[f64], edges: &[f64], labels: &[&[Option<bool>]]) -> Vec<Band> {
    assert!(edges.len() >= 2, "a band table needs at least two edges");
    let count = edges.len() - 1;
    let mut items = vec![0usize; count];
    let mut hits = vec![vec![(0usize, 0usize); labels.len()]; count];
    for (i, v) in values.iter().enumerate() {
        let band = edges[1..count].partition_point(|e| e <= v);
        items[band] += 1;
        for (k, l) in labels.iter().enumerate() {
            if let Some(hit) = l[i] {
                hits[band][k].1 += 1;
                hits[band][k].0 += usize::from(hit);
            }
        }
    }
    (0..count)
        .map(|b| Band {
            from: edges[b],
            to: edges[b + 1],
            items: items[b],
            rates: hits[b]
                .iter()
                .map(|&(h, n)| (n > 0).then(|| h as f64 / n as f64))
                .collect(),
        })
        .collect()
}

/// Edges of `parts` bands holding about equal numbers of items (quantiles
/// of `values`, deduplicated, so heavy ties give fewer bands).
pub fn quantile_edges(values: &[f64], parts: usize) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return Vec::new();
    }
    let mut edges: Vec<f64> = (0..=parts)
        .map(|k| sorted[((sorted.len() - 1) * k) / parts])
        .collect();
    edges.dedup();
    if edges.len() == 1 {
        edges.push(edges[0]);
    }
    edges
}

/// The nonparametric bootstrap (Efron & Tibshirani 1993): replicates
/// resample items with replacement, as multiplicity weights, within each
/// stratum (one stratum: the plain bootstrap). Replicate `k` draws from the
/// ChaCha8 stream `k` of `seed`, so the result is the same on any number of
/// threads.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    pub replicates: usize,
    pub seed: u64,
}

impl Bootstrap {
    /// Runs `stat` on the weights of every replicate of `n` items, in
    /// replicate order.
    pub fn run<T: Send>(&self, n: usize, stat: impl Fn(&[f64]) -> T + Sync) -> Vec<T> {
        self.run_stratified(std::slice::from_ref(&(0..n)), n, stat)
    }

    /// As [`Bootstrap::run`], resampling within each of `strata` (ranges
    /// of item positions) separately; items outside every stratum weigh 0.
    pub fn run_stratified<T: Send>(
        &self,
        strata: &[Range<usize>],
        n: usize,
        stat: impl Fn(&[f64]) -> T + Sync,
    ) -> Vec<T> {
        (0..self.replicates)
            .into_par_iter()
            .map(|k| {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(k as u64);
                let mut weights = vec![0.0; n];
                for s in strata {
                    let len = s.len();
                    for _ in 0..len {
                        weights[s.start + rng.random_range(0..len)] += 1.0;
                    }
                }
                stat(&weights)
            })
            .collect()
    }
}

/// The percentile interval holding `level` of the replicates' values
/// (linear interpolation between order statistics, Hyndman & Fan type 7);
/// `None` values (a replicate where the metric is undefined) are left out.
/// `None` when fewer than two values remain.
pub fn percentile_interval(values: &[Option<f64>], level: f64) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.len() < 2 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let h = (v.len() - 1) as f64 * p;
        let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
        v[lo] + (h - lo as f64) * (v[hi] - v[lo])
    };
    let tail = (1.0 - level) / 2.0;
    Some((q(tail), q(1.0 - tail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ones(n: usize) -> Vec<f64> {
        vec![1.0; n]
    }

    /// Scores 1, 2, 2, 3, 4 with labels n, p, n, p, p. Pairs (positive,
    /// negative): (2,1) 1, (2,2) ½, (3,1) 1, (3,2) 1, (4,1) 1, (4,2) 1:
    /// 5.5 of 6.
    #[test]
    fn auc_counts_ties_as_one_half() {
        let values = [1.0, 2.0, 2.0, 3.0, 4.0];
        let labels = [Some(false), Some(true), Some(false), Some(true), Some(true)];
        let r = Ranked::new(&values);
        let auc = roc_auc(&r, &labels, &ones(5), Direction::High).unwrap();
        assert!((auc - 5.5 / 6.0).abs() < 1e-12, "{auc}");
        let low = roc_auc(&r, &labels, &ones(5), Direction::Low).unwrap();
        assert!((low - 0.5 / 6.0).abs() < 1e-12, "{low}");
        // Undefined labels are left out; one class only gives no AUC.
        let some = [None, Some(true), None, Some(true), Some(true)];
        assert_eq!(roc_auc(&r, &some, &ones(5), Direction::High), None);
        // Weights are multiplicities: doubling the tied negative doubles its pairs.
        let w = [1.0, 1.0, 2.0, 1.0, 1.0];
        let auc = roc_auc(&r, &labels, &w, Direction::High).unwrap();
        // Negatives 1 (w1) and 2 (w2): (2,1) 1, (2,2) ½·2, (3,·) 3, (4,·) 3 → 8 of 9.
        assert!((auc - 8.0 / 9.0).abs() < 1e-12, "{auc}");
    }

    /// Ten items, two positives; the top 20% by value is items 9 and 8
    /// (value 9 and a tie of two at 8, of which half a slot is left).
    #[test]
    fn lift_splits_a_tied_boundary_in_proportion() {
        let values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 8.0, 9.0];
        let mut labels = vec![Some(false); 10];
        labels[9] = Some(true);
        labels[7] = Some(true);
        let r = Ranked::new(&values);
        // Top 20% = 2 slots: item 9 (positive) and one of the tied pair at
        // 8 (one positive of two: half a positive expected). Rate 1.5/2 over
        // a base rate 2/10: lift 3.75.
        let l = lift(&r, &labels, &ones(10), Direction::High, 0.2).unwrap();
        assert!((l - 3.75).abs() < 1e-12, "{l}");
        // From the bottom: items 0 and 1, no positive.
        let l = lift(&r, &labels, &ones(10), Direction::Low, 0.2).unwrap();
        assert_eq!(l, 0.0);
    }

    /// x = 1, 2, 2, 4 and y = 1, 3, 2, 2: ranks (1, 2.5, 2.5, 4) and
    /// (1, 4, 2.5, 2.5), means 2.5; deviations (-1.5, 0, 0, 1.5) and
    /// (-1.5, 1.5, 0, 0): covariance 2.25, variances 4.5 and 4.5, so 0.5.
    #[test]
    fn spearman_uses_average_ranks() {
        let rho = spearman(&[1.0, 2.0, 2.0, 4.0], &[1.0, 3.0, 2.0, 2.0]).unwrap();
        assert!((rho - 0.5).abs() < 1e-12, "{rho}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
        let perfect = spearman(&[3.0, 1.0, 2.0], &[30.0, 10.0, 20.0]).unwrap();
        assert!((perfect - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bands_count_rates_where_defined() {
        let values = [5.0, 15.0, 15.0, 25.0, 30.0];
        let bought = [Some(true), Some(false), Some(true), None, Some(true)];
        let table = bands(&values, &[0.0, 10.0, 20.0, 30.0], &[&bought]);
        assert_eq!(table.len(), 3);
        assert_eq!(
            (table[0].items, table[1].items, table[2].items),
            (1, 2, 2),
            "30 falls in the last band"
        );
        assert_eq!(table[1].rates[0], Some(0.5));
        assert_eq!(
            table[2].rates[0],
            Some(1.0),
            "the undefined label is left out"
        );
        assert_eq!(quantile_edges(&[1.0, 1.0, 1.0], 10), vec![1.0, 1.0]);
    }

    #[test]
    fn bootstrap_is_reproducible_and_resamples_within_strata() {
        let b = Bootstrap {
            replicates: 50,
            seed: 7,
        };
        let sums = |w: &[f64]| (w[..3].iter().sum::<f64>(), w[3..].iter().sum::<f64>());
        let one = b.run_stratified(&[0..3, 3..5], 5, sums);
        assert_eq!(one, b.run_stratified(&[0..3, 3..5], 5, sums));
        assert!(one.iter().all(|&(a, c)| a == 3.0 && c == 2.0), "{one:?}");
        let plain = b.run(5, |w| w.to_vec());
        assert!(plain.iter().all(|w| w.iter().sum::<f64>() == 5.0));
        assert!(plain.windows(2).any(|p| p[0] != p[1]), "replicates differ");
        let interval = percentile_interval(&[Some(1.0), None, Some(3.0), Some(2.0)], 0.5).unwrap();
        assert_eq!(interval, (1.5, 2.5));
    }
}
