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

/// One thing that happened: a validated event (every field within
/// `bounds.rs`), with its id, its event time and what happened. Events are
/// the log's records and the fold's input; `ingest` builds them from the
/// wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The sender's idempotency key: the same id twice is one event.
    pub id: EventId,
    /// When it happened (event time, not arrival time), UTC, from
    /// 1900-01-01 up to 2200-01-01 when it was accepted.
    pub time: DateTime<Utc>,
    /// What happened, with the fields of its type.
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

/// An event's place in the log: assigned by the store when the event is
/// committed, in commit order, from 0, the same on every server sharing
/// the store. Positions are never reused; an erased event leaves a gap.
pub type LogPosition = u64;

/// An event as the log holds it: where it is and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its place in the log.
    pub position: LogPosition,
    /// The event.
    pub event: Event,
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

/// The sentiment of a post, mention or review.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    /// In [-1, 1]: -1 hostile, 0 neutral, 1 enthusiastic.
    pub value: f64,
    /// Given by the sender, or scored from the text.
    pub source: SentimentSource,
}

/// What happened, per event type, with the fields of that type (DESIGN.md,
/// "Events"; every bound in `bounds.rs`). `person` is always a person,
/// `brand` a brand; a `channel` is where an interaction took place, as the
/// sender named it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// A person bought from a brand: `amount` (≥ 0, at most 1e12) in
    /// `currency` as sent; scores and totals convert it to the model's base
    /// currency.
    Purchase {
        /// The buyer.
        person: EntityId,
        /// The seller.
        brand: EntityId,
        /// The amount in `currency`.
        amount: f64,
        /// ISO 4217 code.
        currency: Currency,
        /// Where it was bought (`web`, `store`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// A brand's aggregate sales for a period, reported at its end.
    BrandSales {
        /// The brand.
        brand: EntityId,
        /// Sales of the period in `currency`.
        amount: f64,
        /// ISO 4217 code (USD when the sender gave none).
        #[serde(default = "Currency::default_currency")]
        currency: Currency,
    },
    /// A person posted about a brand.
    Post {
        /// The author.
        person: EntityId,
        /// The brand talked about.
        brand: EntityId,
        /// Given, or scored from `text`.
        sentiment: Sentiment,
        /// The post's text, if sent.
        text: Option<String>,
        /// Where it was posted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// A person mentioned a brand (a lighter post).
    Mention {
        /// The author.
        person: EntityId,
        /// The brand mentioned.
        brand: EntityId,
        /// Given, or scored from `text`.
        sentiment: Sentiment,
        /// The mention's text, if sent.
        text: Option<String>,
        /// Where it was made.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// A person rated a brand.
    Review {
        /// The reviewer.
        person: EntityId,
        /// The brand reviewed.
        brand: EntityId,
        /// Stars, 1 to 5.
        rating: u8,
        /// The text's sentiment, given or scored, when there is a text or a
        /// number.
        sentiment: Option<Sentiment>,
        /// The review's text, if sent.
        text: Option<String>,
        /// Where it was left.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// A support contact between a person and a brand (seed 003's KPIs).
    Service {
        /// The customer.
        person: EntityId,
        /// The brand contacted.
        brand: EntityId,
        /// How (`chat`, `phone`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// Customer satisfaction, 1 to 5.
        csat: Option<u8>,
        /// Customer effort, 1 (easy) to 7.
        effort: Option<u8>,
        /// Whether the issue was resolved.
        resolved: Option<bool>,
        /// Seconds waited, up to 365 days.
        wait_seconds: Option<f64>,
        /// Times the contact was passed on, up to 1000.
        transfers: Option<u32>,
    },
    /// A person (an influencer) publicly associates with a brand.
    Endorsement {
        /// The endorser.
        person: EntityId,
        /// The brand endorsed.
        brand: EntityId,
        /// In (0, 1].
        strength: f64,
    },
    /// A person's follower count changed.
    Audience {
        /// Whose audience.
        person: EntityId,
        /// The new total, up to 1e11.
        followers: u64,
    },
    /// A person follows a person or a brand.
    Follow {
        /// The follower.
        person: EntityId,
        /// A person or a brand.
        target: EntityId,
        /// How closely, in (0, 1] (1 when not sent).
        strength: f64,
    },
    /// A person stops following a person or a brand.
    Unfollow {
        /// The follower.
        person: EntityId,
        /// Whom they followed.
        target: EntityId,
    },
    /// A brand hosts a happening, with performers.
    Occasion {
        /// The occasion's id (an entity).
        occasion: EntityId,
        /// The host.
        brand: EntityId,
        /// People who perform there (influencers).
        performers: Vec<EntityId>,
        /// Free tags (`music`, `outdoor`).
        tags: Vec<String>,
    },
    /// A person attends an occasion.
    Attendance {
        /// The attendee.
        person: EntityId,
        /// The occasion.
        occasion: EntityId,
    },
    /// A brand acts on a cause; people whose interests share a tag care.
    Cause {
        /// The brand.
        brand: EntityId,
        /// The cause's tags, matched against interests without case.
        tags: Vec<String>,
        /// What the brand put in, in `currency`.
        amount: f64,
        /// ISO 4217 code (USD when the sender gave none).
        #[serde(default = "Currency::default_currency")]
        currency: Currency,
    },
    /// A person grants or withdraws consent to being scored.
    Consent {
        /// The person.
        person: EntityId,
        /// Granted (true) or withdrawn (false).
        granted: bool,
    },
}

/// The `type` of an event on the wire (one per [`EventKind`] variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // the variants are the `EventKind` variants, documented there
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
    /// Every type, in declaration order.
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

    /// The wire name (`purchase`, `brand_sales`, ...).
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

    /// The type of a wire name, `None` for a name no type has.
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

    /// This event's type.
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
    /// A brand.
    Brand,
    /// An occasion.
    Occasion,
    /// Whoever is followed: a person or a brand, whichever it already is;
    /// a first reference creates a person (consumer).
    FollowTarget,
}
