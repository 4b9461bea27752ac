//! Helper for benches/log_scan.sh: how fast a build reads the log from a
//! store (issue #11, item 4: "PostgreSQL serves that build more slowly than
//! redb"). It measures; it asserts nothing. Prints `name=value` lines.
//!
//! `log_scan embedded DIR` or `log_scan postgres URL`, each figure the best
//! of REPS runs (env, default 3), prefixed with the backend:
//! - `serial_scan_rows_per_s`: the whole log in canonical order as builds
//!   read it before `store::scan` (each `scan_from` chunk awaited, then
//!   handed on, nothing read meanwhile), the consumer doing nothing;
//! - `scan_rows_per_s`: the same through `store::scan::for_each_chunk`
//!   (the next chunk read while the consumer works), what builds use now;
//! - `serial_build_s`, `build_s`: a whole build's two passes
//!   (`ScoreState::builder`: kinds, then the fold; no live series) fed
//!   each way, the seconds;
//! - on PostgreSQL, where the read's time goes: `query_only_rows_per_s`
//!   (the same statements, bodies taken as text and not decoded) and
//!   `decode_only_rows_per_s` (bodies in memory decoded, `store::body`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use fusion::domain::Logged;
use fusion::score::{ScoreState, ScoringModel};
use fusion::store::{EmbeddedStore, EventStore, PostgresStore, SCAN_CHUNK, StoreError, scan};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = std::env::var("REPS").ok().map_or(Ok(3), |r| r.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["embedded", dir] => {
            let store = EmbeddedStore::open(std::path::Path::new(dir))?;
            report("embedded", reps, rt.handle(), &store)
        }
        ["postgres", url] => {
            let store = rt.block_on(PostgresStore::connect(url))?;
            report("postgres", reps, rt.handle(), &store)?;
            rt.block_on(query_only(url, reps))
        }
        _ => bail!("usage: log_scan embedded DIR | log_scan postgres URL"),
    }
}

/// How builds read the log before `store::scan`.
fn serial<S: EventStore>(
    store: &S,
    rt: &tokio::runtime::Handle,
    mut f: impl FnMut(Vec<Logged>),
) -> Result<(), StoreError> {
    let mut after = None;
    loop {
        let chunk = rt.block_on(store.scan_from(after.take(), SCAN_CHUNK))?;
        let Some(last) = chunk.last() else {
            return Ok(());
        };
        after = Some((last.event.time, last.event.id.clone()));
        f(chunk);
    }
}

type Reader<S> =
    fn(&S, &tokio::runtime::Handle, &mut dyn FnMut(Vec<Logged>)) -> Result<(), StoreError>;

fn report<S: EventStore>(
    name: &str,
    reps: usize,
    rt: &tokio::runtime::Handle,
    store: &S,
) -> anyhow::Result<()> {
    let readers: [(&str, Reader<S>); 2] = [
        ("serial_", |s, rt, f| serial(s, rt, f)),
        ("", |s, rt, f| scan::for_each_chunk(s, rt, f)),
    ];
    let model = Arc::new(ScoringModel::default_model());
    let entities = rt.block_on(store.entities())?;
    for (how, read) in readers {
        let mut best = 0.0f64;
        let mut rows = 0;
        for _ in 0..reps {
            let start = Instant::now();
            rows = 0;
            read(store, rt, &mut |chunk| {
                rows += chunk.len();
                std::hint::black_box(chunk);
            })?;
            best = best.max(rows as f64 / start.elapsed().as_secs_f64());
        }
        println!("{name}_rows={rows}");
        println!("{name}_{how}scan_rows_per_s={best:.0}");
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let start = Instant::now();
            let mut kinds = ScoreState::builder(Arc::clone(&model), entities.clone());
            read(store, rt, &mut |chunk| kinds.see(chunk))?;
            let mut fold = kinds.fold_pass();
            read(store, rt, &mut |chunk| fold.fold(chunk))?;
            std::hint::black_box(fold.finish());
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!("{name}_{how}build_s={best:.3}");
    }
    Ok(())
}

/// The same keyset pages as `PostgresStore::scan_from`, bodies left
/// undecoded; then the decode alone of those bodies.
async fn query_only(url: &str, reps: usize) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connect")?;
    tokio::spawn(conn);
    let mut best = 0.0f64;
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let mut rows = 0;
        let mut after: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
        bodies.clear();
        loop {
            let page = match &after {
                None => {
                    client
                        .query(
                            "SELECT pos, body::text, time, id FROM events \
                             ORDER BY time, id LIMIT $1",
                            &[&(SCAN_CHUNK as i64)],
                        )
                        .await?
                }
                Some((t, id)) => {
                    client
                        .query(
                            "SELECT pos, body::text, time, id FROM events \
                             WHERE (time, id) > ($1, $2) ORDER BY time, id LIMIT $3",
                            &[t, id, &(SCAN_CHUNK as i64)],
                        )
                        .await?
                }
            };
            let Some(last) = page.last() else { break };
            after = Some((last.get(2), last.get(3)));
            rows += page.len();
            bodies.extend(page.iter().map(|r| r.get::<_, String>(1).into_bytes()));
        }
        best = best.max(rows as f64 / start.elapsed().as_secs_f64());
    }
    println!("postgres_query_only_rows_per_s={best:.0}");
    let start = Instant::now();
    for b in &bodies {
        std::hint::black_box(fusion::store::body::decode(b)?);
    }
    println!(
        "postgres_decode_only_rows_per_s={:.0}",
        bodies.len() as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}
