//! Wire format -> validated domain events ("parse, don't validate").
//!
//! A request body is one JSON object, a JSON array of objects, or NDJSON.
//! A body that is not JSON is malformed as a whole (nothing of it is stored);
//! otherwise each event is checked on its own and every problem is reported
//! with the event's index, its id and the field at fault.
//!
//! Unknown-field policy: a field that is not part of the event contract, or
//! that the event's type does not use, is an error naming the field (a typo
//! must not silently drop data). Free data goes in `attributes`.
//!
//! Post, mention and review text without a `sentiment` is scored with VADER
//! here, and the event records that its sentiment came from the text.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::{EntityId, Event, EventId, EventKind, EventType, Sentiment, SentimentSource};

/// Longest `text` accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most `tags` or `performers` in one event.
pub const MAX_LIST: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// An event of a request that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub id: Option<String>,
    pub errors: Vec<FieldError>,
}

/// A warning about one field of an accepted event of a request (the event
/// was kept; the answer's `warnings`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub index: usize,
    pub id: Option<String>,
    pub field: String,
    pub message: String,
}

/// The body as a whole could not be read as events.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("malformed JSON{}: {message}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Malformed {
        line: Option<usize>,
        message: String,
    },
    #[error("the body must be an event object, an array of event objects, or NDJSON")]
    NotEvents,
    #[error("the body holds no events")]
    Empty,
}

/// Splits a body into one JSON value per event.
pub fn parse_body(body: &[u8], ndjson: bool) -> Result<Vec<Value>, BodyError> {
    if ndjson {
        return parse_ndjson(body);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::Malformed {
        line: None,
        message: e.to_string(),
    })?;
    let values = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err(BodyError::NotEvents),
    };
    if values.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(values)
}

/// NDJSON: one JSON value per line; blank lines are allowed and skipped.
pub fn parse_ndjson(body: &[u8]) -> Result<Vec<Value>, BodyError> {
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line).map_err(|e| BodyError::Malformed {
            line: Some(i + 1),
            message: e.to_string(),
        })?;
        out.push(v);
    }
    if out.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(out)
}

/// Validates every value; answers the good events and the rejections.
pub fn validate_all(values: &[Value]) -> (Vec<(usize, Event)>, Vec<Rejection>) {
    let mut good = Vec::with_capacity(values.len());
    let mut bad = Vec::new();
    for (index, v) in values.iter().enumerate() {
        match validate(v) {
            Ok(e) => good.push((index, e)),
            Err(errors) => bad.push(Rejection {
                index,
                id: v.get("id").and_then(Value::as_str).map(str::to_string),
                errors,
            }),
        }
    }
    (good, bad)
}

const COMMON: &[&str] = &["id", "type", "time", "attributes"];

/// The fields each type uses besides the common ones: (name, required).
fn fields_of(t: EventType) -> &'static [(&'static str, bool)] {
    use EventType::*;
    match t {
        Purchase => &[
            ("person", true),
            ("brand", true),
            ("amount", true),
            ("currency", false),
        ],
        BrandSales => &[("brand", true), ("amount", true), ("currency", false)],
        Post | Mention => &[
            ("person", true),
            ("brand", true),
            ("sentiment", false),
            ("text", false),
        ],
        Review => &[
            ("person", true),
            ("brand", true),
            ("rating", true),
            ("sentiment", false),
            ("text", false),
        ],
        Service => &[
            ("person", true),
            ("brand", true),
            ("channel", false),
            ("csat", false),
            ("effort", false),
            ("resolved", false),
            ("wait_seconds", false),
            ("transfers", false),
        ],
        Endorsement => &[("person", true), ("brand", true), ("strength", false)],
        Audience => &[("person", true), ("followers", true)],
        Follow => &[("person", true), ("target", true), ("strength", false)],
        Unfollow => &[("person", true), ("target", true)],
        Occasion => &[
            ("occasion", true),
            ("brand", true),
            ("performers", false),
            ("tags", false),
        ],
        Attendance => &[("person", true), ("occasion", true)],
        Cause => &[("brand", true), ("tags", true), ("amount", false)],
        Consent => &[("person", true), ("granted", true)],
    }
}

/// Every field name any event may carry (for the unknown-field message).
const ALL_FIELDS: &[&str] = &[
    "id",
    "type",
    "time",
    "person",
    "brand",
    "target",
    "occasion",
    "performers",
    "amount",
    "currency",
    "sentiment",
    "text",
    "rating",
    "csat",
    "effort",
    "resolved",
    "wait_seconds",
    "transfers",
    "channel",
    "followers",
    "strength",
    "tags",
    "granted",
    "attributes",
];

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }
    fn fail(&mut self, field: &str, msg: impl Into<String>) {
        self.errors.push(FieldError::new(field, msg));
    }
    fn required<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self, &'a Value) -> Option<T>,
    ) -> Option<T> {
        match self.get(name) {
            Some(v) => f(self, v),
            None => {
                self.fail(name, "is required");
                None
            }
        }
    }
    fn optional<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self, &'a Value) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.get(name) {
            Some(v) => f(self, v).map(Some),
            None => Some(None),
        }
    }
    fn entity(&mut self, name: &str, v: &Value) -> Option<EntityId> {
        let Some(s) = v.as_str() else {
            self.fail(name, "must be a string id");
            return None;
        };
        EntityId::new(s)
            .map_err(|e| self.fail(name, format!("bad id: {e}")))
            .ok()
    }
    fn string(&mut self, name: &str, v: &Value, max: usize) -> Option<String> {
        match v.as_str() {
            Some(s) if s.len() <= max => Some(s.to_string()),
            Some(_) => {
                self.fail(name, format!("must be at most {max} bytes long"));
                None
            }
            None => {
                self.fail(name, "must be a string");
                None
            }
        }
    }
    fn number(&mut self, name: &str, v: &Value, lo: f64, hi: f64) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Some(x),
            Some(x) => {
                let range = if hi == f64::MAX {
                    format!("at least {lo}")
                } else {
                    format!("in [{lo}, {hi}]")
                };
                self.fail(name, format!("must be {range}, got {x}"));
                None
            }
            None => {
                self.fail(name, "must be a number");
                None
            }
        }
    }
    fn integer(&mut self, name: &str, v: &Value, lo: u64, hi: u64) -> Option<u64> {
        match v.as_u64() {
            Some(x) if (lo..=hi).contains(&x) => Some(x),
            Some(x) => {
                self.fail(name, format!("must be an integer in [{lo}, {hi}], got {x}"));
                None
            }
            None => {
                let shown = v.to_string();
                self.fail(
                    name,
                    format!("must be an integer in [{lo}, {hi}], got {shown}"),
                );
                None
            }
        }
    }
    fn boolean(&mut self, name: &str, v: &Value) -> Option<bool> {
        let b = v.as_bool();
        if b.is_none() {
            self.fail(name, "must be true or false");
        }
        b
    }
    fn strings(&mut self, name: &str, v: &Value) -> Option<Vec<String>> {
        let Some(items) = v.as_array() else {
            self.fail(name, "must be an array of strings");
            return None;
        };
        if items.len() > MAX_LIST {
            self.fail(name, format!("must have at most {MAX_LIST} items"));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            match it.as_str() {
                Some(s) if !s.trim().is_empty() && s.len() <= 128 => out.push(s.trim().to_string()),
                _ => {
                    self.fail(
                        &format!("{name}[{i}]"),
                        "must be a non-empty string of at most 128 bytes",
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
    fn entities(&mut self, name: &str, v: &Value) -> Option<Vec<EntityId>> {
        let items = self.strings(name, v)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, s) in items.into_iter().enumerate() {
            match EntityId::new(s) {
                Ok(id) if !out.contains(&id) => out.push(id),
                Ok(_) => {}
                Err(e) => {
                    self.fail(&format!("{name}[{i}]"), format!("bad id: {e}"));
                    return None;
                }
            }
        }
        Some(out)
    }
}

/// Validates one wire event. All problems are reported, not just the first.
pub fn validate(value: &Value) -> Result<Event, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new("", "an event must be a JSON object")]);
    };
    let mut f = Fields {
        obj,
        errors: Vec::new(),
    };
    let id = f.required("id", |f, v| match v.as_str() {
        Some(s) => EventId::new(s)
            .map_err(|e| f.fail("id", format!("bad id: {e}")))
            .ok(),
        None => {
            f.fail("id", "must be a string");
            None
        }
    });
    let time = f.required("time", |f, v| {
        let parsed = v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
        match parsed {
            Some(t) => Some(t.with_timezone(&Utc)),
            None => {
                f.fail(
                    "time",
                    "must be an RFC 3339 time such as 2026-11-01T18:30:00Z",
                );
                None
            }
        }
    });
    let etype = f.required("type", |f, v| match v.as_str().and_then(EventType::parse) {
        Some(t) => Some(t),
        None => {
            let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            f.fail(
                "type",
                format!(
                    "unknown event type {v}; expected one of {}",
                    names.join(", ")
                ),
            );
            None
        }
    });
    let attributes = match f.get("attributes") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => {
            f.fail("attributes", "must be a JSON object");
            None
        }
    };
    let Some(etype) = etype else {
        return Err(f.errors);
    };
    let allowed = fields_of(etype);
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    for key in keys {
        if COMMON.contains(&key.as_str()) || allowed.iter().any(|(n, _)| n == key) {
            continue;
        }
        if ALL_FIELDS.contains(&key.as_str()) {
            f.fail(key, format!("is not used by {} events", etype.as_str()));
        } else {
            f.fail(key, "unknown field; put free data in `attributes`");
        }
    }
    let kind = kind_of(etype, &mut f);
    match (id, time, kind) {
        (Some(id), Some(time), Some(kind)) if f.errors.is_empty() => Ok(Event {
            id,
            time,
            kind,
            attributes,
        }),
        _ => {
            if f.errors.is_empty() {
                f.fail("", "invalid event");
            }
            Err(f.errors)
        }
    }
}

fn text_sentiment(f: &mut Fields<'_>, required: bool) -> (Option<Sentiment>, Option<String>) {
    let given = f
        .optional("sentiment", |f, v| f.number("sentiment", v, -1.0, 1.0))
        .flatten();
    let text = f
        .optional("text", |f, v| f.string("text", v, MAX_TEXT_BYTES))
        .flatten();
    let sentiment = match (given, &text) {
        (Some(value), _) => Some(Sentiment {
            value,
            source: SentimentSource::Given,
        }),
        (None, Some(t)) => Some(Sentiment {
            value: crate::sentiment::polarity_scores(t).compound,
            source: SentimentSource::Text,
        }),
        (None, None) => {
            if required && f.get("sentiment").is_none() && f.get("text").is_none() {
                f.fail("sentiment", "is required when there is no `text` to score");
            }
            None
        }
    };
    (sentiment, text)
}

fn kind_of(t: EventType, f: &mut Fields<'_>) -> Option<EventKind> {
    let person = |f: &mut Fields<'_>| f.required("person", |f, v| f.entity("person", v));
    let brand = |f: &mut Fields<'_>| f.required("brand", |f, v| f.entity("brand", v));
    let amount = |f: &mut Fields<'_>, req: bool| {
        if req {
            f.required("amount", |f, v| f.number("amount", v, 0.0, f64::MAX))
        } else {
            f.optional("amount", |f, v| f.number("amount", v, 0.0, f64::MAX))
                .map(|a| a.unwrap_or(0.0))
        }
    };
    let currency = |f: &mut Fields<'_>| {
        f.optional("currency", |f, v| match v.as_str() {
            Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => {
                Some(s.to_string())
            }
            _ => {
                f.fail(
                    "currency",
                    "must be a three-letter ISO 4217 code such as \"EUR\"",
                );
                None
            }
        })
    };
    let strength = |f: &mut Fields<'_>| {
        f.optional("strength", |f, v| match v.as_f64() {
            Some(x) if x > 0.0 && x <= 1.0 => Some(x),
            _ => {
                f.fail("strength", format!("must be a number in (0, 1], got {v}"));
                None
            }
        })
        .map(|s| s.unwrap_or(1.0))
    };
    use EventType as T;
    let kind = match t {
        T::Purchase => {
            let (p, b, a, c) = (person(f), brand(f), amount(f, true), currency(f));
            EventKind::Purchase {
                person: p?,
                brand: b?,
                amount: a?,
                currency: c?.unwrap_or_else(|| "USD".to_string()),
            }
        }
        T::BrandSales => {
            let (b, a, _c) = (brand(f), amount(f, true), currency(f));
            EventKind::BrandSales {
                brand: b?,
                amount: a?,
            }
        }
        T::Post | T::Mention => {
            let (p, b) = (person(f), brand(f));
            let (s, text) = text_sentiment(f, true);
            let (person, brand, sentiment) = (p?, b?, s?);
            if t == T::Post {
                EventKind::Post {
                    person,
                    brand,
                    sentiment,
                    text,
                }
            } else {
                EventKind::Mention {
                    person,
                    brand,
                    sentiment,
                    text,
                }
            }
        }
        T::Review => {
            let (p, b) = (person(f), brand(f));
            let r = f.required("rating", |f, v| f.integer("rating", v, 1, 5));
            let (sentiment, text) = text_sentiment(f, false);
            EventKind::Review {
                person: p?,
                brand: b?,
                rating: r? as u8,
                sentiment,
                text,
            }
        }
        T::Service => {
            let (p, b) = (person(f), brand(f));
            let channel = f.optional("channel", |f, v| f.string("channel", v, 64));
            let csat = f.optional("csat", |f, v| f.integer("csat", v, 1, 5));
            let effort = f.optional("effort", |f, v| f.integer("effort", v, 1, 7));
            let resolved = f.optional("resolved", |f, v| f.boolean("resolved", v));
            let wait = f.optional("wait_seconds", |f, v| {
                f.number("wait_seconds", v, 0.0, f64::MAX)
            });
            let transfers = f.optional("transfers", |f, v| f.integer("transfers", v, 0, 1000));
            EventKind::Service {
                person: p?,
                brand: b?,
                channel: channel?,
                csat: csat?.map(|x| x as u8),
                effort: effort?.map(|x| x as u8),
                resolved: resolved?,
                wait_seconds: wait?,
                transfers: transfers?.map(|x| x as u32),
            }
        }
        T::Endorsement => {
            let (p, b, s) = (person(f), brand(f), strength(f));
            EventKind::Endorsement {
                person: p?,
                brand: b?,
                strength: s?,
            }
        }
        T::Audience => {
            let p = person(f);
            let n = f.required("followers", |f, v| {
                f.integer("followers", v, 0, 100_000_000_000)
            });
            EventKind::Audience {
                person: p?,
                followers: n?,
            }
        }
        T::Follow | T::Unfollow => {
            let p = person(f);
            let target = f.required("target", |f, v| f.entity("target", v));
            let s = if t == T::Follow {
                strength(f)
            } else {
                Some(1.0)
            };
            let (person, target) = (p?, target?);
            if person == target {
                f.fail("target", "a person cannot follow themselves");
                return None;
            }
            if t == T::Follow {
                EventKind::Follow {
                    person,
                    target,
                    strength: s?,
                }
            } else {
                EventKind::Unfollow { person, target }
            }
        }
        T::Occasion => {
            let occasion = f.required("occasion", |f, v| f.entity("occasion", v));
            let b = brand(f);
            let performers = f.optional("performers", |f, v| f.entities("performers", v));
            let tags = f.optional("tags", |f, v| f.strings("tags", v));
            EventKind::Occasion {
                occasion: occasion?,
                brand: b?,
                performers: performers?.unwrap_or_default(),
                tags: tags?.unwrap_or_default(),
            }
        }
        T::Attendance => {
            let p = person(f);
            let occasion = f.required("occasion", |f, v| f.entity("occasion", v));
            EventKind::Attendance {
                person: p?,
                occasion: occasion?,
            }
        }
        T::Cause => {
            let b = brand(f);
            let tags = f.required("tags", |f, v| f.strings("tags", v));
            let a = amount(f, false);
            let tags = tags?;
            if tags.is_empty() {
                f.fail("tags", "must name at least one cause");
                return None;
            }
            EventKind::Cause {
                brand: b?,
                tags,
                amount: a?,
            }
        }
        T::Consent => {
            let p = person(f);
            let g = f.required("granted", |f, v| f.boolean("granted", v));
            EventKind::Consent {
                person: p?,
                granted: g?,
            }
        }
    };
    Some(kind)
}

/// The wire form of a stored event (timelines show events as they were sent,
/// plus where a derived sentiment came from).
pub fn to_wire(event: &Event) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), event.id.as_str().into());
    m.insert("type".into(), event.kind.event_type().as_str().into());
    m.insert(
        "time".into(),
        event
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    );
    let id = |v: &EntityId| Value::from(v.as_str());
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    use EventKind::*;
    let sentiment_fields =
        |put: &mut dyn FnMut(&str, Value), s: &Sentiment, text: &Option<String>| {
            put("sentiment", s.value.into());
            put(
                "sentiment_source",
                match s.source {
                    SentimentSource::Given => "given",
                    SentimentSource::Text => "text",
                }
                .into(),
            );
            if let Some(t) = text {
                put("text", t.clone().into());
            }
        };
    match &event.kind {
        Purchase {
            person,
            brand,
            amount,
            currency,
        } => {
            put("person", id(person));
            put("brand", id(brand));
            put("amount", (*amount).into());
            put("currency", currency.clone().into());
        }
        BrandSales { brand, amount } => {
            put("brand", id(brand));
            put("amount", (*amount).into());
        }
        Post {
            person,
            brand,
            sentiment,
            text,
        }
        | Mention {
            person,
            brand,
            sentiment,
            text,
        } => {
            put("person", id(person));
            put("brand", id(brand));
            sentiment_fields(&mut put, sentiment, text);
        }
        Review {
            person,
            brand,
            rating,
            sentiment,
            text,
        } => {
            put("person", id(person));
            put("brand", id(brand));
            put("rating", (*rating).into());
            match sentiment {
                Some(s) => sentiment_fields(&mut put, s, text),
                None => {
                    if let Some(t) = text {
                        put("text", t.clone().into());
                    }
                }
            }
        }
        Service {
            person,
            brand,
            channel,
            csat,
            effort,
            resolved,
            wait_seconds,
            transfers,
        } => {
            put("person", id(person));
            put("brand", id(brand));
            if let Some(c) = channel {
                put("channel", c.clone().into());
            }
            if let Some(c) = csat {
                put("csat", (*c).into());
            }
            if let Some(e) = effort {
                put("effort", (*e).into());
            }
            if let Some(r) = resolved {
                put("resolved", (*r).into());
            }
            if let Some(w) = wait_seconds {
                put("wait_seconds", (*w).into());
            }
            if let Some(t) = transfers {
                put("transfers", (*t).into());
            }
        }
        Endorsement {
            person,
            brand,
            strength,
        } => {
            put("person", id(person));
            put("brand", id(brand));
            put("strength", (*strength).into());
        }
        Audience { person, followers } => {
            put("person", id(person));
            put("followers", (*followers).into());
        }
        Follow {
            person,
            target,
            strength,
        } => {
            put("person", id(person));
            put("target", id(target));
            put("strength", (*strength).into());
        }
        Unfollow { person, target } => {
            put("person", id(person));
            put("target", id(target));
        }
        Occasion {
            occasion,
            brand,
            performers,
            tags,
        } => {
            put("occasion", id(occasion));
            put("brand", id(brand));
            put(
                "performers",
                performers.iter().map(id).collect::<Vec<_>>().into(),
            );
            put("tags", tags.clone().into());
        }
        Attendance { person, occasion } => {
            put("person", id(person));
            put("occasion", id(occasion));
        }
        Cause {
            brand,
            tags,
            amount,
        } => {
            put("brand", id(brand));
            put("tags", tags.clone().into());
            put("amount", (*amount).into());
        }
        Consent { person, granted } => {
            put("person", id(person));
            put("granted", (*granted).into());
        }
    }
    if let Some(a) = &event.attributes {
        m.insert("attributes".into(), Value::Object(a.clone()));
    }
    Value::Object(m)
}
