//! Wire format -> validated domain events ("parse, don't validate").
//!
//! A request body is one JSON object, a JSON array of objects, or NDJSON
//! (`body.rs`: read as a stream, decompressed within bounds, duplicate keys
//! caught). A body that is not JSON is malformed as a whole (nothing of it is
//! stored); otherwise each event is checked on its own and every problem is
//! reported with the event's index, its id and the field at fault.
//!
//! `validate.rs` checks one event (field policy, bounds, currencies) and
//! `wire.rs` gives a stored event's wire form back for timelines.

mod body;
mod validate;
mod wire;

pub use body::{
    BodyDecoder, BodyError, BodyFormat, Compression, MAX_EVENT_BYTES, MAX_REJECTIONS, ParsedBody,
    decode, parse_event, parse_events, parse_ndjson,
};
pub use validate::{
    ALL_FIELDS, FieldError, FieldWarning, Rejection, Validated, Validation, Warning, validate,
    validate_all,
};
pub use wire::to_wire;
