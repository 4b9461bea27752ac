//! Money: ISO 4217 currency codes and the rate table that converts an amount
//! to the base currency. The table is data (the model's `[currency]`
//! section, `models/default.toml`), so a deployment updates its rates
//! without a release. Events keep the amount and currency they were sent
//! with; scoring and brand totals use the converted amount. No IO.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// An ISO 4217 currency code: three uppercase ASCII letters (`EUR`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// The currency of an amount sent without one (the contract's default).
pub const DEFAULT_CURRENCY: Currency = Currency(*b"USD");

/// A currency code that is not three uppercase ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a three-letter ISO 4217 code such as \"EUR\"")]
pub struct CurrencyError;

impl Currency {
    /// The currency of a code (`EUR`); errors unless it is three uppercase
    /// ASCII letters (whether the model's table knows it is another question).
    pub fn new(code: &str) -> Result<Self, CurrencyError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(CurrencyError),
        }
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        // Three ASCII letters, checked at construction.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The default currency, for stored events from before a type carried one.
    pub fn default_currency() -> Self {
        DEFAULT_CURRENCY
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(s: String) -> Result<Self, CurrencyError> {
        Self::new(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Bounds of a rate in the table, in units of the currency per unit of
/// `quoted_against`. With them a conversion factor is at most 1e15, so a
/// converted amount stays finite whatever sums it enters (`bounds.rs`).
pub const RATE_RANGE: (f64, f64) = (1e-6, 1e9);

/// Exchange rates, as a central bank publishes them: `rates[c]` units of
/// `c` buy one unit of `quoted_against` (the ECB quotes against EUR). An
/// amount `a` in `c` is `a · rates[base] / rates[c]` in `base`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyTable {
    /// The currency scores and brand totals count in.
    pub base: Currency,
    /// The currency the rates are quoted against (its own rate is 1).
    pub quoted_against: Currency,
    /// The day the rates are from.
    pub date: NaiveDate,
    /// Units of each currency per unit of `quoted_against`.
    pub rates: BTreeMap<Currency, f64>,
}

impl CurrencyTable {
    /// Whether amounts in `c` can be converted.
    pub fn knows(&self, c: Currency) -> bool {
        self.rates.contains_key(&c)
    }

    /// `amount` in `currency`, converted to the base currency; `None` for a
    /// currency the table lacks (validation refuses those, but a stored
    /// event may predate a change of table).
    pub fn to_base(&self, amount: f64, currency: Currency) -> Option<f64> {
        if currency == self.base {
            return Some(amount);
        }
        let (to, from) = (self.rates.get(&self.base)?, self.rates.get(&currency)?);
        Some(amount * (to / from))
    }

    /// Why the table cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let (lo, hi) = RATE_RANGE;
        if let Some((c, r)) = self
            .rates
            .iter()
            .find(|(_, r)| !(r.is_finite() && (lo..=hi).contains(*r)))
        {
            return Some(format!(
                "currency.rates.{c} must be a number in [{lo:e}, {hi:e}], got {r}"
            ));
        }
        if !self.knows(self.base) {
            return Some(format!(
                "currency.rates must have a rate for the base currency {}",
                self.base
            ));
        }
        if self.rates.get(&self.quoted_against) != Some(&1.0) {
            return Some(format!(
                "currency.rates.{0} must be 1, since the rates are quoted against {0}",
                self.quoted_against
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_three_uppercase_letters() {
        assert_eq!(Currency::new("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", "ÉUR", ""] {
            assert_eq!(Currency::new(bad), Err(CurrencyError), "{bad}");
        }
    }

    #[test]
    fn conversion_goes_through_the_quote_currency() {
        let c = |s| Currency::new(s).unwrap();
        let table = CurrencyTable {
            base: c("USD"),
            quoted_against: c("EUR"),
            date: NaiveDate::from_ymd_opt(2024, 6, 28).unwrap(),
            rates: [(c("EUR"), 1.0), (c("USD"), 1.0705), (c("JPY"), 171.94)].into(),
        };
        assert_eq!(table.problem(), None);
        assert_eq!(table.to_base(10.0, c("USD")), Some(10.0));
        assert_eq!(table.to_base(100.0, c("EUR")), Some(107.05));
        let yen = table.to_base(10_000.0, c("JPY")).unwrap();
        assert!((yen - 62.26).abs() < 0.01, "{yen}");
        assert_eq!(table.to_base(1.0, c("GBP")), None);
    }
}
