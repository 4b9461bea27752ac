//! `GET /v1/stream`: the change feed as Server-Sent Events (issue #13;
//! actix-web-lab's `sse`). Owns the hub the engine publishes to (`Hub`, a
//! `feed::FeedSink`): the retained window (a ring of the latest changes, in
//! memory), the broadcast to subscribers, resumption and cut-offs. Which
//! changes exist is `feed`'s; this must not decide it, nor score anything.
//!
//! - Every change is one SSE event `change` whose data is the change (JSON).
//!   The changes of one log position go out together; only the last of them
//!   carries the SSE `id` (the position), so a client that reconnects with
//!   `Last-Event-ID` never misses the rest of a position (it may see some
//!   of them twice).
//! - Resuming after a position older than the window answers one
//!   `event: reset` (reload, then subscribe without an id) and ends the
//!   stream: never a silent gap.
//! - Each subscriber reads from a `tokio::sync::broadcast` channel of
//!   `FeedOptions::buffer` publications (one per step of the live thread that moved
//!   something), shared by all: a subscriber that falls that far behind
//!   gets `event: cutoff` with the position to resume from, and its stream
//!   ends. Memory stays bounded by the window and the
//!   buffer, and a slow subscriber holds up no one (the channel never waits
//!   for a receiver).
//! - Heartbeats: a comment line every `FeedOptions::heartbeat` of silence.
//! - A stream lasts at most `FeedOptions::lifetime`, then ends cleanly (the
//!   client reconnects with `Last-Event-ID`): credentials are checked when
//!   a stream opens, so a revoked key or an expired session stops there.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, Responder, web};
use actix_web_lab::sse;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use super::error::ApiError;
use super::params::Params;
use crate::domain::{EntityId, LogPosition};
use crate::feed::{Change, FeedSink, PUBLISH_DELTA, PersonKind};
use crate::store::alerts::AlertRecord;

/// The feed's sizes and pace; `fusion serve` flags set them.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Changes retained for resumption (`--feed-window`).
    pub window: usize,
    /// Publications (steps of the live thread that moved something) a subscriber may
    /// fall behind before it is cut off (`--feed-buffer`).
    pub buffer: usize,
    /// Silence after which a heartbeat comment is sent (`--feed-heartbeat`).
    pub heartbeat: Duration,
    /// How long one stream lasts before it ends (`--feed-lifetime`).
    pub lifetime: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            window: 100_000,
            buffer: 1024,
            heartbeat: Duration::from_secs(15),
            lifetime: Duration::from_secs(3600),
        }
    }
}

/// The changes of one log position, in the order published.
struct Group {
    position: LogPosition,
    changes: Vec<Change>,
}

/// One publication: the positions one step of the live thread moved, in log order.
type Batch = Arc<Vec<Arc<Group>>>;

/// What goes to every subscriber at once.
#[derive(Clone)]
enum Publication {
    /// Changes, retained in the window and resumable by position.
    Changes(Batch),
    /// Alerts just recorded (`crate::alerts`): sent as `event: alert`
    /// without an id, neither retained nor resumable (the store keeps
    /// them: `GET /v1/alerts/{id}/events`).
    Alerts(Arc<Vec<AlertRecord>>),
}

/// The retained window: every change after `floor`, oldest first.
struct Ring {
    groups: VecDeque<Arc<Group>>,
    changes: usize,
    /// Changes at or before it are not retained (`None`: all are).
    floor: Option<LogPosition>,
}

/// Where the engine's changes go, and where subscribers read them.
pub struct Hub {
    options: FeedOptions,
    ring: Mutex<Ring>,
    sender: broadcast::Sender<Publication>,
}

/// How a subscription starts.
enum Start {
    /// The client asked for a position before the window.
    Reset { floor: LogPosition },
    /// Retained changes after the position asked for (none without one),
    /// then the live ones.
    Stream {
        backlog: VecDeque<Arc<Group>>,
        live: broadcast::Receiver<Publication>,
        /// The position to resume from if cut off before anything is read.
        resume: Option<LogPosition>,
    },
}

impl Hub {
    /// A hub retaining changes after `floor` (the log folded when it
    /// starts: `Engine::attach_feed`).
    pub fn new(options: FeedOptions, floor: Option<LogPosition>) -> Self {
        let (sender, _) = broadcast::channel(options.buffer.max(1));
        Hub {
            options,
            ring: Mutex::new(Ring {
                groups: VecDeque::new(),
                changes: 0,
                floor,
            }),
            sender,
        }
    }

    /// The hub of an engine: attached to it, so it receives its changes.
    pub fn attach<S: crate::store::EventStore>(
        engine: &crate::engine::Engine<S>,
        options: FeedOptions,
    ) -> Arc<Hub> {
        engine.attach_feed(|floor| Arc::new(Hub::new(options, floor)))
    }

    /// The window, the live receiver and the backlog after `after`, taken
    /// together under the ring's lock (publishing takes it too), so no
    /// change is both in the backlog and received live, nor in neither.
    fn subscribe(&self, after: Option<LogPosition>) -> Start {
        let ring = self.ring.lock();
        if let (Some(after), Some(floor)) = (after, ring.floor)
            && after < floor
        {
            return Start::Reset { floor };
        }
        let backlog = match after {
            Some(after) => ring
                .groups
                .iter()
                .filter(|g| g.position > after)
                .cloned()
                .collect(),
            None => VecDeque::new(),
        };
        let latest = ring.groups.back().map(|g| g.position).or(ring.floor);
        Start::Stream {
            backlog,
            live: self.sender.subscribe(),
            resume: after.max(latest),
        }
    }
}

impl FeedSink for Hub {
    fn publish(&self, changes: Vec<Change>) {
        crate::telemetry::record_feed_changes(changes.len());
        // Positions go out in log order, but the live series steps in event
        // time order, which is not log order within one drain: a
        // relationship moved twice in one drain would end on its earlier
        // event's score (red team 2026-11-30, and
        // `after_an_erasure_the_feed_stays_in_log_order_with_current_scores`).
        // So one drain publishes one change per relationship: its latest
        // score, at the largest of its positions with that position's
        // cause, and the deltas summed (the feed's tracker releases them so,
        // `feed::merge_by_relationship`; this keeps the rule for any
        // caller).
        let mut changes = crate::feed::merge_by_relationship(changes);
        changes.sort_by_key(|c| c.position);
        let mut ring = self.ring.lock();
        let mut batch = Vec::new();
        let mut rest = changes.into_iter().peekable();
        while let Some(first) = rest.next() {
            let position = first.position;
            let mut group = vec![first];
            while let Some(next) = rest.next_if(|c| c.position == position) {
                group.push(next);
            }
            let group = Arc::new(Group {
                position,
                changes: group,
            });
            ring.changes += group.changes.len();
            ring.groups.push_back(Arc::clone(&group));
            batch.push(group);
            while ring.changes > self.options.window {
                let Some(old) = ring.groups.pop_front() else {
                    break;
                };
                ring.changes -= old.changes.len();
                ring.floor = Some(ring.floor.map_or(old.position, |f| f.max(old.position)));
            }
        }
        // No receiver is not an error: nobody listens now.
        let _ = self.sender.send(Publication::Changes(Arc::new(batch)));
    }

    fn forget(&self, id: &EntityId) {
        let mut ring = self.ring.lock();
        let groups = std::mem::take(&mut ring.groups);
        ring.changes = 0;
        for g in groups {
            let kept: Vec<Change> = g
                .changes
                .iter()
                .filter(|c| &c.person != id && &c.brand != id)
                .cloned()
                .collect();
            if !kept.is_empty() {
                ring.changes += kept.len();
                ring.groups.push_back(Arc::new(Group {
                    position: g.position,
                    changes: kept,
                }));
            }
        }
    }
}

impl crate::alerts::AlertSink for Hub {
    fn announce(&self, alerts: &[AlertRecord]) {
        // No receiver is not an error: nobody listens now.
        let _ = self
            .sender
            .send(Publication::Alerts(Arc::new(alerts.to_vec())));
    }
}

/// What one subscriber asked to see.
struct Filter {
    brand: Option<EntityId>,
    person: Option<EntityId>,
    kind: Option<PersonKind>,
    min_delta: f64,
}

impl Filter {
    fn from_params(params: &Params) -> Result<Self, ApiError> {
        let id = |name: &str| -> Result<Option<EntityId>, ApiError> {
            params
                .get(name)?
                .map(|s| {
                    EntityId::new(s).map_err(|e| ApiError::parameter(name, format!("bad id: {e}")))
                })
                .transpose()
        };
        Ok(Filter {
            brand: id("brand")?,
            person: id("person")?,
            kind: params
                .choice("kind", &["consumer", "influencer"])?
                .and_then(PersonKind::parse),
            min_delta: params
                .number("min_delta", PUBLISH_DELTA, 100.0)?
                .unwrap_or(PUBLISH_DELTA),
        })
    }

    fn admits(&self, c: &Change) -> bool {
        self.brand.as_ref().is_none_or(|b| &c.brand == b)
            && self.person.as_ref().is_none_or(|p| &c.person == p)
            && self.kind.is_none_or(|k| c.kind == k)
            && c.delta.abs() >= self.min_delta
    }

    /// An alert passes the brand, person and kind filters (`min_delta`
    /// is for changes).
    fn admits_alert(&self, a: &AlertRecord) -> bool {
        self.brand
            .as_ref()
            .is_none_or(|b| a.alert.brand == b.as_str())
            && self
                .person
                .as_ref()
                .is_none_or(|p| a.alert.person == p.as_str())
            && self
                .kind
                .is_none_or(|k| PersonKind::of(a.alert.kind) == Some(k))
    }
}

/// The data of `event: cutoff` and `event: reset`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StreamNotice {
    /// What happened: `cutoff` (the subscriber fell behind) or `reset`
    /// (the position asked for is older than the window).
    reason: &'static str,
    /// `cutoff`: resume with `Last-Event-ID` (or `last_event_id`) set to
    /// this; absent when the subscriber had no position yet (reload).
    /// `reset`: the oldest position the window can resume after.
    position: Option<LogPosition>,
    /// What the client should do, in words.
    detail: &'static str,
}

/// Changes a subscriber renders before it lets its HTTP worker serve
/// other requests (`Subscriber::next`): about a millisecond of JSON.
/// A live build's install publishes tens of thousands of changes at once;
/// rendered in one go they held the worker 100 to 240 ms of CPU, and every
/// request it serves waited (task h74: relationship reads' 200 to 700 ms
/// tail under a stream).
const RENDER_SLICE: usize = 256;

/// A subscriber's stream: backlog first, then live; ends after a notice.
struct Subscriber {
    filter: Filter,
    /// Groups to render, in order: the backlog, then what was received.
    backlog: VecDeque<Arc<Group>>,
    /// The group being rendered, its next change and its last admitted
    /// one (`render_some`).
    rendering: Option<(Arc<Group>, usize, Option<usize>)>,
    /// Changes rendered since the worker was last let go.
    rendered: usize,
    live: broadcast::Receiver<Publication>,
    /// SSE events rendered and not yielded yet.
    out: VecDeque<sse::Event>,
    /// The last position handed to the stream (where to resume).
    last: Option<LogPosition>,
    done: bool,
    /// When the stream ends (`FeedOptions::lifetime`).
    end: tokio::time::Instant,
    _gauge: crate::telemetry::SubscriberGauge,
}

impl Subscriber {
    /// A stream of `backlog`, then `live`, for `lifetime`; `resume`: where
    /// to resume if cut off before anything is read.
    fn new(
        filter: Filter,
        backlog: VecDeque<Arc<Group>>,
        live: broadcast::Receiver<Publication>,
        resume: Option<LogPosition>,
        lifetime: Duration,
    ) -> Self {
        Subscriber {
            filter,
            backlog,
            rendering: None,
            rendered: 0,
            live,
            out: VecDeque::new(),
            last: resume,
            done: false,
            end: tokio::time::Instant::now() + lifetime,
            _gauge: crate::telemetry::SubscriberGauge::open(),
        }
    }

    /// Renders the group being rendered (or the next of the backlog) on
    /// from where it stopped, at most [`RENDER_SLICE`] changes of it.
    fn render_some(&mut self) {
        let Some((group, from, last)) = self.rendering.take().or_else(|| {
            let group = self.backlog.pop_front()?;
            // The id only on a position's last admitted change (module docs).
            let last = group.changes.iter().rposition(|c| self.filter.admits(c));
            Some((group, 0, last))
        }) else {
            return;
        };
        let to = (from + RENDER_SLICE).min(group.changes.len());
        for (i, change) in group.changes[from..to].iter().enumerate() {
            if !self.filter.admits(change) {
                continue;
            }
            let data = sse::Data::new_json(change)
                .expect("a change serialises")
                .event("change");
            let data = if last == Some(from + i) {
                data.id(group.position.to_string())
            } else {
                data
            };
            self.out.push_back(data.into());
        }
        self.rendered += to - from;
        if to < group.changes.len() {
            self.rendering = Some((group, to, last));
        } else {
            self.last = Some(group.position);
        }
    }

    async fn next(mut self) -> Option<(sse::Event, Self)> {
        loop {
            if let Some(event) = self.out.pop_front() {
                return Some((event, self));
            }
            if self.done {
                return None;
            }
            if self.rendering.is_some() || !self.backlog.is_empty() {
                if self.rendered >= RENDER_SLICE {
                    self.rendered = 0;
                    tokio::task::yield_now().await;
                }
                self.render_some();
                continue;
            }
            let received = tokio::select! {
                received = self.live.recv() => received,
                () = tokio::time::sleep_until(self.end) => return None,
            };
            match received {
                Ok(Publication::Changes(batch)) => self.backlog.extend(batch.iter().cloned()),
                Ok(Publication::Alerts(alerts)) => {
                    for alert in alerts.iter().filter(|a| self.filter.admits_alert(a)) {
                        let data = sse::Data::new_json(alert)
                            .expect("an alert serialises")
                            .event("alert");
                        self.out.push_back(data.into());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    crate::telemetry::record_feed_cutoff();
                    self.out.push_back(notice(
                        "cutoff",
                        StreamNotice {
                            reason: "cutoff",
                            position: self.last,
                            detail: "this subscriber fell behind: reconnect with Last-Event-ID set to the position (without one when it is absent, after a reload)",
                        },
                    ));
                    self.done = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn notice(name: &'static str, notice: StreamNotice) -> sse::Event {
    sse::Data::new_json(notice)
        .expect("a notice serialises")
        .event(name)
        .into()
}

/// The position a client resumes after: `Last-Event-ID`, else
/// `last_event_id`.
fn resume_after(req: &HttpRequest, params: &Params) -> Result<Option<LogPosition>, ApiError> {
    let header = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::parameter("Last-Event-ID", "must be a log position"))
        })
        .transpose()?;
    let (name, text) = match header {
        Some(text) => ("Last-Event-ID", Some(text)),
        None => ("last_event_id", params.get("last_event_id")?),
    };
    text.map(|t| {
        t.trim().parse::<LogPosition>().map_err(|_| {
            ApiError::parameter(name, "must be a log position (a whole number, the SSE id)")
        })
    })
    .transpose()
}

/// Registers `GET /v1/stream`.
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/stream").get(stream));
}

#[utoipa::path(get, path = "/v1/stream", tag = "scores",
    params(
        ("brand" = Option<String>, Query, description = "Only changes of this brand"),
        ("person" = Option<String>, Query, description = "Only changes of this person"),
        ("kind" = Option<String>, Query, description = "Only changes of people of this kind: consumer or influencer"),
        ("min_delta" = Option<f64>, Query, description = "Only changes that moved at least this many points, 0.5 (the default) to 100", minimum = 0.5, maximum = 100),
        ("last_event_id" = Option<u64>, Query, description = "Resume after this log position (as the Last-Event-ID header does; the header wins)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this log position: every retained change after it, in order, then live"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `change` events (data: a Change, id: its log position), `alert` events as alert rules fire (data: the alert, as its webhook's body; no id: not retained, the store keeps them), `reset` and `cutoff` notices (data: a StreamNotice), heartbeat comments", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad parameter", body = super::schema::Problem, content_type = "application/problem+json"),
    ))]
async fn stream(
    req: HttpRequest,
    hub: web::Data<Hub>,
    params: Params,
) -> Result<impl Responder, ApiError> {
    let filter = Filter::from_params(&params)?;
    let after = resume_after(&req, &params)?;
    let heartbeat = hub.options.heartbeat;
    let subscriber = match hub.subscribe(after) {
        Start::Reset { floor } => {
            let reset = notice(
                "reset",
                StreamNotice {
                    reason: "reset",
                    position: Some(floor),
                    detail: "the position asked for is older than the retained window: reload the scores, then subscribe without Last-Event-ID",
                },
            );
            Subscriber {
                filter,
                backlog: VecDeque::new(),
                rendering: None,
                rendered: 0,
                live: hub.sender.subscribe(),
                out: VecDeque::from([reset]),
                last: None,
                done: true,
                end: tokio::time::Instant::now(),
                _gauge: crate::telemetry::SubscriberGauge::open(),
            }
        }
        Start::Stream {
            backlog,
            live,
            resume,
        } => Subscriber::new(filter, backlog, live, resume, hub.options.lifetime),
    };
    let events =
        futures_util::stream::unfold(subscriber, Subscriber::next).map(Ok::<_, Infallible>);
    Ok(sse::Sse::from_stream(events).with_keep_alive(heartbeat))
}

use futures_util::StreamExt as _;

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(stream),
    components(schemas(Change, StreamNotice, PersonKind, crate::feed::Cause))
)]
pub(super) struct StreamApi;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventId;
    use crate::feed::Cause;

    fn change(position: LogPosition) -> Change {
        Change {
            brand: EntityId::new("b").unwrap(),
            person: EntityId::new(format!("p{position}")).unwrap(),
            kind: PersonKind::Consumer,
            score: 60.0,
            delta: 1.0,
            cause: Cause::Event(EventId::new(format!("e{position}")).unwrap()),
            position,
            at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn positions(start: Start) -> Vec<LogPosition> {
        match start {
            Start::Stream { backlog, .. } => backlog.iter().map(|g| g.position).collect(),
            Start::Reset { .. } => panic!("a reset"),
        }
    }

    /// Regression (task h74): a publication was rendered whole on the
    /// HTTP worker that serves the subscriber (a live build's install:
    /// tens of thousands of changes, 100 to 240 ms of CPU), and every
    /// request of that worker waited for it. Now the stream lets the
    /// worker go (`Pending`) after every [`RENDER_SLICE`] changes, and
    /// still yields every change, in order.
    #[tokio::test]
    async fn a_large_publication_is_rendered_in_slices_that_let_the_worker_go() {
        use std::future::Future as _;
        let hub = Hub::new(FeedOptions::default(), Some(0));
        let Start::Stream {
            backlog,
            live,
            resume,
        } = hub.subscribe(None)
        else {
            panic!("a reset");
        };
        let filter = Filter {
            brand: None,
            person: None,
            kind: None,
            min_delta: PUBLISH_DELTA,
        };
        let subscriber = Subscriber::new(filter, backlog, live, resume, Duration::from_secs(3600));
        // Two positions, one much wider than a slice.
        let total = 3 * RENDER_SLICE + 10;
        let mut changes: Vec<Change> = (0..total - 1)
            .map(|k| Change {
                person: EntityId::new(format!("p{k}")).unwrap(),
                ..change(1)
            })
            .collect();
        changes.push(Change {
            person: EntityId::new("q").unwrap(),
            ..change(2)
        });
        hub.publish(changes);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        // Polled by hand within one task poll: without tokio's budget,
        // which would run out here as it never does for a real worker.
        let mut next = Box::pin(tokio::task::unconstrained(subscriber.next()));
        let (mut yielded, mut run, mut longest_run) = (0, 0, 0);
        while yielded < total {
            match next.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(Some((_, subscriber))) => {
                    yielded += 1;
                    run += 1;
                    longest_run = longest_run.max(run);
                    next = Box::pin(tokio::task::unconstrained(subscriber.next()));
                }
                std::task::Poll::Ready(None) => panic!("the stream ended"),
                std::task::Poll::Pending => {
                    assert!(run > 0, "the stream let the worker go without progress");
                    run = 0;
                }
            }
        }
        assert!(
            longest_run <= RENDER_SLICE,
            "{longest_run} changes rendered without letting the worker go"
        );
    }

    #[test]
    fn the_window_keeps_the_latest_changes_and_resets_before_it() {
        let options = FeedOptions {
            window: 3,
            ..FeedOptions::default()
        };
        let hub = Hub::new(options, Some(10));
        assert!(matches!(hub.subscribe(Some(9)), Start::Reset { floor: 10 }));
        hub.publish((11..=15).map(change).collect());
        assert_eq!(positions(hub.subscribe(Some(12))), vec![13, 14, 15]);
        assert_eq!(positions(hub.subscribe(Some(14))), vec![15]);
        assert!(matches!(
            hub.subscribe(Some(11)),
            Start::Reset { floor: 12 }
        ));
        assert!(positions(hub.subscribe(None)).is_empty());
        hub.forget(&EntityId::new("p14").unwrap());
        assert_eq!(positions(hub.subscribe(Some(12))), vec![13, 15]);
    }
}
