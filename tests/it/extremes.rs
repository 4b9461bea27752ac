//! Every event the validator accepts folds, survives a restart and is
//! scored (issue #9, item 1): extreme but accepted events (times at the
//! ends of the accepted range, amounts and follower counts at their
//! bounds, the longest texts) are stored, scored with finite scores in
//! [0, 100], and scored identically after a restart.
//!
//! The bounds below are the validator's (domain constants after issue #9's
//! validation work); an event the validator refuses is left out, so the
//! property is "whatever is accepted", not a copy of the bounds.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fusion::domain::{EntityId, EntityKind};
use fusion::engine::Engine;
use fusion::score::ScoringModel;
use fusion::store::{EmbeddedStore, EventStore};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

use crate::pg::TestDb;
use crate::support::Server;

const EARLIEST: &str = "1900-01-01T00:00:00Z";
const LATEST: &str = "2199-12-31T23:59:59Z";
const MAX_AMOUNT: f64 = 1e12;
const MAX_FOLLOWERS: u64 = 100_000_000_000;
const MAX_WAIT_SECONDS: f64 = 365.0 * 86_400.0;
const MAX_TEXT_BYTES: usize = 64 * 1024;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A time: a range end, or anywhere between.
fn any_time(latest: DateTime<Utc>) -> impl Strategy<Value = String> {
    let (lo, hi) = (t(EARLIEST).timestamp(), latest.timestamp());
    prop_oneof![
        Just(lo),
        Just(hi),
        Just(t("2026-11-01T00:00:00Z").timestamp().min(hi)),
        lo..=hi,
    ]
    .prop_map(|s| {
        DateTime::from_timestamp(s, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

fn amount() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1e-9), Just(MAX_AMOUNT), 0.0..MAX_AMOUNT]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x".repeat(MAX_TEXT_BYTES)),
        Just("terrible, awful, never again! ".repeat(MAX_TEXT_BYTES / 31)),
        Just("love it".to_string()),
    ]
}

/// One wire event of any type with extreme field values, among a few
/// people (p*, i*), brands (b*) and occasions (o*).
fn any_event(latest: DateTime<Utc>) -> impl Strategy<Value = Value> {
    let person = (0..4u8).prop_map(|i| format!("p{i}"));
    let influencer = (0..2u8).prop_map(|i| format!("i{i}"));
    let brand = (0..3u8).prop_map(|i| format!("b{i}"));
    let occasion = (0..2u8).prop_map(|i| format!("o{i}"));
    let unit = prop_oneof![Just(-1.0), Just(1.0), Just(0.0), -1.0..=1.0f64];
    let strength = prop_oneof![Just(1e-9), Just(1.0), 1e-9..=1.0f64];
    (
        0..14u8,
        any_time(latest),
        (person.clone(), influencer, brand, occasion),
        (amount(), text(), unit, strength),
        prop_oneof![Just(0u64), Just(1), Just(MAX_FOLLOWERS), 0..MAX_FOLLOWERS],
        (1..=5u8, 1..=7u8, prop_oneof![Just(0.0), Just(MAX_WAIT_SECONDS)], 0..=1000u32),
        person,
    )
        .prop_map(
            |(kind, time, (p, i, b, o), (amount, text, s, strength), followers, (r, e, w, n), q)| {
                let base = json!({"time": time});
                let mut v = match kind {
                    0 => json!({"type": "purchase", "person": p, "brand": b, "amount": amount}),
                    1 => json!({"type": "brand_sales", "brand": b, "amount": amount}),
                    2 => json!({"type": "post", "person": i, "brand": b, "text": text}),
                    3 => json!({"type": "mention", "person": p, "brand": b, "sentiment": s}),
                    4 => json!({"type": "review", "person": p, "brand": b, "rating": r, "text": text}),
                    5 => json!({"type": "service", "person": p, "brand": b, "csat": r, "effort": e,
                                "resolved": n % 2 == 0, "wait_seconds": w, "transfers": n}),
                    6 => json!({"type": "endorsement", "person": i, "brand": b, "strength": strength}),
                    7 => json!({"type": "audience", "person": i, "followers": followers}),
                    8 => json!({"type": "follow", "person": p, "target": i, "strength": strength}),
                    9 if p != q => json!({"type": "unfollow", "person": p, "target": q}),
                    10 => json!({"type": "occasion", "occasion": o, "brand": b, "performers": [i]}),
                    11 => json!({"type": "attendance", "person": p, "occasion": o}),
                    12 => json!({"type": "cause", "brand": b, "tags": ["wool"], "amount": amount}),
                    _ => json!({"type": "consent", "person": p, "granted": n % 3 != 0}),
                };
                v["time"] = base["time"].clone();
                v
            },
        )
}

/// Extreme events with ids, validated: only what the validator accepts.
fn any_batch(latest: DateTime<Utc>) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(any_event(latest), 1..40).prop_map(|events| {
        events
            .into_iter()
            .enumerate()
            .map(|(k, mut v)| {
                v["id"] = format!("x{k}").into();
                v
            })
            .collect()
    })
}

const PEOPLE: [&str; 6] = ["p0", "p1", "p2", "p3", "i0", "i1"];
const BRANDS: [&str; 3] = ["b0", "b1", "b2"];

/// Every relationship's answer at a few times (including the range ends),
/// checked finite and in [0, 100]; as text, to compare bits.
async fn scores(engine: &Engine<EmbeddedStore>, times: &[DateTime<Utc>]) -> Vec<String> {
    let mut out = Vec::new();
    for p in PEOPLE {
        for b in BRANDS {
            let (p, b) = (EntityId::new(p).unwrap(), EntityId::new(b).unwrap());
            for &at in times {
                let answer = engine.relationship(&p, &b, at).await.unwrap();
                if let Some((e, trend)) = &answer {
                    assert!((0.0..=100.0).contains(&e.score), "{p}-{b} at {at}: {e:?}");
                    assert!(e.components.iter().all(|c| c.is_finite()), "{e:?}");
                    assert!(
                        [trend.d1, trend.d7, trend.d30]
                            .iter()
                            .all(|d| d.is_finite()),
                        "{trend:?}"
                    );
                }
                out.push(serde_json::to_string(&answer.map(|(e, _)| e)).unwrap());
            }
        }
    }
    let state = engine.state().unwrap();
    for &at in times {
        for (k, s) in state.batch(at).scores {
            assert!((0.0..=100.0).contains(&s.score), "{k:?} at {at}: {s:?}");
        }
    }
    out
}

async fn open(dir: &std::path::Path) -> Engine<EmbeddedStore> {
    // The previous engine's store lets go of the file as its writer stops.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match EmbeddedStore::open(dir) {
            Ok(s) => break s,
            Err(e)
                if e.to_string().contains("already open")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    Engine::open(store, Arc::new(ScoringModel::default_model()))
        .await
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Stored, scored finitely, and identical after a restart, with the
    /// clock at the end of the range (so every accepted time arrives).
    #[test]
    fn every_accepted_event_folds_and_survives_a_restart(values in any_batch(t(LATEST))) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let checked = fusion::ingest::validate_all(
                &values,
                &fusion::score::ScoringModel::default_model().currency,
            );
            let (good, rejected) = (checked.good, checked.rejected);
            let accepted = good.len();
            let engine = open(dir.path()).await;
            let report = engine
                .submit(good, rejected, false, t(LATEST))
                .await
                .unwrap();
            // Role conflicts aside (an influencer id never becomes a brand
            // here), everything valid is stored.
            assert_eq!(report.accepted, accepted, "{report:?}");
            let times = [t(EARLIEST), t("2026-11-01T00:00:00Z"), t(LATEST)];
            let before = scores(&engine, &times).await;
            let kinds: Vec<(EntityId, EntityKind)> = engine.state().unwrap().entities();
            drop(engine);
            let engine = open(dir.path()).await;
            assert_eq!(engine.store().count().await.unwrap(), accepted as u64);
            assert_eq!(engine.state().unwrap().entities(), kinds);
            assert_eq!(scores(&engine, &times).await, before);
        });
    }
}

/// The same with real processes: extreme events posted to `fusion serve`,
/// which is killed and started again on the same store.
fn killed_and_restarted(start: impl Fn() -> Server) {
    let now = Utc::now();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let values = any_batch(now).new_tree(&mut runner).unwrap().current();
    let checked = fusion::ingest::validate_all(
        &values,
        &fusion::score::ScoringModel::default_model().currency,
    );
    let (good, _) = (checked.good, checked.rejected);
    let s = start();
    let r = s.post_json("/v1/events", &Value::Array(values));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], good.len(), "{}", r.body);
    let read = |s: &Server| -> Vec<Value> {
        let mut out = Vec::new();
        for p in PEOPLE {
            for b in BRANDS {
                for at in [EARLIEST, "2026-11-01T00:00:00Z"] {
                    let r = s.get(&format!("/v1/relationships/{p}/{b}?at={at}"));
                    assert!(matches!(r.status, 200 | 404), "{}", r.body);
                    if r.status == 200 {
                        let score = r.body["score"].as_f64().unwrap();
                        assert!((0.0..=100.0).contains(&score), "{}", r.body);
                    }
                    out.push(crate::support::comparable(r.body));
                }
            }
        }
        out
    };
    let before = read(&s);
    drop(s.kill());
    let s = start();
    assert_eq!(s.event_count(), good.len() as u64);
    assert_eq!(read(&s), before);
}

#[test]
fn extreme_events_survive_a_kill_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    killed_and_restarted(|| Server::start(&path, &[]));
}

#[test]
fn extreme_events_survive_a_kill_on_postgres() {
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    killed_and_restarted(|| Server::start_on_database(&path, &db.url, &[]));
}
