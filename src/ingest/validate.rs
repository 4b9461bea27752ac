//! One wire event (a JSON value) -> a validated domain `Event`, with every
//! problem reported on its field, and warnings about fields kept but unused.
//!
//! Everything accepted here is within `domain::bounds` and can be stored by
//! both stores alike (no U+0000 in any string, bounded free objects whose
//! numbers read back the same from PostgreSQL's `jsonb`), and folds into
//! finite scores.
//!
//! Field policy:
//! - a field the event's type uses is checked against its bounds;
//! - a field of the contract that this type does not use (a `rating` on a
//!   purchase) costs the pipeline nothing: it is kept with the event as sent
//!   (`Event::extra`, shown again in timelines), never scored, and named in
//!   a warning;
//! - a field the contract does not know is an error naming it (a typo must
//!   not silently drop data); free data goes in `attributes`.
//!
//! Post, mention and review text without a `sentiment` is scored with VADER
//! here, and the event records that its sentiment came from the text.
//!
//! Must not: know about the store, the graph or the clock.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::bounds::{
    self, MAX_AMOUNT, MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTES_DEPTH, MAX_CHANNEL_BYTES, MAX_FOLLOWERS,
    MAX_LIST, MAX_TAG_BYTES, MAX_TEXT_BYTES, MAX_TRANSFERS, MAX_WAIT_SECONDS, NUL,
};
use crate::domain::{
    Currency, CurrencyTable, DEFAULT_CURRENCY, EntityId, Event, EventId, EventKind, EventType,
    FreeObject, Sentiment, SentimentSource,
};

/// A problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Something the sender should know about a field of an accepted event
/// (today: kept with the event, but not used by its type).
pub type FieldWarning = FieldError;

/// An event of a request that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub id: Option<String>,
    pub errors: Vec<FieldError>,
}

/// A warning about one field of an accepted event of a request (`id` is
/// the event's id as stored, NFC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub index: usize,
    pub id: Option<String>,
    pub field: String,
    pub message: String,
}

/// An accepted event and the warnings about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub event: Event,
    pub warnings: Vec<FieldWarning>,
}

/// What validating the events of a request found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validation {
    /// Accepted events with their index in the request.
    pub good: Vec<(usize, Event)>,
    pub rejected: Vec<Rejection>,
    /// Warnings about accepted events, by index.
    pub warnings: Vec<Warning>,
}

fn sent_id(v: &Value) -> Option<String> {
    v.get("id").and_then(Value::as_str).map(str::to_string)
}

/// Validates every value against the contract and the model's currency
/// table.
pub fn validate_all(values: &[Value], currencies: &CurrencyTable) -> Validation {
    let mut out = Validation {
        good: Vec::with_capacity(values.len()),
        ..Validation::default()
    };
    for (index, v) in values.iter().enumerate() {
        match validate(v, currencies) {
            Ok(Validated { event, warnings }) => {
                out.warnings.extend(warnings.into_iter().map(|w| Warning {
                    index,
                    id: Some(event.id.to_string()),
                    field: w.field,
                    message: w.message,
                }));
                out.good.push((index, event));
            }
            Err(errors) => out.rejected.push(Rejection {
                index,
                id: sent_id(v),
                errors,
            }),
        }
    }
    out
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
            ("channel", false),
        ],
        BrandSales => &[("brand", true), ("amount", true), ("currency", false)],
        Post | Mention => &[
            ("person", true),
            ("brand", true),
            ("sentiment", false),
            ("text", false),
            ("channel", false),
        ],
        Review => &[
            ("person", true),
            ("brand", true),
            ("rating", true),
            ("sentiment", false),
            ("text", false),
            ("channel", false),
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
        Cause => &[
            ("brand", true),
            ("tags", true),
            ("amount", false),
            ("currency", false),
        ],
        Consent => &[("person", true), ("granted", true)],
    }
}

/// Every field name the contract knows (API.md's event fields).
pub const ALL_FIELDS: &[&str] = &[
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

/// Shows a bound or a sent number readably (`1e12`, not twelve zeros).
fn shown(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e7).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

const NUL_MESSAGE: &str =
    "must not contain the character U+0000, which PostgreSQL cannot store; remove it";

/// Counts the bytes of compact JSON, and stops past a limit.
struct ByteCount {
    n: usize,
    limit: usize,
}

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.n += buf.len();
        if self.n > self.limit {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks free JSON an event keeps (`attributes`, an unused contract field)
/// and returns it in the form both stores give back alike: a float with an
/// integral value in the 64-bit integer range is an integer (PostgreSQL's
/// `jsonb` keeps numbers as decimals and gives `1e17` back as
/// `100000000000000000`; it is the same JSON number). Depth counts the value
/// itself as 1.
fn storable(field: &str, v: &Value) -> Result<Value, FieldError> {
    fn walk(v: &Value, depth: usize) -> Result<Value, String> {
        if depth > MAX_ATTRIBUTES_DEPTH {
            return Err(format!(
                "must be nested at most {MAX_ATTRIBUTES_DEPTH} levels deep"
            ));
        }
        Ok(match v {
            Value::String(s) if s.contains(NUL) => return Err(NUL_MESSAGE.into()),
            Value::Number(n) => match n.as_f64() {
                Some(x) if n.is_f64() && x.fract() == 0.0 && x.abs() < 9.2e18 => {
                    Value::from(x as i64)
                }
                Some(x) if n.is_f64() && x.fract() == 0.0 && (0.0..1.8e19).contains(&x) => {
                    Value::from(x as u64)
                }
                _ => v.clone(),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|x| walk(x, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    if k.contains(NUL) {
                        return Err(format!("keys {NUL_MESSAGE}"));
                    }
                    out.insert(k.clone(), walk(x, depth + 1)?);
                }
                Value::Object(out)
            }
            _ => v.clone(),
        })
    }
    let out = walk(v, 1).map_err(|m| FieldError::new(field, m))?;
    let mut count = ByteCount {
        n: 0,
        limit: MAX_ATTRIBUTES_BYTES,
    };
    if serde_json::to_writer(&mut count, &out).is_err() {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON"),
        ));
    }
    Ok(out)
}

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
    fn id(&mut self, name: &str, v: &Value) -> Option<EntityId> {
        let Some(s) = v.as_str() else {
            self.fail(name, "must be a string id");
            return None;
        };
        EntityId::new(s)
            .map_err(|e| self.fail(name, format!("bad id: {e}")))
            .ok()
    }
    fn entity(&mut self, name: &str) -> Option<EntityId> {
        self.required(name, |f, v| f.id(name, v))
    }
    fn string(&mut self, name: &str, v: &Value, max: usize) -> Option<String> {
        match v.as_str() {
            Some(s) if s.contains(NUL) => {
                self.fail(name, NUL_MESSAGE);
                None
            }
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
    /// A number in `[lo, hi]`; `-0.0` becomes `0.0` (one zero, everywhere).
    fn number(&mut self, name: &str, v: &Value, lo: f64, hi: f64) -> Option<f64> {
        match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Some(x + 0.0),
            Some(x) => {
                let (lo, hi, x) = (shown(lo), shown(hi), shown(x));
                self.fail(name, format!("must be a number in [{lo}, {hi}], got {x}"));
                None
            }
            None => {
                self.fail(name, "must be a number");
                None
            }
        }
    }
    fn integer(&mut self, name: &str, v: &Value, (lo, hi): (u64, u64)) -> Option<u64> {
        match v.as_u64() {
            Some(x) if (lo..=hi).contains(&x) => Some(x),
            _ => {
                self.fail(name, format!("must be an integer in [{lo}, {hi}], got {v}"));
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
    fn channel(&mut self) -> Option<Option<String>> {
        self.optional("channel", |f, v| f.string("channel", v, MAX_CHANNEL_BYTES))
    }
    /// `amount` in `[0, MAX_AMOUNT]` and its `currency`, which the rate table
    /// must know (USD when absent).
    fn money(&mut self, required: bool, table: &CurrencyTable) -> Option<(f64, Currency)> {
        let amount = |f: &mut Self, v: &Value| f.number("amount", v, 0.0, MAX_AMOUNT);
        let amount = if required {
            self.required("amount", amount)
        } else {
            self.optional("amount", amount).map(|a| a.unwrap_or(0.0))
        };
        let currency = self.optional("currency", |f, v| {
            let code = v.as_str().map(Currency::new);
            match code {
                Some(Ok(c)) if table.knows(c) => Some(c),
                Some(Ok(c)) => {
                    let known: Vec<&str> = table.rates.keys().map(Currency::as_str).collect();
                    f.fail(
                        "currency",
                        format!(
                            "{c} is not in the model's rate table (rates of {}); use one of {}",
                            table.date,
                            known.join(", ")
                        ),
                    );
                    None
                }
                Some(Err(e)) => {
                    f.fail("currency", e.to_string());
                    None
                }
                None => {
                    f.fail("currency", "must be a string such as \"EUR\"");
                    None
                }
            }
        });
        Some((amount?, currency?.unwrap_or(DEFAULT_CURRENCY)))
    }
    fn strength(&mut self) -> Option<f64> {
        let (lo, hi) = bounds::STRENGTH;
        self.optional("strength", |f, v| match v.as_f64() {
            Some(x) if x > lo && x <= hi => Some(x),
            _ => {
                f.fail(
                    "strength",
                    format!("must be a number in ({lo}, {hi}], got {v}"),
                );
                None
            }
        })
        .map(|s| s.unwrap_or(hi))
    }
    fn tags(&mut self, name: &str, v: &Value) -> Option<Vec<String>> {
        let items = self.list(name, v)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            match it.as_str().map(str::trim) {
                Some(s) if s.contains(NUL) => {
                    self.fail(&format!("{name}[{i}]"), NUL_MESSAGE);
                    return None;
                }
                Some(s) if !s.is_empty() && s.len() <= MAX_TAG_BYTES => out.push(s.to_string()),
                _ => {
                    self.fail(
                        &format!("{name}[{i}]"),
                        format!("must be a non-empty string of at most {MAX_TAG_BYTES} bytes"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
    fn list<'v>(&mut self, name: &str, v: &'v Value) -> Option<&'v Vec<Value>> {
        let Some(items) = v.as_array() else {
            self.fail(name, "must be an array of strings");
            return None;
        };
        if items.len() > MAX_LIST {
            self.fail(name, format!("must have at most {MAX_LIST} items"));
            return None;
        }
        Some(items)
    }
    /// A list of ids, without repeats (as normalised ids).
    fn entities(&mut self, name: &str, v: &Value) -> Option<Vec<EntityId>> {
        let items = self.list(name, v)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let id = self.id(&format!("{name}[{i}]"), it)?;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Some(out)
    }
}

/// Validates one wire event against the contract and the model's currency
/// table. All problems are reported, not just the first.
pub fn validate(value: &Value, currencies: &CurrencyTable) -> Result<Validated, Vec<FieldError>> {
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
        match parsed.map(|t| bounds::check_time(t.with_timezone(&Utc))) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                f.fail("time", e.to_string());
                None
            }
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
        Some(v @ Value::Object(_)) => match storable("attributes", v) {
            Ok(Value::Object(m)) => Some(m),
            Ok(_) => None,
            Err(e) => {
                f.errors.push(e);
                None
            }
        },
        Some(_) => {
            f.fail("attributes", "must be a JSON object");
            None
        }
    };
    let Some(etype) = etype else {
        return Err(f.errors);
    };
    let allowed = fields_of(etype);
    let mut extra = FreeObject::new();
    let mut warnings = Vec::new();
    // Sorted, so errors and warnings come in a stable order.
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    for key in keys {
        if COMMON.contains(&key.as_str()) || allowed.iter().any(|(n, _)| n == key) {
            continue;
        }
        if !ALL_FIELDS.contains(&key.as_str()) {
            f.fail(key, "unknown field; put free data in `attributes`");
            continue;
        }
        let Some(v) = f.get(key) else { continue };
        match storable(key, v) {
            Ok(v) => {
                extra.insert(key.clone(), v);
                warnings.push(FieldWarning::new(
                    key,
                    format!(
                        "is not used by {} events; kept with the event as sent, not scored",
                        etype.as_str()
                    ),
                ));
            }
            Err(e) => f.errors.push(e),
        }
    }
    let kind = kind_of(etype, &mut f, currencies);
    match (id, time, kind) {
        (Some(id), Some(time), Some(kind)) if f.errors.is_empty() => Ok(Validated {
            event: Event {
                id,
                time,
                kind,
                attributes,
                extra: (!extra.is_empty()).then_some(extra),
            },
            warnings,
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
    let (lo, hi) = bounds::SENTIMENT;
    let given = f
        .optional("sentiment", |f, v| f.number("sentiment", v, lo, hi))
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
            // `+ 0.0`: one zero, as for given numbers.
            value: crate::sentiment::polarity_scores(t).compound + 0.0,
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

fn kind_of(t: EventType, f: &mut Fields<'_>, currencies: &CurrencyTable) -> Option<EventKind> {
    use EventType as T;
    let kind = match t {
        T::Purchase => {
            let (p, b) = (f.entity("person"), f.entity("brand"));
            let (money, channel) = (f.money(true, currencies), f.channel());
            let (amount, currency) = money?;
            EventKind::Purchase {
                person: p?,
                brand: b?,
                amount,
                currency,
                channel: channel?,
            }
        }
        T::BrandSales => {
            let (b, money) = (f.entity("brand"), f.money(true, currencies));
            let (amount, currency) = money?;
            EventKind::BrandSales {
                brand: b?,
                amount,
                currency,
            }
        }
        T::Post | T::Mention => {
            let (p, b) = (f.entity("person"), f.entity("brand"));
            let (s, text) = text_sentiment(f, true);
            let channel = f.channel();
            let (person, brand, sentiment, channel) = (p?, b?, s?, channel?);
            if t == T::Post {
                EventKind::Post {
                    person,
                    brand,
                    sentiment,
                    text,
                    channel,
                }
            } else {
                EventKind::Mention {
                    person,
                    brand,
                    sentiment,
                    text,
                    channel,
                }
            }
        }
        T::Review => {
            let (p, b) = (f.entity("person"), f.entity("brand"));
            let r = f.required("rating", |f, v| f.integer("rating", v, bounds::RATING));
            let (sentiment, text) = text_sentiment(f, false);
            let channel = f.channel();
            EventKind::Review {
                person: p?,
                brand: b?,
                rating: r? as u8,
                sentiment,
                text,
                channel: channel?,
            }
        }
        T::Service => {
            let (p, b) = (f.entity("person"), f.entity("brand"));
            let channel = f.channel();
            let csat = f.optional("csat", |f, v| f.integer("csat", v, bounds::CSAT));
            let effort = f.optional("effort", |f, v| f.integer("effort", v, bounds::EFFORT));
            let resolved = f.optional("resolved", |f, v| f.boolean("resolved", v));
            let wait = f.optional("wait_seconds", |f, v| {
                f.number("wait_seconds", v, 0.0, MAX_WAIT_SECONDS)
            });
            let transfers = f.optional("transfers", |f, v| {
                f.integer("transfers", v, (0, MAX_TRANSFERS))
            });
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
            let (p, b, s) = (f.entity("person"), f.entity("brand"), f.strength());
            EventKind::Endorsement {
                person: p?,
                brand: b?,
                strength: s?,
            }
        }
        T::Audience => {
            let p = f.entity("person");
            let n = f.required("followers", |f, v| {
                f.integer("followers", v, (0, MAX_FOLLOWERS))
            });
            EventKind::Audience {
                person: p?,
                followers: n?,
            }
        }
        T::Follow | T::Unfollow => {
            let p = f.entity("person");
            let target = f.entity("target");
            let s = if t == T::Follow {
                f.strength()
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
            let occasion = f.entity("occasion");
            let b = f.entity("brand");
            let performers = f.optional("performers", |f, v| f.entities("performers", v));
            let tags = f.optional("tags", |f, v| f.tags("tags", v));
            EventKind::Occasion {
                occasion: occasion?,
                brand: b?,
                performers: performers?.unwrap_or_default(),
                tags: tags?.unwrap_or_default(),
            }
        }
        T::Attendance => {
            let p = f.entity("person");
            let occasion = f.entity("occasion");
            EventKind::Attendance {
                person: p?,
                occasion: occasion?,
            }
        }
        T::Cause => {
            let b = f.entity("brand");
            let tags = f.required("tags", |f, v| f.tags("tags", v));
            let money = f.money(false, currencies);
            let tags = tags?;
            if tags.is_empty() {
                f.fail("tags", "must name at least one cause");
                return None;
            }
            let (amount, currency) = money?;
            EventKind::Cause {
                brand: b?,
                tags,
                amount,
                currency,
            }
        }
        T::Consent => {
            let p = f.entity("person");
            let g = f.required("granted", |f, v| f.boolean("granted", v));
            EventKind::Consent {
                person: p?,
                granted: g?,
            }
        }
    };
    Some(kind)
}
