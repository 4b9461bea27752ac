//! Pipeline messages -> Fusion wire events, by the mapping file
//! (`mapping.rs`): Segment's Tracking API messages (RudderStack speaks the
//! same) and CloudEvents 1.0. The events made here are then validated as
//! any wire event is (`validate`), with each error named by the message's
//! own path (`properties.revenue`, not `amount`).
//!
//! Idempotency: a Segment message's id is its `messageId`, a CloudEvent's
//! its `source` and `id`. The derived event's id is `seg:<messageId>` (and
//! `:<brand>` for an order split by brand) or `ce:<source>:<id>`, and its
//! duplicates are decided on the message without its transport fields
//! ([`content_key`]): a retry carries a new `sentAt`, so after clock-skew
//! correction possibly a new time, yet it is the same message.
//!
//! Segment's times, as its spec defines them ("Spec: Common Fields",
//! timestamps): the event happened at `timestamp` (else
//! `originalTimestamp`) on the sender's clock; when the message (or its
//! batch) has `sentAt`, the sender's clock skew is corrected:
//! `time = receivedAt - (sentAt - timestamp)`, where `receivedAt` is when
//! Fusion received the request. Without `timestamp`, `time = receivedAt`.
//!
//! Must not: know HTTP, the store or the clock (times are arguments).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::FieldError;
use super::mapping::{EntityRule, Mapping, Paths, Rule};
use crate::domain::EntityKind;
use crate::store::ContentKey;

/// Members of a Segment message that are transport, not content: a retry
/// may change them.
pub const SEGMENT_TRANSPORT: &[&str] = &[
    "sentAt",
    "receivedAt",
    "context",
    "_metadata",
    "writeKey",
    "integrations",
    "channel",
    "version",
    "requestId",
];

/// CloudEvents attributes that are transport (distributed tracing).
pub const CLOUDEVENTS_TRANSPORT: &[&str] = &["traceparent", "tracestate"];

/// Where a message came from, and what its translation needs besides it.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub source: Source,
    /// When Fusion received the request (Segment's `receivedAt`).
    pub received_at: DateTime<Utc>,
    /// The public id of the key used (its default brand).
    pub key_id: Option<&'a str>,
    /// The batch's `sentAt`, when the message has none of its own.
    pub batch_sent_at: Option<&'a Value>,
}

/// The kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Segment message; with the type its route implies (`/v1/track`).
    Segment(Option<&'static str>),
    /// A CloudEvent in structured form.
    CloudEvent,
}

/// One Fusion event made from a message, not validated yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub wire: Map<String, Value>,
    pub key: ContentKey,
    /// Fusion field -> the message path it was read from, for errors.
    pub paths: BTreeMap<String, String>,
}

/// An entity update from identify (or group) traits, not checked yet.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityUpdate {
    pub id: String,
    /// The kind of an entity not known yet.
    pub kind: EntityKind,
    pub name: Option<(String, Value)>,
    pub followers: Option<(String, Value)>,
    pub interests: Option<(String, Value)>,
}

/// What a message becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Translation {
    Events(Vec<Mapped>),
    Entity(EntityUpdate),
    /// Acknowledged and not stored, as the mapping lists it (why).
    Ignored(String),
}

/// Why a message cannot be translated.
#[derive(Debug, Clone, PartialEq)]
pub struct Untranslated {
    /// No rule for it (else: a field is wrong).
    pub unmapped: bool,
    pub errors: Vec<FieldError>,
}

impl Untranslated {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Untranslated {
            unmapped: false,
            errors: vec![FieldError::new(field, message)],
        }
    }
    fn unmapped(field: &str, message: impl Into<String>) -> Self {
        Untranslated {
            unmapped: true,
            errors: vec![FieldError::new(field, message)],
        }
    }
}

/// The member at a dotted path (`a.b`).
fn at<'v>(root: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut v = root.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    (!v.is_null()).then_some(v)
}

/// The first path of `paths` present in `root`, with its value.
fn first<'v>(root: &'v Map<String, Value>, paths: &Paths) -> Option<(&'v Value, String)> {
    paths
        .list()
        .iter()
        .find_map(|p| at(root, p).map(|v| (v, p.clone())))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The content key of a message: its JSON without the transport members,
/// keys sorted (serde_json's map is ordered), plus a qualifier (the brand
/// of a split order).
pub fn content_key(
    message: &Map<String, Value>,
    transport: &[&str],
    qualifier: &str,
) -> ContentKey {
    let content: Map<String, Value> = message
        .iter()
        .filter(|(k, _)| !transport.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut bytes = serde_json::to_vec(&content).unwrap_or_default();
    bytes.push(0);
    bytes.extend_from_slice(qualifier.as_bytes());
    ContentKey::of(&bytes)
}

fn parse_time(v: &Value, field: &str) -> Result<DateTime<Utc>, Untranslated> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| Untranslated::invalid(field, "must be an RFC 3339 time"))
}

/// A Segment message's event time (module docs).
pub fn segment_time(
    message: &Map<String, Value>,
    batch_sent_at: Option<&Value>,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, Untranslated> {
    let stamp = match (at(message, "timestamp"), at(message, "originalTimestamp")) {
        (Some(t), _) => Some(parse_time(t, "timestamp")?),
        (None, Some(t)) => Some(parse_time(t, "originalTimestamp")?),
        (None, None) => None,
    };
    let sent = match at(message, "sentAt").or(batch_sent_at.filter(|v| !v.is_null())) {
        Some(s) => Some(parse_time(s, "sentAt")?),
        None => None,
    };
    match (stamp, sent) {
        (None, _) => Ok(received_at),
        (Some(t), None) => Ok(t),
        (Some(t), Some(s)) => received_at
            .checked_sub_signed(s.signed_duration_since(t))
            .ok_or_else(|| {
                Untranslated::invalid("timestamp", "is too far from sentAt to be corrected")
            }),
    }
}

/// Translates one Segment message.
pub fn segment(
    mapping: &Mapping,
    message: &Map<String, Value>,
    origin: &Origin,
) -> Result<Translation, Untranslated> {
    let implied = match origin.source {
        Source::Segment(t) => t,
        Source::CloudEvent => None,
    };
    let kind = match (at(message, "type").and_then(Value::as_str), implied) {
        (Some(t), Some(i)) if t != i => {
            return Err(Untranslated::invalid(
                "type",
                format!(
                    "is \"{t}\" but this route takes \"{i}\" messages; send it to /v1/{t} or /v1/batch"
                ),
            ));
        }
        (Some(t), _) => t,
        (None, Some(i)) => i,
        (None, None) => return Err(Untranslated::invalid("type", "is required")),
    };
    let message_id = at(message, "messageId").and_then(text).ok_or_else(|| {
        Untranslated::invalid(
            "messageId",
            "is required: it is the message's idempotency key",
        )
    })?;
    let person = first(message, &mapping.segment_person).and_then(|(v, p)| text(v).map(|t| (t, p)));
    match kind {
        "track" => {
            let name = at(message, "event")
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslated::invalid("event", "is required on a track message"))?;
            if mapping.ignore_events.iter().any(|e| e == name) {
                return Ok(Translation::Ignored(format!(
                    "track event \"{name}\" is listed in the mapping's ignore_events"
                )));
            }
            let rule = mapping.rules.get(name).ok_or_else(|| {
                Untranslated::unmapped(
                    "event",
                    format!("no rule for the track event \"{name}\" in the mapping file; add one to [events], or list it in ignore_events"),
                )
            })?;
            let (person, person_path) = person.ok_or_else(|| {
                Untranslated::invalid("userId", "a track message needs userId or anonymousId")
            })?;
            let time = segment_time(message, origin.batch_sent_at, origin.received_at)?;
            let empty = Map::new();
            let payload = match message.get("properties") {
                None | Some(Value::Null) => &empty,
                Some(Value::Object(m)) => m,
                Some(_) => return Err(Untranslated::invalid("properties", "must be an object")),
            };
            let base = Base {
                id: format!("seg:{message_id}"),
                id_path: "messageId",
                time,
                person,
                person_path,
                prefix: "properties",
                attributes: json!({"source": "segment", "messageId": message_id, "event": name}),
                default_brand: mapping.default_brand(origin.key_id),
            };
            let events = build(rule, payload, &base, |q| {
                content_key(message, SEGMENT_TRANSPORT, q)
            })?;
            Ok(Translation::Events(events))
        }
        "identify" => match &mapping.identify {
            Some(rule) => {
                let (id, _) = person.ok_or_else(|| {
                    Untranslated::invalid(
                        "userId",
                        "an identify message needs userId or anonymousId",
                    )
                })?;
                Ok(Translation::Entity(entity(rule, id, message)?))
            }
            None => Err(Untranslated::unmapped(
                "type",
                "the mapping file has no [identify] section",
            )),
        },
        "group" => match &mapping.group {
            Some(rule) => {
                let id = at(message, "groupId").and_then(text).ok_or_else(|| {
                    Untranslated::invalid("groupId", "a group message needs groupId")
                })?;
                Ok(Translation::Entity(entity(rule, id, message)?))
            }
            None => Err(Untranslated::unmapped(
                "type",
                "group messages are kept unmapped: the mapping file has no [group] section",
            )),
        },
        other if mapping.ignore_types.iter().any(|t| t == other) => Ok(Translation::Ignored(
            format!("{other} messages are listed in the mapping's ignore_types"),
        )),
        other => Err(Untranslated::unmapped(
            "type",
            format!("the mapping file does not map {other} messages"),
        )),
    }
}

/// Translates one CloudEvent (structured form: attributes and `data`).
pub fn cloudevent(
    mapping: &Mapping,
    event: &Map<String, Value>,
    origin: &Origin,
) -> Result<Translation, Untranslated> {
    match at(event, "specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(v) => {
            return Err(Untranslated::invalid(
                "specversion",
                format!("is \"{v}\"; CloudEvents 1.0 is read"),
            ));
        }
        None => return Err(Untranslated::invalid("specversion", "is required (1.0)")),
    }
    let attr = |name: &str| {
        at(event, name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Untranslated::invalid(name, "is required: a non-empty string"))
    };
    let (id, source, kind) = (attr("id")?, attr("source")?, attr("type")?);
    let name = mapping
        .cloudevents_types
        .get(kind)
        .map(String::as_str)
        .unwrap_or(kind);
    if mapping.ignore_events.iter().any(|e| e == name) {
        return Ok(Translation::Ignored(format!(
            "\"{name}\" is listed in the mapping's ignore_events"
        )));
    }
    let rule = mapping.rules.get(name).ok_or_else(|| {
        Untranslated::unmapped(
            "type",
            format!("no rule for the CloudEvents type \"{kind}\" in the mapping file; map it in [cloudevents.types] or add a rule to [events]"),
        )
    })?;
    let time = match at(event, "time") {
        Some(t) => parse_time(t, "time")?,
        None => origin.received_at,
    };
    let empty = Map::new();
    let payload = match event.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Untranslated::invalid(
                "data",
                "must be a JSON object (datacontenttype application/json)",
            ));
        }
    };
    let (person, person_path) = first(event, &mapping.cloudevents_person)
        .and_then(|(v, p)| text(v).map(|t| (t, p)))
        .ok_or_else(|| {
            Untranslated::invalid(
                "subject",
                "the event names no person (subject, or a person path of the mapping)",
            )
        })?;
    let base = Base {
        id: format!("ce:{source}:{id}"),
        id_path: "id",
        time,
        person,
        person_path,
        prefix: "data",
        attributes: json!({"source": "cloudevents", "ce_source": source, "ce_id": id, "ce_type": kind}),
        default_brand: mapping.default_brand(origin.key_id),
    };
    let events = build(rule, payload, &base, |q| {
        content_key(event, CLOUDEVENTS_TRANSPORT, q)
    })?;
    Ok(Translation::Events(events))
}

/// What every event of one message shares.
struct Base<'a> {
    id: String,
    id_path: &'static str,
    time: DateTime<Utc>,
    person: String,
    person_path: String,
    /// The payload's path in the message (`properties`, `data`).
    prefix: &'static str,
    attributes: Value,
    default_brand: Option<&'a str>,
}

/// One product of an order: where it is, its brand, its price × quantity.
struct Product {
    index: usize,
    brand: Option<String>,
    value: Result<f64, FieldError>,
}

fn products(payload: &Map<String, Value>, rule: &Rule, prefix: &str) -> Vec<Product> {
    let Some(Value::Array(items)) = at(payload, &rule.products) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let path = format!("{prefix}.{}[{index}]", rule.products);
            let empty = Map::new();
            let p = p.as_object().unwrap_or(&empty);
            let number = |k: &'static str| at(p, k).map(|v| v.as_f64().ok_or(k));
            let value = match (number("price"), number("quantity")) {
                (Some(Ok(price)), None) => Ok(price),
                (Some(Ok(price)), Some(Ok(q))) => Ok(price * q),
                (None, _) => Err(FieldError::new(
                    &format!("{path}.price"),
                    "is required to split an order by brand",
                )),
                (Some(Err(k)), _) | (_, Some(Err(k))) => {
                    Err(FieldError::new(&format!("{path}.{k}"), "must be a number"))
                }
            };
            Product {
                index,
                brand: at(p, "brand").and_then(text),
                value,
            }
        })
        .collect()
}

/// The events of one message by its rule (module docs; the mapping file
/// documents the brand rules).
fn build(
    rule: &Rule,
    payload: &Map<String, Value>,
    base: &Base,
    key: impl Fn(&str) -> ContentKey,
) -> Result<Vec<Mapped>, Untranslated> {
    let prefix = base.prefix;
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    paths.insert("id".into(), base.id_path.into());
    paths.insert("time".into(), "timestamp".into());
    paths.insert("person".into(), base.person_path.clone());
    let mut wire = Map::new();
    wire.insert("type".into(), Value::String(rule.kind.as_str().into()));
    wire.insert(
        "time".into(),
        Value::String(base.time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    );
    wire.insert("person".into(), Value::String(base.person.clone()));
    for (field, p) in &rule.fields {
        if let Some((v, path)) = first(payload, p) {
            wire.insert(field.clone(), v.clone());
            paths.insert(field.clone(), format!("{prefix}.{path}"));
        }
    }
    for (field, v) in &rule.set {
        wire.insert(field.clone(), v.clone());
        paths.insert(field.clone(), format!("(the rule's set.{field})"));
    }
    wire.insert("attributes".into(), json!({ "pipeline": base.attributes }));
    let one =
        |brand: String, brand_path: String, id: String, qualifier: &str, amount: Option<f64>| {
            let mut wire = wire.clone();
            let mut paths = paths.clone();
            wire.insert("id".into(), Value::String(id));
            wire.insert("brand".into(), Value::String(brand));
            paths.insert("brand".into(), brand_path);
            if let Some(a) = amount {
                wire.insert("amount".into(), json!(a));
                paths.insert(
                    "amount".into(),
                    format!("{prefix}.{}[].price", rule.products),
                );
            }
            Mapped {
                wire,
                key: key(qualifier),
                paths,
            }
        };
    // The brand: the message's, else its products', else the default.
    if let Some((v, path)) = first(payload, &rule.brand) {
        let brand = text(v).ok_or_else(|| {
            Untranslated::invalid(&format!("{prefix}.{path}"), "must be a non-empty string")
        })?;
        let amount = needs_amount(rule, &wire, payload, prefix)?;
        return Ok(vec![one(
            brand,
            format!("{prefix}.{path}"),
            base.id.clone(),
            "",
            amount,
        )]);
    }
    let items = products(payload, rule, prefix);
    if !items.is_empty() {
        let mut errors = Vec::new();
        let mut by_brand: BTreeMap<String, f64> = BTreeMap::new();
        for p in &items {
            let brand = match (&p.brand, base.default_brand) {
                (Some(b), _) => b.clone(),
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    errors.push(FieldError::new(
                        &format!("{prefix}.{}[{}].brand", rule.products, p.index),
                        "is missing, and neither the message nor its key has a brand",
                    ));
                    continue;
                }
            };
            let sum = by_brand.entry(brand).or_default();
            match &p.value {
                Ok(v) => *sum += v,
                Err(e) if rule.split_by_brand => errors.push(e.clone()),
                Err(_) => {}
            }
        }
        let brands: BTreeSet<&String> = by_brand.keys().collect();
        if brands.len() > 1 && rule.split_by_brand {
            if !errors.is_empty() {
                return Err(Untranslated {
                    unmapped: false,
                    errors,
                });
            }
            return Ok(by_brand
                .iter()
                .map(|(brand, sum)| {
                    let path = format!("{prefix}.{}[].brand", rule.products);
                    one(
                        brand.clone(),
                        path,
                        format!("{}:{brand}", base.id),
                        brand,
                        Some(*sum),
                    )
                })
                .collect());
        }
        if brands.len() > 1 {
            return Err(Untranslated::invalid(
                &format!("{prefix}.{}", rule.products),
                "the products have several brands and this rule does not split by brand; give properties.brand",
            ));
        }
        if let Some((brand, sum)) = by_brand.into_iter().next() {
            errors.retain(|e| !e.field.ends_with(".price") && !e.field.ends_with(".quantity"));
            if !errors.is_empty() {
                return Err(Untranslated {
                    unmapped: false,
                    errors,
                });
            }
            let amount = match needs_amount(rule, &wire, payload, prefix) {
                Ok(None) => None,
                _ if rule.split_by_brand => Some(sum),
                other => other?,
            };
            let path = format!("{prefix}.{}[].brand", rule.products);
            return Ok(vec![one(brand, path, base.id.clone(), "", amount)]);
        }
        return Err(Untranslated {
            unmapped: false,
            errors,
        });
    }
    match base.default_brand {
        Some(brand) => {
            let amount = needs_amount(rule, &wire, payload, prefix)?;
            Ok(vec![one(
                brand.to_string(),
                "(the key's default brand)".into(),
                base.id.clone(),
                "",
                amount,
            )])
        }
        None => Err(Untranslated::invalid(
            &format!("{prefix}.brand"),
            "the message names no brand (properties.brand, or products[].brand), and its key has no default brand; add one to the mapping's [keys]",
        )),
    }
}

/// For a purchase split by brand without an amount of its own: the sum of
/// its products (`Some`), when that can be made; `None` when the rule's
/// amount was found (or is not needed).
fn needs_amount(
    rule: &Rule,
    wire: &Map<String, Value>,
    payload: &Map<String, Value>,
    prefix: &str,
) -> Result<Option<f64>, Untranslated> {
    if !rule.split_by_brand || wire.contains_key("amount") {
        return Ok(None);
    }
    let items = products(payload, rule, prefix);
    let mut sum = 0.0;
    for p in items {
        sum += p.value.map_err(|e| Untranslated {
            unmapped: false,
            errors: vec![e],
        })?;
    }
    Ok(Some(sum))
}

fn entity(
    rule: &EntityRule,
    id: String,
    message: &Map<String, Value>,
) -> Result<EntityUpdate, Untranslated> {
    // The traits are at the root (Segment's libraries), else in
    // `context.traits`, where Segment's spec also allows them and where
    // RudderStack's libraries put them.
    let empty = Map::new();
    let in_context = message
        .get("context")
        .and_then(Value::as_object)
        .and_then(|c| c.get("traits"));
    let (traits, prefix) = match (message.get("traits"), in_context) {
        (None | Some(Value::Null), None | Some(Value::Null)) => (&empty, "traits"),
        (Some(Value::Object(m)), _) => (m, "traits"),
        (None | Some(Value::Null), Some(Value::Object(m))) => (m, "context.traits"),
        (Some(_), _) => return Err(Untranslated::invalid("traits", "must be an object")),
        (_, Some(_)) => {
            return Err(Untranslated::invalid("context.traits", "must be an object"));
        }
    };
    let read = |p: &Option<Paths>| {
        p.as_ref()
            .and_then(|p| first(traits, p))
            .map(|(v, path)| (format!("{prefix}.{path}"), v.clone()))
    };
    Ok(EntityUpdate {
        id,
        kind: rule.kind,
        name: read(&rule.name),
        followers: read(&rule.followers),
        interests: read(&rule.interests),
    })
}

/// Names an error of a mapped event by the message path its field came
/// from (`amount` -> `properties.revenue`).
pub fn rename(errors: Vec<FieldError>, paths: &BTreeMap<String, String>) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|mut e| {
            let base = e.field.split(['.', '[']).next().unwrap_or("").to_string();
            if let Some(p) = paths.get(&base) {
                e.field = format!("{p}{}", &e.field[base.len()..]);
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn origin(batch_sent_at: Option<&Value>) -> Origin<'_> {
        Origin {
            source: Source::Segment(None),
            received_at: t("2026-01-01T12:00:10Z"),
            key_id: None,
            batch_sent_at,
        }
    }

    fn msg(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn clock_skew_is_corrected_as_segment_defines_it() {
        // The device's clock is 1 h ahead: sent "13:00:05" for an event of
        // "13:00:00", received at 12:00:10 by the server: it happened 5 s
        // before it was received.
        let m = msg(json!({"timestamp": "2026-01-01T13:00:00Z", "sentAt": "2026-01-01T13:00:05Z"}));
        assert_eq!(
            segment_time(&m, None, t("2026-01-01T12:00:10Z")).unwrap(),
            t("2026-01-01T12:00:05Z")
        );
        let batch = json!("2026-01-01T13:00:05Z");
        let m = msg(json!({"timestamp": "2026-01-01T13:00:00Z"}));
        assert_eq!(
            segment_time(&m, Some(&batch), t("2026-01-01T12:00:10Z")).unwrap(),
            t("2026-01-01T12:00:05Z")
        );
        assert_eq!(
            segment_time(&m, None, t("2026-01-01T12:00:10Z")).unwrap(),
            t("2026-01-01T13:00:00Z")
        );
        assert_eq!(
            segment_time(&Map::new(), None, t("2026-01-01T12:00:10Z")).unwrap(),
            t("2026-01-01T12:00:10Z")
        );
    }

    fn order(products: Value) -> Map<String, Value> {
        msg(
            json!({"type": "track", "event": "Order Completed", "messageId": "m1",
            "userId": "ann", "timestamp": "2026-01-01T12:00:00Z", "sentAt": "2026-01-01T12:00:01Z",
            "properties": {"currency": "EUR", "products": products}}),
        )
    }

    #[test]
    fn an_order_of_several_brands_is_one_purchase_per_brand() {
        let m = Mapping::default_mapping();
        let o = order(json!([
            {"brand": "knit", "price": 10.0, "quantity": 2},
            {"brand": "bistro", "price": 5.5},
            {"brand": "knit", "price": 1.0, "quantity": 3},
        ]));
        let Translation::Events(events) = segment(&m, &o, &origin(None)).unwrap() else {
            panic!()
        };
        let got: Vec<(String, String, f64)> = events
            .iter()
            .map(|e| {
                (
                    e.wire["id"].as_str().unwrap().to_string(),
                    e.wire["brand"].as_str().unwrap().to_string(),
                    e.wire["amount"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("seg:m1:bistro".into(), "bistro".into(), 5.5),
                ("seg:m1:knit".into(), "knit".into(), 23.0)
            ]
        );
        assert_ne!(events[0].key, events[1].key);
        assert_eq!(events[0].wire["currency"], "EUR");
    }

    #[test]
    fn a_retry_with_new_transport_fields_has_the_same_content_key() {
        let m = Mapping::default_mapping();
        let a = order(json!([{"brand": "knit", "price": 10.0}]));
        let mut b = a.clone();
        b.insert("sentAt".into(), json!("2026-01-01T12:09:00Z"));
        b.insert("context".into(), json!({"library": {"name": "x"}}));
        let keys = |m2: &Map<String, Value>| match segment(&m, m2, &origin(None)).unwrap() {
            Translation::Events(e) => (e[0].key, e[0].wire["time"].clone()),
            _ => panic!(),
        };
        let ((ka, ta), (kb, tb)) = (keys(&a), keys(&b));
        assert_eq!(ka, kb);
        assert_ne!(ta, tb, "the corrected time moved with sentAt");
        let mut c = a.clone();
        c["properties"]["currency"] = json!("USD");
        assert_ne!(keys(&c).0, ka);
    }

    #[test]
    fn no_brand_unmapped_names_and_groups_are_refused_with_the_reason() {
        let m = Mapping::default_mapping();
        let o = order(json!([{"price": 10.0}]));
        let e = segment(&m, &o, &origin(None)).unwrap_err();
        assert!(!e.unmapped);
        assert_eq!(e.errors[0].field, "properties.products[0].brand");
        let x =
            msg(json!({"type": "track", "event": "Lasso Thrown", "messageId": "m", "userId": "a"}));
        assert!(segment(&m, &x, &origin(None)).unwrap_err().unmapped);
        let g = msg(json!({"type": "group", "groupId": "g", "messageId": "m", "userId": "a"}));
        assert!(segment(&m, &g, &origin(None)).unwrap_err().unmapped);
        let v = msg(
            json!({"type": "track", "event": "Product Viewed", "messageId": "m", "userId": "a"}),
        );
        assert!(matches!(
            segment(&m, &v, &origin(None)),
            Ok(Translation::Ignored(_))
        ));
    }

    #[test]
    fn errors_are_named_by_the_message_path() {
        let paths: BTreeMap<String, String> =
            [("amount".to_string(), "properties.revenue".to_string())].into();
        let e = rename(
            vec![
                FieldError::new("amount", "x"),
                FieldError::new("tags[2]", "y"),
            ],
            &paths,
        );
        assert_eq!(e[0].field, "properties.revenue");
        assert_eq!(e[1].field, "tags[2]");
    }
}
