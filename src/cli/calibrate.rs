//! `fusion calibrate --train FROM..TO --validate FROM..TO`: fits the model's
//! weights and half-lives on the training window, reports the fitted model
//! against the base model on the validation window, and writes the fitted
//! model (`crate::validity::calibrate`). Owns the flags, the files and the
//! printing.

use std::path::PathBuf;

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::backtest::{BootstrapArgs, LogArgs, entity, rfc3339};
use crate::domain::EntityId;
use crate::validity::Window;
use crate::validity::calibrate::{self, CalibrateSpec};

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Training window FROM..TO (RFC 3339): scores at FROM, outcomes in (FROM, TO]
    #[arg(long, value_parser = window)]
    pub train: Window,
    /// Validation window FROM..TO, starting at or after the training window's end
    #[arg(long, value_parser = window)]
    pub validate: Window,
    /// Only this brand's relationships
    #[arg(long, value_parser = entity)]
    pub brand: Option<EntityId>,
    /// Where to write the fitted model
    #[arg(long, default_value = "calibrated.toml")]
    pub out: PathBuf,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `FROM..TO`, two RFC 3339 times.
fn window(s: &str) -> Result<Window, String> {
    let (from, to) = s
        .split_once("..")
        .ok_or_else(|| "expected FROM..TO, two RFC 3339 times".to_string())?;
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (rfc3339(from)?, rfc3339(to)?);
    if from >= to {
        return Err("the window must end after it starts".into());
    }
    Ok(Window { from, to })
}

pub fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    let base_path = args.log.store.model.as_deref();
    let base_text = match base_path {
        None => crate::score::DEFAULT_MODEL.to_string(),
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the model {}", p.display()))?,
    };
    let base = super::load_model(base_path)?;
    let log = args.log.load()?;
    let mut spec = CalibrateSpec::new(args.train, args.validate, args.bootstrap.bootstrap());
    spec.brand = args.brand.clone();
    let (report, _) = calibrate::calibrate(&base, &log.entities, &log.events, &spec)?;
    let text = calibrate::model_text(&base_text, &report)?;
    std::fs::write(&args.out, &text)
        .with_context(|| format!("cannot write the model {}", args.out.display()))?;
    let mut out = super::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    let names = crate::validity::scoring::component_names();
    let f = &report.fit;
    writeln!(
        out,
        "fitted on {} relationships at {}: mean training AUC {:.4} -> {:.4} ({} sweeps, {} evaluations)",
        f.relationships,
        report.train.from.to_rfc3339(),
        f.base_objective,
        f.fitted_objective,
        f.sweeps,
        f.evaluations
    )?;
    writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>12} {:>12}",
        "component", "weight", "fitted", "half-life", "fitted"
    )?;
    for (c, name) in names.iter().enumerate() {
        writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>12} {:>12}",
            name,
            f.base.weights[c],
            f.fitted.weights[c],
            f.base.half_lives[c],
            f.fitted.half_lives[c]
        )?;
    }
    writeln!(out, "wrote {}", args.out.display())?;
    writeln!(out)?;
    write!(out, "{}", report.validation.to_text())?;
    Ok(())
}
