//! Ingest figures for the PostgreSQL store, run by benches/pg_copy.sh against
//! a server it names: (a) the raw binary-COPY rate of the event rows into an
//! unindexed table (the ceiling), (b) durable events/s through
//! `PostgresStore::append` in batches of 10,000, (c) append latency with 8
//! concurrent tasks sending 1,000-event batches. Prints `name=value` lines.
//! It measures; it asserts nothing.
//!
//! Usage: pg_append ADMIN_URL [EVENTS]   (ADMIN_URL in key=value form; the
//! run creates and drops its own databases there)

#[path = "support/raw_copy.rs"]
mod raw_copy;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fusion::domain::{EntityId, Event, EventId, EventKind, Sentiment, SentimentSource};
use fusion::store::{AppendMode, EventStore, PostgresStore};
use tokio_postgres::NoTls;

const BATCH: usize = 10_000;
const TASKS: usize = 8;
const TASK_BATCH: usize = 1_000;
const TASK_BATCHES: usize = 25;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let admin = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: pg_append ADMIN_URL [EVENTS]"))?;
    let n: usize = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let events = generate(0, n);
    println!("events={n}");

    // (a) The ceiling: the same rows, one binary COPY, one commit, no indexes.
    let db = fresh_db(&admin, "copy").await?;
    let (client, conn) = tokio_postgres::connect(&db, NoTls).await?;
    tokio::spawn(conn);
    let copy_s = raw_copy::raw_copy(&client, &events).await?;
    println!("raw_copy_seconds={copy_s:.2}");
    println!("raw_copy_rows_per_s={:.0}", n as f64 / copy_s);

    // (b) End to end through the store: staging COPY, dedup INSERT, indexes,
    // one durable commit per batch, one batch in flight at a time.
    let db = fresh_db(&admin, "append").await?;
    let store = PostgresStore::connect(&db).await?;
    let start = Instant::now();
    let mut accepted = 0;
    for chunk in events.chunks(BATCH) {
        accepted += store
            .append(chunk.to_vec(), AppendMode::EachEvent)
            .await?
            .accepted();
    }
    let append_s = start.elapsed().as_secs_f64();
    assert_eq!(accepted, n, "every generated event is new");
    println!("append_batch={BATCH}");
    println!("append_seconds={append_s:.2}");
    println!("append_events_per_s={:.0}", n as f64 / append_s);
    println!("append_vs_raw_copy={:.2}", copy_s / append_s);

    // The same again with the whole stream resent: every event a duplicate.
    let start = Instant::now();
    for chunk in events.chunks(BATCH) {
        store.append(chunk.to_vec(), AppendMode::EachEvent).await?;
    }
    println!(
        "append_duplicates_events_per_s={:.0}",
        n as f64 / start.elapsed().as_secs_f64()
    );
    drop(store);

    // (c) Latency under concurrent ingest, on a fresh database.
    let db = fresh_db(&admin, "latency").await?;
    let store = PostgresStore::connect(&db).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(TASK_BATCHES);
            for b in 0..TASK_BATCHES {
                let from = (t * TASK_BATCHES + b) * TASK_BATCH;
                let batch = generate(from, TASK_BATCH);
                let sent = Instant::now();
                store
                    .append(batch, AppendMode::EachEvent)
                    .await
                    .expect("append");
                lat.push(sent.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let total = TASKS * TASK_BATCHES * TASK_BATCH;
    let wall = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).min(lat.len()) - 1];
    println!("concurrent_tasks={TASKS}");
    println!("concurrent_batch={TASK_BATCH}");
    println!("concurrent_events_per_s={:.0}", total as f64 / wall);
    println!("ack_p50_ms={:.1}", pct(0.50).as_secs_f64() * 1e3);
    println!("ack_p99_ms={:.1}", pct(0.99).as_secs_f64() * 1e3);
    println!("ack_max_ms={:.1}", lat[lat.len() - 1].as_secs_f64() * 1e3);
    Ok(())
}

async fn fresh_db(admin: &str, what: &str) -> anyhow::Result<String> {
    let name = format!("bench_{what}_{}", std::process::id());
    let (client, conn) = tokio_postgres::connect(admin, NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    Ok(format!("{admin} dbname={name}"))
}

/// A deterministic mixed stream: events `from..from+n`, times spread over a
/// year out of order, 100,000 people, 500 brands.
fn generate(from: usize, n: usize) -> Vec<Event> {
    let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
    (from..from + n)
        .map(|i| {
            let h = splitmix(i as u64);
            let person = EntityId::new(format!("person-{}", h % 100_000)).unwrap();
            let brand = EntityId::new(format!("brand-{}", (h >> 20) % 500)).unwrap();
            let kind = match (h >> 40) % 4 {
                0 => EventKind::Purchase {
                    person,
                    brand,
                    amount: ((h >> 8) % 20_000) as f64 / 100.0,
                    currency: fusion::domain::Currency::new("EUR").expect("a currency code"),
                    channel: None,
                },
                1 => EventKind::Post {
                    person,
                    brand,
                    sentiment: Sentiment {
                        value: ((h >> 12) % 2001) as f64 / 1000.0 - 1.0,
                        source: SentimentSource::Given,
                    },
                    text: None,
                    channel: None,
                },
                2 => EventKind::Follow {
                    person,
                    target: brand,
                    strength: 1.0,
                },
                _ => EventKind::Service {
                    person,
                    brand,
                    channel: Some("chat".into()),
                    csat: Some(((h >> 16) % 5 + 1) as u8),
                    effort: Some(((h >> 24) % 7 + 1) as u8),
                    resolved: Some(h & 1 == 0),
                    wait_seconds: Some(((h >> 28) % 600) as f64),
                    transfers: Some(((h >> 36) % 3) as u32),
                },
            };
            Event {
                id: EventId::new(format!("ev-{i:09}")).unwrap(),
                time: t0 + chrono::Duration::seconds(((h >> 4) % 31_536_000) as i64),
                kind,
                attributes: None,
                extra: None,
            }
        })
        .collect()
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
