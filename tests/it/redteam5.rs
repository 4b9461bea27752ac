//! Red team h39 on this session's merged reads (running decayed sums kept
//! in `SumsCache`, task h35) and restarts (snapshot format 4, task h37):
//! every read equals what a server built for it from scratch answers.

use serde_json::{Value, json};

use crate::support::{STORY, Server};

const AT: &str = "2026-11-20T00:00:00Z";

/// The default model with the sentiment half-life at `days`.
fn model_with_sentiment_half_life(dir: &std::path::Path, days: f64) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.toml"))
        .unwrap();
    let text = text.replacen("sentiment = 30.0", &format!("sentiment = {days:?}"), 1);
    assert!(text.contains(&format!("sentiment = {days:?}")));
    let path = dir.join("model.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The seed story, then mentions of bistro by two of its people weeks
/// apart: series of several impulses, whose running sums decay between
/// them.
fn story_server(dir: &std::path::Path, extra: &[&str]) -> Server {
    let s = Server::start(dir, extra);
    let r = s.post_ndjson(STORY);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut more = String::new();
    for (k, (person, day, sentiment)) in [
        ("fan5", "2026-09-01", 0.9),
        ("fan5", "2026-10-01", -0.4),
        ("fan6", "2026-08-15", 0.8),
        ("fan6", "2026-11-18", 0.6),
    ]
    .into_iter()
    .enumerate()
    {
        more.push_str(&format!(
            "{{\"id\":\"h39-{k}\",\"type\":\"mention\",\"time\":\"{day}T12:00:00Z\",\"person\":\"{person}\",\"brand\":\"bistro\",\"sentiment\":{sentiment}}}\n"
        ));
    }
    let r = s.post_ndjson(&more);
    assert_eq!(r.status, 200, "{}", r.body);
    s
}

/// Regression (red team h39): a model-only what-if with another
/// half-life scored every relationship with the state's kept sums, whose
/// running sums `D_j` were decayed from impulse to impulse by the state's
/// half-lives, then decayed to `at` by the overridden ones: the `after`
/// scores were neither model's. They must be the scores of a server
/// started with that model (half-lives apply at read time; the impulses
/// stand), to the bit; and a read of the state's own model afterwards
/// (its reasons ordered by a half-life) must still be a fresh server's.
#[test]
fn a_model_whatif_with_another_half_life_scores_as_a_server_with_that_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = story_server(&dir.path().join("a"), &[]);
    // Read every relationship first, so the state keeps their sums.
    let listed = s.get(&format!(
        "/v1/brands/bistro/relationships?at={AT}&limit=1000"
    ));
    assert_eq!(listed.status, 200, "{}", listed.body);
    let people: Vec<String> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["person"].as_str().unwrap().to_string())
        .collect();
    assert!(people.len() > 3, "{}", listed.body);
    let explain = |s: &Server, p: &str| -> Value {
        let r = s.get(&format!("/v1/relationships/{p}/bistro?at={AT}"));
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        r.body
    };
    let before: Vec<Value> = people.iter().map(|p| explain(&s, p)).collect();
    let r = s.post_json(
        "/v1/simulate",
        &json!({"model": {"half_life_days": {"sentiment": 1}}, "brand": "bistro", "at": AT,
            "top": 1000}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let movers = r.body["movers"].as_array().unwrap();

    let model = model_with_sentiment_half_life(dir.path(), 1.0);
    let other = story_server(&dir.path().join("b"), &["--model", model.to_str().unwrap()]);
    let mut compared = 0;
    for m in movers {
        let p = m["person"].as_str().unwrap();
        let want = other.score(p, "bistro", AT);
        let got = m["after"].as_f64().unwrap();
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{p}: what-if {got}, server with the model {want}"
        );
        compared += 1;
    }
    assert!(compared > 3, "{}", r.body);
    // The state's own reads are unchanged by the what-if, and equal a
    // fresh server's with the state's model.
    let fresh = story_server(&dir.path().join("c"), &[]);
    for (p, was) in people.iter().zip(&before) {
        let now = explain(&s, p);
        assert_eq!(&now, was, "{p}: the what-if changed a read");
        assert_eq!(now, explain(&fresh, p), "{p}: not a fresh server's read");
    }
}

/// SIGKILLs in a start's first moments while a late-heavy stream with
/// sales reports posts, a snapshot (format 4: credits as runs) written
/// every few events, so kills land during snapshot writes, before the
/// rankings are ready and before the live build's plan is made (task h37
/// moved it after ready): nothing acknowledged is lost, the store opens
/// every time, and the last start serves what a start from the whole log
/// (its snapshots removed) serves.
#[test]
fn kills_right_after_a_start_and_during_snapshot_writes_lose_nothing_and_serve_the_logs_bits() {
    use crate::redteam2::{caught_up, event, everything, ndjson, same};
    use rand::seq::SliceRandom;
    use rand::{RngExt, SeedableRng};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let flags = ["--staleness", "0", "--snapshot-every", "5"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(39);
    let mut all: Vec<Value> = (0..1200).map(event).collect();
    // Mostly descending in time: nearly every batch is late (a refold).
    all.reverse();
    all.chunks_mut(40).for_each(|c| c.shuffle(&mut rng));
    let batches: Vec<&[Value]> = all.chunks(3).collect();
    let mut acked: Vec<Value> = Vec::new();
    let mut next = 0;
    for round in 0..5 {
        let s = Server::start(dir.path(), &flags);
        // Kill after a few batches: the first while the start still
        // builds, later ones after some snapshots were due.
        let kill_after = rng.random_range(1..=12) * (round + 1);
        let sent = std::sync::Mutex::new(Vec::<Value>::new());
        std::thread::scope(|scope| {
            let (s_ref, sent_ref, batches) = (&s, &sent, &batches[next..]);
            let poster = scope.spawn(move || {
                let mut done = 0;
                for batch in batches {
                    let body = ndjson(batch);
                    let posted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        s_ref.post_ndjson(&body)
                    }));
                    match posted {
                        Ok(r) if r.status == 200 => {
                            sent_ref.lock().unwrap().extend_from_slice(batch)
                        }
                        _ => return done,
                    }
                    done += 1;
                }
                done
            });
            let deadline = Instant::now() + Duration::from_secs(120);
            while sent.lock().unwrap().len() < 3 * kill_after && !poster.is_finished() {
                assert!(Instant::now() < deadline, "stream stalled");
                std::thread::yield_now();
            }
            s.sigkill();
            next += poster.join().unwrap();
        });
        acked.extend(sent.into_inner().unwrap());
        drop(s);
    }
    assert!(acked.len() > 30, "premise: a stream acknowledged");
    let b = Server::start(dir.path(), &flags);
    caught_up(&b);
    let count = b.event_count();
    assert!(count as usize >= acked.len(), "{count} < {}", acked.len());
    let r = b.post_ndjson(&ndjson(&acked));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.event_count(), count, "an acknowledged event was lost");
    caught_up(&b);
    let live = everything(&b);
    b.terminate();
    let snapshots = dir.path().join("snapshots");
    assert!(snapshots.is_dir(), "premise: snapshots written");
    std::fs::remove_dir_all(&snapshots).unwrap();
    let c = Server::start(dir.path(), &flags);
    caught_up(&c);
    same(&live, &everything(&c), "a start from the whole log");
}
