//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`domain`]: ids, entities, events; plain types, no IO.
//! - [`ingest`]: wire format to validated domain events.
//! - [`sentiment`]: VADER sentiment of post and review text.
//! - [`graph`]: the entity graph (petgraph), readable as of any time.
//! - [`score`]: scoring model, impulses, decay, propagation, explanations.
//! - [`store`]: the `EventStore` trait (the event log) and its backends;
//!   `KeyStore` (API keys, secrets, the erasure audit).
//! - [`auth`]: API keys, roles, sessions: who may do what.
//! - [`engine`]: owns the derived state; where ingest meets scoring.
//! - [`http`]: the actix-web service.
//! - [`telemetry`]: metric names, their recording helpers, log set-up.
//! - [`tls`]: the HTTPS server configuration.
//! - [`generate`]: a synthetic, reproducible event stream for benches and demos.
//! - [`validity`]: backtests, calibration and impact: does the score mean something.
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod auth;
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
pub mod telemetry;
pub mod tls;
pub mod validity;
