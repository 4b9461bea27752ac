//! The subcommands of `fusion` (API.md, "Command line"). Each lives in its own
//! module with a clap `Args` struct and a `run` function; this file only
//! dispatches. Argument errors exit with status 2 (clap's default), failures
//! with 1 and a one-line reason.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fusion",
    version,
    about = "Fusion Scores for person-brand relationships"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {}
}
