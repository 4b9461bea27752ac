//! `fusion generate`: the command-line face of [`crate::generate`]. Owns the
//! flags and their defaults, the stdout sink and the `--truth` file; the
//! stream itself (and all its randomness) lives in the library.

use std::io::{self, Write};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::generate::{GenerateConfig, MAX_POPULATION};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Seed of the stream: the same arguments give byte-identical output
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of consumers (p0, p1, ..)
    #[arg(long, default_value_t = 10_000, value_parser = population)]
    pub people: u32,
    /// Number of influencers (i0, i1, ..)
    #[arg(long, default_value_t = 100, value_parser = population)]
    pub influencers: u32,
    /// Number of brands (b0, b1, ..)
    #[arg(long, default_value_t = 50, value_parser = population)]
    pub brands: u32,
    /// Number of events to write
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Event time at which the stream starts (RFC 3339)
    #[arg(long, default_value = "2026-01-01T00:00:00Z", value_parser = rfc3339)]
    pub start: DateTime<Utc>,
    /// Days of event time the stream spans
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Plant a latent health per relationship that drives its events, and
    /// write it to FILE as NDJSON (docs/validity.md); changes the stream
    #[arg(long, value_name = "FILE")]
    pub truth: Option<std::path::PathBuf>,
}

impl GenerateArgs {
    pub fn config(&self) -> GenerateConfig {
        GenerateConfig {
            seed: self.seed,
            people: self.people,
            influencers: self.influencers,
            brands: self.brands,
            events: self.events,
            start: self.start,
            days: self.days,
        }
    }
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    // A reader that has seen enough (`| head`) ends the command quietly
    // (`super::stdout`).
    let mut out = io::BufWriter::with_capacity(1 << 16, super::stdout());
    match &args.truth {
        None => crate::generate::write_ndjson(&args.config(), &mut out),
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create the truth file {}", path.display()))?;
            crate::generate::write_ndjson_with_truth(
                &args.config(),
                &mut out,
                io::BufWriter::new(file),
            )
        }
    }
    .context("failed to generate the event stream")?;
    out.flush()
        .context("failed to write the event stream to stdout")
}

fn population(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_POPULATION).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_POPULATION}"
        )),
    }
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| format!("expected an RFC 3339 time like 2026-01-01T00:00:00Z ({err})"))
}
