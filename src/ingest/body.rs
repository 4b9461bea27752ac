//! Request bodies and file lines -> events, as a stream.
//!
//! A body is one event object, a JSON array of event objects, or NDJSON (one
//! object per line), optionally compressed (gzip, zstd) and optionally
//! starting with a UTF-8 byte order mark, which is skipped. Each event is
//! parsed, checked for duplicate keys and validated as it is read, and its
//! JSON value is dropped at once: a body is never held as a list of values,
//! only as its bytes plus the events that passed and at most
//! [`MAX_REJECTIONS`] rejections (the rest are only counted). So the memory of
//! a request is its body plus its valid events, whatever the body holds: an
//! array of fifteen million `0`s costs its 30 MB and a thousand rejections.
//!
//! Decompression is bounded by the same limit as a plain body: the decoder
//! stops as soon as the output would pass it (a zip bomb is refused after
//! `limit` bytes of work), and zstd frames may not ask for a window larger
//! than 8 MiB.
//!
//! This module knows bytes and JSON, not HTTP: headers, timeouts and the
//! byte budget of bodies in flight belong to `http::body`. It must not store
//! anything.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{FieldError, Rejection, Validated, Warning};
use crate::domain::CurrencyTable;
use crate::domain::Event;

/// Rejections kept in full per body; past this they are only counted.
pub const MAX_REJECTIONS: usize = 1000;

/// Largest event accepted, in bytes of its parsed form (its JSON size plus
/// about 32 bytes per value), so that one element cannot hold a body's worth
/// of memory as JSON values. Ten times the largest event the contract has a
/// use for (a 64 KiB text with 1,000 tags and performers).
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// The largest zstd window a body may ask for: 2^23 bytes (8 MiB), what
/// compression levels up to 19 use without long-distance mode. A larger
/// window would make the decoder allocate that much for a few bytes of input.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A UTF-8 byte order mark: some tools write one at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The body without one leading byte order mark.
fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(BOM).unwrap_or(body)
}

/// How the events of a body are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One event object, or a JSON array of them.
    Json,
    /// One event object per line; blank lines are skipped.
    Ndjson,
}

/// How a body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Identity,
    Gzip,
    Zstd,
}

/// The body as a whole could not be read as events; nothing of it is stored.
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
    /// A pipeline body of another shape than its route reads.
    #[error("the body must be {0}")]
    NotMessages(&'static str),
    #[error("the body is larger than {limit} bytes{}; split it into smaller requests", if *.decoded { " once decompressed" } else { "" })]
    TooLarge { limit: usize, decoded: bool },
    #[error("the {encoding} body cannot be decompressed ({message}); check the Content-Encoding")]
    Corrupt {
        encoding: &'static str,
        message: String,
    },
}

/// The events of a body: those that passed validation, with their index in
/// the body, and the first [`MAX_REJECTIONS`] that did not.
#[derive(Debug, Default)]
pub struct ParsedBody {
    pub events: Vec<(usize, Event)>,
    /// The first rejections, in body order.
    pub rejected: Vec<Rejection>,
    /// Every rejection, including those not kept in `rejected`.
    pub rejected_count: usize,
    /// The first [`MAX_REJECTIONS`] warnings about accepted events, in body
    /// order (they too can be one per event, so they are bounded alike).
    pub warnings: Vec<Warning>,
    /// Where each event (by index, accepted or not) is in the body, so a
    /// rejected one can be kept as sent (`store::dead_letters`) without
    /// holding more than the body.
    pub spans: Vec<Range<usize>>,
}

impl ParsedBody {
    fn push(&mut self, index: usize, checked: Checked, currencies: &CurrencyTable) {
        match check(index, checked, currencies) {
            Ok(Validated { event, warnings }) => {
                let room = MAX_REJECTIONS.saturating_sub(self.warnings.len());
                self.warnings
                    .extend(warnings.into_iter().take(room).map(|w| Warning {
                        index,
                        id: Some(event.id.to_string()),
                        field: w.field,
                        message: w.message,
                    }));
                self.events.push((index, event));
            }
            Err(rejection) => self.reject(rejection),
        }
    }

    fn reject(&mut self, rejection: Rejection) {
        self.rejected_count += 1;
        if self.rejected.len() < MAX_REJECTIONS {
            self.rejected.push(rejection);
        }
    }
}

/// Reads every event of a (decompressed) body. A body that is not JSON, or
/// holds no events, is an error as a whole; each event is otherwise accepted
/// or rejected on its own.
pub fn parse_events(
    body: &[u8],
    format: BodyFormat,
    currencies: &CurrencyTable,
) -> Result<ParsedBody, BodyError> {
    let whole = body;
    let body = without_bom(body);
    let mut out = ParsedBody::default();
    let mut count = 0usize;
    match format {
        BodyFormat::Ndjson => {
            for (line_no, line) in ndjson_lines(body) {
                let checked = read_checked(line).map_err(|e| BodyError::Malformed {
                    line: Some(line_no),
                    message: e.to_string(),
                })?;
                out.spans.push(span_of(whole, line));
                out.push(count, checked, currencies);
                count += 1;
            }
        }
        BodyFormat::Json => {
            let malformed = |e: serde_json::Error| BodyError::Malformed {
                line: None,
                message: e.to_string(),
            };
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            let mut de = serde_json::Deserializer::from_slice(body);
            if first == Some(&b'[') {
                // An array: each element is validated as it is read.
                let visitor = EventsVisitor {
                    out: &mut out,
                    count: &mut count,
                    currencies,
                    body: whole,
                };
                de::Deserializer::deserialize_seq(&mut de, visitor).map_err(malformed)?;
                de.end().map_err(malformed)?;
            } else {
                let budget = Cell::new(MAX_EVENT_BYTES);
                let checked = CheckedSeed { budget: &budget }
                    .deserialize(&mut de)
                    .map_err(malformed)?;
                de.end().map_err(malformed)?;
                if !checked.value.is_object() {
                    return Err(BodyError::NotEvents);
                }
                out.spans.push(span_of(whole, body.trim_ascii()));
                out.push(0, checked, currencies);
                count = 1;
            }
        }
    }
    if count == 0 {
        return Err(BodyError::Empty);
    }
    Ok(out)
}

/// One event from one JSON text, such as a line of a file: JSON that does
/// not parse is this event's rejection (a file is not one request).
pub fn parse_event(
    json: &[u8],
    index: usize,
    currencies: &CurrencyTable,
) -> Result<Validated, Rejection> {
    match read_checked(json) {
        Ok(checked) => check(index, checked, currencies),
        Err(e) => Err(Rejection {
            index,
            id: None,
            errors: vec![FieldError::new("", format!("malformed JSON: {e}"))],
        }),
    }
}

/// Whether `json` is one JSON text as the service reads it (duplicate keys
/// and the size cap are the event checks' business, not this): a line for
/// which this is false makes a whole NDJSON request malformed.
pub fn is_json_text(json: &[u8]) -> bool {
    read_checked(json).is_ok()
}

/// Where `part` (a slice of `whole`) is in `whole`.
fn span_of(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

/// NDJSON: one JSON value per line, as `(line number, line)`; a `\r` before
/// the `\n` is dropped and blank lines are skipped.
fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// Every line of an NDJSON body as a JSON value, for trusted inputs
/// (fixtures, benches, examples); the service reads bodies with
/// [`parse_events`], which never holds all the values at once.
pub fn parse_ndjson(body: &[u8]) -> Result<Vec<Value>, BodyError> {
    let values = ndjson_lines(without_bom(body))
        .map(|(line_no, line)| {
            serde_json::from_slice(line).map_err(|e| BodyError::Malformed {
                line: Some(line_no),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<Value>, _>>()?;
    if values.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(values)
}

/// The one place a wire event is validated on its way in: duplicate keys
/// and oversize first, then the validator.
fn check(
    index: usize,
    checked: Checked,
    currencies: &CurrencyTable,
) -> Result<Validated, Rejection> {
    let id = checked
        .value
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let reject = |errors| Rejection { index, id, errors };
    if checked.oversized {
        return Err(reject(vec![FieldError::new(
            "",
            format!("the event is larger than {MAX_EVENT_BYTES} bytes; put large data elsewhere"),
        )]));
    }
    let mut errors: Vec<FieldError> = checked
        .duplicates
        .iter()
        .map(|key| {
            FieldError::new(
                key,
                "appears more than once in the event; send each key once",
            )
        })
        .collect();
    match super::validate(&checked.value, currencies) {
        Ok(validated) if errors.is_empty() => Ok(validated),
        Ok(_) => Err(reject(errors)),
        Err(mut more) => {
            errors.append(&mut more);
            Err(reject(errors))
        }
    }
}

/// One JSON text as a checked value; trailing characters are an error.
fn read_checked(json: &[u8]) -> Result<Checked, serde_json::Error> {
    let budget = Cell::new(MAX_EVENT_BYTES);
    let mut de = serde_json::Deserializer::from_slice(json);
    let checked = CheckedSeed { budget: &budget }.deserialize(&mut de)?;
    de.end()?;
    Ok(checked)
}

/// A JSON value as read, with the paths of the keys that appeared more than
/// once in one of its objects (the first occurrence is kept), and whether it
/// ran past [`MAX_EVENT_BYTES`] (then the rest of it was skipped, not kept).
struct Checked {
    value: Value,
    duplicates: Vec<String>,
    oversized: bool,
}

impl Checked {
    fn leaf(value: Value) -> Self {
        Self {
            value,
            duplicates: Vec::new(),
            oversized: false,
        }
    }
}

/// Rough heap cost of one JSON value, for the per-event bound.
const VALUE_BYTES: usize = std::mem::size_of::<Value>();

/// Reads one value into a `Checked`, charging its size to `budget`.
#[derive(Clone, Copy)]
struct CheckedSeed<'b> {
    budget: &'b Cell<usize>,
}

impl CheckedSeed<'_> {
    /// Charges `bytes`; false once the budget is spent.
    fn charge(&self, bytes: usize) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(bytes));
        left >= bytes
    }
    fn spent(&self) -> bool {
        self.budget.get() == 0
    }
}

impl<'de> DeserializeSeed<'de> for CheckedSeed<'_> {
    type Value = Checked;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CheckedSeed<'_> {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Checked, E> {
        self.charge(VALUE_BYTES);
        Ok(Checked::leaf(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Checked, E> {
        self.charge(VALUE_BYTES);
        Ok(Checked::leaf(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Checked, E> {
        self.charge(VALUE_BYTES);
        Ok(Checked::leaf(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Checked, E> {
        self.charge(VALUE_BYTES);
        Ok(Checked::leaf(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Checked, E> {
        if !self.charge(VALUE_BYTES + v.len()) {
            return Ok(Checked::leaf(Value::Null));
        }
        Ok(Checked::leaf(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Checked, E> {
        if !self.charge(VALUE_BYTES + v.len()) {
            return Ok(Checked::leaf(Value::Null));
        }
        Ok(Checked::leaf(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        self.charge(VALUE_BYTES);
        Ok(Checked::leaf(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let mut items = Vec::new();
        let mut duplicates = Vec::new();
        let mut i = 0usize;
        while !self.spent() {
            let Some(item) = seq.next_element_seed(self)? else {
                return Ok(Checked {
                    value: Value::Array(items),
                    duplicates,
                    oversized: self.spent(),
                });
            };
            duplicates.extend(
                item.duplicates
                    .into_iter()
                    .map(|d| format!("[{i}]{}", dot(&d))),
            );
            items.push(item.value);
            i += 1;
        }
        // Past the bound: read the rest without keeping it.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Checked {
            value: Value::Array(items),
            duplicates,
            oversized: true,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut obj = Map::new();
        let mut duplicates = Vec::new();
        while !self.spent() {
            let Some(key) = map.next_key::<String>()? else {
                return Ok(Checked {
                    value: Value::Object(obj),
                    duplicates,
                    oversized: self.spent(),
                });
            };
            self.charge(VALUE_BYTES + key.len());
            let item = map.next_value_seed(self)?;
            duplicates.extend(
                item.duplicates
                    .into_iter()
                    .map(|d| format!("{key}{}", dot(&d))),
            );
            if obj.contains_key(&key) {
                duplicates.push(key);
            } else {
                obj.insert(key, item.value);
            }
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Checked {
            value: Value::Object(obj),
            duplicates,
            oversized: true,
        })
    }
}

/// `.key` for a nested key path, `[i]…` as it is.
fn dot(path: &str) -> String {
    if path.starts_with('[') {
        path.to_string()
    } else {
        format!(".{path}")
    }
}

/// The top-level array: every element is checked and validated as it is
/// read, then dropped.
/// Each element is taken as its raw text first (borrowed from the body,
/// nothing allocated), which gives its span, then read from that text.
struct EventsVisitor<'a> {
    out: &'a mut ParsedBody,
    count: &'a mut usize,
    currencies: &'a CurrencyTable,
    body: &'a [u8],
}

impl<'de> Visitor<'de> for EventsVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let text = raw.get().as_bytes();
            // The text is JSON already: reading it again cannot fail.
            let checked = read_checked(text).map_err(de::Error::custom)?;
            self.out.spans.push(span_of(self.body, text));
            self.out.push(*self.count, checked, self.currencies);
            *self.count += 1;
        }
        Ok(())
    }
}

/// How the messages of a pipeline body are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageShape {
    /// One message: the body is its object.
    Object,
    /// A JSON array of messages (a CloudEvents batch).
    Array,
    /// An object whose `batch` member is an array of messages; its other
    /// members are the envelope (a Segment batch: `sentAt`, `context`, …).
    Batch,
}

/// One message of a pipeline body: its span, and its JSON object or why
/// it cannot be read as one (a key given twice, past the size bound, not
/// an object). Malformed JSON fails the whole body, as for events.
#[derive(Debug)]
pub struct Message {
    pub span: Range<usize>,
    pub value: Result<Map<String, Value>, Vec<FieldError>>,
}

/// The messages of a pipeline body (Segment, CloudEvents), each checked
/// as events are (duplicate keys, size); mapping them to events is the
/// caller's.
#[derive(Debug, Default)]
pub struct Messages {
    pub items: Vec<Message>,
    /// The members beside `batch` of a [`MessageShape::Batch`] body.
    pub envelope: Map<String, Value>,
}

fn message(whole: &[u8], text: &[u8]) -> Result<Message, BodyError> {
    let checked = read_checked(text).map_err(|e| BodyError::Malformed {
        line: None,
        message: e.to_string(),
    })?;
    let value = if checked.oversized {
        Err(vec![FieldError::new(
            "",
            format!("the message is larger than {MAX_EVENT_BYTES} bytes; put large data elsewhere"),
        )])
    } else if !checked.duplicates.is_empty() {
        Err(checked
            .duplicates
            .iter()
            .map(|key| {
                FieldError::new(
                    key,
                    "appears more than once in the message; send each key once",
                )
            })
            .collect())
    } else {
        match checked.value {
            Value::Object(m) => Ok(m),
            _ => Err(vec![FieldError::new("", "a message must be a JSON object")]),
        }
    };
    Ok(Message {
        span: span_of(whole, text),
        value,
    })
}

/// Reads the messages of a (decompressed) pipeline body. A body that is
/// not JSON of the shape is an error as a whole; each message is otherwise
/// read on its own.
pub fn parse_messages(body: &[u8], shape: MessageShape) -> Result<Messages, BodyError> {
    let whole = body;
    let body = without_bom(body).trim_ascii();
    let malformed = |e: serde_json::Error| BodyError::Malformed {
        line: None,
        message: e.to_string(),
    };
    let mut out = Messages::default();
    fn elements(text: &str) -> Result<Vec<&RawValue>, BodyError> {
        serde_json::from_str::<Vec<&RawValue>>(text).map_err(|e| BodyError::Malformed {
            line: None,
            message: e.to_string(),
        })
    }
    let text = std::str::from_utf8(body).map_err(|e| BodyError::Malformed {
        line: None,
        message: format!("the body is not UTF-8: {e}"),
    })?;
    match shape {
        MessageShape::Object => {
            if !body.starts_with(b"{") {
                serde_json::from_str::<IgnoredAny>(text).map_err(malformed)?;
                return Err(BodyError::NotMessages("a JSON object"));
            }
            out.items.push(message(whole, body)?);
        }
        MessageShape::Array => {
            if !body.starts_with(b"[") {
                serde_json::from_str::<IgnoredAny>(text).map_err(malformed)?;
                return Err(BodyError::NotMessages("a JSON array of objects"));
            }
            for raw in elements(text)? {
                out.items.push(message(whole, raw.get().as_bytes())?);
            }
        }
        MessageShape::Batch => {
            let members: Vec<(String, &RawValue)> = serde_json::from_str::<BatchMembers>(text)
                .map_err(|e| {
                    if e.is_data() {
                        BodyError::NotMessages("an object with a `batch` array")
                    } else {
                        malformed(e)
                    }
                })?
                .0;
            let mut batch = None;
            for (key, raw) in members {
                if out.envelope.contains_key(&key) || (key == "batch" && batch.is_some()) {
                    return Err(BodyError::Malformed {
                        line: None,
                        message: format!("the key `{key}` appears more than once"),
                    });
                }
                if key == "batch" {
                    batch = Some(raw);
                } else {
                    let v: Value = serde_json::from_str(raw.get()).map_err(malformed)?;
                    out.envelope.insert(key, v);
                }
            }
            let Some(batch) = batch else {
                return Err(BodyError::NotMessages("an object with a `batch` array"));
            };
            if !batch.get().starts_with('[') {
                return Err(BodyError::NotMessages("an object with a `batch` array"));
            }
            for raw in elements(batch.get())? {
                out.items.push(message(whole, raw.get().as_bytes())?);
            }
        }
    }
    if out.items.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(out)
}

/// The members of an object in order, duplicates kept (so they can be
/// refused), each as raw text.
struct BatchMembers<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> de::Deserialize<'de> for BatchMembers<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BatchMembers<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(BatchMembers(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Decompresses a body chunk by chunk into at most `limit` bytes.
pub struct BodyDecoder {
    inner: Decoding,
}

enum Decoding {
    Identity(Limited),
    Gzip(flate2::write::MultiGzDecoder<Limited>),
    Zstd(zstd::stream::write::Decoder<'static, Limited>),
}

/// The decoded bytes, refusing to grow past the limit.
struct Limited {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Limited {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the body limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BodyDecoder {
    /// A decoder for a body compressed with `compression`, whose decoded
    /// form may hold at most `limit` bytes.
    pub fn new(compression: Compression, limit: usize) -> Self {
        let sink = Limited {
            buf: Vec::new(),
            limit,
            over: false,
        };
        let inner = match compression {
            Compression::Identity => Decoding::Identity(sink),
            Compression::Gzip => Decoding::Gzip(flate2::write::MultiGzDecoder::new(sink)),
            Compression::Zstd => {
                // Creating a zstd context fails only when out of memory.
                let decoder = zstd::stream::raw::Decoder::new()
                    .and_then(|mut d| {
                        d.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
                            ZSTD_WINDOW_LOG_MAX,
                        ))?;
                        Ok(d)
                    })
                    .expect("a zstd decoder context");
                Decoding::Zstd(zstd::stream::write::Decoder::with_decoder(sink, decoder))
            }
        };
        Self { inner }
    }

    fn sink(&self) -> &Limited {
        match &self.inner {
            Decoding::Identity(s) => s,
            Decoding::Gzip(d) => d.get_ref(),
            Decoding::Zstd(d) => d.get_ref(),
        }
    }

    fn encoding(&self) -> &'static str {
        match &self.inner {
            Decoding::Identity(_) => "identity",
            Decoding::Gzip(_) => "gzip",
            Decoding::Zstd(_) => "zstd",
        }
    }

    /// Decoded bytes so far.
    pub fn len(&self) -> usize {
        self.sink().buf.len()
    }

    /// Whether nothing has been decoded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fail(&self, e: std::io::Error) -> BodyError {
        let sink = self.sink();
        if sink.over {
            BodyError::TooLarge {
                limit: sink.limit,
                decoded: !matches!(self.inner, Decoding::Identity(_)),
            }
        } else {
            BodyError::Corrupt {
                encoding: self.encoding(),
                message: e.to_string(),
            }
        }
    }

    /// Decodes the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        let r = match &mut self.inner {
            Decoding::Identity(s) => s.write_all(chunk),
            Decoding::Gzip(d) => d.write_all(chunk),
            Decoding::Zstd(d) => d.write_all(chunk),
        };
        r.map_err(|e| self.fail(e))
    }

    /// The whole decoded body; a compressed stream that ends early is corrupt.
    pub fn finish(mut self) -> Result<Vec<u8>, BodyError> {
        let r = match &mut self.inner {
            Decoding::Identity(_) => Ok(()),
            Decoding::Gzip(d) => d.try_finish(),
            Decoding::Zstd(d) => d.do_finish(),
        };
        r.map_err(|e| self.fail(e))?;
        match self.inner {
            Decoding::Identity(s) => Ok(s.buf),
            // Finished above: this only hands the buffer back.
            Decoding::Gzip(d) => d.finish().map(|s| s.buf).map_err(|e| BodyError::Corrupt {
                encoding: "gzip",
                message: e.to_string(),
            }),
            Decoding::Zstd(d) => Ok(d.into_inner().buf),
        }
    }
}

/// Decodes a whole body at once (what the service does chunk by chunk).
pub fn decode(body: &[u8], compression: Compression, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut d = BodyDecoder::new(compression, limit);
    d.push(body)?;
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currencies() -> CurrencyTable {
        crate::score::ScoringModel::default_model().currency
    }

    fn purchase(id: &str) -> String {
        format!(
            r#"{{"id":"{id}","type":"purchase","time":"2026-11-01T10:00:00Z","person":"ann","brand":"acme","amount":1}}"#
        )
    }

    #[test]
    fn an_object_an_array_and_ndjson_give_the_same_events() {
        let one = parse_events(purchase("a").as_bytes(), BodyFormat::Json, &currencies()).unwrap();
        assert_eq!(one.events.len(), 1);
        let arr = format!("[{},{}]", purchase("a"), purchase("b"));
        let arr = parse_events(arr.as_bytes(), BodyFormat::Json, &currencies()).unwrap();
        assert_eq!(arr.events.len(), 2);
        let nd = format!("{}\r\n\n  \n{}\n", purchase("a"), purchase("b"));
        let nd = parse_events(nd.as_bytes(), BodyFormat::Ndjson, &currencies()).unwrap();
        assert_eq!(nd.events.len(), 2);
        assert_eq!(nd.events[1].0, 1);
    }

    /// Regression: an array of 0s gave one rejection per element (47x the
    /// body in the answer); now the first 1,000 are kept and all counted.
    #[test]
    fn rejections_past_the_first_thousand_are_only_counted() {
        let body = format!("[{}]", vec!["0"; 5000].join(","));
        let p = parse_events(body.as_bytes(), BodyFormat::Json, &currencies()).unwrap();
        assert_eq!(p.rejected.len(), MAX_REJECTIONS);
        assert_eq!(p.rejected_count, 5000);
        assert_eq!(p.rejected[999].index, 999);
    }

    /// Regression: the last of two equal keys silently won.
    #[test]
    fn duplicate_keys_reject_the_event_on_that_key() {
        let e = r#"{"id":"d","type":"purchase","time":"2026-11-01T10:00:00Z","person":"ann","brand":"acme","amount":1,"amount":2,"attributes":{"a":1,"a":2}}"#;
        for body in [e.to_string(), format!("[{e}]")] {
            let p = parse_events(body.as_bytes(), BodyFormat::Json, &currencies()).unwrap();
            assert!(p.events.is_empty());
            let fields: Vec<&str> = p.rejected[0]
                .errors
                .iter()
                .map(|e| e.field.as_str())
                .collect();
            assert_eq!(fields, ["amount", "attributes.a"]);
            assert_eq!(p.rejected[0].id.as_deref(), Some("d"));
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let body = format!("\u{feff}{}\n{}\n", purchase("a"), purchase("b"));
        let p = parse_events(body.as_bytes(), BodyFormat::Ndjson, &currencies()).unwrap();
        assert_eq!(p.events.len(), 2);
        let body = format!("\u{feff}[{}]", purchase("a"));
        assert_eq!(
            parse_events(body.as_bytes(), BodyFormat::Json, &currencies())
                .unwrap()
                .events
                .len(),
            1
        );
    }

    #[test]
    fn an_oversized_element_is_rejected_without_being_kept() {
        let big = format!("[[{}], {}]", vec!["0"; 200_000].join(","), purchase("a"));
        let p = parse_events(big.as_bytes(), BodyFormat::Json, &currencies()).unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.rejected_count, 1);
        assert!(p.rejected[0].errors[0].message.contains("larger than"));
    }

    #[test]
    fn bodies_that_are_not_events_are_errors_as_a_whole() {
        for (body, format) in [
            ("", BodyFormat::Json),
            ("[]", BodyFormat::Json),
            ("42", BodyFormat::Json),
            ("[1] x", BodyFormat::Json),
            ("{\"a\":", BodyFormat::Json),
            ("\n\n", BodyFormat::Ndjson),
            ("{}\n{", BodyFormat::Ndjson),
        ] {
            assert!(
                parse_events(body.as_bytes(), format, &currencies()).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn gzip_and_zstd_decode_within_the_limit() {
        let plain = purchase("z").repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(plain.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decode(&gz, Compression::Gzip, 1 << 20).unwrap(),
            plain.as_bytes()
        );
        let zs = zstd::encode_all(plain.as_bytes(), 3).unwrap();
        assert_eq!(
            decode(&zs, Compression::Zstd, 1 << 20).unwrap(),
            plain.as_bytes()
        );
        // A bomb: 10 MB of zeros in a few kB, against a 1 MB limit.
        let zeros = vec![b'0'; 10 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            decode(&bomb, Compression::Gzip, 1 << 20),
            Err(BodyError::TooLarge { decoded: true, .. })
        ));
        let bomb = zstd::encode_all(&zeros[..], 19).unwrap();
        assert!(matches!(
            decode(&bomb, Compression::Zstd, 1 << 20),
            Err(BodyError::TooLarge { .. })
        ));
        // Truncated and garbled streams are corrupt.
        assert!(matches!(
            decode(&gz_prefix(&plain), Compression::Gzip, 1 << 20),
            Err(BodyError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(&zs[..zs.len() - 3], Compression::Zstd, 1 << 20),
            Err(BodyError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(plain.as_bytes(), Compression::Gzip, 1 << 20),
            Err(BodyError::Corrupt { .. })
        ));
    }

    #[test]
    fn every_event_has_its_span_in_the_body() {
        let (a, b) = (purchase("a"), purchase("b"));
        for (body, format) in [
            (format!("\u{feff}{a}\r\n\n{b}\n"), BodyFormat::Ndjson),
            (format!(" [ {a} ,\n{b}]"), BodyFormat::Json),
        ] {
            let p = parse_events(body.as_bytes(), format, &currencies()).unwrap();
            let texts: Vec<&str> = p.spans.iter().map(|s| &body[s.clone()]).collect();
            assert_eq!(texts, [a.as_str(), b.as_str()], "{body:?}");
        }
        let body = format!("  {a}\n");
        let p = parse_events(body.as_bytes(), BodyFormat::Json, &currencies()).unwrap();
        assert_eq!(&body[p.spans[0].clone()], a);
    }

    #[test]
    fn messages_of_a_batch_keep_their_envelope_and_spans() {
        let body = r#"{"batch":[{"a":1},{"b":2,"b":3},7],"sentAt":"x"}"#;
        let m = parse_messages(body.as_bytes(), MessageShape::Batch).unwrap();
        assert_eq!(m.envelope["sentAt"], "x");
        assert_eq!(&body[m.items[0].span.clone()], r#"{"a":1}"#);
        assert!(m.items[0].value.is_ok());
        assert_eq!(m.items[1].value.as_ref().unwrap_err()[0].field, "b");
        assert!(m.items[2].value.is_err());
        for (bad, shape) in [
            ("{\"batch\":[", MessageShape::Batch),
            ("{\"batch\":{}}", MessageShape::Batch),
            ("{\"events\":[]}", MessageShape::Batch),
            ("{\"batch\":[]}", MessageShape::Batch),
            ("[1]", MessageShape::Object),
            ("{}", MessageShape::Array),
        ] {
            assert!(parse_messages(bad.as_bytes(), shape).is_err(), "{bad}");
        }
    }

    fn gz_prefix(plain: &str) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(plain.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        gz[..gz.len() / 2].to_vec()
    }
}
