//! `fusion serve`: the HTTP service on the embedded store (or PostgreSQL),
//! optionally loading the seed story into an empty store (`--demo`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::StoreArgs;
use crate::http::{self, Limits};
use crate::ingest;
use crate::store::EventStore;

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
    /// TOML file with any of: bind, data_dir, model
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Largest request body, in bytes
    #[arg(long, default_value_t = Limits::default().max_body)]
    pub max_body: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    bind: Option<String>,
    data_dir: Option<PathBuf>,
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
            && args.store.data_dir == PathBuf::from("./data")
        {
            args.store.data_dir = d;
        }
        if args.store.model.is_none() {
            args.store.model = cfg.model;
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
        let engine = super::open_engine(&args.store).await?;
        if args.demo {
            if engine.store().count().await? == 0 {
                let values = ingest::parse_ndjson(SEED_STORY.as_bytes())?;
                let (good, bad) = ingest::validate_all(&values);
                anyhow::ensure!(bad.is_empty(), "the seed story has invalid events: {bad:?}");
                let report = engine.submit(good, bad, true).await?;
                tracing::info!(accepted = report.accepted, "loaded the seed story");
            } else {
                tracing::info!("the store is not empty; --demo leaves it as it is");
            }
        }
        tracing::info!(
            events = engine.state().event_count(),
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
