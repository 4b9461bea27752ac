//! A stored event back in its wire form, for timelines: the fields as they
//! were sent (amounts in their own currency, fields kept but unused by the
//! type), plus where a derived sentiment came from. The inverse of
//! `validate.rs` up to normalisation (NFC ids, `0` for `-0.0`, a default
//! currency made explicit).

use serde_json::{Map, Value};

use crate::domain::{EntityId, Event, EventKind, Sentiment, SentimentSource};

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
    let sentiment_fields =
        |put: &mut dyn FnMut(&str, Value), s: &Option<Sentiment>, text: &Option<String>| {
            if let Some(s) = s {
                put("sentiment", s.value.into());
                put(
                    "sentiment_source",
                    match s.source {
                        SentimentSource::Given => "given",
                        SentimentSource::Text => "text",
                    }
                    .into(),
                );
            }
            if let Some(t) = text {
                put("text", t.clone().into());
            }
        };
    use EventKind::*;
    match &event.kind {
        Purchase {
            person,
            brand,
            amount,
            currency,
            ..
        } => {
            put("person", id(person));
            put("brand", id(brand));
            put("amount", (*amount).into());
            put("currency", currency.as_str().into());
        }
        BrandSales {
            brand,
            amount,
            currency,
        } => {
            put("brand", id(brand));
            put("amount", (*amount).into());
            put("currency", currency.as_str().into());
        }
        Post {
            person,
            brand,
            sentiment,
            text,
            ..
        }
        | Mention {
            person,
            brand,
            sentiment,
            text,
            ..
        } => {
            put("person", id(person));
            put("brand", id(brand));
            sentiment_fields(&mut put, &Some(*sentiment), text);
        }
        Review {
            person,
            brand,
            rating,
            sentiment,
            text,
            ..
        } => {
            put("person", id(person));
            put("brand", id(brand));
            put("rating", (*rating).into());
            sentiment_fields(&mut put, sentiment, text);
        }
        Service {
            person,
            brand,
            csat,
            effort,
            resolved,
            wait_seconds,
            transfers,
            ..
        } => {
            put("person", id(person));
            put("brand", id(brand));
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
            currency,
        } => {
            put("brand", id(brand));
            put("tags", tags.clone().into());
            put("amount", (*amount).into());
            put("currency", currency.as_str().into());
        }
        Consent { person, granted } => {
            put("person", id(person));
            put("granted", (*granted).into());
        }
    }
    if let Some(c) = event.kind.channel() {
        put("channel", c.into());
    }
    // Fields kept but unused by the type: the contract's names, never one
    // the type uses, so nothing above is overwritten.
    for (k, v) in event.extra.iter().flatten() {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some(a) = &event.attributes {
        m.insert("attributes".into(), Value::Object(a.clone()));
    }
    Value::Object(m)
}
