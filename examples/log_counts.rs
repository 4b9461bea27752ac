//! What the memory check at open sees (issue #10, task h32): the counts of
//! an embedded store's first pass (`ScoreState::builder`, `KindsPass::counts`)
//! and the estimate made of them (`engine::Footprint`), without building
//! the state. It measures; it asserts nothing. `log_counts DIR` prints
//! `name=value` lines: events, people, brands, entities, relationships
//! (the count the estimate takes), estimate_bytes, first_pass_s.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use fusion::engine::Footprint;
use fusion::score::{ScoreState, ScoringModel};
use fusion::store::{EmbeddedStore, EventStore, scan};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = &args[..] else {
        bail!("usage: log_counts DIR (an embedded store)");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = EmbeddedStore::open(std::path::Path::new(dir))?;
    let started = Instant::now();
    let entities = rt.block_on(store.entities())?;
    let mut kinds = ScoreState::builder(Arc::new(ScoringModel::default_model()), entities);
    scan::for_each_chunk(&store, rt.handle(), |chunk| kinds.see(chunk))?;
    let counts = kinds.counts();
    let seconds = started.elapsed().as_secs_f64();
    let estimate = Footprint::of(&counts);
    println!("events={}", counts.events);
    println!("people={}", counts.people);
    println!("brands={}", counts.brands);
    println!("entities={}", counts.entities);
    println!("relationships={}", estimate.relationship_count);
    println!("estimate_bytes={}", estimate.total());
    println!("first_pass_s={seconds:.1}");
    Ok(())
}
