//! `run`: the processor and its companion jobs, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::breaker::BreakerConfig;
use crate::kafka::{KafkaConfig, TopicRole};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::store::breaker::ApplySettings;
use crate::store::{self, DatabaseConfig};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Override a breaker setting, e.g. `--set disable_ttl_seconds=120` (repeatable); see `backtest --help`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Seconds SIGTERM waits for the batches in flight to commit before exiting.
    #[arg(long, env = "COSTSIM_SHUTDOWN_SECONDS", default_value_t = 20)]
    shutdown_seconds: u64,
    /// The `instance` label of alerts; default: $INSTANCE_ID, then $HOSTNAME, then `costsim-breaker`.
    #[arg(long, env = "INSTANCE_ID")]
    instance: Option<String>,
    /// Where alerts point operators.
    #[arg(long, env = "COSTSIM_RUNBOOK_URL", default_value = "ops/runbooks/costsim-circuit-breaker.md")]
    runbook_url: String,
    #[command(flatten)]
    pipeline: PipelineSettings,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Runs the processor until a signal, then shuts down within the deadline.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let engine = BreakerConfig::from_env(std::env::vars())
        .and_then(|c| c.with_overrides(args.set.iter().map(String::as_str)))
        .context("invalid breaker settings")?;
    let pool = args.database.connect().await?;
    store::migrate(&pool).await?;
    let mut conn = pool.acquire().await?;
    store::breaker::ensure(&mut conn, &args.pipeline.breaker).await?;
    drop(conn);
    args.kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await?;

    let instance = args
        .instance
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "costsim-breaker".to_owned());
    let apply = ApplySettings { instance, runbook_url: args.runbook_url, drift_threshold: engine.drift_threshold };
    let pipeline =
        Pipeline { pool, kafka: args.kafka, settings: args.pipeline, engine, apply, metrics: Metrics::new() };

    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let deadline = Duration::from_secs(args.shutdown_seconds);
    let token = cancel.clone();
    tasks.spawn(async move { pipeline.run(token, deadline).await.context("processor") });

    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut failure = None;
    loop {
        tokio::select! {
            _ = &mut signal, if !cancel.is_cancelled() => {
                tracing::info!("Shutdown requested; finishing the batches in flight.");
                cancel.cancel();
            }
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => cancel.cancel(),
                Some(Ok(Err(err))) => {
                    // A task that dies takes the process down, loudly.
                    tracing::error!(error = format!("{err:#}"), "A task failed; stopping.");
                    failure.get_or_insert(err);
                    cancel.cancel();
                }
                Some(Err(join)) => {
                    tracing::error!(error = %join, "A task panicked; stopping.");
                    failure.get_or_insert(anyhow::anyhow!("a task panicked: {join}"));
                    cancel.cancel();
                }
            }
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
