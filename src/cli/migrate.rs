//! `fusion migrate`: applies the pending PostgreSQL migrations and prints
//! them. The SQL and the runner live in `store::postgres`; this only parses
//! arguments and reports.

use std::io::Write;

use anyhow::Context;

use crate::store::PostgresStore;

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// PostgreSQL connection string: a postgres:// URL or key=value pairs
    #[arg(long, env = "FUSION_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    // The URL may hold a password: it stays out of messages.
    let applied = runtime
        .block_on(PostgresStore::migrate(&args.database_url))
        .context("failed to apply the migrations")?;
    let mut out = super::stdout();
    if applied.is_empty() {
        writeln!(out, "the database is up to date")?;
    }
    for name in applied {
        writeln!(out, "applied {name}")?;
    }
    Ok(())
}
