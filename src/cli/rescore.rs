//! `fusion rescore`: folds the log (the incremental live series replays it
//! event by event), runs a full batch recompute on the same state, and prints
//! how far the incremental scores had drifted from it.

use std::io::Write;

use chrono::Utc;

use super::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct RescoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: RescoreArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    rt.block_on(async {
        // A rescore leaves a fresh snapshot (`Engine::rescore`).
        let options = crate::engine::EngineOptions {
            snapshots: crate::engine::Snapshots::LoadAndWrite { every: 0 },
            ..Default::default()
        };
        let engine = super::open_engine(&args.store, options).await?;
        let r = engine.rescore(Utc::now(), false).await?;
        writeln!(
            super::stdout(),
            "events={} relationships={} max_drift={:.3e} live_error_bound={:.3e} live_pushes={} seconds={:.3}",
            r.events, r.relationships, r.max_drift, r.live_error_bound, r.live.pushes, r.seconds
        )?;
        engine.store().close().await;
        Ok(())
    })
}
