//! What happened to each relationship in a window after a cut (the outcomes
//! a score is held against), and what an analyst's baselines know at the cut
//! (recency, frequency and monetary value of purchases).
//!
//! Owns the definitions of the outcomes (issue #15) and reads events only:
//! it must not look at scores, and it must not read an event later than the
//! window's end, nor let an event at or after the cut into the baselines, so
//! that nothing from the future leaks into either side.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::metrics::Direction;
use crate::domain::{CurrencyTable, EntityId, Event, EventKind};

/// A relationship: (person, brand).
pub type Pair = (EntityId, EntityId);

/// The amount of a purchase in the model's base currency (converted by its
/// rate table, as the fold converts it), `None` for any other event, and 0
/// for a currency the table lacks (a stored event may predate a change of
/// table; the fold counts it as a purchase of unknown value too).
pub fn purchase_amount(event: &Event, currencies: &CurrencyTable) -> Option<f64> {
    match &event.kind {
        EventKind::Purchase {
            amount, currency, ..
        } => Some(currencies.to_base(*amount, *currency).unwrap_or(0.0)),
        _ => None,
    }
}

/// VADER's own threshold for a negative compound score (Hutto & Gilbert
/// 2014; the vaderSentiment README): at most this is negative.
pub const NEGATIVE_SENTIMENT: f64 = -0.05;
/// A review of at most this many stars is negative.
pub const NEGATIVE_RATING: u8 = 2;
/// A service contact rated at most this CSAT is a complaint.
pub const COMPLAINT_CSAT: u8 = 2;

/// A time window `(from, to]`: after the cut, up to and including the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from < t && t <= self.to
    }

    /// Its length in days.
    pub fn days(&self) -> f64 {
        (self.to - self.from).num_seconds() as f64 / 86_400.0
    }
}

/// The yes/no outcomes a backtest holds scores against (issue #15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// At least one purchase in the window.
    Purchase,
    /// A purchase before the cut and none in the window (defined only for
    /// relationships that had purchased before the cut).
    Churn,
    /// A post or mention with sentiment at most −0.05, or a review of at
    /// most two stars (defined for relationships that spoke in the window:
    /// a post, mention or review).
    Negative,
    /// An unfollow of the brand (defined for people who followed the brand
    /// at the cut).
    Unfollow,
    /// A service contact with CSAT at most 2, or unresolved (defined for
    /// relationships with a service contact in the window).
    Complaint,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Purchase,
        Outcome::Churn,
        Outcome::Negative,
        Outcome::Unfollow,
        Outcome::Complaint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Purchase => "purchase",
            Outcome::Churn => "churn",
            Outcome::Negative => "negative",
            Outcome::Unfollow => "unfollow",
            Outcome::Complaint => "complaint",
        }
    }

    /// Which end of a health score should carry it: high scores for a
    /// purchase, low scores for everything else.
    pub fn direction(self) -> Direction {
        match self {
            Outcome::Purchase => Direction::High,
            _ => Direction::Low,
        }
    }

    /// The relationships it is defined for (its risk set).
    pub fn among(self) -> &'static str {
        match self {
            Outcome::Purchase => "every relationship",
            Outcome::Churn => "relationships that purchased before the cut",
            Outcome::Negative => "relationships that posted, mentioned or reviewed in the horizon",
            Outcome::Unfollow => "people who followed the brand at the cut",
            Outcome::Complaint => "relationships with a service contact in the horizon",
        }
    }

    /// What the data must contain for the outcome to be observable at all.
    pub fn needs(self) -> &'static str {
        match self {
            Outcome::Purchase | Outcome::Churn => "purchase events",
            Outcome::Negative => "post, mention or review events",
            Outcome::Unfollow => "unfollow events of a brand",
            Outcome::Complaint => "service events",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What happened to one relationship inside the window.
#[derive(Debug, Clone, Copy, Default)]
struct Happened {
    purchases: u32,
    amount: f64,
    /// Posted, mentioned or reviewed.
    spoke: bool,
    negative: bool,
    unfollowed: bool,
    /// Had a service contact.
    contacted: bool,
    complained: bool,
}

/// A relationship's purchases before the cut (the baselines' inputs).
#[derive(Debug, Clone, Copy, Default)]
struct History {
    purchases: u32,
    amount: f64,
    last: Option<DateTime<Utc>>,
    /// Followed the brand at the cut (the last follow or unfollow before it).
    following: bool,
}

/// The outcomes of every relationship in a window, and the purchase history
/// of every relationship before it, from one pass over the log.
#[derive(Debug, Clone)]
pub struct Observed {
    pub window: Window,
    /// Whether the log up to the window's end holds any event that could
    /// produce each outcome; an outcome it never contains is absent, not 0.
    present: [bool; 5],
    happened: HashMap<Pair, Happened>,
    history: HashMap<Pair, History>,
}

impl Observed {
    /// Reads `events` (any order). Events after `window.to` are not looked
    /// at; events before `window.from` only feed the history; events at
    /// exactly `window.from` feed neither (the score at the cut does not
    /// see them, and the window starts after them).
    pub fn new(events: &[Event], window: Window, currencies: &CurrencyTable) -> Observed {
        let mut seen: Vec<&Event> = events.iter().filter(|e| e.time <= window.to).collect();
        // Canonical order: a follow and an unfollow of the same brand must
        // be replayed as they happened.
        seen.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        // An unfollow counts only if its target is a brand; an id's kind is
        // fixed by the roles it plays in the (visible) log.
        let brands: BTreeSet<&EntityId> = seen
            .iter()
            .flat_map(|e| e.references())
            .filter(|(_, role)| *role == crate::domain::Role::Brand)
            .map(|(id, _)| id)
            .collect();
        let mut present = [false; 5];
        let mut happened: HashMap<Pair, Happened> = HashMap::new();
        let mut history: HashMap<Pair, History> = HashMap::new();
        for e in seen {
            use EventKind::*;
            let inside = window.contains(e.time);
            let before = e.time < window.from;
            match &e.kind {
                Purchase { person, brand, .. } => {
                    present[Outcome::Purchase.index()] = true;
                    present[Outcome::Churn.index()] = true;
                    let amount = purchase_amount(e, currencies).unwrap_or(0.0);
                    let key = (person.clone(), brand.clone());
                    if inside {
                        let h = happened.entry(key).or_default();
                        h.purchases += 1;
                        h.amount += amount;
                    } else if before {
                        let h = history.entry(key).or_default();
                        h.purchases += 1;
                        h.amount += amount;
                        h.last = h.last.max(Some(e.time));
                    }
                }
                Post {
                    person,
                    brand,
                    sentiment,
                    ..
                }
                | Mention {
                    person,
                    brand,
                    sentiment,
                    ..
                } => {
                    present[Outcome::Negative.index()] = true;
                    if inside {
                        let h = happened.entry((person.clone(), brand.clone())).or_default();
                        h.spoke = true;
                        h.negative |= sentiment.value <= NEGATIVE_SENTIMENT;
                    }
                }
                Review {
                    person,
                    brand,
                    rating,
                    ..
                } => {
                    present[Outcome::Negative.index()] = true;
                    if inside {
                        let h = happened.entry((person.clone(), brand.clone())).or_default();
                        h.spoke = true;
                        h.negative |= *rating <= NEGATIVE_RATING;
                    }
                }
                Follow { person, target, .. } if brands.contains(target) && before => {
                    history
                        .entry((person.clone(), target.clone()))
                        .or_default()
                        .following = true;
                }
                Unfollow { person, target } if brands.contains(target) => {
                    present[Outcome::Unfollow.index()] = true;
                    if inside {
                        happened
                            .entry((person.clone(), target.clone()))
                            .or_default()
                            .unfollowed = true;
                    } else if before {
                        history
                            .entry((person.clone(), target.clone()))
                            .or_default()
                            .following = false;
                    }
                }
                Service {
                    person,
                    brand,
                    csat,
                    resolved,
                    ..
                } => {
                    present[Outcome::Complaint.index()] = true;
                    if inside {
                        let h = happened.entry((person.clone(), brand.clone())).or_default();
                        h.contacted = true;
                        h.complained |=
                            csat.is_some_and(|c| c <= COMPLAINT_CSAT) || *resolved == Some(false);
                    }
                }
                _ => {}
            }
        }
        Observed {
            window,
            present,
            happened,
            history,
        }
    }

    /// Whether the data holds any event that could produce `outcome`.
    pub fn present(&self, outcome: Outcome) -> bool {
        self.present[outcome.index()]
    }

    /// One label per pair: `Some(true)` where the outcome happened,
    /// `None` where the pair is outside the outcome's risk set
    /// ([`Outcome::among`]: churn without an earlier purchase, negative talk
    /// without any talk, an unfollow without a follow, a complaint without a
    /// contact).
    /// `None` overall when the outcome is absent from the data.
    pub fn labels(&self, outcome: Outcome, pairs: &[Pair]) -> Option<Vec<Option<bool>>> {
        if !self.present(outcome) {
            return None;
        }
        Some(
            pairs
                .iter()
                .map(|pair| {
                    let h = self.happened.get(pair).copied().unwrap_or_default();
                    match outcome {
                        Outcome::Purchase => Some(h.purchases > 0),
                        Outcome::Churn => self
                            .history
                            .get(pair)
                            .filter(|b| b.purchases > 0)
                            .map(|_| h.purchases == 0),
                        Outcome::Negative => h.spoke.then_some(h.negative),
                        Outcome::Unfollow => self
                            .history
                            .get(pair)
                            .filter(|b| b.following)
                            .map(|_| h.unfollowed),
                        Outcome::Complaint => h.contacted.then_some(h.complained),
                    }
                })
                .collect(),
        )
    }

    /// The amount each pair spent in the window (0 without a purchase);
    /// `None` when the data holds no purchase at all.
    pub fn amounts(&self, pairs: &[Pair]) -> Option<Vec<f64>> {
        self.present(Outcome::Purchase).then(|| {
            pairs
                .iter()
                .map(|p| self.happened.get(p).map_or(0.0, |h| h.amount))
                .collect()
        })
    }

    /// The analyst's baselines at the cut, oriented so that higher means
    /// healthier: recency (minus the days since the last purchase; `-inf`
    /// for none), frequency (purchases before the cut) and monetary value
    /// (amount spent before the cut, base currency).
    pub fn baselines(&self, pairs: &[Pair]) -> [(&'static str, Vec<f64>); 3] {
        let get = |p: &Pair| self.history.get(p).copied().unwrap_or_default();
        let cut = self.window.from;
        [
            (
                "recency",
                pairs
                    .iter()
                    .map(|p| {
                        get(p).last.map_or(f64::NEG_INFINITY, |t| {
                            -((cut - t).num_seconds() as f64) / 86_400.0
                        })
                    })
                    .collect(),
            ),
            (
                "frequency",
                pairs.iter().map(|p| f64::from(get(p).purchases)).collect(),
            ),
            ("monetary", pairs.iter().map(|p| get(p).amount).collect()),
        ]
    }
}
