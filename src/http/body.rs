//! `IngestBody`: the one extractor every ingest route reads its body with,
//! so every bound below holds for every ingest route, present and future.
//!
//! Before a byte is read: the Content-Type must be `application/json`,
//! `application/x-ndjson` or `application/jsonl` (charset UTF-8 if given;
//! anything else, or none, is 415: `text/plain` and forms are what browsers
//! send cross-site without a preflight), the Content-Encoding identity, gzip
//! or zstd (else 415), and a declared length within `max_body` (else 413).
//!
//! While reading: the decoded body may not pass `max_body` (413, so a zip
//! bomb stops there); no chunk for `body_idle_timeout` or no end by
//! `body_deadline` is 408; and the bytes held are charged to one budget
//! shared by every request (`BodyBudget`), acquired as the body grows. A
//! request that cannot get its next share within `body_budget_wait` is
//! answered 503 with `Retry-After` and releases what it held.
//!
//! Then the body is parsed and validated on the blocking pool (it is CPU
//! work: the async workers keep answering reads meanwhile), and its budget is
//! held until the handler is done with the events.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, mime, web};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Limits;
use super::error::ApiError;
use crate::domain::CurrencyTable;
use crate::ingest::{BodyDecoder, BodyError, BodyFormat, Compression, ParsedBody};

/// The budget is counted in KiB, so that 4 GiB fit a semaphore's permits.
const UNIT: usize = 1024;
/// Smallest share taken at once, in units (64 KiB), to keep the semaphore
/// off the per-chunk path.
const MIN_SHARE: usize = 64;

/// Bytes of request bodies the whole service may hold at once.
pub struct BodyBudget {
    permits: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(units)),
        }
    }
}

/// The share of the budget one request holds; released when dropped.
pub struct BodyShare {
    held: Option<OwnedSemaphorePermit>,
    units: usize,
}

impl BodyShare {
    /// Holds at least `bytes` (never more than `cap`), waiting at most `wait`.
    async fn grow(
        &mut self,
        budget: &BodyBudget,
        bytes: usize,
        cap: usize,
        wait: std::time::Duration,
    ) -> Result<(), ApiError> {
        // Past `cap` the decoder refuses the bytes (413): no need to wait.
        let want = bytes.min(cap).div_ceil(UNIT);
        if want <= self.units {
            return Ok(());
        }
        let more = (want - self.units)
            .max(MIN_SHARE)
            .min(cap.div_ceil(UNIT) - self.units);
        let n = u32::try_from(more).map_err(|_| ApiError::Busy)?;
        let acquired =
            tokio::time::timeout(wait, Arc::clone(&budget.permits).acquire_many_owned(n)).await;
        match acquired {
            Ok(Ok(permit)) => {
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
                self.units += more;
                Ok(())
            }
            _ => Err(ApiError::Busy),
        }
    }
}

/// What an ingest route reads from its body: the media types it takes
/// (checked on the head, before a byte is read) and how the bytes become
/// what the handler needs. Every ingest route reads through
/// [`IngestBody`] with its kind, so the bounds of this module hold for all.
pub trait BodyKind: 'static {
    /// What the head says about the body (its format; a binary-mode
    /// CloudEvent's attributes).
    type Head: Send + 'static;
    /// The body, read.
    type Parsed: Send + 'static;
    /// Checks the head; a media type the route does not read is 415.
    fn head(req: &HttpRequest) -> Result<Self::Head, ApiError>;
    /// Reads the (decompressed) body, on the blocking pool.
    fn parse(
        body: &[u8],
        head: &Self::Head,
        currencies: &CurrencyTable,
    ) -> Result<Self::Parsed, BodyError>;
}

/// Fusion's own event bodies (`POST /v1/events`): validated as they are read.
pub struct Events;

impl BodyKind for Events {
    type Head = BodyFormat;
    type Parsed = ParsedBody;

    fn head(req: &HttpRequest) -> Result<BodyFormat, ApiError> {
        let send = format!("send the events as {MEDIA_TYPES} (UTF-8)");
        let mime = media_type(req, &send)?;
        match mime.essence_str() {
            "application/json" => Ok(BodyFormat::Json),
            "application/x-ndjson" | "application/jsonl" => Ok(BodyFormat::Ndjson),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other} is not read here; {send}"
            ))),
        }
    }

    fn parse(
        body: &[u8],
        head: &BodyFormat,
        currencies: &CurrencyTable,
    ) -> Result<ParsedBody, BodyError> {
        crate::ingest::parse_events(body, *head, currencies)
    }
}

/// An ingest request's body, read as its kind says, with the decoded
/// bytes (a rejected event is kept as sent from them: `rejected.rs`) and
/// its share of the body budget (keep it until the events are stored).
pub struct IngestBody<K: BodyKind = Events> {
    pub parsed: K::Parsed,
    pub head: K::Head,
    /// The decoded body, as sent.
    pub bytes: Vec<u8>,
    pub share: BodyShare,
}

impl<K: BodyKind> FromRequest for IngestBody<K> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let head = read_head::<K>(req);
        let limits = req.app_data::<web::Data<Limits>>().cloned();
        let budget = req.app_data::<web::Data<BodyBudget>>().cloned();
        let currencies = req.app_data::<web::Data<CurrencyTable>>().cloned();
        let payload = payload.take();
        let req = req.clone();
        Box::pin(async move {
            let (head, compression) = head?;
            let (Some(limits), Some(budget), Some(currencies)) = (limits, budget, currencies)
            else {
                tracing::error!("the ingest body extractor is used without its limits");
                return Err(ApiError::Internal);
            };
            let received_at = chrono::Utc::now();
            let (bytes, share) = read_body(payload, compression, &limits, &budget).await?;
            let (bytes, head, parsed) = web::block(move || {
                let parsed = K::parse(&bytes, &head, &currencies);
                (bytes, head, parsed)
            })
            .await
            .map_err(|e| {
                tracing::error!(cause = %e, "the body parser failed");
                ApiError::Internal
            })?;
            match parsed {
                Ok(parsed) => Ok(IngestBody {
                    parsed,
                    head,
                    bytes,
                    share,
                }),
                Err(e) => {
                    // A malformed body is kept too (up to a size cap).
                    super::rejected::keep_malformed(&req, received_at, &bytes, &e).await;
                    Err(e.into())
                }
            }
        })
    }
}

/// The checks made on the request head: media type, compression, declared
/// size.
fn read_head<K: BodyKind>(req: &HttpRequest) -> Result<(K::Head, Compression), ApiError> {
    let head = K::head(req)?;
    let compression = compression(req)?;
    let max = req
        .app_data::<web::Data<Limits>>()
        .map_or(Limits::default().max_body, |l| l.max_body);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge {
            limit: max,
            decoded: false,
        }
        .into());
    }
    Ok((head, compression))
}

/// The request's media type, which must be present, readable and, if it
/// says a charset, UTF-8; `send` says what the route takes (for the 415).
pub fn media_type(req: &HttpRequest, send: &str) -> Result<mime::Mime, ApiError> {
    let unsupported = |what: String| ApiError::UnsupportedMediaType(format!("{what}; {send}"));
    let mime = match req.mime_type() {
        Ok(Some(m)) => m,
        Ok(None) => return Err(unsupported("the request has no Content-Type".into())),
        Err(_) => return Err(unsupported("the Content-Type cannot be read".into())),
    };
    if let Some(charset) = mime.get_param(mime::CHARSET)
        && !charset.as_str().eq_ignore_ascii_case("utf-8")
        && !charset.as_str().eq_ignore_ascii_case("utf8")
    {
        return Err(unsupported(format!("charset {charset} is not read here")));
    }
    Ok(mime)
}

const MEDIA_TYPES: &str = "application/json, application/x-ndjson or application/jsonl";

fn compression(req: &HttpRequest) -> Result<Compression, ApiError> {
    let mut codings = Vec::new();
    for value in req.headers().get_all(header::CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| {
            ApiError::UnsupportedEncoding("the Content-Encoding cannot be read".into())
        })?;
        codings.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
                .map(str::to_ascii_lowercase),
        );
    }
    match codings.as_slice() {
        [] => Ok(Compression::Identity),
        [one] if one == "gzip" || one == "x-gzip" => Ok(Compression::Gzip),
        [one] if one == "zstd" => Ok(Compression::Zstd),
        [one] => Err(ApiError::UnsupportedEncoding(format!(
            "Content-Encoding {one} is not supported; send identity, gzip or zstd"
        ))),
        _ => Err(ApiError::UnsupportedEncoding(format!(
            "Content-Encoding {} stacks codings; send one of identity, gzip or zstd",
            codings.join(", ")
        ))),
    }
}

/// Reads and decodes the body within the limits, holding its share of the
/// budget.
async fn read_body(
    mut payload: Payload,
    compression: Compression,
    limits: &Limits,
    budget: &BodyBudget,
) -> Result<(Vec<u8>, BodyShare), ApiError> {
    let mut share = BodyShare {
        held: None,
        units: 0,
    };
    let mut decoder = BodyDecoder::new(compression, limits.max_body);
    let deadline = Instant::now() + limits.body_deadline;
    loop {
        let idle = Instant::now() + limits.body_idle_timeout;
        let next = match tokio::time::timeout_at(idle.min(deadline), payload.next()).await {
            Ok(next) => next,
            Err(_) if Instant::now() >= deadline => {
                return Err(ApiError::RequestTimeout(format!(
                    "the body did not arrive within {} s; send it faster or in smaller requests",
                    limits.body_deadline.as_secs_f64()
                )));
            }
            Err(_) => {
                return Err(ApiError::RequestTimeout(format!(
                    "no body bytes arrived for {} s",
                    limits.body_idle_timeout.as_secs_f64()
                )));
            }
        };
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(PayloadError::Overflow)) => {
                return Err(BodyError::TooLarge {
                    limit: limits.max_body,
                    decoded: false,
                }
                .into());
            }
            Some(Err(e)) => {
                return Err(BodyError::Malformed {
                    line: None,
                    message: format!("the body could not be read: {e}"),
                }
                .into());
            }
        };
        let (cap, wait) = (limits.max_body, limits.body_budget_wait);
        // Charge before the bytes are held, then for what decompression made
        // of them (a compressed chunk grows by an amount known only after).
        share
            .grow(budget, decoder.len() + chunk.len(), cap, wait)
            .await?;
        decoder.push(&chunk)?;
        share.grow(budget, decoder.len(), cap, wait).await?;
    }
    Ok((decoder.finish()?, share))
}
