//! `alerts stats|retry|purge`: look at the alert outbox, give dead letters another schedule, delete old rows.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};

use crate::event::format_rfc3339_millis;
use crate::store::{DatabaseConfig, alerts};

/// Attempts a retried row gets by default: the same as a new row.
const DEFAULT_MAX_RETRIES: i32 = 10;

/// Arguments of `alerts`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

/// The `alerts` subcommands.
#[derive(Debug, clap::Subcommand)]
enum AlertsCommand {
    /// Count the queue's rows by status (pending, sent, failed) and show the age of the oldest pending one.
    Stats(StatsArgs),
    /// Put dead-lettered (failed) rows back to pending, due now, with their attempts reset to 0. A failed row
    /// whose alert has had a newer row delivered since stays failed: sending it would bring back an alert state
    /// that is over.
    Retry(RetryArgs),
    /// Delete sent and failed rows queued before a cutoff; pending rows are never deleted.
    Purge(PurgeArgs),
}

/// Arguments of `alerts stats`.
#[derive(Debug, clap::Args)]
struct StatsArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Arguments of `alerts retry`.
#[derive(Debug, clap::Args)]
struct RetryArgs {
    /// Attempts each retried row gets before it is dead-lettered again (its `max_attempts`; attempts restart at
    /// 0, so the backoff restarts at 1 s).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RETRIES, value_parser = clap::value_parser!(i32).range(1..=1000))]
    max_retries: i32,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Arguments of `alerts purge`.
#[derive(Debug, clap::Args)]
struct PurgeArgs {
    /// Delete sent and failed rows queued longer ago than this, e.g. 30d, 12h, 90m, 3600s.
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = parse_age)]
    older_than: u64,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Runs an `alerts` subcommand.
pub async fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AlertsCommand::Stats(args) => stats(args).await,
        AlertsCommand::Retry(args) => retry(args).await,
        AlertsCommand::Purge(args) => purge(args).await,
    }
}

async fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let pool = args.database.connect().await?;
    let mut tx = pool.begin().await?;
    let stats = alerts::stats(&mut tx).await.context("cannot read the alert queue")?;
    tx.commit().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    let oldest = match (stats.oldest_pending_created_at, stats.oldest_pending_age_seconds) {
        (Some(at), Some(age)) => format!(" (oldest queued {}, {age:.0} s ago)", format_rfc3339_millis(&at)),
        _ => String::new(),
    };
    println!("pending: {}{oldest}\nsent: {}\nfailed: {}", stats.pending, stats.sent, stats.failed);
    Ok(ExitCode::SUCCESS)
}

async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let pool = args.database.connect().await?;
    let mut tx = pool.begin().await?;
    let done = alerts::retry_failed(&mut tx, args.max_retries).await.context("cannot retry failed alerts")?;
    tx.commit().await.context("cannot retry failed alerts")?;
    println!("retried {} failed alert(s): pending again, due now, {} attempt(s) each", done.retried, args.max_retries);
    if done.superseded > 0 {
        println!(
            "left {} failed alert(s) as they are: a newer alert with the same labels was delivered since",
            done.superseded
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let cutoff = Utc::now() - TimeDelta::seconds(args.older_than as i64);
    let pool = args.database.connect().await?;
    let mut tx = pool.begin().await?;
    let deleted = alerts::purge(&mut tx, cutoff).await.context("cannot purge the alert queue")?;
    tx.commit().await.context("cannot purge the alert queue")?;
    println!(
        "purged {deleted} sent or failed alert(s) queued before {}; pending alerts are kept",
        format_rfc3339_millis(&cutoff)
    );
    Ok(ExitCode::SUCCESS)
}

/// An age such as `30d`, `12h`, `90m`, `3600s` or `3600`, in seconds; at most ten years.
fn parse_age(s: &str) -> Result<u64, String> {
    super::parse_seconds(s, "age")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_with_their_units() {
        assert_eq!(parse_age("30d"), Ok(30 * 86_400));
        assert_eq!(parse_age("12h"), Ok(43_200));
        assert_eq!(parse_age("90m"), Ok(5400));
        assert_eq!(parse_age("3600s"), Ok(3600));
        assert_eq!(parse_age("0"), Ok(0));
    }

    #[test]
    fn unknown_units_and_absurd_ages_are_refused() {
        assert!(parse_age("2w").unwrap_err().contains("unknown unit"));
        assert!(parse_age("d").is_err());
        assert!(parse_age("-1d").is_err());
        assert!(parse_age("5000d").unwrap_err().contains("ten years"));
    }
}
