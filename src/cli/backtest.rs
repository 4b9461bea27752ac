//! `fusion backtest --cut TIME --horizon DAYS`: scores at the cut against
//! outcomes after it, beside the RFM baselines and any peer predictions
//! (`crate::validity::backtest`). Owns the flags, reading the log (the store
//! or NDJSON files) and peer files, and printing; the backtest itself is in
//! the library. Also holds what `calibrate` and `impact` share with it: the
//! log's source and time parsing.

use std::path::{Path, PathBuf};

use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use super::StoreArgs;
use crate::domain::{CurrencyTable, Entity, EntityId, Event};
use crate::store::EventStore;
use crate::validity::{self, BacktestSpec, Bootstrap, NamedModel, Peer};

/// Where the events come from: the store (`--data-dir` / `--database-url`),
/// or NDJSON files given with `--events` (validated as `ingest` does).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Read the events from these NDJSON files instead of the store
    #[arg(long = "events", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The registrations and events of the log.
pub struct Log {
    pub entities: Vec<Entity>,
    pub events: Vec<Event>,
}

impl LogArgs {
    pub fn load(&self) -> anyhow::Result<Log> {
        if !self.files.is_empty() {
            let model = super::load_model(self.store.model.as_deref())?;
            let mut events = Vec::new();
            for f in &self.files {
                events.extend(read_ndjson(f, &model.currency)?);
            }
            dedup(&mut events);
            return Ok(Log {
                entities: Vec::new(),
                events,
            });
        }
        let rt = super::runtime()?;
        rt.block_on(async {
            let (store, place) = super::open_store(&self.store).await?;
            let entities = store
                .entities()
                .await
                .with_context(|| format!("failed to read the entities from {place}"))?;
            let events = store
                .scan()
                .await
                .with_context(|| format!("failed to read the events from {place}"))?;
            Ok(Log { entities, events })
        })
    }
}

/// The same id twice is one event (the first), as in the store.
fn dedup(events: &mut Vec<Event>) {
    let mut seen = std::collections::HashSet::new();
    events.retain(|e| seen.insert(e.id.clone()));
}

fn read_ndjson(path: &Path, currencies: &CurrencyTable) -> anyhow::Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let values = crate::ingest::parse_ndjson(&bytes)
        .with_context(|| format!("{} is not NDJSON", path.display()))?;
    let checked = crate::ingest::validate_all(&values, currencies);
    let (good, bad) = (checked.good, checked.rejected);
    if let Some(r) = bad.first() {
        let reasons: Vec<String> = r
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        bail!(
            "{}: {} invalid events, the first is event {} (id {}): {}; fix or drop them (fusion ingest lists them all)",
            path.display(),
            bad.len(),
            r.index + 1,
            r.id.as_deref().unwrap_or("?"),
            reasons.join("; ")
        );
    }
    Ok(good.into_iter().map(|(_, e)| e).collect())
}

/// An RFC 3339 time, for clap.
pub fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| format!("expected an RFC 3339 time like 2026-01-01T00:00:00Z ({err})"))
}

/// A brand or other entity id, for clap.
pub fn entity(s: &str) -> Result<EntityId, String> {
    EntityId::new(s).map_err(|e| format!("bad id: {e}"))
}

/// A positive number of days, for clap.
pub fn days(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d > 0.0 && d <= 36_500.0 => Ok(d),
        _ => Err("expected a number of days above 0 and at most 36500".into()),
    }
}

/// The bootstrap flags shared by backtest, calibrate and impact.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Bootstrap replicates behind every 95% interval
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub replicates: u32,
    /// Seed of the bootstrap (ChaCha8): the same seed gives the same intervals
    #[arg(long, default_value_t = 15)]
    pub seed: u64,
}

impl BootstrapArgs {
    pub fn bootstrap(&self) -> Bootstrap {
        Bootstrap {
            replicates: self.replicates as usize,
            seed: self.seed,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Scores use the events before this time (RFC 3339)
    #[arg(long, value_parser = rfc3339)]
    pub cut: DateTime<Utc>,
    /// Outcomes are counted in (cut, cut + DAYS]
    #[arg(long, value_parser = days)]
    pub horizon: f64,
    /// Only this brand's relationships
    #[arg(long, value_parser = entity)]
    pub brand: Option<EntityId>,
    /// Also backtest this model file (repeatable); reported as fusion:<file stem>
    #[arg(long = "compare", value_name = "MODEL")]
    pub compare: Vec<PathBuf>,
    /// Outside predictions as NAME=FILE, FILE being TSV person, brand, value (higher = healthier)
    #[arg(long = "peer", value_name = "NAME=FILE")]
    pub peers: Vec<String>,
    /// Print JSON instead of the table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// A model's reporting name: `fusion` for the built-in one.
pub fn model_name(path: Option<&Path>) -> String {
    match path {
        None => "fusion".into(),
        Some(p) => format!(
            "fusion:{}",
            p.file_stem()
                .map_or("model".into(), |s| s.to_string_lossy())
        ),
    }
}

pub fn run(args: BacktestArgs) -> anyhow::Result<()> {
    let mut models = vec![NamedModel {
        name: model_name(args.log.store.model.as_deref()),
        model: super::load_model(args.log.store.model.as_deref())?,
    }];
    for path in &args.compare {
        models.push(NamedModel {
            name: model_name(Some(path)),
            model: super::load_model(Some(path))?,
        });
    }
    let mut peers = Vec::new();
    for spec in &args.peers {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--peer {spec:?} must be NAME=FILE");
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the peer file {file}"))?;
        peers.push(Peer::from_tsv(name, &text)?);
    }
    let log = args.log.load()?;
    let spec = BacktestSpec {
        cut: args.cut,
        horizon_days: args.horizon,
        brand: args.brand.clone(),
        bootstrap: args.bootstrap.bootstrap(),
    };
    let report = validity::backtest(&log.entities, &log.events, &models, &peers, &spec)?;
    let mut out = super::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}
