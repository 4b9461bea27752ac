#![warn(missing_docs)]
//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`domain`]: ids, entities, events; plain types, no IO.
//! - [`ingest`]: wire format to validated domain events.
//! - [`sentiment`]: VADER sentiment of post and review text.
//! - [`graph`]: the entity graph (petgraph), readable as of any time.
//! - [`kernel`]: the general propagation kernel and its CSR snapshot (`fusion propagate`).
//! - [`score`]: scoring model, impulses, decay, propagation, explanations.
//! - [`store`]: the `EventStore` trait (the event log) and its backends;
//!   `KeyStore` (API keys, secrets, the erasure audit).
//! - [`auth`]: API keys, roles, sessions: who may do what.
//! - [`engine`]: owns the derived state; where ingest meets scoring.
//! - [`feed`]: the change feed's pure part: which relationships moved enough to publish.
//! - [`alerts`]: alert rules, their evaluation and the webhook outbox.
//! - [`http`]: the actix-web service.
//! - [`telemetry`]: metric names, their recording helpers, log set-up.
//! - [`tls`]: the HTTPS server configuration.
//! - [`generate`]: a synthetic, reproducible event stream for benches and demos.
//! - [`validity`]: backtests, calibration and impact: does the score mean something.
//! - [`cli`]: the subcommands of the `fusion` binary.

#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod alerts;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod auth;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod cli;
pub mod domain;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod engine;
pub mod feed;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod generate;
pub mod graph;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod http;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod ingest;
pub mod kernel;
pub mod score;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod sentiment;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod store;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod telemetry;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod tls;
#[allow(missing_docs)] // documented item by item as issue #10 goes on
pub mod validity;
