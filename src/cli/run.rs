//! `run`: the processor and its companion jobs, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alertmanager::{AlertArgs, Drainer};
use crate::breaker::BreakerConfig;
use crate::http::{self, HttpConfig};
use crate::identity::IdentityArgs;
use crate::kafka::{KafkaConfig, TopicCreation, TopicRole};
use crate::leader::{self, LeaderLock};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::relay::Relay;
use crate::reports::{self, CanarySettings};
use crate::storage::StorageSettings;
use crate::store::{self, DatabaseConfig};
use crate::timers;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Override a breaker setting, e.g. `--set disable_ttl_seconds=120` (repeatable); see `backtest --help`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Seconds SIGTERM waits for the batches in flight to commit before exiting.
    #[arg(long, env = "COSTSIM_SHUTDOWN_SECONDS", default_value_t = 20)]
    shutdown_seconds: u64,
    /// Apply no migration: check that the schema is current and refuse to start otherwise, so the runtime role
    /// needs no DDL rights (apply migrations with `costsim-breaker migrate` as a deploy step).
    #[arg(long = "no-migrate", env = "COSTSIM_NO_MIGRATE")]
    no_migrate: bool,
    #[command(flatten)]
    topics: TopicCreation,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    http: HttpConfig,
    #[command(flatten)]
    canary: CanarySettings,
    #[command(flatten)]
    pipeline: PipelineSettings,
    #[command(flatten)]
    storage: StorageSettings,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    schemas: super::schema::SchemaArgs,
    /// How state events are framed on the state topic: `single-object` (Avro's single-object encoding) or
    /// `confluent` (Confluent's wire format, the schema registered under `<state topic>-value`; needs
    /// COSTSIM_SCHEMA_REGISTRY_URL).
    #[arg(long, env = "COSTSIM_STATE_FORMAT", value_enum, default_value_t = StateFormat::SingleObject)]
    state_format: StateFormat,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// How state events are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StateFormat {
    /// Avro single-object encoding.
    SingleObject,
    /// Confluent's wire format, through the schema registry.
    Confluent,
}

/// Runs the processor until a signal, then shuts down within the deadline.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Installed before anything else: SIGTERM during start-up (connecting, migrating, creating topics) ends the
    // process cleanly instead of killing it by the default action.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    // Refused before anything starts: with nowhere to send alerts, trips would go unnoticed.
    let delivery = args.alerts.delivery().context("invalid alert settings")?;
    // Loaded and checked against the reader before anything connects, so a bad schema file stops start-up by name.
    let writers = args.schemas.writers()?;
    let registry = args.schemas.registry()?;
    let engine = BreakerConfig::from_env(crate::config::layers().vars())
        .and_then(|c| c.with_overrides(args.set.iter().map(String::as_str)))
        .context("invalid breaker settings")?;
    args.storage.validate().map_err(anyhow::Error::msg).context("invalid storage settings")?;
    // Both URLs are checked before anything connects, so a bad one is refused by name at once.
    let leader_options = args.database.leader_options()?;
    let start = async {
        // The topics come first: the pool is sized from the results topic's partitions.
        args.kafka.prepare_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter], &args.topics).await?;
        let partitions = args.kafka.partition_count(&args.kafka.results_topic).await?;
        let pool = args.database.connect_for_partitions(partitions).await?;
        if args.no_migrate {
            store::require_current_schema(&pool).await?;
        } else {
            args.database.migrate_directly().await?;
        }
        let mut tx = pool.begin().await?;
        store::breaker::ensure(&mut tx, &args.pipeline.breaker).await?;
        tx.commit().await?;
        let listener = tokio::net::TcpListener::bind(args.http.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.http.addr))?;
        anyhow::Ok((pool, listener))
    };
    // Start-up can wait long on an unreachable database or broker: a SIGTERM meanwhile stops it at once.
    let (pool, listener) = tokio::select! {
        _ = term.recv() => {
            tracing::info!("Shutdown requested during start-up; stopping before the processor started.");
            return Ok(ExitCode::SUCCESS);
        }
        started = start => started?,
    };

    let apply = args.identity.apply_settings(&engine);
    let holder = format!("{}/{}", apply.instance, std::process::id());
    let metrics = Metrics::new();
    let health = http::Health::new();
    let state =
        http::AppState::new(metrics.clone(), health.clone(), pool.clone(), &args.kafka, args.http.probe_timeout())
            .context("cannot create the broker probe")?;
    let state = match &delivery {
        Some(delivery) => {
            state.with_alertmanager(delivery.endpoint.ready_url()).context("cannot create the Alertmanager probe")?
        }
        None => state,
    };
    let tokens = http::ApiTokens::from_env().with_context(|| {
        let file = crate::config::layers().value("COSTSIM_API_TOKENS_FILE").is_some();
        format!("invalid API tokens in {}", if file { "COSTSIM_API_TOKENS_FILE" } else { "COSTSIM_API_TOKENS" })
    })?;
    if tokens.is_empty() {
        tracing::warn!(
            "No API token is configured (COSTSIM_API_TOKENS or COSTSIM_API_TOKENS_FILE): the /costsim routes answer 503."
        );
    }
    let (model_version, adapter_version) = http::ApiConfig::versions_from_env();
    let state = state.with_api(http::ApiConfig {
        tokens,
        pool: pool.clone(),
        breaker: args.pipeline.breaker.clone(),
        engine: engine.clone(),
        settings: apply.clone(),
        model_version,
        adapter_version,
        canary: args.canary.clone(),
    });
    let canary_request =
        args.canary.request(&args.pipeline.breaker, "schedule", None, &apply.instance, &apply.runbook_url);
    let relay = Relay::new(pool.clone(), args.kafka.producer()?, args.kafka.state_topic.clone());
    let relay = match (args.state_format, &registry) {
        (StateFormat::SingleObject, _) => relay,
        (StateFormat::Confluent, Some(registry)) => relay.with_confluent_framing(registry.clone()),
        (StateFormat::Confluent, None) => {
            anyhow::bail!("COSTSIM_STATE_FORMAT=confluent needs a schema registry (COSTSIM_SCHEMA_REGISTRY_URL)")
        }
    };
    let drainer = match delivery {
        Some(delivery) => {
            tracing::info!(endpoint = %delivery.endpoint,
                "Alert delivery is on: the instance leading the alert worker (lock 7002) drains the queue.");
            Some(Drainer::new(pool.clone(), delivery, metrics.clone())?)
        }
        None => {
            tracing::warn!(
                "Alert delivery is off (--alerts off): alerts are queued in costsim_alert_queue and stay pending; \
                 nothing is sent to Alertmanager or marked sent."
            );
            None
        }
    };
    let breakers = vec![args.pipeline.breaker.clone()];
    let progress = timers::Progress {
        group: args.kafka.group_id.clone(),
        topic: args.kafka.results_topic.clone(),
        idle_seconds: args.pipeline.idle_partition_seconds,
    };
    let mut settings = args.pipeline;
    if settings.static_membership && settings.group_instance_id.is_none() {
        let id = args.identity.explicit_instance().context(
            "COSTSIM_STATIC_MEMBERSHIP=true needs INSTANCE_ID (or --instance), unique per replica, or \
             COSTSIM_GROUP_INSTANCE_ID",
        )?;
        settings.group_instance_id = Some(id);
    }
    match &settings.group_instance_id {
        Some(id) => tracing::info!(group_instance_id = %id,
            "Static group membership: a restart with this id gets its partitions back without a rebalance; a second \
             process with it fences this one out."),
        None => tracing::debug!("Dynamic group membership (no COSTSIM_GROUP_INSTANCE_ID)."),
    }
    let pipeline = Pipeline {
        pool: pool.clone(),
        kafka: args.kafka,
        settings,
        engine: engine.clone(),
        apply: apply.clone(),
        metrics: metrics.clone(),
        health,
        writers,
        registry,
    };

    let cancel = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let deadline = Duration::from_secs(args.shutdown_seconds);
    let token = cancel.clone();
    tasks.spawn(async move { pipeline.run(token, deadline).await.context("processor") });
    let token = cancel.clone();
    tasks.spawn(async move { http::serve(listener, http::router(state), token).await.context("HTTP listener") });
    let (p, m, token) = (pool.clone(), metrics.clone(), cancel.clone());
    tasks.spawn(async move {
        crate::metrics::refresh::run_refresher(p, m, token).await;
        Ok(())
    });
    let leader = |lock| (leader_options.clone(), lock, holder.clone(), cancel.clone());
    spawn_leader_job(&mut tasks, leader(LeaderLock::StateRelay), "state-event relay", move |job| {
        relay.clone().run(job)
    });
    if let Some(drainer) = drainer {
        spawn_leader_job(&mut tasks, leader(LeaderLock::AlertWorker), "alert drainer", move |job| {
            drainer.clone().run(job)
        });
    }
    if args.canary.enabled {
        let (p, m, settings) = (pool.clone(), metrics.clone(), args.canary.clone());
        spawn_leader_job(&mut tasks, leader(LeaderLock::Canary), "canary schedule", move |job| {
            reports::run_schedule(p.clone(), settings.clone(), canary_request.clone(), m.clone(), job)
        });
    } else {
        tracing::info!("The daily canary is off (COSTSIM_CANARY_ENABLED=false); POST /costsim/canary/run still works.");
    }
    let (p, settings) = (pool.clone(), args.storage.clone());
    spawn_leader_job(&mut tasks, leader(LeaderLock::StorageMaintenance), "storage maintenance", move |job| {
        crate::storage::run_maintenance(p.clone(), settings.clone(), job)
    });
    spawn_leader_job(&mut tasks, leader(LeaderLock::Timers), "recovery timers", move |job| {
        timers::run(
            pool.clone(),
            breakers.clone(),
            engine.clone(),
            apply.clone(),
            progress.clone(),
            metrics.clone(),
            job,
        )
    });

    let signal = shutdown_signal(&mut term);
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

/// Spawns a singleton job: `job` runs whenever this process holds the lock (see [`leader::run_as_leader`]) and
/// stops when the lock is lost or `cancel` fires.
fn spawn_leader_job<F, Fut>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    (options, lock, holder, cancel): (PgConnectOptions, LeaderLock, String, CancellationToken),
    what: &'static str,
    mut job: F,
) where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tasks.spawn(async move {
        leader::run_as_leader(&options, lock, &holder, cancel, |token| {
            let work = job(token);
            async move {
                work.await;
                Ok(())
            }
        })
        .await
        .context(what)
    });
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal(term: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
