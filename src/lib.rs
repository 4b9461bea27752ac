//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`domain`]: ids, entities, events; plain types, no IO.
//! - [`store`]: the `EventStore` trait (the event log) and its backends.
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod cli;
pub mod domain;
pub mod store;
