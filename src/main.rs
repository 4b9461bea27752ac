//! The `fusion` binary: parses the command line and calls the library; nothing else.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fusion::cli::Cli::parse();
    match fusion::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fusion: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
