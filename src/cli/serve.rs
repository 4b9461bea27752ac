//! `fusion serve`: the HTTP service on the embedded store (or PostgreSQL),
//! optionally loading the seed story into an empty store (`--demo`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Deserialize;

use super::StoreArgs;
use crate::engine::{Engine, EngineOptions};
use crate::http::{self, Limits};
use crate::ingest;
use crate::store::{Backend, EventStore, ScoreRow};

/// How often the materialised scores are refreshed (when anything changed).
const MATERIALISE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The seed story (fixtures/seed_story.ndjson), compiled in for `--demo`.
pub const SEED_STORY: &str = include_str!("../../fixtures/seed_story.ndjson");

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long)]
    pub bind: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Load the seed story into the store first, if the store is empty
    #[arg(long)]
    pub demo: bool,
    /// TOML file with any of: bind, data_dir, database_url, model
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Largest request body, in bytes
    #[arg(long, default_value_t = Limits::default().max_body)]
    pub max_body: usize,
    /// Refuse events dated more than this ahead of the server clock (24h, 90m, 30s, 2d)
    #[arg(long, default_value = "24h", value_parser = super::future_skew)]
    pub max_future_skew: chrono::Duration,
}

/// The fault-injection hook of the tests (ARCHITECTURE.md, "Invariants"),
/// a comma-separated list: `fold:N` makes the next N folds fail (of new
/// events, and rebuilds of the state after a failure), `open` makes the
/// fold of the log at start fail. Read by `serve` only; unset, it is inert.
const FAULT_INJECT: &str = "FUSION_FAULT_INJECT";

/// `(fold faults, fail the open)` from `FAULT_INJECT`.
fn injected_faults() -> anyhow::Result<(u32, bool)> {
    let Ok(v) = std::env::var(FAULT_INJECT) else {
        return Ok((0, false));
    };
    let (mut folds, mut open) = (0, false);
    for part in v.split(',').map(str::trim) {
        match part.strip_prefix("fold:").map(str::parse) {
            Some(Ok(n)) => folds = n,
            _ if part == "open" => open = true,
            _ => anyhow::bail!("{FAULT_INJECT}={v:?}: expected a list of fold:N and open"),
        }
    }
    Ok((folds, open))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    model: Option<PathBuf>,
}

pub fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        let cfg: ConfigFile =
            toml::from_str(&text).with_context(|| format!("bad config {}", path.display()))?;
        // Flags win over the file.
        if args.bind.is_none() {
            args.bind = cfg.bind;
        }
        if let Some(d) = cfg.data_dir
            && args.store.data_dir.as_os_str() == "./data"
        {
            args.store.data_dir = d;
        }
        if args.store.model.is_none() {
            args.store.model = cfg.model;
        }
        if args.store.database_url.is_none() {
            args.store.database_url = cfg.database_url;
        }
    }
    let bind = args.bind.clone().unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = bind
        .parse()
        .with_context(|| format!("--bind {bind:?} is not an address such as 127.0.0.1:8080"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "no API keys are configured, so the service binds to loopback only; use --bind 127.0.0.1:PORT"
        );
    }
    actix_web::rt::System::new().block_on(async move {
        let (fold_faults, fail_open) = injected_faults()?;
        let options = EngineOptions {
            max_future_skew: args.max_future_skew,
            fold_faults,
            fail_open,
        };
        let engine = super::open_engine(&args.store, options).await?;
        if args.demo {
            if engine.store().count().await? == 0 {
                let values = ingest::parse_ndjson(SEED_STORY.as_bytes())?;
                let (good, bad) = ingest::validate_all(&values);
                anyhow::ensure!(bad.is_empty(), "the seed story has invalid events: {bad:?}");
                // The story is fixed data, not traffic: a clock set before
                // its dates must not refuse it.
                let latest = good.iter().map(|(_, e)| e.time).max();
                let now = latest.map_or_else(Utc::now, |l| l.max(Utc::now()));
                let report = engine.submit(good, bad, true, now).await?;
                tracing::info!(accepted = report.accepted, "loaded the seed story");
            } else {
                tracing::info!("the store is not empty; --demo leaves it as it is");
            }
        }
        if let Backend::Postgres(_) = engine.store() {
            actix_web::rt::spawn(materialise_scores(Arc::clone(&engine)));
        }
        tracing::info!(
            events = engine.readiness().await.events,
            store = engine.store().name(),
            %bind,
            "serving; no API keys configured: every request is accepted, loopback only"
        );
        http::serve(
            engine,
            &bind,
            Limits {
                max_body: args.max_body,
            },
        )
        .await
        .with_context(|| format!("cannot serve on {bind}"))
    })
}

/// Keeps `relationship_scores` in PostgreSQL current for SQL readers: every
/// few seconds, if the state changed, one batch evaluation is written in
/// batches. A failed write (database down) is retried on the next round.
async fn materialise_scores(engine: Arc<Engine<Backend>>) {
    let mut written: Option<u64> = None;
    let mut tick = tokio::time::interval(MATERIALISE_EVERY);
    loop {
        tick.tick().await;
        let version = engine.version();
        if written == Some(version) {
            continue;
        }
        let scores = match engine.current_scores(Utc::now()).await {
            Ok(scores) => scores,
            Err(e) => {
                tracing::warn!(cause = %e, "could not compute scores to materialise; will retry");
                continue;
            }
        };
        let rows: Vec<ScoreRow> = scores
            .scores
            .iter()
            .map(|((person, brand), s)| ScoreRow {
                person: person.to_string(),
                brand: brand.to_string(),
                score: s.score,
                raw: s.raw,
                components: s.components,
                as_of: scores.at,
            })
            .collect();
        match engine.store().write_scores(&rows).await {
            Ok(()) => {
                tracing::debug!(rows = rows.len(), "materialised scores");
                written = Some(version);
            }
            Err(e) => tracing::warn!(cause = %e, "could not materialise scores; will retry"),
        }
    }
}
