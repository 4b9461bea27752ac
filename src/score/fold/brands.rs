//! Brand KPIs: the service and sales figures of a brand's summary (seed
//! 003's KPIs), counted as events are folded. They move no score.
//!
//! Every figure is independent of the order events are folded in (a late
//! event is folded after later ones, `late.rs`): counts and maxima are,
//! sums of ratings, CSAT and effort are sums of small integers (exact in
//! an f64), and the sums of amounts and waits are kept exactly
//! ([`ExactSum`]) and read correctly rounded.

use serde::{Deserialize, Serialize};

/// Service and sales figures of a brand, for its summary.
///
/// Every sum is of values validation bounded (`domain::bounds`), so none can
/// become infinite: the worst, `sales_amount`, adds converted amounts of at
/// most 1e27 each, under 2e46 after even 2^64 purchases. Amounts are in the
/// model's base currency.
/// Snapshots store it with its serde derive (`score::snapshot`: a
/// score-internal struct of plain numbers, never the stored event format).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BrandStats {
    /// Purchases from the brand.
    pub purchases: u64,
    /// Sum of the purchases' amounts, in the model's base currency (the
    /// exact sum, correctly rounded: `sums`).
    pub sales_amount: f64,
    /// Sum of the brand_sales reports, in the model's base currency (the
    /// exact sum, correctly rounded).
    pub reported_sales: f64,
    /// Support contacts (`service` events).
    pub service_contacts: u64,
    /// Sum of the contacts' CSAT (1–5) where given.
    pub csat_sum: f64,
    /// Contacts that gave a CSAT.
    pub csat_count: u64,
    /// Sum of the contacts' customer effort (1–7) where given.
    pub effort_sum: f64,
    /// Contacts that gave an effort score.
    pub effort_count: u64,
    /// Contacts resolved.
    pub resolved_count: u64,
    /// Contacts that said whether they were resolved.
    pub resolution_known: u64,
    /// Contacts resolved without a transfer.
    pub first_contact_resolved: u64,
    /// Sum of the waits, seconds, where given (the exact sum, correctly
    /// rounded).
    pub wait_sum: f64,
    /// Contacts that gave a wait.
    pub wait_count: u64,
    /// The longest wait, seconds.
    pub wait_max: f64,
    /// Transfers over all contacts.
    pub transfers_sum: u64,
    /// Reviews of the brand.
    pub reviews: u64,
    /// Sum of the reviews' ratings (1–5).
    pub rating_sum: f64,
    /// The exact sums behind `sales_amount`, `reported_sales` and
    /// `wait_sum`, in that order (module docs).
    pub(crate) sums: [ExactSum; 3],
}

/// A sum of f64s kept exactly, as non-overlapping partials (Shewchuk,
/// "Adaptive precision floating-point arithmetic and fast robust geometric
/// predicates", 1997; the algorithm of Python's `math.fsum`): its value,
/// the exact sum correctly rounded, is the same whatever order the terms
/// were added in. A few partials at most for sums of amounts (each term
/// adds at most one). The terms must be finite and their running sums stay
/// finite (`BrandStats`' bound).
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    /// Adds a term.
    pub(crate) fn add(&mut self, mut x: f64) {
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    /// The exact sum rounded to nearest, ties to even (CPython's
    /// `math_fsum`, its final step: the half-way correction).
    pub(crate) fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

/// Shows the value (the partials differ with the order of the terms).
impl std::fmt::Debug for ExactSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExactSum({:?})", self.value())
    }
}

/// Two exact sums are equal when their values are: the partials of one
/// sum differ with the order its terms came in.
impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        self.value().to_bits() == other.value().to_bits()
    }
}

/// A support contact as the KPIs count it.
pub(crate) struct Contact {
    pub csat: Option<u8>,
    pub effort: Option<u8>,
    pub resolved: Option<bool>,
    pub wait_seconds: Option<f64>,
    pub transfers: Option<u32>,
}

impl BrandStats {
    /// A purchase worth `value` in the base currency (`None`: a currency the
    /// model's table lacks, counted with no value).
    pub(crate) fn purchase(&mut self, value: Option<f64>) {
        self.purchases += 1;
        self.sums[0].add(value.unwrap_or(0.0));
        self.sales_amount = self.sums[0].value();
    }

    /// A brand_sales report of `amount` in the base currency.
    pub(crate) fn reported(&mut self, amount: f64) {
        self.sums[1].add(amount);
        self.reported_sales = self.sums[1].value();
    }

    /// A review with its rating.
    pub(crate) fn review(&mut self, rating: u8) {
        self.reviews += 1;
        self.rating_sum += f64::from(rating);
    }

    /// A support contact.
    pub(crate) fn contact(&mut self, c: &Contact) {
        self.service_contacts += 1;
        if let Some(v) = c.csat {
            self.csat_sum += f64::from(v);
            self.csat_count += 1;
        }
        if let Some(e) = c.effort {
            self.effort_sum += f64::from(e);
            self.effort_count += 1;
        }
        if let Some(r) = c.resolved {
            self.resolution_known += 1;
            if r {
                self.resolved_count += 1;
                if c.transfers.unwrap_or(0) == 0 {
                    self.first_contact_resolved += 1;
                }
            }
        }
        if let Some(w) = c.wait_seconds {
            self.sums[2].add(w);
            self.wait_sum = self.sums[2].value();
            self.wait_count += 1;
            self.wait_max = self.wait_max.max(w);
        }
        self.transfers_sum += u64::from(c.transfers.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::ExactSum;

    fn sum(terms: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for t in terms {
            s.add(*t);
        }
        s.value()
    }

    /// The value is the exact sum correctly rounded, in any order: where
    /// plain addition loses the small terms, or depends on the order.
    #[test]
    fn an_exact_sum_is_correctly_rounded_in_any_order() {
        assert_eq!(sum(&[1e16, 1.0, 1.0, -1e16]), 2.0);
        assert_eq!(sum(&[0.1, 0.2, 0.3]), sum(&[0.3, 0.2, 0.1]));
        assert_ne!(
            (0.1 + 0.2) + 0.3,
            (0.3 + 0.2) + 0.1,
            "the case plain sums get wrong"
        );
        assert_eq!(sum(&[0.1, 0.2, 0.3]), 0.6);
        // A half-way case: 1 + 2^-53 + 2^-106 rounds up, not to even.
        let ulp = f64::EPSILON / 2.0;
        assert_eq!(sum(&[1.0, ulp, ulp * ulp]), 1.0 + f64::EPSILON);
        assert_eq!(sum(&[ulp * ulp, ulp, 1.0]), 1.0 + f64::EPSILON);
        assert_eq!(sum(&[]), 0.0);
        let mut terms: Vec<f64> = (1..200).map(|i| 1.0 / f64::from(i) * 1e3).collect();
        let forward = sum(&terms);
        terms.reverse();
        assert_eq!(forward.to_bits(), sum(&terms).to_bits());
    }
}
