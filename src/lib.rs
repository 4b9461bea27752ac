//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`graph`]: graph snapshots the scoring reads (CSR, pull layout).
//! - [`score`]: the scoring kernels (propagation: batch and incremental).
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod graph;
pub mod score;

pub mod cli;
