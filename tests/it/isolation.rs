//! One client's bad event must not fail others (issue #9, item 5): an
//! event that passes validation but that the store cannot hold is refused
//! on its own, whatever it was group-committed with.
//!
//! The bad event is made by a constraint added in the test's own database
//! (PostgreSQL refuses any event whose body mentions "poison"), so the test
//! does not depend on which values the validator lets through. The embedded
//! store has no such data errors (it stores bytes); the engine's handling of
//! a refused event is checked on it through a wrapper store that refuses.

use std::sync::Arc;

use chrono::Utc;
use fusion::domain::{Entity, EntityId, Event, EventId, LogPosition, Logged};
use fusion::engine::Engine;
use fusion::score::ScoringModel;
use fusion::store::{AppendMode, Appended, EmbeddedStore, EventStore, Outcome, StoreError};
use serde_json::{Value, json};

use crate::pg::{TestDb, client};
use crate::support::Server;

const CLIENTS: usize = 4;
const BATCHES: usize = 30;
const PER_BATCH: usize = 20;
const POISONED: usize = 10;

fn purchase(id: &str, person: &str) -> Value {
    json!({"id": id, "type": "purchase", "time": "2026-11-02T10:00:00Z",
           "person": person, "brand": "acme", "amount": 12.5})
}

fn poisoned_post(id: &str) -> Value {
    json!({"id": id, "type": "post", "time": "2026-11-02T11:00:00Z",
           "person": "mallory", "brand": "acme", "text": "poison in the soup"})
}

/// Regression: an event that passed validation failed the COPY, and since
/// commits are grouped, 45 of 120 valid batches from other clients got 500.
/// Now every valid batch is stored and answered 200, and each bad event is
/// rejected alone, with the database's reason, beside its request's others.
#[test]
fn a_bad_event_fails_only_itself_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        let db = TestDb::new().await;
        fusion::store::PostgresStore::migrate(&db.url)
            .await
            .unwrap();
        client(&db.url)
            .await
            .batch_execute(
                "ALTER TABLE events ADD CONSTRAINT no_poison \
                 CHECK (body::text NOT LIKE '%poison%')",
            )
            .await
            .unwrap();
        db
    });
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_on_database(dir.path(), &db.url, &[]);
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let s = &s;
            scope.spawn(move || {
                for b in 0..BATCHES {
                    let body: String = (0..PER_BATCH)
                        .map(|i| {
                            purchase(&format!("ok-{c}-{b}-{i}"), &format!("p{c}")).to_string()
                                + "\n"
                        })
                        .collect();
                    let r = s.post_ndjson(&body);
                    assert_eq!(r.status, 200, "client {c} batch {b}: {}", r.body);
                    assert_eq!(r.body["accepted"], PER_BATCH, "{}", r.body);
                }
            });
        }
        let s = &s;
        scope.spawn(move || {
            for k in 0..POISONED {
                let body = [
                    purchase(&format!("mixed-{k}-a"), "mallory"),
                    poisoned_post(&format!("bad-{k}")),
                    purchase(&format!("mixed-{k}-b"), "mallory"),
                ]
                .map(|v| v.to_string() + "\n")
                .concat();
                let r = s.post_ndjson(&body);
                assert_eq!(r.status, 200, "{}", r.body);
                assert_eq!(r.body["accepted"], 2, "{}", r.body);
                let rejected = &r.body["rejected"];
                assert_eq!(rejected.as_array().unwrap().len(), 1, "{}", r.body);
                assert_eq!(rejected[0]["index"], 1);
                assert_eq!(rejected[0]["id"], format!("bad-{k}"));
                let message = rejected[0]["errors"][0]["message"].as_str().unwrap();
                assert!(
                    message.contains("cannot hold this event") && message.contains("no_poison"),
                    "{message}"
                );
            }
        });
    });
    let expected = CLIENTS * BATCHES * PER_BATCH + 2 * POISONED;
    assert_eq!(s.event_count(), expected as u64);
    let stored: i64 = rt.block_on(async {
        client(&db.url)
            .await
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(stored as usize, expected);
    // atomic: the request with the bad event is refused whole.
    let r = s.post(
        "/v1/events?atomic=true",
        "application/json",
        json!([purchase("atomic-a", "mallory"), poisoned_post("atomic-bad")])
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(s.event_count(), expected as u64);
}

/// A store that refuses events mentioning "poison", as PostgreSQL does
/// with the constraint above, over the embedded store.
#[derive(Clone)]
struct Refusing(EmbeddedStore);

fn poisoned(e: &Event) -> bool {
    serde_json::to_string(e).unwrap().contains("poison")
}

impl EventStore for Refusing {
    async fn append_keyed(
        &self,
        events: Vec<Event>,
        _keys: Vec<Option<fusion::store::ContentKey>>,
        mode: AppendMode,
    ) -> Result<Appended, StoreError> {
        let refuse = events.iter().any(poisoned);
        if refuse && mode == AppendMode::AllOrNothing {
            return Ok(Appended {
                outcomes: events
                    .iter()
                    .map(|e| {
                        if poisoned(e) {
                            Outcome::Refused("poisoned".into())
                        } else {
                            Outcome::NotStored
                        }
                    })
                    .collect(),
                positions: vec![None; events.len()],
            });
        }
        let keep: Vec<Event> = events.iter().filter(|e| !poisoned(e)).cloned().collect();
        let appended = self.0.append(keep, mode).await?;
        let mut stored = appended.outcomes.into_iter().zip(appended.positions);
        let (outcomes, positions) = events
            .iter()
            .map(|e| {
                if poisoned(e) {
                    (
                        Outcome::Refused("the event store cannot hold this event: poisoned".into()),
                        None,
                    )
                } else {
                    stored.next().unwrap()
                }
            })
            .unzip();
        Ok(Appended {
            outcomes,
            positions,
        })
    }
    async fn scan_from(
        &self,
        after: Option<(chrono::DateTime<chrono::Utc>, EventId)>,
        limit: usize,
    ) -> Result<Vec<Logged>, StoreError> {
        self.0.scan_from(after, limit).await
    }
    async fn events_by_id(&self, ids: Vec<EventId>) -> Result<Vec<Logged>, StoreError> {
        self.0.events_by_id(ids).await
    }
    async fn events_at(&self, positions: Vec<LogPosition>) -> Result<Vec<Logged>, StoreError> {
        self.0.events_at(positions).await
    }
    async fn tail(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> Result<Vec<Logged>, StoreError> {
        self.0.tail(after, limit).await
    }
    async fn entity_events(
        &self,
        entity: &EntityId,
        before: Option<EventId>,
        limit: usize,
    ) -> Result<Option<Vec<Logged>>, StoreError> {
        self.0.entity_events(entity, before, limit).await
    }
    async fn put_entity(&self, entity: Entity) -> Result<(), StoreError> {
        self.0.put_entity(entity).await
    }
    async fn entities(&self) -> Result<Vec<Entity>, StoreError> {
        self.0.entities().await
    }
    async fn erase(&self, id: &EntityId) -> Result<u64, StoreError> {
        self.0.erase(id).await
    }
    async fn context_position(&self) -> Result<Option<LogPosition>, StoreError> {
        self.0.context_position().await
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.0.count().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}

fn validated(values: &[Value]) -> Vec<(usize, Event)> {
    let checked = fusion::ingest::validate_all(
        values,
        &fusion::score::ScoringModel::default_model().currency,
    );
    let (good, bad) = (checked.good, checked.rejected);
    assert!(bad.is_empty(), "{bad:?}");
    good
}

/// The engine turns a refused event into that event's rejection and keeps
/// the rest (or refuses an atomic request whole), and folds only what was
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_rejects_a_refused_event_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Refusing(EmbeddedStore::open(dir.path()).unwrap());
    let engine = Engine::open(store, Arc::new(ScoringModel::default_model()))
        .await
        .unwrap();
    let events = validated(&[
        purchase("a", "ann"),
        poisoned_post("bad"),
        purchase("b", "bob"),
    ]);
    let report = engine
        .submit(events.clone(), Vec::new(), false, Utc::now())
        .await
        .unwrap();
    assert_eq!(report.accepted, 2);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].index, 1);
    assert!(report.rejected[0].errors[0].message.contains("poisoned"));
    assert_eq!(engine.state().unwrap().event_count(), 2);
    let atomic = engine
        .submit(
            validated(&[purchase("c", "cat"), poisoned_post("bad-2")]),
            Vec::new(),
            true,
            Utc::now(),
        )
        .await;
    assert!(
        matches!(atomic, Err(fusion::engine::EngineError::AtomicRejected(ref r)) if r.len() == 1),
        "{atomic:?}"
    );
    assert_eq!(engine.store().count().await.unwrap(), 2);
    assert_eq!(engine.state().unwrap().event_count(), 2);
}
