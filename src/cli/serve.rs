//! `fusion serve`: the HTTP service on the embedded store (or PostgreSQL),
//! optionally loading the seed story into an empty store (`--demo`).
//! Reads the flags and the config file, loads the keys, decides whether the
//! bind address is allowed, and hands everything to `http::serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Deserialize;

use super::{PipelineArgs, StoreArgs};
use crate::auth::keyring::BOOTSTRAP_MIN_LEN;
use crate::engine::{Engine, EngineOptions};
use crate::http::limits::{Edge, RateConfig, RateLimits};
use crate::http::{self, Limits, Options, Security};
use crate::ingest::{self, BodyFormat};
use crate::store::SharedLog;
use crate::store::dead_letters::DeadLetters;
use crate::store::{Backend, EventStore, Keys, ScoreRow};

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
    #[command(flatten)]
    pub pipelines: PipelineArgs,
    #[command(flatten)]
    pub alerts: super::alerts::AlertArgs,
    /// Load the seed story into the store first, if the store is empty
    #[arg(long)]
    pub demo: bool,
    /// TOML file with any of: bind, data_dir, database_url, model, tls_cert,
    /// tls_key, metrics_bind, allowed_hosts, cors_origins, rate_per_key,
    /// rate_per_address, admin_key_file
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
    /// Events waiting to be folded past which ingest answers 503
    /// `overloaded` with Retry-After (back-pressure; at least the largest batch)
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_FOLD_QUEUE)]
    pub max_fold_queue: usize,
    /// Seconds the oldest write may have waited for its commit and fold
    /// past which ingest answers 503 `overloaded` with Retry-After
    /// (back-pressure in time; 0: no bound)
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_FOLD_WAIT.as_secs_f64(), value_parser = wait_bound)]
    pub max_fold_wait: f64,
    /// Seconds rankings, brand listings and summaries may lag the folded
    /// log (0: every read reflects every acknowledged event)
    #[arg(long, default_value_t = crate::engine::DEFAULT_STALENESS.as_secs_f64(), value_parser = staleness)]
    pub staleness: f64,
    /// Milliseconds the fold holds fresh events back so events stamped
    /// before them by other senders are folded in order with them, not
    /// refolded (0: folded as they come; at most 1000)
    #[arg(long, default_value_t = crate::engine::DEFAULT_REORDER_WINDOW.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub reorder_window_ms: u64,
    /// The nice value of background work (live series builds, ranking
    /// batch evaluations, snapshot encoding), so writers and readers come
    /// first (0: the normal priority; at most 19)
    #[arg(long, default_value_t = crate::engine::BACKGROUND_NICE,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub background_nice: i32,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key)
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve /metrics on this address instead of the service's
    #[arg(long)]
    pub metrics_bind: Option<String>,
    /// A Host the service answers for: name (any port) or name:port;
    /// repeat for several, `*` for any. Default: the bind address and localhost
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// An origin (https://dash.example.com) whose pages may call the API
    /// (CORS, with credentials); repeat for several. Default: none
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// Requests per second (and burst) per API key; 0: no limit
    #[arg(long)]
    pub rate_per_key: Option<u32>,
    /// Requests per second (and burst) per client address for requests
    /// without a valid key; 0: no limit
    #[arg(long)]
    pub rate_per_address: Option<u32>,
    /// Seconds requests in flight get to finish after SIGTERM
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Changes the change feed retains for resumption (GET /v1/stream)
    #[arg(long, default_value_t = http::stream::FeedOptions::default().window)]
    pub feed_window: usize,
    /// Log positions a feed subscriber may fall behind before it is cut off
    #[arg(long, default_value_t = http::stream::FeedOptions::default().buffer)]
    pub feed_buffer: usize,
    /// Seconds of silence after which the feed sends a heartbeat comment
    #[arg(long, default_value_t = http::stream::FeedOptions::default().heartbeat.as_secs_f64(), value_parser = seconds)]
    pub feed_heartbeat: f64,
    /// Seconds one feed stream lasts before it ends (the client resumes
    /// with Last-Event-ID, and its credentials are checked again)
    #[arg(long, default_value_t = http::stream::FeedOptions::default().lifetime.as_secs_f64(), value_parser = seconds)]
    pub feed_lifetime: f64,
    /// File holding the bootstrap admin key (else env FUSION_ADMIN_KEY), for
    /// a first start before any key exists; at least 32 characters
    #[arg(long)]
    pub admin_key_file: Option<PathBuf>,
    /// With --database-url: seconds between two reads of the events other
    /// servers stored, besides the database's notifications (a lost
    /// notification delays by at most this)
    #[arg(long, default_value_t = crate::engine::DEFAULT_FOLLOW_INTERVAL.as_secs_f64(), value_parser = seconds)]
    pub follow_interval: f64,
}

/// `--staleness`: zero allowed, at most a minute (a ranking is kept a
/// minute at most anyway).
fn staleness(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=60.0).contains(&x) => Ok(x),
        _ => Err("expected a number of seconds in [0, 60]".into()),
    }
}

/// `--max-fold-wait`: zero (no bound) allowed, at most an hour.
fn wait_bound(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=3600.0).contains(&x) => Ok(x),
        _ => Err("expected a number of seconds in [0, 3600]".into()),
    }
}

pub(super) fn seconds(s: &str) -> Result<f64, String> {
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
        anyhow::ensure!(
            self.feed_window >= 1 && self.feed_buffer >= 1,
            "--feed-window and --feed-buffer must be at least 1"
        );
        let secs = std::time::Duration::from_secs_f64;
        Ok(Limits {
            max_body: self.max_body,
            max_bodies_in_flight: self.max_bodies_in_flight,
            body_idle_timeout: secs(self.body_idle_timeout),
            body_deadline: secs(self.body_deadline),
            body_budget_wait: secs(self.body_budget_wait),
            max_connections: fit_connections(self.max_connections),
            feed: http::stream::FeedOptions {
                window: self.feed_window,
                buffer: self.feed_buffer,
                heartbeat: secs(self.feed_heartbeat),
                lifetime: secs(self.feed_lifetime),
            },
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
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    metrics_bind: Option<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    cors_origins: Vec<String>,
    rate_per_key: Option<u32>,
    rate_per_address: Option<u32>,
    admin_key_file: Option<PathBuf>,
}

/// Flags win over the file.
fn merge_config(args: &mut ServeArgs, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config {}", path.display()))?;
    let cfg: ConfigFile =
        toml::from_str(&text).with_context(|| format!("bad config {}", path.display()))?;
    fn fill<T>(flag: &mut Option<T>, file: Option<T>) {
        if flag.is_none() {
            *flag = file;
        }
    }
    fill(&mut args.bind, cfg.bind);
    if let Some(d) = cfg.data_dir
        && args.store.data_dir.as_os_str() == "./data"
    {
        args.store.data_dir = d;
    }
    fill(&mut args.store.model, cfg.model);
    fill(&mut args.store.database_url, cfg.database_url);
    fill(&mut args.tls_cert, cfg.tls_cert);
    fill(&mut args.tls_key, cfg.tls_key);
    fill(&mut args.metrics_bind, cfg.metrics_bind);
    fill(&mut args.rate_per_key, cfg.rate_per_key);
    fill(&mut args.rate_per_address, cfg.rate_per_address);
    fill(&mut args.admin_key_file, cfg.admin_key_file);
    if args.allowed_hosts.is_empty() {
        args.allowed_hosts = cfg.allowed_hosts;
    }
    if args.cors_origins.is_empty() {
        args.cors_origins = cfg.cors_origins;
    }
    anyhow::ensure!(
        args.tls_cert.is_some() == args.tls_key.is_some(),
        "tls_cert and tls_key go together"
    );
    Ok(())
}

fn parse_addr(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("{flag} {value:?} is not an address such as 127.0.0.1:8080"))
}

/// The bootstrap admin key: from the file if given, else `FUSION_ADMIN_KEY`.
fn bootstrap_key(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let key = match file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the admin key file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("FUSION_ADMIN_KEY")
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty()),
    };
    if let Some(k) = &key {
        anyhow::ensure!(
            k.len() >= BOOTSTRAP_MIN_LEN && k.is_ascii() && !k.contains(char::is_whitespace),
            "the bootstrap admin key must be at least {BOOTSTRAP_MIN_LEN} printable ASCII characters \
             without spaces; `fusion keys create --role admin` makes a proper key"
        );
    }
    Ok(key)
}

pub fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    if let Some(path) = args.config.clone() {
        merge_config(&mut args, &path)?;
    }
    let bind = parse_addr("--bind", args.bind.as_deref().unwrap_or("127.0.0.1:8080"))?;
    let metrics_bind = args
        .metrics_bind
        .as_deref()
        .map(|m| parse_addr("--metrics-bind", m))
        .transpose()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let bootstrap = bootstrap_key(args.admin_key_file.as_deref())?;
    let defaults = RateConfig::default();
    let rates = RateConfig {
        per_key: args.rate_per_key.unwrap_or(defaults.per_key),
        per_address: args.rate_per_address.unwrap_or(defaults.per_address),
    };
    let limits = args.limits()?;
    // Before anything is counted (the demo load included).
    http::metrics::recorder();
    // Before any background work starts its pool.
    crate::engine::set_background_nice(args.background_nice);
    actix_web::rt::System::new().block_on(async move {
        let (fold_faults, fail_open) = injected_faults()?;
        let options = EngineOptions {
            max_future_skew: args.max_future_skew,
            fold_faults,
            fail_open,
            max_fold_queue: args.max_fold_queue,
            max_fold_wait: std::time::Duration::from_secs_f64(args.max_fold_wait),
            staleness: std::time::Duration::from_secs_f64(args.staleness),
            reorder_window: std::time::Duration::from_millis(args.reorder_window_ms),
            // `--snapshot-every` is applied by `engine_on`.
            snapshots: crate::engine::Snapshots::LoadAndWrite { every: 0 },
            // Ready once every acknowledged event is folded; rankings wait
            // for the live series (docs/api.md, `/readyz`).
            ready_before_live: true,
            ..EngineOptions::default()
        };
        let (store, place) = super::open_store(&args.store).await?;
        let edge = Edge::new(bind, &args.allowed_hosts, &args.cors_origins, tls.is_some());
        let security = Security::load(
            Keys::beside(&store, &args.store.data_dir),
            bootstrap.as_deref(),
            RateLimits::new(rates),
            edge,
            tls.is_some(),
        )
        .await
        .context("cannot read the API keys")?;
        let has_keys = security.keyring.has_keys();
        if !has_keys && !bind.ip().is_loopback() {
            bail!(
                "no API keys are configured, so the service binds to loopback only; use --bind \
                 127.0.0.1:PORT, or create a key first (`fusion keys create --role admin`) or set \
                 FUSION_ADMIN_KEY"
            );
        }
        if bind.ip().is_unspecified() && args.allowed_hosts.is_empty() {
            tracing::warn!(
                hosts = ?security.edge.hosts(),
                "bound to every interface but answering only for these hosts; name the others with --allowed-host"
            );
        }
        let intake = Arc::new(http::Intake {
            letters: DeadLetters::beside(&store, &args.store.data_dir)
                .context("cannot open the dead-letter store")?,
            retention: args.pipelines.dead_letters.retention(),
            mapping: args.pipelines.load_mapping()?,
        });
        let alert_book = crate::store::AlertBook::beside(&store, &args.store.data_dir)
            .context("cannot open the alert store")?;
        // Other servers of the same database append too: follow them
        // (`engine::follow`); the context epoch is read before the build.
        let shared = match &store {
            Backend::Postgres(pg) => {
                let log = pg.shared_log();
                let context = log.context_epoch().await.context("cannot read the log's context")?;
                Some((log, context))
            }
            Backend::Embedded(_) => None,
        };
        let engine =
            super::engine_on(store, &place, &args.store, options).await?;
        if let Some((log, context)) = shared {
            let interval = std::time::Duration::from_secs_f64(args.follow_interval);
            engine.follow(log, context, interval);
        }
        // Alerts: rules evaluated as the scores move, webhooks from the outbox.
        let alerts = crate::alerts::Alerts::new(alert_book, args.alerts.config());
        alerts.start(Arc::clone(&engine));
        if args.demo {
            load_demo(&engine).await?;
        }
        if let Backend::Postgres(_) = engine.store() {
            actix_web::rt::spawn(materialise_scores(Arc::clone(&engine)));
        }
        let security = Arc::new(security);
        actix_web::rt::spawn(http::auth::keep_keyring(Arc::clone(&security)));
        let events = engine.readiness().await.events;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if has_keys {
            tracing::info!(
                events,
                store = engine.store().name(),
                %bind,
                %scheme,
                hosts = ?security.edge.hosts(),
                "serving; API keys are required on every data route"
            );
        } else {
            tracing::info!(
                events,
                store = engine.store().name(),
                %bind,
                %scheme,
                "serving; no API keys configured: every request is accepted, loopback only"
            );
        }
        // Kept for the snapshot written once every request is answered.
        let for_snapshot = Arc::clone(&engine);
        http::serve(
            engine,
            security,
            intake,
            Options {
                bind,
                limits,
                tls,
                metrics_bind,
                shutdown_timeout: args.shutdown_timeout,
                alerts: Some(alerts),
            },
        )
        .await
        .with_context(|| format!("cannot serve on {bind}"))?;
        tracing::info!("stopped: every request in flight was answered");
        // A graceful stop leaves a snapshot, so the next start folds
        // nothing (`engine::snapshot`); failing to write one is logged.
        if let Err(e) = for_snapshot.write_snapshot().await {
            tracing::warn!(cause = %e, "cannot write a snapshot at shutdown");
        }
        for_snapshot.store().close().await;
        Ok(())
    })
}

async fn load_demo(engine: &Engine<Backend>) -> anyhow::Result<()> {
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
    Ok(())
}

/// The pause before the next refresh of the materialised scores after one
/// that took `took`: [`MATERIALISE_EVERY`], or twice the refresh when that
/// is longer, so refreshing takes at most a third of the time. Why (task
/// h43): at 200,000 events under a stream one refresh of every row took
/// 8.5 to 11.5 s, so every 5 s meant refreshing without a pause, a whole
/// database core taken from the appends.
fn materialise_pause(took: std::time::Duration) -> std::time::Duration {
    MATERIALISE_EVERY.max(took.saturating_mul(2))
}

/// Keeps `relationship_scores` in PostgreSQL current for SQL readers: every
/// few seconds (`materialise_pause`), if the state changed, the table is
/// replaced by the current scores. A failed write (database down) is
/// retried on the next round.
async fn materialise_scores(engine: Arc<Engine<Backend>>) {
    let mut written: Option<u64> = None;
    // The first refresh at once, as the table is read from the start.
    let mut pause = std::time::Duration::ZERO;
    loop {
        tokio::time::sleep(pause).await;
        pause = MATERIALISE_EVERY;
        let version = engine.version();
        if written == Some(version) {
            continue;
        }
        let started = std::time::Instant::now();
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
                pause = materialise_pause(started.elapsed());
            }
            Err(e) => {
                crate::telemetry::record_store_error(&e);
                tracing::warn!(cause = %e, "could not materialise scores; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Task h43 saw the materialised scores refreshed without a pause at
    /// 200,000 events under a stream (each refresh 8.5 to 11.5 s, one every
    /// 5 s): a refresh longer than half the period now waits twice its
    /// own length, so it takes at most a third of the time.
    #[test]
    fn a_slow_refresh_of_the_materialised_scores_waits_twice_its_length() {
        assert_eq!(
            materialise_pause(Duration::from_millis(40)),
            MATERIALISE_EVERY
        );
        assert_eq!(
            materialise_pause(Duration::from_secs(10)),
            Duration::from_secs(20)
        );
        let took = Duration::from_secs(9);
        assert!(took * 3 <= took + materialise_pause(took));
    }
}
