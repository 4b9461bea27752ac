//! Background work's CPU priority (issue #11, items 1 and 5; task h41;
//! `engine/priority.rs`) against a real `fusion serve`: the threads that
//! run batch evaluations and snapshot writes run at a lower OS priority
//! (their nice value read from /proc), the threads writers and readers
//! wait on do not, and what is served is the same either way.

use serde_json::{Value, json};

use crate::support::Server;

/// The nice value the server gives background threads
/// (`priority::BACKGROUND_NICE`).
const BACKGROUND_NICE: i64 = 10;

/// `(name, nice)` of every thread of process `pid`, from /proc.
fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        // A thread that ended since the listing is skipped.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        out.push((comm.trim().to_string(), stat_nice(&stat)));
    }
    out
}

/// The nice value of process `pid`'s main thread (`/proc/<pid>/stat`).
fn nice_of_main_thread(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat_nice(&stat)
}

/// Field 19 of a `stat` line, the nice value; the name (field 2) may
/// hold spaces.
fn stat_nice(stat: &str) -> i64 {
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

fn purchase(id: &str, person: &str, brand: &str, minute: u32) -> Value {
    json!({"id": id, "type": "purchase", "time": format!("2026-11-01T10:{minute:02}:00Z"),
           "person": person, "brand": brand, "amount": 20, "currency": "USD"})
}

/// The ranking's batch evaluations ran on the lowered pool (`fusion-bg-*`),
/// and the fold thread, the store writer, the snapshot writer,
/// the live thread (it holds the write lock in slices) and the HTTP
/// workers are not; the ranking served is the one a restart serves (from
/// the fold of the same log, no background work left to do).
#[test]
fn background_threads_run_lowered_and_the_writers_threads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--snapshot-every", "10"]);
    let events: Vec<Value> = (0..40)
        .map(|i| {
            purchase(
                &format!("e{i}"),
                &format!("p{}", i % 7),
                &format!("b{}", i % 3),
                i,
            )
        })
        .collect();
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = s.post_ndjson(&body);
    assert_eq!(r.status, 200, "{}", r.body);
    // A ranking at a past time is a batch evaluation (`Engine::ranking_at`).
    let asked = "/v1/brands/b0/relationships?at=2026-11-01T10:30:00Z";
    let before = s.get(asked);
    assert_eq!(before.status, 200, "{}", before.body);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let saved = || {
        std::fs::read_dir(dir.path().join("snapshots"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    };
    let seen = loop {
        let seen = threads(s.child.id());
        if seen.iter().any(|(name, _)| name.starts_with("fusion-bg-")) && saved() {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background pool thread, or no snapshot written: {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let nice = |prefix: &str| -> Vec<i64> {
        seen.iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, n)| *n)
            .collect()
    };
    // The snapshot encoder (while one runs) and the live thread's build
    // pool (session 31) are lowered too.
    for lowered in ["fusion-bg-", "fusion-snap-enc", "fusion-lbg-"] {
        assert!(
            nice(lowered).iter().all(|n| *n == BACKGROUND_NICE),
            "{lowered}: {seen:?}"
        );
    }
    // Not lowered means at the nice value the server inherited from this
    // test (0 unless the suite itself runs under `nice`, where every helper
    // saw this test fail when it compared with 0).
    let inherited = nice_of_main_thread(std::process::id());
    // Thread names are cut to 15 bytes by the kernel. The snapshot writer
    // has written (every 10 events) through tokio's blocking pool: a pool
    // thread started from a lowered writer was left lowered (regression:
    // write-lock holds of seconds under the stream), so only its encoder
    // is lowered, and every pool thread runs at the normal priority.
    for normal in [
        "fusion-fold",
        "fusion-store-wr",
        "fusion-live",
        "fusion-snapshot",
        "actix-rt",
        "tokio-rt",
    ] {
        let n = nice(normal);
        assert!(!n.is_empty(), "no {normal} thread: {seen:?}");
        assert!(n.iter().all(|n| *n == inherited), "{normal}: {seen:?}");
    }

    // The same bits as a restart's ranking.
    let dir = s.kill();
    let again = Server::start(&dir, &[]);
    let after = again.get(asked);
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(
        crate::support::comparable(before.body),
        crate::support::comparable(after.body)
    );
}

/// `serve --background-nice 0` keeps background work at the normal
/// priority (on its own pool still): what the stream bench compares.
#[test]
fn background_nice_zero_leaves_the_background_pool_at_the_normal_priority() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--background-nice", "0"]);
    let body: String = (0..10)
        .map(|i| format!("{}\n", purchase(&format!("e{i}"), "p1", "b0", i)))
        .collect();
    assert_eq!(s.post_ndjson(&body).status, 200);
    let r = s.get("/v1/brands/b0/relationships?at=2026-11-01T10:30:00Z");
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = threads(s.child.id());
        let pool: Vec<i64> = seen
            .iter()
            .filter(|(name, _)| name.starts_with("fusion-bg-"))
            .map(|(_, n)| *n)
            .collect();
        if !pool.is_empty() {
            assert!(pool.iter().all(|n| *n == 0), "{seen:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background pool thread appeared: {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
