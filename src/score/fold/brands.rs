//! Brand KPIs: the service and sales figures of a brand's summary (seed
//! 003's KPIs), counted as events are folded. They move no score.

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
    /// Sum of the purchases' amounts, in the model's base currency.
    pub sales_amount: f64,
    /// Sum of the brand_sales reports, in the model's base currency.
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
    /// Sum of the waits, seconds, where given.
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
        self.sales_amount += value.unwrap_or(0.0);
    }

    /// A brand_sales report of `amount` in the base currency.
    pub(crate) fn reported(&mut self, amount: f64) {
        self.reported_sales += amount;
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
            self.wait_sum += w;
            self.wait_count += 1;
            self.wait_max = self.wait_max.max(w);
        }
        self.transfers_sum += u64::from(c.transfers.unwrap_or(0));
    }
}
