//! The wire shapes of the API as OpenAPI schemas (utoipa), for
//! `/openapi.json`. Only `http` knows the wire format; this file says it in
//! the form the spec needs. Handlers that answer a typed value (`Entity`,
//! the ingest report, the relationship view) serialise the same fields;
//! those that build JSON in place must keep to these shapes, and
//! scripts/schemathesis.sh checks every answer of a live server against
//! them. Must not be used to build answers (it holds no data).

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer, `application/problem+json` (RFC 9457).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// A stable problem type, `/problems/<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and, where known, what to do about it.
    pub detail: String,
    /// The request's id, as in the `X-Request-Id` header.
    pub request_id: String,
    /// Per-field problems, for events with the index and id of the event.
    pub errors: Option<Vec<ProblemItem>>,
}

#[derive(Serialize, ToSchema)]
pub struct ProblemItem {
    /// Index of the event in the request.
    pub index: Option<usize>,
    /// The event's id, when it had one.
    pub id: Option<String>,
    pub field: String,
    pub message: String,
}

/// Event types.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Purchase,
    BrandSales,
    Post,
    Mention,
    Review,
    Service,
    Endorsement,
    Audience,
    Follow,
    Unfollow,
    Occasion,
    Attendance,
    Cause,
    Consent,
}

/// An event as sent (README "Events" says which fields each type requires;
/// a field the type does not use is an error naming it).
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// The sender's id of the event: the idempotency key.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Event time (when it happened), RFC 3339.
    pub time: DateTime<Utc>,
    pub person: Option<String>,
    pub brand: Option<String>,
    /// For follow/unfollow: a person or a brand.
    pub target: Option<String>,
    pub occasion: Option<String>,
    /// For occasion: the people performing.
    pub performers: Option<Vec<String>>,
    pub amount: Option<f64>,
    /// ISO 4217, three capital letters.
    pub currency: Option<String>,
    /// In [-1, 1]; scored from `text` (VADER) when absent.
    #[schema(minimum = -1.0, maximum = 1.0)]
    pub sentiment: Option<f64>,
    pub text: Option<String>,
    /// 1 to 5.
    pub rating: Option<f64>,
    /// 1 to 5.
    pub csat: Option<f64>,
    /// 1 to 7.
    pub effort: Option<f64>,
    pub resolved: Option<bool>,
    pub wait_seconds: Option<f64>,
    pub transfers: Option<u32>,
    pub channel: Option<String>,
    /// For audience: the new total.
    pub followers: Option<u64>,
    /// In (0, 1].
    pub strength: Option<f64>,
    pub tags: Option<Vec<String>>,
    /// For consent.
    pub granted: Option<bool>,
    /// A free object carried along, never scored.
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The body of `POST /v1/events` as JSON: one event or an array.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventsBody {
    One(Box<Event>),
    Many(Vec<Event>),
}

/// Where a stored post's or review's sentiment came from.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SentimentSource {
    Given,
    Text,
}

/// A stored event as the timelines show it: as sent, plus where its
/// sentiment came from.
#[derive(Serialize, ToSchema)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub event: Event,
    pub sentiment_source: Option<SentimentSource>,
}

/// What `POST /v1/events` did.
#[derive(Serialize, ToSchema)]
pub struct IngestReport {
    /// Events stored now.
    pub accepted: usize,
    /// Events whose id was stored before (not stored again).
    pub duplicates: usize,
    /// Events refused, with every reason (the first 1,000).
    pub rejected: Vec<Rejection>,
    /// How many events were refused, listed or not.
    pub rejected_count: usize,
    /// About kept events: fields kept but unused by their type, duplicates
    /// whose attributes differed.
    pub warnings: Vec<Warning>,
    /// The log position this answer reflects (also in `Fusion-Position`):
    /// pass it as `min_position` to a read, on any server of the log, to
    /// read these events' effects.
    pub position: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Warning {
    pub index: usize,
    pub id: Option<String>,
    pub field: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct Rejection {
    /// Position in the request (0-based).
    pub index: usize,
    pub id: Option<String>,
    pub errors: Vec<FieldError>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Consumer,
    Influencer,
    Brand,
    Occasion,
}

/// `PUT /v1/entities/{id}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityBody {
    pub kind: EntityKind,
    #[schema(max_length = 256)]
    pub name: Option<String>,
    /// People only.
    pub followers: Option<u64>,
    /// At most 100, each 1 to 128 bytes.
    pub interests: Option<Vec<String>>,
}

/// A registered entity.
#[derive(Serialize, ToSchema)]
pub struct Entity {
    pub id: String,
    pub kind: EntityKind,
    pub name: Option<String>,
    pub followers: Option<u64>,
    pub interests: Option<Vec<String>>,
}

/// One relationship of an entity, from its side: a person's list names the
/// brand, a brand's the person.
#[derive(Serialize, ToSchema)]
pub struct EntityRelationship {
    pub brand: Option<String>,
    pub person: Option<String>,
    /// 0 to 100.
    pub score: f64,
}

/// `GET /v1/entities/{id}`: the 360° view.
#[derive(Serialize, ToSchema)]
pub struct EntityView {
    pub id: String,
    pub kind: EntityKind,
    pub name: Option<String>,
    pub interests: Vec<String>,
    /// People only: the follower count now.
    pub followers: Option<u64>,
    /// Whether it was registered (else known from events only).
    pub registered: bool,
    pub relationships: Vec<EntityRelationship>,
    pub event_count: usize,
    /// The 20 latest events, newest first.
    pub recent_events: Vec<StoredEvent>,
    pub as_of: DateTime<Utc>,
}

/// A page of a timeline, newest first.
#[derive(Serialize, ToSchema)]
pub struct Timeline {
    pub items: Vec<StoredEvent>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The weighted components of a score; they add up to `raw`.
#[derive(Serialize, ToSchema)]
pub struct Components {
    pub sentiment: f64,
    pub sales: f64,
    pub service: f64,
    pub engagement: f64,
    pub influence: f64,
    pub values: f64,
}

/// Score now minus 1, 7 and 30 days before, in points.
#[derive(Serialize, ToSchema)]
pub struct Trend {
    pub d1: f64,
    pub d7: f64,
    pub d30: f64,
}

/// A sentiment and where it came from.
#[derive(Serialize, ToSchema)]
pub struct Sentiment {
    pub value: f64,
    pub source: SentimentSource,
}

/// One event's share in a score.
#[derive(Serialize, ToSchema)]
pub struct Contribution {
    pub event: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub time: DateTime<Utc>,
    /// Points: the score minus the score without this event.
    pub delta: f64,
    /// Its share of the raw sum.
    pub raw: f64,
    /// How it reached the relationship (`person:a`, `brand:b`, ...).
    pub path: Vec<String>,
    pub sentiment: Option<Sentiment>,
}

/// `GET /v1/relationships/{person}/{brand}`.
#[derive(Serialize, ToSchema)]
pub struct Relationship {
    pub person: String,
    pub brand: String,
    /// Fusion Score: 0 to 100, 50 neutral.
    pub score: f64,
    pub raw: f64,
    pub components: Components,
    pub trend: Trend,
    /// Time of the latest event that moved it.
    pub updated_at: Option<DateTime<Utc>>,
    /// The evaluation time.
    pub as_of: DateTime<Utc>,
    pub event_count: usize,
    /// The largest contributions first.
    pub contributions: Vec<Contribution>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryPoint {
    pub time: DateTime<Utc>,
    pub score: f64,
}

/// One relationship of a brand's listing.
#[derive(Serialize, ToSchema)]
pub struct RankedRelationship {
    pub person: String,
    pub brand: String,
    /// consumer or influencer.
    pub kind: EntityKind,
    pub score: f64,
    pub raw: f64,
    pub components: Components,
    pub trend: Trend,
}

/// `GET /v1/brands/{brand}/relationships`.
#[derive(Serialize, ToSchema)]
pub struct Listing {
    pub items: Vec<RankedRelationship>,
    pub next_cursor: Option<String>,
    pub as_of: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct HistogramBin {
    pub from: u32,
    pub to: u32,
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ScoreDistribution {
    pub mean: Option<f64>,
    pub p10: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    /// Ten bins of ten points.
    pub histogram: Vec<HistogramBin>,
    /// Relationships scoring 60 or more.
    pub advocates: usize,
    /// Relationships scoring below 40.
    pub at_risk: usize,
}

/// Service KPIs; null where no contact said.
#[derive(Serialize, ToSchema)]
pub struct ServiceKpis {
    pub contacts: u64,
    pub csat: Option<f64>,
    pub customer_effort: Option<f64>,
    pub resolution_rate: Option<f64>,
    pub first_contact_resolution: Option<f64>,
    pub wait_seconds_mean: Option<f64>,
    pub wait_seconds_max: Option<f64>,
    pub transfers_per_contact: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct Sales {
    pub purchases: u64,
    pub purchase_amount: f64,
    pub reported_sales: f64,
}

#[derive(Serialize, ToSchema)]
pub struct Reviews {
    pub count: u64,
    pub mean_rating: Option<f64>,
}

/// `GET /v1/brands/{brand}`.
#[derive(Serialize, ToSchema)]
pub struct BrandSummary {
    pub brand: String,
    pub name: Option<String>,
    pub as_of: DateTime<Utc>,
    pub relationships: usize,
    pub scores: ScoreDistribution,
    pub service: ServiceKpis,
    pub sales: Sales,
    pub reviews: Reviews,
}

/// `DELETE /v1/entities/{id}`.
#[derive(Serialize, ToSchema)]
pub struct Erasure {
    pub erased: String,
    pub events_removed: u64,
    /// Kept rejections that named it, removed too.
    pub dead_letters_removed: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ConsentChange {
    pub time: DateTime<Utc>,
    pub granted: bool,
    /// The consent event's id.
    pub event: String,
}

/// `GET /v1/entities/{id}/export`: everything held about an entity.
#[derive(Serialize, ToSchema)]
pub struct Export {
    pub id: String,
    pub kind: EntityKind,
    pub registration: Option<Entity>,
    pub exported_at: DateTime<Utc>,
    /// Every event that names it, oldest first.
    pub events: Vec<StoredEvent>,
    pub consent: Vec<ConsentChange>,
    pub relationships: Vec<Relationship>,
}

#[derive(Serialize, ToSchema)]
pub struct LiveStats {
    pub operations: u64,
    pub pushes: u64,
    pub visits: u64,
    /// Of `visits`, followers reached at once by pushes at people with a
    /// wide audience (those who spread further; the others read the
    /// pending spill as their first hop).
    pub fanout_visits: u64,
    /// Pushes at people with a wide audience whose spill to their followers
    /// was left pending (read as the followers' first hop).
    pub deferred: u64,
    pub builds: u64,
    pub recomputes: u64,
}

/// `POST /v1/admin/rescore`.
#[derive(Serialize, ToSchema)]
pub struct RescoreReport {
    pub events: usize,
    pub relationships: usize,
    /// Largest difference between the live and the recomputed scores, points.
    pub max_drift: f64,
    pub live_error_bound: f64,
    pub live_synced: bool,
    pub live: LiveStats,
    pub seconds: f64,
    pub as_of: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Ingest,
    Read,
    Admin,
}

/// `POST /v1/session`: the session cookie is set; this is its CSRF token.
#[derive(Serialize, ToSchema)]
pub struct Session {
    pub key_id: String,
    pub role: Role,
    pub expires: DateTime<Utc>,
    /// Send in `X-CSRF-Token` with every request that changes state.
    pub csrf_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub status: String,
    /// Events in the state.
    pub events: usize,
    /// Folds that failed since start (each made the state rebuild).
    pub fold_failures: u64,
    /// Rebuilds of the state that completed.
    pub recoveries: u64,
    /// `ready`, or `building` for the first seconds after a start while
    /// the live series is built: reads of every relationship at once
    /// (listings, brand summaries, the dashboard, what-if, rescore) wait
    /// for it then; single reads and writes do not.
    #[schema(pattern = "^(ready|building)$")]
    pub rankings: String,
}

/// `GET /readyz` when not ready: a problem with the fold counters.
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub request_id: String,
    pub fold_failures: u64,
    pub recoveries: u64,
}

/// `GET /v1/brands/{brand}/impact` (docs/api.md describes the members).
#[derive(Serialize, ToSchema)]
pub struct Impact {
    pub brand: String,
    pub action: serde_json::Map<String, serde_json::Value>,
    pub as_of: DateTime<Utc>,
    pub window_days: f64,
    pub before: serde_json::Map<String, serde_json::Value>,
    pub after: serde_json::Map<String, serde_json::Value>,
    pub groups: serde_json::Map<String, serde_json::Value>,
    /// Null when no comparison group could be formed.
    pub estimate: Option<serde_json::Map<String, serde_json::Value>>,
    pub brand_level: serde_json::Map<String, serde_json::Value>,
    pub note: String,
}

/// A Segment message (Segment's Tracking API spec); which members a
/// message needs depends on its type and on the mapping file.
#[derive(Serialize, ToSchema)]
pub struct SegmentMessage {
    /// track, identify, group (page, screen, alias as the mapping says).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The idempotency key.
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "userId")]
    pub user_id: Option<String>,
    #[serde(rename = "anonymousId")]
    pub anonymous_id: Option<String>,
    /// The track event's name (a rule of the mapping file).
    pub event: Option<String>,
    pub properties: Option<serde_json::Map<String, serde_json::Value>>,
    pub traits: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "groupId")]
    pub group_id: Option<String>,
    /// When it happened on the sender's clock, RFC 3339.
    pub timestamp: Option<String>,
    /// When the sender sent it, RFC 3339 (corrects the sender's clock skew).
    #[serde(rename = "sentAt")]
    pub sent_at: Option<String>,
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /v1/batch`: `{"batch": [...]}`; the other Segment routes take
/// one message.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SegmentBody {
    Batch {
        batch: Vec<SegmentMessage>,
        #[serde(rename = "sentAt")]
        sent_at: Option<String>,
    },
    One(Box<SegmentMessage>),
}

/// A rejected message of a pipeline request (kept in the dead-letter store).
#[derive(Serialize, ToSchema)]
pub struct PipelineRejection {
    /// Position of the message in the request.
    pub index: usize,
    /// malformed, unmapped, invalid or conflict.
    pub reason: String,
    pub errors: Vec<FieldError>,
}

/// What a pipeline request did with its messages.
#[derive(Serialize, ToSchema)]
pub struct SegmentAnswer {
    /// Segment's member: true when the request was read (each message is
    /// then stored, ignored or kept).
    pub success: Option<bool>,
    pub messages: usize,
    /// Events stored now (an order split by brand counts one per brand).
    pub accepted: usize,
    /// Events stored before (a retry).
    pub duplicates: usize,
    /// Entities registered or updated (identify, group).
    pub entities: usize,
    /// Messages the mapping lists as ignored (acknowledged, not stored).
    pub ignored: usize,
    /// Messages kept in the dead-letter store.
    pub dead_lettered: usize,
    /// The first 1,000 of those.
    pub rejected: Vec<PipelineRejection>,
}

/// A problem answered on Segment's routes: the problem members, and
/// Segment's `success`, `code` and `message`, which its libraries read.
#[derive(Serialize, ToSchema)]
pub struct SegmentProblem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub request_id: String,
    pub errors: Option<Vec<ProblemItem>>,
    pub success: bool,
    /// invalid_request, request_too_large, unsupported_media_type, ...
    pub code: String,
    pub message: String,
}

/// A CloudEvent in structured form (CloudEvents 1.0).
#[derive(Serialize, ToSchema)]
pub struct CloudEvent {
    /// 1.0
    pub specversion: String,
    /// With `source`, the idempotency key.
    pub id: String,
    pub source: String,
    /// Mapped by the mapping file (`[cloudevents.types]`, `[events]`).
    #[serde(rename = "type")]
    pub kind: String,
    pub time: Option<String>,
    /// The person (by default).
    pub subject: Option<String>,
    pub datacontenttype: Option<String>,
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The request a letter came in.
#[derive(Serialize, ToSchema)]
pub struct LetterRequest {
    /// Its X-Request-Id (or the file of `fusion ingest`).
    pub id: String,
    /// How many of its events or messages were rejected, kept or not.
    pub rejected: u64,
}

/// A kept rejection.
#[derive(Serialize, ToSchema)]
pub struct DeadLetter {
    /// Increasing with arrival; the cursor of listings.
    pub id: u64,
    pub received_at: DateTime<Utc>,
    /// The route pattern, or `fusion ingest`.
    pub route: String,
    /// The public id of the key used (never the key).
    pub key_id: Option<String>,
    /// malformed, unmapped, invalid or conflict.
    pub reason: String,
    /// The event or message as sent (API keys redacted), or the body.
    pub raw: String,
    /// `raw` is base64 (the body was not UTF-8 text).
    pub raw_base64: bool,
    /// `raw` was cut at 64 KiB.
    pub truncated: bool,
    pub errors: Vec<FieldError>,
    pub request: LetterRequest,
    /// What a replay needs besides `raw` (a Segment batch's sentAt).
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `GET /v1/rejected`.
#[derive(Serialize, ToSchema)]
pub struct RejectedPage {
    pub items: Vec<DeadLetter>,
    pub next_cursor: Option<String>,
    /// Letters held now.
    pub held: u64,
    /// Letters the retention dropped, ever.
    pub dropped_by_retention: u64,
    /// Rejections never kept (past 1,000 in one request), ever.
    pub not_kept: u64,
}

/// `DELETE /v1/rejected`.
#[derive(Serialize, ToSchema)]
pub struct RejectedDeleted {
    pub deleted: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReplayItem {
    pub id: u64,
    /// ingested, would_pass, rejected or not_replayable.
    pub outcome: String,
    pub errors: Option<Vec<FieldError>>,
}

/// `POST /v1/rejected/replay`.
#[derive(Serialize, ToSchema)]
pub struct ReplayReport {
    pub dry_run: bool,
    pub examined: usize,
    /// Letters that pass now (ingested and removed, unless a dry run).
    pub passed: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub ignored: usize,
    pub entities: usize,
    pub removed: u64,
    pub items: Vec<ReplayItem>,
    pub next_cursor: Option<String>,
}
