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
mod entity;
pub mod mapping;
pub mod pipeline;
mod validate;
mod wire;

pub use body::{
    BodyDecoder, BodyError, BodyFormat, Compression, MAX_EVENT_BYTES, MAX_REJECTIONS, Message,
    MessageShape, Messages, ParsedBody, decode, is_json_text, parse_event, parse_events,
    parse_messages, parse_ndjson,
};
pub use entity::{MAX_INTERESTS, check_entity};
pub use validate::{
    ALL_FIELDS, FieldError, FieldWarning, Rejection, Validated, Validation, Warning,
    deserialize_whole_number, validate, validate_all, whole_number,
};
pub use wire::to_wire;
