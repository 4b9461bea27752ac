//! The subcommands of `fusion` (API.md, "Command line"). Each lives in its own
//! module with a clap `Args` struct and a `run` function; this file only
//! dispatches and holds what several share (opening the store and model).
//! Argument errors exit with status 2 (clap's default), failures with 1 and a
//! one-line reason.
//!
//! A closed standard output (`fusion score … | head -1`) ends a command
//! quietly with status 0: commands write through [`stdout`], whose write
//! errors on a closed pipe are marked, and `run` turns a marked error into
//! success. SIGPIPE stays ignored (Rust's default), which is what `serve`
//! needs: a client or database that goes away mid-write is an error on that
//! socket, never the end of the process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::engine::{Engine, EngineOptions, Snapshots};
use crate::ingest::mapping::Mapping;
use crate::score::ScoringModel;
use crate::store::dead_letters::Retention;
use crate::store::keys::KeyFile;
use crate::store::{Backend, EmbeddedStore, Keys, PostgresStore};
use crate::telemetry::LogFormat;

pub mod alerts;
pub mod backtest;
pub mod calibrate;
pub mod generate;
pub mod impact;
pub mod ingest;
pub mod keys;
pub mod migrate;
pub mod propagate;
pub mod rescore;
pub mod score;
pub mod sentiment;
pub mod serve;

#[derive(Debug, Parser)]
#[command(
    name = "fusion",
    version,
    about = "Fusion Scores for person-brand relationships"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text or as JSON objects (with the request id and route)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "FUSION_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

// Parsed once per process: the size of `serve`'s flags costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    // Boxed: its flags make it far larger than the other commands.
    /// Run the HTTP service
    Serve(Box<serve::ServeArgs>),
    /// Load NDJSON event files (`-` for stdin) into the store or a running server
    Ingest(ingest::IngestArgs),
    /// Print one relationship's score and reasons from the store
    Score(score::ScoreArgs),
    /// Recompute every score from the log and print how far state had drifted
    Rescore(rescore::RescoreArgs),
    /// Write a synthetic, reproducible event stream as NDJSON on stdout
    Generate(generate::GenerateArgs),
    /// Score lines of text on stdin with VADER: compound pos neu neg per line
    Sentiment(sentiment::SentimentArgs),
    /// Apply the PostgreSQL migrations
    Migrate(migrate::MigrateArgs),
    /// Run the propagation core on any weighted directed graph, for checking it against other tools
    Propagate(propagate::PropagateArgs),
    /// Scores at a cut against outcomes after it, beside recency/frequency/monetary baselines
    Backtest(backtest::BacktestArgs),
    /// Fit the model's weights and half-lives to outcomes; writes a model file with its validation figures
    Calibrate(calibrate::CalibrateArgs),
    /// The effect of a brand's occasion or cause (difference in differences against a matched group)
    Impact(impact::ImpactArgs),
    /// API keys: create (printed once), list, revoke
    Keys(keys::KeysArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Ingest(args) => ingest::run(args),
        Command::Score(args) => score::run(args),
        Command::Rescore(args) => rescore::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Sentiment(args) => sentiment::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Propagate(args) => propagate::run(args),
        Command::Backtest(args) => backtest::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Impact(args) => impact::run(args),
        Command::Keys(args) => keys::run(args),
    };
    match result {
        Err(e) if stdout_closed(&e) => Ok(()),
        other => other,
    }
}

/// The mark on a write error of [`stdout`] whose reader has gone.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Standard output for command results: a write to a closed pipe fails with
/// an error `run` recognises (and ends the command quietly), unlike an
/// `EPIPE` from any other file or socket, which stays a failure.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// See [`stdout`].
pub struct Stdout(std::io::StdoutLock<'static>);

impl Stdout {
    fn mark(e: std::io::Error) -> std::io::Error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
        } else {
            e
        }
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(Self::mark)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Self::mark)
    }
}

/// Whether a command failed only because its standard output was closed.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
            || c.is::<StdoutClosed>()
    })
}

/// The mapping of pipeline messages and the dead-letter store's
/// retention (`serve`, issue #16).
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Mapping of Segment messages and CloudEvents to Fusion events (TOML);
    /// the built-in models/segment-mapping.toml when absent
    #[arg(long, env = "FUSION_MAPPING")]
    pub mapping: Option<PathBuf>,
    #[command(flatten)]
    pub dead_letters: DeadLetterArgs,
}

/// The dead-letter store's retention (`serve` and `ingest`).
#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterArgs {
    /// Most dead letters kept; past it the oldest go first
    #[arg(long, default_value_t = Retention::default().max_count)]
    pub dead_letter_max_count: u64,
    /// Oldest dead letter kept (24h, 90m, 30s, 30d); older ones go first
    #[arg(long, default_value = "30d", value_parser = future_skew)]
    pub dead_letter_max_age: chrono::Duration,
}

impl DeadLetterArgs {
    pub fn retention(&self) -> Retention {
        Retention {
            max_count: self.dead_letter_max_count,
            max_age: self.dead_letter_max_age,
        }
    }
}

impl PipelineArgs {
    pub fn load_mapping(&self) -> anyhow::Result<Arc<Mapping>> {
        let mapping = match &self.mapping {
            None => Mapping::default_mapping(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the mapping {}", p.display()))?;
                Mapping::from_toml(&text).with_context(|| format!("bad mapping {}", p.display()))?
            }
        };
        Ok(Arc::new(mapping))
    }
}

/// Where the store and model are, shared by every command that opens them.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory of the embedded store
    #[arg(long, default_value = "./data", env = "FUSION_DATA_DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded store (e.g. postgres://user@host/db)
    #[arg(long, env = "FUSION_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Scoring model (TOML); the built-in models/default.toml when absent
    #[arg(long, env = "FUSION_MODEL")]
    pub model: Option<PathBuf>,
    /// Open the store even when its scores look too big for the memory
    /// this machine has available (the check estimates from the counts of
    /// the log, and refuses rather than be killed halfway)
    #[arg(long)]
    pub no_memory_check: bool,
    /// Events folded between two snapshots of the scores, written by
    /// `serve` in the background beside the log (or in the database) so a
    /// start folds only the log after the latest one; 0 writes them only
    /// after a full fold, at shutdown and after a rescore. Every command
    /// that opens the store loads the latest
    #[arg(long, default_value_t = 100_000, env = "FUSION_SNAPSHOT_EVERY")]
    pub snapshot_every: u64,
}

pub fn load_model(path: Option<&Path>) -> anyhow::Result<Arc<ScoringModel>> {
    let model = match path {
        None => ScoringModel::default_model(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the model {}", p.display()))?;
            ScoringModel::from_toml(&text).with_context(|| format!("bad model {}", p.display()))?
        }
    };
    Ok(Arc::new(model))
}

/// `--max-future-skew`: how far ahead of the clock an event's time may be
/// when it arrives (`serve` and `fusion ingest`); `24h`, `90m`, `30s`, `2d`.
pub fn future_skew(s: &str) -> Result<chrono::Duration, String> {
    let unit_at = s.char_indices().last().map_or(0, |(i, _)| i);
    let (n, unit) = s.split_at(unit_at);
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| (0..=365 * 24 * 3600).contains(n))
        .ok_or_else(|| format!("{s:?} is not a duration such as 24h, 90m, 30s or 2d"))?;
    let d = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => {
            return Err(format!(
                "{s:?} is not a duration such as 24h, 90m, 30s or 2d"
            ));
        }
    };
    if d > chrono::Duration::days(3650) {
        return Err(format!("{s:?} is longer than 3650d"));
    }
    Ok(d)
}

/// Opens the store (PostgreSQL when a database URL is given, applying its
/// migrations; else the embedded one) and replays it into an engine.
pub async fn open_engine(
    args: &StoreArgs,
    options: EngineOptions,
) -> anyhow::Result<Arc<Engine<Backend>>> {
    let (store, place) = open_store(args).await?;
    engine_on(store, &place, args, options).await
}

/// Replays an opened store (the one `args` names) into an engine, with
/// the model and the memory check `args` ask for.
pub async fn engine_on(
    store: Backend,
    place: &str,
    args: &StoreArgs,
    options: EngineOptions,
) -> anyhow::Result<Arc<Engine<Backend>>> {
    let model = load_model(args.model.as_deref())?;
    let options = EngineOptions {
        memory: if args.no_memory_check {
            None
        } else {
            available_memory()
        },
        snapshots: match options.snapshots {
            Snapshots::LoadAndWrite { .. } => Snapshots::LoadAndWrite {
                every: args.snapshot_every,
            },
            _ => Snapshots::Load,
        },
        ..options
    };
    let engine = Engine::open_with(store, model, options)
        .await
        .with_context(|| format!("failed to load the events from {place}"))?;
    Ok(Arc::new(engine))
}

/// The key store beside the event store `args` names: PostgreSQL's tables
/// (applying migrations), else `keys.redb` in the data directory, which does
/// not touch the event log (so it works while `serve` holds it).
pub async fn open_keys(args: &StoreArgs) -> anyhow::Result<Keys> {
    Ok(match &args.database_url {
        Some(url) => Keys::Postgres(
            PostgresStore::connect(url)
                .await
                .context("failed to open the PostgreSQL store")?,
        ),
        None => Keys::File(KeyFile::in_dir(&args.data_dir)),
    })
}

/// Bytes of memory this machine has available now (`MemAvailable` of
/// `/proc/meminfo`: free memory plus what the kernel can reclaim), for the
/// memory check when a store is opened; `None` where it cannot be read
/// (then nothing is checked).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Opens the store alone (no replay), and says where it is for messages.
pub async fn open_store(args: &StoreArgs) -> anyhow::Result<(Backend, String)> {
    Ok(match &args.database_url {
        Some(url) => (
            Backend::Postgres(
                PostgresStore::connect(url)
                    .await
                    .context("failed to open the PostgreSQL store")?,
            ),
            "the PostgreSQL database".to_string(),
        ),
        None => (
            Backend::Embedded(EmbeddedStore::open(&args.data_dir).with_context(|| {
                format!("failed to open the store at {}", args.data_dir.display())
            })?),
            args.data_dir.display().to_string(),
        ),
    })
}

/// A multi-threaded tokio runtime for the commands that do not serve HTTP.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
