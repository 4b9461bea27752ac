//! The mapping file: how the messages of customer-data platforms (Segment's
//! Tracking API, RudderStack's, CloudEvents) become Fusion events. It is
//! data (TOML): `models/segment-mapping.toml` is compiled in as the
//! default and documents every rule; `--mapping FILE` on `serve` and
//! `ingest` loads another. `ingest::pipeline` applies it.
//!
//! A rule is keyed by an event name (a Segment track event's `event`, or a
//! CloudEvent's `type`, directly or through `[cloudevents.types]`) and says
//! which Fusion event it becomes and, for each Fusion field, the paths to
//! read it from, first present wins. Paths are relative to the message's
//! payload (Segment's `properties`, a CloudEvent's `data`); `a.b` reads a
//! member of a member. Loading checks every name against the contract, so
//! a typo fails at start, not on the first message.
//!
//! Must not: know HTTP or the store.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::{EntityKind, EventType};

/// The default mapping (Segment's E-commerce and customer-support events).
pub const DEFAULT_MAPPING: &str = include_str!("../../models/segment-mapping.toml");

/// One path or several, first present wins.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    pub fn list(&self) -> &[String] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }
}

/// A rule as written in the file.
#[derive(Debug, Clone, Deserialize)]
struct RuleFile {
    #[serde(rename = "type")]
    kind: String,
    brand: Option<Paths>,
    products: Option<String>,
    #[serde(default)]
    split_by_brand: bool,
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
    #[serde(flatten)]
    fields: BTreeMap<String, Paths>,
}

/// How one named event becomes a Fusion event.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub kind: EventType,
    /// Where the brand is (default `brand`); else the products' brands,
    /// else the key's default brand.
    pub brand: Paths,
    /// Where the list of products is (default `products`), each with
    /// `brand`, `price`, `quantity`.
    pub products: String,
    /// An order whose products have several brands becomes one event per
    /// brand, its amount the sum of price × quantity of that brand's
    /// products, its id `<id>:<brand>`.
    pub split_by_brand: bool,
    /// Fusion field -> paths in the payload.
    pub fields: BTreeMap<String, Paths>,
    /// Fusion field -> a value set whatever the message says (a ticket
    /// resolved is `resolved`).
    pub set: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentFile {
    person: Option<Paths>,
    #[serde(default)]
    ignore_events: Vec<String>,
    #[serde(default)]
    ignore_types: Vec<String>,
    default_brand: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudEventsFile {
    person: Option<Paths>,
    #[serde(default)]
    types: BTreeMap<String, String>,
}

/// How identify traits (or group traits) update an entity.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityRule {
    /// The kind of an entity not known yet.
    #[serde(default = "consumer")]
    pub kind: EntityKind,
    /// Paths within `traits`.
    pub name: Option<Paths>,
    pub followers: Option<Paths>,
    pub interests: Option<Paths>,
}

fn consumer() -> EntityKind {
    EntityKind::Consumer
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    segment: SegmentFile,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    identify: Option<EntityRule>,
    group: Option<EntityRule>,
    #[serde(default)]
    cloudevents: CloudEventsFile,
    #[serde(default)]
    events: BTreeMap<String, RuleFile>,
}

/// A loaded, checked mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Where a Segment message's person is (default `userId`, then
    /// `anonymousId`), paths in the message.
    pub segment_person: Paths,
    /// Track events acknowledged and not stored (no score signal): listed
    /// here on purpose, so never silently.
    pub ignore_events: Vec<String>,
    /// Message types acknowledged and not stored (`page`, `screen`).
    pub ignore_types: Vec<String>,
    /// The brand when a message names none and its key has none.
    pub default_brand: Option<String>,
    /// The default brand of each API key, by its public id.
    pub key_brands: BTreeMap<String, String>,
    pub identify: Option<EntityRule>,
    /// Without it, `group` messages are unmapped (kept as dead letters).
    pub group: Option<EntityRule>,
    /// Where a CloudEvent's person is, paths in the event.
    pub cloudevents_person: Paths,
    /// CloudEvents `type` -> rule name.
    pub cloudevents_types: BTreeMap<String, String>,
    pub rules: BTreeMap<String, Rule>,
}

/// Why a mapping file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("the mapping is not valid TOML of the mapping's shape: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("rule \"{rule}\": {message}")]
    Rule { rule: String, message: String },
}

/// Fusion fields a rule may map: the contract's, but those the message
/// itself gives (id, type, time, person, brand) and `attributes`.
fn mappable(field: &str) -> bool {
    super::ALL_FIELDS.contains(&field)
        && !matches!(
            field,
            "id" | "type" | "time" | "person" | "brand" | "attributes"
        )
}

impl Mapping {
    /// The default mapping.
    pub fn default_mapping() -> Mapping {
        Mapping::from_toml(DEFAULT_MAPPING).expect("the default mapping is valid")
    }

    /// Parses and checks a mapping file.
    pub fn from_toml(text: &str) -> Result<Mapping, MappingError> {
        let file: MappingFile = toml::from_str(text)?;
        let mut rules = BTreeMap::new();
        for (name, r) in file.events {
            let bad = |message: String| MappingError::Rule {
                rule: name.clone(),
                message,
            };
            let kind = EventType::ALL
                .into_iter()
                .find(|t| t.as_str() == r.kind)
                .ok_or_else(|| {
                    bad(format!(
                        "`type = \"{}\"` is not a Fusion event type",
                        r.kind
                    ))
                })?;
            let mut set = BTreeMap::new();
            for (field, value) in r.set {
                let json = serde_json::to_value(&value)
                    .map_err(|e| bad(format!("`set.{field}` cannot be JSON: {e}")))?;
                set.insert(field, json);
            }
            for field in r.fields.keys().chain(set.keys()) {
                if !mappable(field) {
                    return Err(bad(format!(
                        "`{field}` is not a Fusion event field a rule can map"
                    )));
                }
            }
            if r.split_by_brand && kind != EventType::Purchase {
                return Err(bad("split_by_brand is for purchases".into()));
            }
            rules.insert(
                name.clone(),
                Rule {
                    kind,
                    brand: r.brand.unwrap_or_else(|| Paths::One("brand".into())),
                    products: r.products.unwrap_or_else(|| "products".into()),
                    split_by_brand: r.split_by_brand,
                    fields: r.fields,
                    set,
                },
            );
        }
        for (ce, rule) in &file.cloudevents.types {
            if !rules.contains_key(rule) {
                return Err(MappingError::Rule {
                    rule: rule.clone(),
                    message: format!(
                        "[cloudevents.types] maps \"{ce}\" to it, but there is no such rule in [events]"
                    ),
                });
            }
        }
        Ok(Mapping {
            segment_person: file
                .segment
                .person
                .unwrap_or_else(|| Paths::Many(vec!["userId".into(), "anonymousId".into()])),
            ignore_events: file.segment.ignore_events,
            ignore_types: file.segment.ignore_types,
            default_brand: file.segment.default_brand.filter(|b| !b.is_empty()),
            key_brands: file.keys,
            identify: file.identify,
            group: file.group,
            cloudevents_person: file
                .cloudevents
                .person
                .unwrap_or_else(|| Paths::Many(vec!["subject".into()])),
            cloudevents_types: file.cloudevents.types,
            rules,
        })
    }

    /// The default brand for a message sent with this key.
    pub fn default_brand(&self, key_id: Option<&str>) -> Option<&str> {
        key_id
            .and_then(|k| self.key_brands.get(k))
            .or(self.default_brand.as_ref())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mapping_loads_and_covers_the_specs() {
        let m = Mapping::default_mapping();
        for name in [
            "Order Completed",
            "Product Reviewed",
            "Ticket Closed",
            "Ticket Resolved",
        ] {
            assert!(m.rules.contains_key(name), "{name}");
        }
        assert!(m.rules["Order Completed"].split_by_brand);
        assert!(m.ignore_events.iter().any(|e| e == "Product Viewed"));
        assert!(m.group.is_none());
    }

    #[test]
    fn typos_fail_at_load() {
        for bad in [
            "[events.\"X\"]\ntype = \"purchse\"",
            "[events.\"X\"]\ntype = \"purchase\"\namont = \"a\"",
            "[events.\"X\"]\ntype = \"review\"\nsplit_by_brand = true",
            "[segmnet]\nperson = \"userId\"",
            "[cloudevents.types]\n\"a.b\" = \"Nope\"",
        ] {
            assert!(Mapping::from_toml(bad).is_err(), "{bad}");
        }
    }
}
