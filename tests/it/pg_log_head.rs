//! The PostgreSQL append's time on the `log_head` row lock (task h43): the
//! lock, the insert and the head's move now go to the server together (one
//! pipelined pair of statements, the head read and moved inside the
//! insert), so these tests hold what the old three round trips held:
//! positions are dense, given once, in commit order, and the head ends past
//! the last; and the lock's wait and hold are measured on `/metrics`.

use std::collections::{BTreeMap, HashSet};

use fusion::store::{AppendMode, EventStore, Outcome, PostgresStore};
use serde_json::json;

use crate::ops::{metric, scrape};
use crate::pg::{TestDb, client};
use crate::pg_e2e::fresh_db;
use crate::support::Server;

/// The head is read inside the insert's statement, whose snapshot is taken
/// once the previous statement holds the lock: were it read before the
/// lock (a stale head), two groups would number from the same position,
/// and the unique index on `pos` would refuse one of them; were the head
/// moved by anything but what went in, positions would skip or repeat.
/// Two stores (two servers) append from 8 tasks in groups that share
/// half of their ids with other tasks (duplicates decided under the lock):
/// every event is stored once, every answer's position is its row's, the
/// positions are exactly 0..n and the head is n.
#[test]
fn concurrent_groups_with_shared_ids_get_dense_positions_and_the_head_ends_past_them() {
    crate::pg::with_connected_stores(2, |url, writers| async move {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = writers[t % 2].clone();
                tokio::spawn(async move {
                    let mut placed = Vec::new();
                    for round in 0..10 {
                        // Ids `shared-r-k` are sent by every task of a round.
                        let events = crate::store::contended_group(t, round, 20, |_| "p".into());
                        let ids: Vec<String> =
                            events.iter().map(|e| e.id.as_str().to_owned()).collect();
                        let appended = store.append(events, AppendMode::EachEvent).await.unwrap();
                        for (k, id) in ids.into_iter().enumerate() {
                            let outcome = &appended.outcomes[k];
                            assert!(
                                matches!(outcome, Outcome::Inserted | Outcome::Duplicate),
                                "{id}: {outcome:?}"
                            );
                            let pos = appended.positions[k].expect("a stored event has a position");
                            placed.push((id, pos, *outcome == Outcome::Inserted));
                        }
                    }
                    placed
                })
            })
            .collect();
        let mut answered: BTreeMap<String, u64> = BTreeMap::new();
        let mut inserted = 0;
        for task in tasks {
            for (id, pos, new) in task.await.unwrap() {
                inserted += usize::from(new);
                if let Some(before) = answered.insert(id.clone(), pos) {
                    assert_eq!(before, pos, "{id} answered at two positions");
                }
            }
        }
        // 10 rounds of 10 shared ids, and 8 tasks x 10 rounds x 10 own ids.
        let n = 10 * 10 + 8 * 10 * 10;
        assert_eq!(answered.len(), n);
        assert_eq!(inserted, n, "an id was inserted twice or not at all");
        let sql = client(&url).await;
        let rows = sql
            .query("SELECT id, pos FROM events ORDER BY pos", &[])
            .await
            .unwrap();
        let stored: BTreeMap<String, u64> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect();
        assert_eq!(stored, answered, "an answer's position is not its row's");
        assert_eq!(rows.len(), n);
        crate::pg_pipeline::dense(&sql).await;
        let distinct: HashSet<&String> = stored.keys().collect();
        assert_eq!(distinct.len(), n);
    });
}

/// A group whose every event is stored already moves no position: the
/// head's update is skipped when nothing went in, and the answers give
/// the stored positions.
#[test]
fn a_group_of_duplicates_leaves_the_head_where_it_was() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        let store = PostgresStore::connect(&db.url).await.unwrap();
        let events = || {
            (0..3)
                .map(|k| crate::store::purchase(&format!("e{k}"), k, "p", "b"))
                .collect::<Vec<_>>()
        };
        let first = store.append(events(), AppendMode::EachEvent).await.unwrap();
        assert_eq!(first.positions, vec![Some(0), Some(1), Some(2)]);
        let again = store.append(events(), AppendMode::EachEvent).await.unwrap();
        assert!(again.outcomes.iter().all(|o| *o == Outcome::Duplicate));
        assert_eq!(again.positions, first.positions);
        let head: i64 = client(&db.url)
            .await
            .query_one("SELECT pos FROM log_head", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(head, 3);
    });
}

/// Each committed append on PostgreSQL records its wait for the lock and
/// its hold (`fusion_log_head_wait_seconds`, `_hold_seconds`), the figure
/// the stream bench prints as the lock's share of an acknowledgement.
#[test]
fn an_append_on_postgres_records_its_wait_for_and_hold_of_the_log_head_lock() {
    let db = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_on_database(dir.path(), &db.url, &[]);
    let before = scrape(&s);
    let body = json!({"id": "h43-1", "type": "purchase", "time": "2026-11-01T10:00:00Z",
                      "person": "p", "brand": "b", "amount": 10.0, "currency": "USD"});
    let r = s.post_ndjson(&format!("{body}\n"));
    assert_eq!(r.status, 200, "{}", r.body);
    let after = scrape(&s);
    for name in [
        "fusion_log_head_wait_seconds_count",
        "fusion_log_head_hold_seconds_count",
    ] {
        assert_eq!(
            metric(&after, name, &[]) - metric(&before, name, &[]),
            1.0,
            "{name}"
        );
    }
    assert!(metric(&after, "fusion_log_head_hold_seconds_sum", &[]) > 0.0);
}
