//! `fusion rescore`: full batch recompute from the log; prints how far the
//! state had drifted from it.

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
        let engine = super::open_engine(&args.store).await?;
        let r = engine.rescore(Utc::now()).await?;
        println!(
            "events={} relationships={} max_drift={:.3e} seconds={:.3}",
            r.events, r.relationships, r.max_drift, r.seconds
        );
        Ok(())
    })
}
