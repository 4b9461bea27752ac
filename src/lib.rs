//! Fusion: explained Fusion Scores for person–brand relationships.
//!
//! Modules in reading order:
//! - [`sentiment`]: VADER sentiment of free text, matching vaderSentiment 3.3.2.
//! - [`cli`]: the subcommands of the `fusion` binary.

pub mod cli;
pub mod sentiment;
