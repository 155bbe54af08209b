//! `canary run|reports`: make a canary run now, and list the stored reports.

use std::process::ExitCode;

use chrono::Utc;
use serde_json::json;

use crate::canary::CanaryStatus;
use crate::identity::IdentityArgs;
use crate::reports::{self, CanarySettings};
use crate::store::DatabaseConfig;
use crate::store::canary::{self as stored, Report, ReportFilter};

/// Arguments of `canary`.
#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    #[command(subcommand)]
    command: CanaryCommand,
}

/// The `canary` subcommands.
#[derive(Debug, clap::Subcommand)]
enum CanaryCommand {
    /// Judge V2 now over a sample of recent provenance, store the report and report the verdict to the breaker
    /// (a failure raises CostSimV2CanaryFailing; a pass after a failure resolves it). Exit 0 on pass, 1 on fail or
    /// error.
    Run(RunArgs),
    /// List the newest canary reports.
    Reports(ReportsArgs),
}

/// Arguments of `canary run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The breaker the verdict is reported to.
    #[arg(long, default_value = "costsim_v2")]
    breaker: String,
    /// Who asks, recorded on the report [default: $USER, else operator].
    #[arg(long)]
    actor: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    canary: CanarySettings,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Arguments of `canary reports`.
#[derive(Debug, clap::Args)]
struct ReportsArgs {
    /// How many reports, newest first.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=1000))]
    limit: i64,
    /// Only reports with this status (pass, fail, error, skipped).
    #[arg(long, value_parser = ["pass", "fail", "error", "skipped"])]
    status: Option<String>,
    /// Print a JSON object {total, reports}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Runs a `canary` subcommand.
pub async fn run(args: CanaryArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CanaryCommand::Run(args) => run_now(args).await,
        CanaryCommand::Reports(args) => list(args).await,
    }
}

async fn run_now(args: RunArgs) -> anyhow::Result<ExitCode> {
    let pool = args.database.connect().await?;
    args.database.migrate_directly().await?;
    let actor = super::breaker::actor(args.actor);
    let request =
        args.canary.request(&args.breaker, "cli", Some(actor), &args.identity.instance(), &args.identity.runbook_url);
    let (report, signal) = reports::run_canary(&pool, &request, None, Utc::now()).await?;
    if args.json {
        let mut body = serde_json::to_value(&report)?;
        body["signal"] = json!(signal);
        println!("{body}");
    } else {
        print!("{}", describe(&report));
        println!("  signal: {}", serde_json::to_value(signal)?.as_str().unwrap_or_default());
    }
    Ok(if report.evaluation.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn list(args: ReportsArgs) -> anyhow::Result<ExitCode> {
    let pool = args.database.connect().await?;
    let mut tx = pool.begin().await?;
    let filter = ReportFilter { status: args.status, passed: None };
    let (reports, total) = stored::list(&mut tx, &filter, args.limit).await?;
    tx.commit().await?;
    if args.json {
        println!("{}", json!({ "total": total, "reports": reports }));
    } else {
        println!("{} of {total} reports", reports.len());
        for report in &reports {
            print!("{}", describe(report));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A report in a few lines for people.
fn describe(report: &Report) -> String {
    let e = &report.evaluation;
    let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v}"));
    let mut text = format!(
        "{} {} {} ({} by {}): {} samples, {} match, {} minor, {} major, median |Δ| {}, p90 |Δ| {}, KL {}, {} outliers\n",
        report.timestamp.format("%Y-%m-%dT%H:%M:%SZ"),
        report.run_id,
        e.status.as_str().to_uppercase(),
        report.trigger,
        report.requested_by.as_deref().unwrap_or("schedule"),
        e.total_samples,
        e.matching_samples,
        e.minor_drift_samples,
        e.major_drift_samples,
        opt(e.median_cost_diff),
        opt(e.p90_cost_diff),
        opt(e.kl_divergence),
        e.outlier_count.map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
    );
    if e.status != CanaryStatus::Pass {
        for reason in &e.failure_reasons {
            text += &format!("  - {reason}\n");
        }
    }
    text
}
