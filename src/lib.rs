//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`domain`]: ids, entities, events; plain types, no IO.
//! - [`ingest`]: wire format to validated domain events.
//! - [`sentiment`]: VADER sentiment of post and review text.
//! - [`graph`]: the entity graph (petgraph), readable as of any time.
//! - [`score`]: scoring model, impulses, decay, propagation, explanations.
//! - [`store`]: the `EventStore` trait (the event log) and its backends.
//! - [`engine`]: owns the derived state; where ingest meets scoring.
//! - [`http`]: the actix-web service.
//! - [`generate`]: a synthetic, reproducible event stream for benches and demos.
//! - [`validity`]: backtests, calibration and impact: does the score mean something.
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod cli;
pub mod domain;
pub mod engine;
pub mod generate;
pub mod graph;
pub mod http;
pub mod ingest;
pub mod score;
pub mod sentiment;
pub mod store;
pub mod validity;
