//! `fusion score PERSON BRAND`: one relationship's score and reasons, read
//! from the store (the same numbers the HTTP API gives).

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::StoreArgs;
use crate::domain::EntityId;
use crate::score::Component;

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    pub person: String,
    pub brand: String,
    /// Evaluate as of this RFC 3339 time (default: now)
    #[arg(long)]
    pub at: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let person = EntityId::new(args.person.clone()).context("bad PERSON id")?;
    let brand = EntityId::new(args.brand.clone()).context("bad BRAND id")?;
    let at = match &args.at {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--at {s:?} is not an RFC 3339 time"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let rt = super::runtime()?;
    rt.block_on(async {
        let engine = super::open_engine(&args.store, Default::default()).await?;
        let Some((e, trend)) = engine.relationship(&person, &brand, at).await? else {
            anyhow::bail!("no relationship between '{person}' and '{brand}' as of {at}");
        };
        let mut out = super::stdout();
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"person": e.person, "brand": e.brand, "score": e.score, "raw": e.raw,
                    "trend": trend, "as_of": e.at, "contributions": e.contributions})
            )?;
            return Ok(());
        }
        writeln!(out, "{person} - {brand}: {:.1} (raw {:+.3}) as of {}", e.score, e.raw, e.at.to_rfc3339())?;
        writeln!(out, "trend: 1d {:+.1}  7d {:+.1}  30d {:+.1}", trend.d1, trend.d7, trend.d30)?;
        let parts: Vec<String> = Component::ALL
            .iter()
            .filter(|c| e.components[c.index()] != 0.0)
            .map(|c| format!("{} {:+.3}", c.as_str(), e.components[c.index()]))
            .collect();
        writeln!(out, "components: {}", parts.join(", "))?;
        writeln!(out, "why ({} events; largest first):", e.event_count)?;
        for c in &e.contributions {
            writeln!(
                out,
                "  {:+6.2}  {:<12} {:<24} {}  via {}",
                c.delta,
                c.event_type,
                c.event.as_str(),
                c.time.format("%Y-%m-%d %H:%M"),
                c.path.join(" > ")
            )?;
        }
        out.flush()?;
        engine.store().close().await;
        Ok(())
    })
}
