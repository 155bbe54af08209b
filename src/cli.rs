//! The `costsim-breaker` command line: one subcommand per job, each in its own file.

mod alerts;
mod backfill;
mod backtest;
mod breaker;
mod canary;
mod config;
mod dlq;
mod migrate;
mod produce;
mod run;
mod schema;
mod storage;
mod topic_range;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// The kill switch for the CostSim V2 model: watches V1/V2 drift on Kafka and trips a circuit breaker.
#[derive(Debug, Parser)]
#[command(name = "costsim-breaker", version, about, max_term_width = 110)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "COSTSIM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A TOML file of settings, one key per setting: its environment variable in lower case without `COSTSIM_`
    /// (`drift_threshold`, `database_url`), and a `[kafka]` table of librdkafka properties. The environment and
    /// flags override it; an unknown key stops start-up.
    #[arg(long, global = true, env = crate::config::CONFIG_ENV, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Look at the alert outbox and manage it: `stats`, `retry` (dead letters back to pending), `purge`.
    Alerts(alerts::AlertsArgs),
    /// Fill provenance from a Kafka topic range or from files (ours and the older system's), idempotently;
    /// `--dry-run` counts, `--verify` checks what the table holds.
    Backfill(Box<backfill::BackfillArgs>),
    /// Replay simulation results from a JSON Lines file or a Kafka topic range through the breaker, with no side
    /// effects: one line per state change, then a summary.
    Backtest(backtest::BacktestArgs),
    /// Show the breakers, or switch V2 off or on by hand: `status`, `disable`, `enable`.
    Breaker(breaker::BreakerArgs),
    /// Judge V2 now over a sample of recent provenance (`run`), or list the canary reports (`reports`).
    Canary(canary::CanaryArgs),
    /// Look at the dead-letter topic (`stats`: counts by class and hour) and send its records back to the results
    /// topic after a fix (`replay [--class C] [--from-time T] [--to-time T]`).
    Dlq(dlq::DlqArgs),
    /// Show the effective configuration: each setting, its value (secrets masked) and where it came from.
    Config(config::ConfigArgs),
    /// Send simulation results to Kafka, from a JSON Lines file or generated from a drift profile.
    Produce(produce::ProduceArgs),
    /// Apply the database schema migrations.
    Migrate(migrate::MigrateArgs),
    /// Run the processor: consume simulation results, decide, and record every effect transactionally.
    Run(Box<run::RunArgs>),
    /// Keep storage bounded: `maintain` (provenance partitions ahead and expired, outbox retention), `stats`.
    Storage(storage::StorageArgs),
    /// Avro schemas as the specification defines them: `fingerprint` and `canonical` of a file, `check` a writer
    /// against the reader.
    Schema(schema::SchemaCommandArgs),
    /// Follow the breaker-state topic and print one line per state change.
    Watch(watch::WatchArgs),
}

/// Runs the chosen subcommand; the exit code reports partial failures (e.g. records that were not delivered).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Alerts(args) => alerts::run(args).await,
        Command::Backfill(args) => backfill::run(*args).await,
        Command::Backtest(args) => backtest::run(args).await,
        Command::Breaker(args) => breaker::run(args).await,
        Command::Canary(args) => canary::run(args).await,
        Command::Config(args) => config::run(args),
        Command::Dlq(args) => dlq::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Run(args) => run::run(*args).await,
        Command::Schema(args) => schema::run(args),
        Command::Migrate(args) => migrate::run(args).await,
        Command::Storage(args) => storage::run(args).await,
    }
}

/// Loads the configuration file and the environment (refusing unknown names), then parses the command line over
/// them; on an error, says why and exits as clap does (status 2).
pub fn parse() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = match crate::config::load(Cli::command(), &args) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    };
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// The longest duration a flag accepts (ten years).
const MAX_DURATION_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A duration flag such as `3600`, `3600s`, `90m`, `12h` or `30d`, in seconds; at most ten years. `what` names it in
/// errors ("duration", "age").
fn parse_seconds(s: &str, what: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("`{s}` is not a {what} such as 3600s, 90m, 12h or 30d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`; use s, m, h or d")),
    };
    match number.checked_mul(scale) {
        Some(seconds) if seconds <= MAX_DURATION_SECONDS => Ok(seconds),
        _ => Err(format!("`{s}` is longer than ten years")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn every_subcommands_arguments_are_consistent() {
        // clap checks duplicate names, conflicting flags and bad defaults only when a command is built: build all.
        Cli::command().debug_assert();
    }
}
