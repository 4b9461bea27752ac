//! The dead-letter store's contract (`store::dead_letters`), one suite run
//! against every backend: `dead_letters.redb` (also reopened, as after a
//! restart), PostgreSQL (a real server, tests/it/pg.rs) and memory. Keep,
//! list with filters and cursor, retention by count and age with its
//! counter, the per-request count of letters not kept, remove, delete by
//! filter, erase by entity.

use chrono::{DateTime, Duration, Utc};
use fusion::store::PostgresStore;
use fusion::store::dead_letters::{
    DeadLetterFile, DeadLetterStore, DeadLetters, Filter, LetterError, MemoryDeadLetters,
    NewLetter, Reason, RequestInfo, Retention,
};

use crate::pg::TestDb;
use crate::security::block_on;

fn t(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
}

fn letter(minute: i64, route: &str, reason: Reason, field: &str, raw: &str) -> NewLetter {
    NewLetter {
        received_at: t(minute),
        route: route.into(),
        key_id: Some("0123456789abcdef".into()),
        reason,
        raw: String::new(),
        raw_base64: false,
        truncated: false,
        errors: vec![LetterError {
            field: field.into(),
            message: "is wrong".into(),
        }],
        request: RequestInfo {
            id: format!("req-{minute}"),
            rejected: 1,
        },
        context: None,
    }
    .with_raw(raw.as_bytes(), None)
}

const WIDE: Retention = Retention {
    max_count: 1_000,
    max_age: Duration::days(3650),
};

/// The contract, on a fresh store.
async fn contract(store: &impl DeadLetterStore) {
    let kept = store
        .keep(
            vec![
                letter(
                    0,
                    "/v1/events",
                    Reason::Invalid,
                    "amount",
                    r#"{"person":"ann"}"#,
                ),
                letter(
                    1,
                    "/v1/batch",
                    Reason::Unmapped,
                    "event",
                    r#"{"userId":"bob"}"#,
                ),
                letter(2, "/v1/batch", Reason::Malformed, "body", "{\"batch\": ["),
            ],
            4,
            WIDE,
            t(3),
        )
        .await
        .unwrap();
    assert_eq!(kept.ids.len(), 3);
    assert!(kept.ids.windows(2).all(|w| w[0] < w[1]), "{:?}", kept.ids);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.held, stats.dropped, stats.not_kept), (3, 0, 4));

    let all = store.list(Filter::default(), 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].letter.raw, r#"{"person":"ann"}"#);
    assert_eq!(all[0].letter.key_id.as_deref(), Some("0123456789abcdef"));
    let by = |f: Filter| {
        let store = &store;
        async move {
            store
                .list(f, 10)
                .await
                .unwrap()
                .iter()
                .map(|d| d.letter.request.id.clone())
                .collect::<Vec<_>>()
        }
    };
    let reason = Filter {
        reason: Some(Reason::Unmapped),
        ..Filter::default()
    };
    assert_eq!(by(reason).await, ["req-1"]);
    let field = Filter {
        field: Some("amount".into()),
        ..Filter::default()
    };
    assert_eq!(by(field).await, ["req-0"]);
    let route = Filter {
        route: Some("/v1/batch".into()),
        from: Some(t(2)),
        to: Some(t(3)),
        ..Filter::default()
    };
    assert_eq!(by(route).await, ["req-2"]);
    let cursor = Filter {
        after: Some(all[0].id),
        ..Filter::default()
    };
    assert_eq!(by(cursor).await, ["req-1", "req-2"]);
    assert_eq!(store.list(Filter::default(), 1).await.unwrap().len(), 1);

    // Erasure: the letters whose raw text names the entity.
    assert_eq!(store.erase("bob").await.unwrap(), 1);
    assert_eq!(store.remove(vec![all[0].id, 999_999]).await.unwrap(), 1);
    let malformed = Filter {
        reason: Some(Reason::Malformed),
        ..Filter::default()
    };
    assert_eq!(store.delete(malformed).await.unwrap(), 1);
    assert_eq!(store.stats().await.unwrap().held, 0);

    // Retention by count: past it the oldest go first, in the same keep,
    // and the counter says how many.
    let count = Retention {
        max_count: 2,
        ..WIDE
    };
    for m in 10..14 {
        let l = letter(m, "/v1/events", Reason::Invalid, "amount", "{}");
        store.keep(vec![l], 0, count, t(m)).await.unwrap();
    }
    let left: Vec<_> = store.list(Filter::default(), 10).await.unwrap();
    let ids: Vec<_> = left.iter().map(|d| d.letter.request.id.as_str()).collect();
    assert_eq!(ids, ["req-12", "req-13"]);
    assert_eq!(store.stats().await.unwrap().dropped, 2);
    // And by age, also when nothing new arrives (purge).
    let age = Retention {
        max_age: Duration::minutes(30),
        ..WIDE
    };
    assert_eq!(
        store
            .purge(age, t(42) + Duration::seconds(30))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.stats().await.unwrap().held, 1);
    assert_eq!(store.stats().await.unwrap().dropped, 3);
    assert_eq!(store.delete(Filter::default()).await.unwrap(), 1);
    // Ids keep growing after everything went (cursors stay valid).
    let again = store
        .keep(
            vec![letter(50, "/v1/events", Reason::Invalid, "x", "{}")],
            0,
            WIDE,
            t(50),
        )
        .await
        .unwrap();
    assert!(again.ids[0] > kept.ids[2]);
}

#[test]
fn the_memory_store_keeps_the_contract() {
    block_on(contract(&MemoryDeadLetters::default()));
}

#[test]
fn the_redb_file_keeps_the_contract_and_its_letters_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let file = DeadLetterFile::open(dir.path()).unwrap();
        contract(&file).await;
        drop(file);
        let reopened = DeadLetterFile::open(dir.path()).unwrap();
        let stats = reopened.stats().await.unwrap();
        assert_eq!((stats.held, stats.dropped, stats.not_kept), (1, 3, 4));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_tables_keep_the_contract() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    contract(&DeadLetters::Postgres(store)).await;
}
