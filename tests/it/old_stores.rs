//! A store written by the previous version still opens, and serves what
//! that version served (issue #10, item 3). The fixtures were written by
//! `scripts/v0_store_fixtures.sh` with the binary of main at 28437ce, whose
//! stored format was the serde JSON of the domain `Event` (v0): an embedded
//! redb file and a pg_dump of a PostgreSQL database, both holding the seed
//! story, twelve more events of every type and three registrations, and
//! `v0-expected.json`, that binary's answers. Each test opens a copy with
//! today's code (which migrates it) and asks the same questions, twice: on
//! first open and after a restart on the migrated store; then the old
//! events sent again are duplicates, and a new event (stored as v1 beside
//! the v0 bodies) survives a restart.

use std::path::Path;

use serde_json::Value;

use crate::pg::TestDb;
use crate::support::Server;

const EXPECTED: &str = include_str!("../../fixtures/stores/v0-expected.json");
const DUMP: &str = include_str!("../../fixtures/stores/v0-postgres.sql");
const EXTRA: &str = include_str!("../../fixtures/stores/v0-extra.ndjson");

/// The fixture's events sent again are duplicates, not conflicts (the
/// digests of v0 bodies are those of the same events today: the stored
/// format v1 hashes content as v0 was written), and an event sent now
/// (stored as v1 beside the v0 bodies) counts.
fn old_and_new_bodies_live_together(server: &Server) {
    for body in [crate::support::STORY, EXTRA] {
        let sent = body.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        let r = server.post_ndjson(body);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["accepted"], 0, "{}", r.body);
        assert_eq!(r.body["duplicates"], sent, "{}", r.body);
    }
    let r = server.post_ndjson(
        r#"{"id":"v1-new","type":"purchase","time":"2020-01-01T00:00:00Z","person":"someone-new","brand":"brand-new","amount":5}"#,
    );
    assert_eq!(r.body["accepted"], 1, "{}", r.body);
    assert_eq!(server.event_count(), 40);
}

/// Asks `server` every question of the expected document and compares the
/// answers, JSON value for value: strings, times and paths exactly, numbers
/// within 1e-12 relative (one definition of the operator's coefficients,
/// issue #10, changed how explanations round, by ulps).
fn answers_as_before(server: &Server, what: &str) {
    let expected: Value = serde_json::from_str(EXPECTED).unwrap();
    let at = expected["at"].as_str().unwrap();
    for (pair, want) in expected["relationships"].as_object().unwrap() {
        let got = server.get(&format!("/v1/relationships/{pair}?at={at}"));
        assert_eq!(got.status, 200, "{what}: {pair}: {}", got.body);
        same(&got.body, want, &format!("{what}: {pair}"));
    }
    for (entity, want) in expected["timelines"].as_object().unwrap() {
        let got = server.get(&format!("/v1/entities/{entity}/events?limit=1000"));
        assert_eq!(got.status, 200, "{what}: {entity}: {}", got.body);
        same(&got.body, want, &format!("{what}: timeline of {entity}"));
    }
    assert_eq!(server.event_count(), 39, "{what}");
}

/// `got` equals `want` but for numbers within 1e-12 relative.
fn same(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                "{path}: {g} where the previous version answered {w}"
            );
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: {got} against {want}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                same(g, w, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(g), keys(w), "{path}");
            for (k, w) in w {
                same(&g[k], w, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn an_embedded_store_written_by_the_previous_version_opens_with_its_scores() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stores/v0-embedded"),
        &data,
    );
    let server = Server::start(&data, &[]);
    answers_as_before(&server, "first open");
    drop(server);
    let server = Server::start(&data, &[]);
    answers_as_before(&server, "after a restart");
    old_and_new_bodies_live_together(&server);
    drop(server);
    let server = Server::start(&data, &[]);
    assert_eq!(server.event_count(), 40);
}

#[test]
fn a_postgres_database_written_by_the_previous_version_opens_with_its_scores() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        let db = TestDb::new().await;
        let client = crate::pg::client(&db.url).await;
        client.batch_execute(DUMP).await.unwrap();
        db
    });
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on_database(dir.path(), &db.url, &[]);
    answers_as_before(&server, "first open");
    drop(server);
    let server = Server::start_on_database(dir.path(), &db.url, &[]);
    answers_as_before(&server, "after a restart");
    old_and_new_bodies_live_together(&server);
    drop(server);
    let server = Server::start_on_database(dir.path(), &db.url, &[]);
    assert_eq!(server.event_count(), 40);
    drop(rt);
}
