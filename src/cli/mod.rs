//! The subcommands of `fusion` (API.md, "Command line"). Each lives in its own
//! module with a clap `Args` struct and a `run` function; this file only
//! dispatches. Argument errors exit with status 2 (clap's default), failures
//! with 1 and a one-line reason.

pub mod propagate;

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
pub enum Command {
    /// Run the propagation core on any weighted directed graph, for checking it against other tools
    Propagate(propagate::PropagateArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Propagate(args) => propagate::run(args),
    }
}
