//! `storage maintain|stats`: one maintenance pass by hand (partitions ahead and expired, outbox retention), and
//! what every table holds.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;

use crate::storage::{self, StorageSettings};
use crate::store::{DatabaseConfig, retention};

/// Arguments of `storage`.
#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    #[command(subcommand)]
    command: StorageCommand,
}

/// The `storage` subcommands.
#[derive(Debug, clap::Subcommand)]
enum StorageCommand {
    /// Run one maintenance pass now, as `run`'s leader does every COSTSIM_STORAGE_MAINTENANCE_SECONDS: create
    /// the provenance partitions ahead, drop the expired ones, apply the outboxes' retention; print what it
    /// created, dropped and deleted. A second pass right after changes nothing. Partitions need the rights of
    /// the tables' owner (the role `migrate` connects as).
    Maintain(MaintainArgs),
    /// Rows, bytes on disk, partitions, oldest and newest row of every table.
    Stats(StatsArgs),
}

/// Arguments of `storage maintain`.
#[derive(Debug, clap::Args)]
struct MaintainArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    settings: StorageSettings,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Arguments of `storage stats`.
#[derive(Debug, clap::Args)]
struct StatsArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Count rows exactly (a scan of every table) instead of PostgreSQL's estimate.
    #[arg(long)]
    exact: bool,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Runs a `storage` subcommand.
pub async fn run(args: StorageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        StorageCommand::Maintain(args) => maintain(args).await,
        StorageCommand::Stats(args) => stats(args).await,
    }
}

async fn maintain(args: MaintainArgs) -> anyhow::Result<ExitCode> {
    args.settings.validate().map_err(anyhow::Error::msg).context("invalid storage settings")?;
    let pool = args.database.connect().await?;
    let report = match storage::maintain_at(&pool, &args.settings, Utc::now()).await {
        Ok(report) => report,
        Err(err) => {
            if !err.done.is_empty() {
                print!("{}", err.done);
            }
            let hint =
                if err.is_permission() { " (partitions need the tables' owner: the role of `migrate`)" } else { "" };
            return Err(anyhow::Error::new(err).context(format!("the maintenance pass did not finish{hint}")));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let pool = args.database.connect().await?;
    let mut tx = pool.begin().await?;
    let tables = retention::stats(&mut tx, args.exact).await.context("cannot read the tables' statistics")?;
    tx.commit().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "tables": tables }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<26} {:>14} {:>14} {:>10}  {:<25} {:<25}", "table", "rows", "bytes", "partitions", "oldest", "newest");
    let at = |t: Option<chrono::DateTime<Utc>>| t.map_or("-".to_owned(), |t| t.to_rfc3339());
    for t in &tables {
        println!(
            "{:<26} {:>14} {:>14} {:>10}  {:<25} {:<25}",
            t.table,
            t.rows,
            t.bytes,
            t.partitions,
            at(t.oldest),
            at(t.newest)
        );
    }
    if !args.exact {
        println!("(rows are PostgreSQL's estimates from the last ANALYZE; --exact counts them)");
    }
    Ok(ExitCode::SUCCESS)
}
