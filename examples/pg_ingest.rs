//! Helpers for benches/pg_ingest.sh, which measures ingest into PostgreSQL
//! end to end. It measures; it asserts nothing. Prints `name=value` lines.
//!
//! - `pg_ingest db ADMIN_URL NAME`: creates (or recreates) database NAME on
//!   the server of ADMIN_URL (key=value form) and prints its URL alone.
//! - `pg_ingest copy URL FILE`: the ceiling. Validates FILE's NDJSON events
//!   (untimed), then writes exactly the rows the store writes (id, time,
//!   type, refs, body) with one binary COPY into an unindexed table and one
//!   commit, as examples/pg_append.rs does for its own stream.
//! - `pg_ingest http BASE_URL FILE THREADS BATCH`: THREADS clients post
//!   FILE's lines as NDJSON batches of BATCH events to `BASE_URL/v1/events`,
//!   each taking the next batch not yet taken, and time every request from
//!   sending to the 200 answer (the acknowledgement).

#[path = "support/raw_copy.rs"]
mod raw_copy;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fusion::domain::Event;
use tokio_postgres::NoTls;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["db", admin, name] => tokio_main(create_db(admin, name)),
        ["copy", url, file] => tokio_main(copy(url, file)),
        ["http", base, file, threads, batch] => http(base, file, threads.parse()?, batch.parse()?),
        _ => bail!(
            "usage: pg_ingest db ADMIN_URL NAME | copy URL FILE | http BASE_URL FILE THREADS BATCH"
        ),
    }
}

fn tokio_main(f: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

async fn create_db(admin: &str, name: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(admin, NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    println!("{admin} dbname={name}");
    Ok(())
}

async fn copy(url: &str, file: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    let currencies = fusion::score::ScoringModel::default_model().currency;
    let events: Vec<Event> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            fusion::ingest::validate(&v, &currencies)
                .map(|v| v.event)
                .map_err(|e| anyhow::anyhow!("invalid event: {e:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    let secs = raw_copy::raw_copy(&client, &events).await?;
    println!("raw_copy_rows={}", events.len());
    println!("raw_copy_s={secs:.2}");
    println!("raw_copy_rows_per_s={:.0}", events.len() as f64 / secs);
    Ok(())
}

fn http(base: &str, file: &str, threads: usize, batch: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let bodies: Arc<Vec<String>> =
        Arc::new(lines.chunks(batch).map(|c| c.join("\n") + "\n").collect());
    let endpoint = format!("{}/v1/events", base.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    // Why requests failed: the status, or the client's error.
    let failures = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (bodies, next, latencies, failures, endpoint) = (
                Arc::clone(&bodies),
                Arc::clone(&next),
                Arc::clone(&latencies),
                Arc::clone(&failures),
                endpoint.clone(),
            );
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let sent = Instant::now();
                    let outcome = agent
                        .post(&endpoint)
                        .header("Content-Type", "application/x-ndjson")
                        .send(body.as_bytes())
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| {
                            let status = r.status();
                            let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                            if status == 200 {
                                Ok(())
                            } else {
                                Err(format!(
                                    "{status} {}",
                                    text.chars().take(120).collect::<String>()
                                ))
                            }
                        });
                    match outcome {
                        Ok(()) => latencies.lock().unwrap().push(sent.elapsed()),
                        Err(why) => *failures.lock().unwrap().entry(why).or_default() += 1,
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    let wall = start.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).max(1) - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!("http_threads={threads}");
    println!("http_batch={batch}");
    println!("http_requests={}", lat.len());
    let failures = failures.lock().unwrap();
    println!("http_failed_requests={}", failures.values().sum::<usize>());
    for (why, n) in failures.iter() {
        eprintln!("failed {n}x: {why}");
    }
    println!("http_events_per_s={:.0}", lines.len() as f64 / wall);
    println!("http_ack_p50_ms={:.1}", pct(0.50));
    println!("http_ack_p99_ms={:.1}", pct(0.99));
    println!("http_ack_max_ms={:.1}", pct(1.0));
    Ok(())
}
