//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`domain`]: ids, entities, events; plain types, no IO.
//! - [`graph`]: the entity graph (petgraph), readable as of any time.
//! - [`score`]: scoring model, impulses, decay, propagation, explanations.
//! - [`store`]: the `EventStore` trait (the event log) and its backends.
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod cli;
pub mod domain;
pub mod engine;
pub mod graph;
pub mod http;
pub mod ingest;
pub mod score;
pub mod sentiment;
pub mod store;
