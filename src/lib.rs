//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`generate`]: a synthetic, reproducible event stream for benches and demos.
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod cli;
pub mod generate;
