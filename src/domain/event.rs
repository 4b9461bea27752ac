//! Events: what happened, to whom, when (event time, not arrival time).
//! A validated `Event` is always within its documented ranges (`bounds.rs`);
//! `ingest` is the only way in from the wire.
//!
//! Stored events are read back with this type's `Deserialize`: a field added
//! later has a default, so an old store still opens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Currency, EntityId, EventId};

/// A free JSON object an event carries for its sender (never scored).
pub type FreeObject = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub time: DateTime<Utc>,
    pub kind: EventKind,
    /// Fields of the contract that this event's type does not use (a
    /// `rating` on a purchase), kept as sent so the pipeline loses nothing;
    /// never scored. The ingest answer names each in a warning. Content, as
    /// the fields are (`store::Digest`); declared before `attributes`, which
    /// are not, so the stores can serialise an event and hash its content
    /// in one pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<FreeObject>,
    /// Free object carried along for the sender; never scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<FreeObject>,
}

/// Where a post's or review's sentiment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentimentSource {
    /// The sender gave the number.
    Given,
    /// Fusion scored the event's text with VADER.
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    /// In [-1, 1].
    pub value: f64,
    pub source: SentimentSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// `amount` in `currency` as sent; scores and totals convert it to the
    /// model's base currency.
    Purchase {
        person: EntityId,
        brand: EntityId,
        amount: f64,
        currency: Currency,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    BrandSales {
        brand: EntityId,
        amount: f64,
        #[serde(default = "Currency::default_currency")]
        currency: Currency,
    },
    Post {
        person: EntityId,
        brand: EntityId,
        sentiment: Sentiment,
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Mention {
        person: EntityId,
        brand: EntityId,
        sentiment: Sentiment,
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Review {
        person: EntityId,
        brand: EntityId,
        rating: u8,
        sentiment: Option<Sentiment>,
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Service {
        person: EntityId,
        brand: EntityId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        csat: Option<u8>,
        effort: Option<u8>,
        resolved: Option<bool>,
        wait_seconds: Option<f64>,
        transfers: Option<u32>,
    },
    Endorsement {
        person: EntityId,
        brand: EntityId,
        strength: f64,
    },
    Audience {
        person: EntityId,
        followers: u64,
    },
    Follow {
        person: EntityId,
        target: EntityId,
        strength: f64,
    },
    Unfollow {
        person: EntityId,
        target: EntityId,
    },
    Occasion {
        occasion: EntityId,
        brand: EntityId,
        performers: Vec<EntityId>,
        tags: Vec<String>,
    },
    Attendance {
        person: EntityId,
        occasion: EntityId,
    },
    Cause {
        brand: EntityId,
        tags: Vec<String>,
        amount: f64,
        #[serde(default = "Currency::default_currency")]
        currency: Currency,
    },
    Consent {
        person: EntityId,
        granted: bool,
    },
}

/// The `type` of an event on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Purchase,
    BrandSales,
    Post,
    Mention,
    Review,
    Service,
    Endorsement,
    Audience,
    Follow,
    Unfollow,
    Occasion,
    Attendance,
    Cause,
    Consent,
}

impl EventType {
    pub const ALL: [EventType; 14] = [
        EventType::Purchase,
        EventType::BrandSales,
        EventType::Post,
        EventType::Mention,
        EventType::Review,
        EventType::Service,
        EventType::Endorsement,
        EventType::Audience,
        EventType::Follow,
        EventType::Unfollow,
        EventType::Occasion,
        EventType::Attendance,
        EventType::Cause,
        EventType::Consent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Purchase => "purchase",
            EventType::BrandSales => "brand_sales",
            EventType::Post => "post",
            EventType::Mention => "mention",
            EventType::Review => "review",
            EventType::Service => "service",
            EventType::Endorsement => "endorsement",
            EventType::Audience => "audience",
            EventType::Follow => "follow",
            EventType::Unfollow => "unfollow",
            EventType::Occasion => "occasion",
            EventType::Attendance => "attendance",
            EventType::Cause => "cause",
            EventType::Consent => "consent",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl EventKind {
    /// Where a person-brand interaction took place (`web`, `store`, `phone`,
    /// ...), as the sender named it; `None` for other types.
    pub fn channel(&self) -> Option<&str> {
        match self {
            EventKind::Purchase { channel, .. }
            | EventKind::Post { channel, .. }
            | EventKind::Mention { channel, .. }
            | EventKind::Review { channel, .. }
            | EventKind::Service { channel, .. } => channel.as_deref(),
            _ => None,
        }
    }

    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::Purchase { .. } => EventType::Purchase,
            EventKind::BrandSales { .. } => EventType::BrandSales,
            EventKind::Post { .. } => EventType::Post,
            EventKind::Mention { .. } => EventType::Mention,
            EventKind::Review { .. } => EventType::Review,
            EventKind::Service { .. } => EventType::Service,
            EventKind::Endorsement { .. } => EventType::Endorsement,
            EventKind::Audience { .. } => EventType::Audience,
            EventKind::Follow { .. } => EventType::Follow,
            EventKind::Unfollow { .. } => EventType::Unfollow,
            EventKind::Occasion { .. } => EventType::Occasion,
            EventKind::Attendance { .. } => EventType::Attendance,
            EventKind::Cause { .. } => EventType::Cause,
            EventKind::Consent { .. } => EventType::Consent,
        }
    }
}

impl Event {
    /// Every entity the event names, with the role it plays there. The role
    /// gives the kind of an entity created on first reference.
    pub fn references(&self) -> Vec<(&EntityId, Role)> {
        use EventKind::*;
        match &self.kind {
            Purchase { person, brand, .. }
            | Post { person, brand, .. }
            | Mention { person, brand, .. }
            | Review { person, brand, .. }
            | Service { person, brand, .. } => vec![(person, Role::Person), (brand, Role::Brand)],
            Endorsement { person, brand, .. } => {
                vec![(person, Role::Influencer), (brand, Role::Brand)]
            }
            BrandSales { brand, .. } | Cause { brand, .. } => vec![(brand, Role::Brand)],
            Audience { person, .. } | Consent { person, .. } => vec![(person, Role::Person)],
            Follow { person, target, .. } | Unfollow { person, target } => {
                vec![(person, Role::Person), (target, Role::FollowTarget)]
            }
            Occasion {
                occasion,
                brand,
                performers,
                ..
            } => {
                let mut refs = vec![(occasion, Role::Occasion), (brand, Role::Brand)];
                refs.extend(performers.iter().map(|p| (p, Role::Influencer)));
                refs
            }
            Attendance { person, occasion } => {
                vec![(person, Role::Person), (occasion, Role::Occasion)]
            }
        }
    }

    /// Whether the event names this entity in any role (used by erasure).
    pub fn mentions(&self, id: &EntityId) -> bool {
        self.references().iter().any(|(r, _)| *r == id)
    }
}

/// The role an entity plays in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Any person; a first reference creates a consumer.
    Person,
    /// A person acting as an influencer (endorsing, performing).
    Influencer,
    Brand,
    Occasion,
    /// Whoever is followed: a person or a brand, whichever it already is;
    /// a first reference creates a person (consumer).
    FollowTarget,
}
