//! Wire format -> validated domain events ("parse, don't validate").
//!
//! A request body is one JSON object, a JSON array of objects, or NDJSON.
//! A body that is not JSON is malformed as a whole (nothing of it is stored);
//! otherwise each event is checked on its own and every problem is reported
//! with the event's index, its id and the field at fault.
//!
//! `validate.rs` checks one event (field policy, bounds, currencies) and
//! `wire.rs` gives a stored event's wire form back for timelines.

mod validate;
mod wire;

use serde_json::Value;

pub use validate::{
    FieldError, FieldWarning, Rejection, Validated, Validation, Warning, validate, validate_all,
};
pub use wire::to_wire;

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
