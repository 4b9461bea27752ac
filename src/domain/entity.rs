//! Entities: the people, brands and occasions that events connect.

use serde::{Deserialize, Serialize};

use super::EntityId;

/// What an entity is. An id keeps one kind, except that a consumer who
/// acts as an influencer (endorses, performs) becomes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A person.
    Consumer,
    /// A person whose reach makes them matter (everyone can influence).
    Influencer,
    /// A company or venue.
    Brand,
    /// A happening a brand hosts.
    Occasion,
}

impl EntityKind {
    /// Consumers and influencers are people.
    pub fn is_person(self) -> bool {
        matches!(self, EntityKind::Consumer | EntityKind::Influencer)
    }
    /// The kind's name on the wire (`consumer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Consumer => "consumer",
            EntityKind::Influencer => "influencer",
            EntityKind::Brand => "brand",
            EntityKind::Occasion => "occasion",
        }
    }
    /// The prefix used in explanation paths (`person:artist`, `brand:bistro`).
    pub fn path_prefix(self) -> &'static str {
        match self {
            EntityKind::Consumer | EntityKind::Influencer => "person",
            EntityKind::Brand => "brand",
            EntityKind::Occasion => "occasion",
        }
    }
}

/// An explicitly registered entity (`PUT /v1/entities/{id}`). Entities that are
/// only referenced by events exist too, with their kind inferred from the role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The entity's id.
    pub id: EntityId,
    /// What it is.
    pub kind: EntityKind,
    /// A display name, at most 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Follower count at registration; audience events move it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followers: Option<u64>,
    /// Interest tags (at most 100), matched without case against causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interests: Vec<String>,
}
