//! `migrate`: apply the schema migrations to the database.

use std::process::ExitCode;

use crate::store::{self, DatabaseConfig};

/// Arguments of `migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Runs `migrate`.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let applied = args.database.migrate_directly().await?;
    println!("applied {applied} migrations to {}", store::redact(&args.database.url()?));
    Ok(ExitCode::SUCCESS)
}
