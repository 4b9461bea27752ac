//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod cli;
