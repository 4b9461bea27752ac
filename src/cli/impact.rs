//! `fusion impact BRAND --occasion ID | --cause ID`: the effect of a brand's
//! action on the relationships of the people it reached
//! (`crate::validity::impact`). Owns the flags and the printing; reads the
//! clock only for the default `--at`.

use std::io::Write;

use anyhow::bail;
use chrono::{DateTime, Utc};

use super::backtest::{LogArgs, days, entity, rfc3339};
use crate::domain::{EntityId, EventId};
use crate::validity::Bootstrap;
use crate::validity::impact::{self, Action, ImpactSpec};

#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    /// The brand whose action it was
    #[arg(value_parser = entity)]
    pub brand: EntityId,
    /// The occasion (its entity id)
    #[arg(long, conflicts_with = "cause", required_unless_present = "cause")]
    pub occasion: Option<String>,
    /// The cause (the id of its `cause` event)
    #[arg(long)]
    pub cause: Option<String>,
    /// Measure as of this time (RFC 3339; default: now)
    #[arg(long, value_parser = rfc3339)]
    pub at: Option<DateTime<Utc>>,
    /// Length of the before and after windows, days
    #[arg(long, default_value_t = impact::DEFAULT_WINDOW_DAYS, value_parser = days)]
    pub window: f64,
    /// Bootstrap replicates behind the 95% intervals
    #[arg(long, default_value_t = impact::DEFAULT_BOOTSTRAP.replicates as u32,
          value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub replicates: u32,
    /// Seed of the bootstrap (ChaCha8)
    #[arg(long, default_value_t = impact::DEFAULT_BOOTSTRAP.seed)]
    pub seed: u64,
    /// Print JSON (the HTTP answer's shape)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

pub fn run(args: ImpactArgs) -> anyhow::Result<()> {
    let action = match (&args.occasion, &args.cause) {
        (Some(o), None) => Action::Occasion(EntityId::new(o.clone())?),
        (None, Some(c)) => Action::Cause(EventId::new(c.clone())?),
        _ => bail!("give exactly one of --occasion and --cause"),
    };
    let at = args.at.unwrap_or_else(Utc::now);
    let model = super::load_model(args.log.store.model.as_deref())?;
    let log = args.log.load()?;
    let state = crate::validity::scoring::state_until(model, &log.entities, &log.events, at);
    let spec = ImpactSpec {
        brand: args.brand.clone(),
        action,
        at,
        window_days: args.window,
        bootstrap: Bootstrap {
            replicates: args.replicates as usize,
            seed: args.seed,
        },
    };
    let report = impact::impact(&state, &log.events, &spec)?;
    let mut out = super::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}
