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
use crate::ingest::{self, BodyFormat};
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
    /// Largest request body, in bytes, after decompression (413 past it)
    #[arg(long, default_value_t = Limits::default().max_body)]
    pub max_body: usize,
    /// Bytes of request bodies held at once by all requests (at least --max-body)
    #[arg(long, default_value_t = Limits::default().max_bodies_in_flight)]
    pub max_bodies_in_flight: usize,
    /// Seconds to wait for the next chunk of a request body (408 past it)
    #[arg(long, default_value_t = Limits::default().body_idle_timeout.as_secs_f64(), value_parser = seconds)]
    pub body_idle_timeout: f64,
    /// Seconds to receive a whole request body (408 past it)
    #[arg(long, default_value_t = Limits::default().body_deadline.as_secs_f64(), value_parser = seconds)]
    pub body_deadline: f64,
    /// Seconds a body waits for room in --max-bodies-in-flight (503 past it)
    #[arg(long, default_value_t = Limits::default().body_budget_wait.as_secs_f64(), value_parser = seconds)]
    pub body_budget_wait: f64,
    /// Connections served at once; more wait in the listen backlog
    #[arg(long, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Refuse events dated more than this ahead of the server clock (24h, 90m, 30s, 2d)
    #[arg(long, default_value = "24h", value_parser = super::future_skew)]
    pub max_future_skew: chrono::Duration,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 86_400.0 => Ok(x),
        _ => Err("expected a number of seconds in (0, 86400]".into()),
    }
}

impl ServeArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
        anyhow::ensure!(
            self.max_body >= 1 && self.max_bodies_in_flight >= self.max_body,
            "--max-bodies-in-flight ({}) must be at least --max-body ({}), which must be at least 1",
            self.max_bodies_in_flight,
            self.max_body
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "--max-connections must be at least 1"
        );
        let secs = std::time::Duration::from_secs_f64;
        Ok(Limits {
            max_body: self.max_body,
            max_bodies_in_flight: self.max_bodies_in_flight,
            body_idle_timeout: secs(self.body_idle_timeout),
            body_deadline: secs(self.body_deadline),
            body_budget_wait: secs(self.body_budget_wait),
            max_connections: fit_connections(self.max_connections),
        })
    }
}

/// File descriptors kept for everything but connections (store files, the
/// PostgreSQL pool, logs, blocking threads).
const FD_RESERVE: u64 = 256;

/// The connection cap that this process's open-file limit allows: the soft
/// limit is raised towards the hard one if the cap needs it (a server that
/// runs out of descriptors stops accepting anyone), else the cap is lowered.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every unix
fn fit_connections(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return wanted;
    }
    let needed = wanted as u64 + FD_RESERVE;
    if (lim.rlim_cur as u64) < needed {
        let raised = libc::rlimit {
            rlim_cur: needed.min(lim.rlim_max as u64) as libc::rlim_t,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    let fits = (lim.rlim_cur as u64).saturating_sub(FD_RESERVE).max(1) as usize;
    if fits < wanted {
        tracing::warn!(
            wanted,
            allowed = fits,
            "the open-file limit leaves room for fewer connections; serving that many"
        );
    }
    wanted.min(fits)
}

#[cfg(not(unix))]
fn fit_connections(wanted: usize) -> usize {
    wanted
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
    let limits = args.limits()?;
    actix_web::rt::System::new().block_on(async move {
        let (fold_faults, fail_open) = injected_faults()?;
        let options = EngineOptions {
            max_future_skew: args.max_future_skew,
            fold_faults,
            fail_open,
            ..EngineOptions::default()
        };
        let engine = super::open_engine(&args.store, options).await?;
        if args.demo {
            if engine.store().count().await? == 0 {
                let story = ingest::parse_events(
                    SEED_STORY.as_bytes(),
                    BodyFormat::Ndjson,
                    &engine.model().currency,
                )?;
                anyhow::ensure!(
                    story.rejected.is_empty(),
                    "the seed story has invalid events: {:?}",
                    story.rejected
                );
                // The story is fixed data, not traffic: a clock set before
                // its dates must not refuse it.
                let latest = story.events.iter().map(|(_, e)| e.time).max();
                let now = latest.map_or_else(Utc::now, |l| l.max(Utc::now()));
                let report = engine
                    .submit(story.events, story.rejected, true, now)
                    .await?;
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
        http::serve(engine, &bind, limits)
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
