//! Readiness: whether this process can do its work now, and the breaker states, as `GET /health` reports them.
//!
//! A dependency is **down** when its probe fails or when the pipeline said so through [`Health`]; the process is
//! ready when every dependency is up. The probes are:
//! - PostgreSQL: a connection from the pool answers `SELECT 1` and the breaker rows can be read, within the probe
//!   timeout;
//! - Kafka: the broker answers a metadata request within the probe timeout. rdkafka's call blocks, so it runs on
//!   tokio's blocking pool, never on the async runtime;
//! - Alertmanager (when alert delivery is on): `GET {base}/-/ready` answers 2xx within the probe timeout. It is
//!   reported but does not decide readiness: alerts wait in the outbox while Alertmanager is away, and the
//!   processor's work does not depend on it. With delivery off the check says `disabled`.
//!
//! Each probe runs at most once at a time and its result is reused for [`PROBE_CACHE`], so a burst of health
//! requests costs one query and one metadata request, and can never take the pipeline's pool connections away.
//! Reasons shown to clients come from [`describe_db_error`] and the broker's error code: never a connection string,
//! a password or a record's content. The full error goes to the log, once per change of a dependency's state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use serde::Serialize;
use sqlx::PgPool;

use crate::event::{BreakerState, format_rfc3339_millis};
use crate::kafka::{KafkaConfig, drain_events};
use crate::store::{self, breaker::BreakerRow};

/// How long a probe's result is reused: short enough that /health is current, long enough to absorb bursts.
pub const PROBE_CACHE: Duration = Duration::from_secs(1);

/// A dependency whose reachability decides readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    /// The PostgreSQL database, the source of truth.
    Postgres,
    /// The Kafka broker.
    Kafka,
    /// The schema registry (only when Confluent-framed records arrive).
    SchemaRegistry,
}

impl Dependency {
    /// Every dependency, in the order `/health` lists them.
    pub const ALL: [Dependency; 2] = [Dependency::Postgres, Dependency::Kafka];

    /// Its name in `/health` and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Kafka => "kafka",
            Dependency::SchemaRegistry => "schema_registry",
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the pipeline reported about a dependency it cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    reason: String,
    since: DateTime<Utc>,
}

/// The readiness flags the pipeline flips while it retries a transient failure; cheap to clone and share.
///
/// `/health` is ready when no dependency is flagged here *and* every probe passes: PostgreSQL answers `SELECT 1`
/// and the breaker rows can be read, and the broker answers a metadata request, each within the probe timeout.
///
/// A std mutex, not tokio's: it is held only to read or replace a small map, never across an await, and callers
/// may be synchronous.
#[derive(Debug, Clone, Default)]
pub struct Health {
    reports: Arc<Mutex<BTreeMap<Dependency, Report>>>,
}

impl Health {
    /// No dependency reported down.
    pub fn new() -> Self {
        Health::default()
    }

    /// Marks a dependency down until [`Health::set_ready`]; the reason is shown to HTTP clients, so it must not
    /// carry a connection string or a password ([`describe_db_error`] gives a safe one for database errors).
    /// Repeating it updates the reason and keeps the time it started.
    pub fn set_not_ready(&self, dependency: Dependency, reason: impl Into<String>) {
        let reason = reason.into();
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        let since = reports.get(&dependency).map_or_else(Utc::now, |r| r.since);
        reports.insert(dependency, Report { reason, since });
    }

    /// Clears what was reported about a dependency.
    pub fn set_ready(&self, dependency: Dependency) {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner).remove(&dependency);
    }

    /// Whether the pipeline has reported no dependency down (the probes are not consulted).
    pub fn is_ready(&self) -> bool {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    fn report(&self, dependency: Dependency) -> Option<Report> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner).get(&dependency).cloned()
    }
}

/// A description of a database error that is safe to show to HTTP clients: its kind and SQLSTATE, never a
/// connection string, a password, a query or a row's content.
pub fn describe_db_error(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(io) => format!("cannot reach PostgreSQL: {}", io.kind()),
        sqlx::Error::Tls(_) => "TLS with PostgreSQL failed".to_owned(),
        sqlx::Error::PoolTimedOut => "no database connection became available in time".to_owned(),
        sqlx::Error::PoolClosed => "the connection pool is closed".to_owned(),
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("PostgreSQL refused the query (SQLSTATE {code})"),
            None => "PostgreSQL refused the query".to_owned(),
        },
        sqlx::Error::Protocol(_) => "unexpected answer from PostgreSQL".to_owned(),
        sqlx::Error::Configuration(_) => "the database configuration is invalid".to_owned(),
        _ => "a database query failed".to_owned(),
    }
}

/// A failed probe: a reason safe for clients, and the full error for the log.
#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    detail: String,
}

/// One probe's result and how long it took.
#[derive(Debug, Clone)]
struct Probed<T> {
    outcome: Result<T, Failure>,
    latency: Duration,
}

/// The last result of a probe, reused for [`PROBE_CACHE`].
///
/// A tokio mutex because it is held across the probe's await on purpose: concurrent requests wait for the probe
/// in flight and share its result instead of starting their own.
struct Cached<T> {
    dependency: &'static str,
    slot: tokio::sync::Mutex<Option<(Instant, Probed<T>)>>,
}

impl<T: Clone> Cached<T> {
    fn new(dependency: &'static str) -> Self {
        Cached { dependency, slot: tokio::sync::Mutex::new(None) }
    }

    async fn get<F: Future<Output = Result<T, Failure>>>(&self, probe: impl FnOnce() -> F) -> Probed<T> {
        let mut slot = self.slot.lock().await;
        if let Some((_, probed)) = slot.as_ref().filter(|(at, _)| at.elapsed() < PROBE_CACHE) {
            return probed.clone();
        }
        let started = Instant::now();
        let outcome = probe().await;
        let probed = Probed { outcome, latency: started.elapsed() };
        let was_up = slot.as_ref().map(|(_, p)| p.outcome.is_ok());
        let dependency = self.dependency;
        match (&probed.outcome, was_up) {
            (Err(failure), None | Some(true)) => {
                tracing::warn!(dependency, error = %failure.detail, "Readiness probe failed.");
            }
            (Ok(_), Some(false)) => tracing::info!(dependency, "Readiness probe passes again."),
            _ => {}
        }
        *slot = Some((started, probed.clone()));
        probed
    }
}

/// The readiness probes of one process: a pool and a metadata-only Kafka client, each behind a [`Cached`].
pub(super) struct Probes {
    pool: PgPool,
    kafka: Arc<BaseConsumer>,
    topic: String,
    timeout: Duration,
    postgres_cache: Cached<Vec<BreakerRow>>,
    kafka_cache: Cached<()>,
    /// Alertmanager's readiness URL and a client, when alert delivery is on.
    alertmanager: std::sync::OnceLock<(reqwest::Client, reqwest::Url)>,
    alertmanager_cache: Cached<()>,
}

impl Probes {
    /// Probes for this pool and broker; `timeout` bounds each probe. The Kafka client is metadata-only
    /// ([`KafkaConfig::metadata_client`]): it never asks the broker to create the topic it names.
    pub(super) fn new(pool: PgPool, kafka: &KafkaConfig, timeout: Duration) -> Result<Self, KafkaError> {
        Ok(Probes {
            pool,
            kafka: Arc::new(kafka.metadata_client()?),
            topic: kafka.results_topic.clone(),
            timeout,
            postgres_cache: Cached::new(Dependency::Postgres.as_str()),
            kafka_cache: Cached::new(Dependency::Kafka.as_str()),
            alertmanager: std::sync::OnceLock::new(),
            alertmanager_cache: Cached::new(ALERTMANAGER),
        })
    }

    /// Also probes Alertmanager at this readiness URL; the first URL set stays.
    pub(super) fn set_alertmanager(&self, ready_url: reqwest::Url) -> Result<(), reqwest::Error> {
        let client = reqwest::Client::builder().timeout(self.timeout).build()?;
        let _ = self.alertmanager.set((client, ready_url));
        Ok(())
    }

    async fn alertmanager(&self) -> Option<Probed<()>> {
        let (client, url) = self.alertmanager.get()?;
        Some(self.alertmanager_cache.get(|| probe_alertmanager(client, url)).await)
    }

    async fn postgres(&self) -> Probed<Vec<BreakerRow>> {
        self.postgres_cache.get(|| probe_postgres(&self.pool, self.timeout)).await
    }

    async fn kafka(&self) -> Probed<()> {
        let (client, topic, timeout) = (Arc::clone(&self.kafka), self.topic.clone(), self.timeout);
        self.kafka_cache.get(|| probe_kafka(client, topic, timeout)).await
    }
}

async fn probe_postgres(pool: &PgPool, timeout: Duration) -> Result<Vec<BreakerRow>, Failure> {
    let query = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT 1").persistent(false).execute(&mut *tx).await?;
        let rows = store::breaker::list(&mut tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(rows)
    };
    match tokio::time::timeout(timeout, query).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(err)) => Err(Failure { reason: describe_db_error(&err), detail: err.to_string() }),
        Err(_) => {
            let reason = format!("PostgreSQL did not answer within {} ms", timeout.as_millis());
            Err(Failure { detail: reason.clone(), reason })
        }
    }
}

async fn probe_kafka(client: Arc<BaseConsumer>, topic: String, timeout: Duration) -> Result<(), Failure> {
    let blocking = tokio::task::spawn_blocking(move || {
        let answer = client.fetch_metadata(Some(&topic), timeout);
        drain_events(&client, Duration::from_millis(5));
        answer.map(|_| ())
    });
    match blocking.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            let reason = match err.rdkafka_error_code() {
                Some(code) => format!("the broker did not answer a metadata request: {code}"),
                None => "the broker did not answer a metadata request".to_owned(),
            };
            Err(Failure { reason, detail: err.to_string() })
        }
        Err(join) => Err(Failure {
            reason: "the broker probe failed".to_owned(),
            detail: format!("the blocking metadata request did not finish: {join}"),
        }),
    }
}

/// The name of the Alertmanager check.
const ALERTMANAGER: &str = "alertmanager";

async fn probe_alertmanager(client: &reqwest::Client, url: &reqwest::Url) -> Result<(), Failure> {
    match client.get(url.clone()).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let reason = format!("Alertmanager is not ready (HTTP {})", response.status().as_u16());
            Err(Failure { detail: reason.clone(), reason })
        }
        Err(err) if err.is_timeout() => {
            Err(Failure { reason: "Alertmanager did not answer in time".to_owned(), detail: err.to_string() })
        }
        Err(err) => {
            Err(Failure { reason: "cannot reach Alertmanager".to_owned(), detail: err.without_url().to_string() })
        }
    }
}

/// The body of `/health`.
#[derive(Debug, Serialize)]
pub(super) struct HealthReport {
    status: &'static str,
    checks: BTreeMap<&'static str, Check>,
    breakers: Vec<BreakerSummary>,
}

impl HealthReport {
    /// Whether every dependency is up.
    pub(super) fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

/// One dependency's state in `/health`.
#[derive(Debug, Serialize)]
struct Check {
    status: &'static str,
    /// Whether this check decides readiness (Alertmanager's does not).
    required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// When the pipeline first reported the dependency down.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
}

/// One breaker's state in `/health`.
#[derive(Debug, Serialize)]
struct BreakerSummary {
    name: String,
    state: BreakerState,
    version: i64,
    disabled_until: Option<String>,
    incident_id: Option<String>,
    updated_at: String,
}

impl From<BreakerRow> for BreakerSummary {
    fn from(row: BreakerRow) -> Self {
        BreakerSummary {
            name: row.name,
            state: row.record.state,
            version: row.version,
            disabled_until: row.record.disabled_until.as_ref().map(format_rfc3339_millis),
            incident_id: row.incident_id,
            updated_at: format_rfc3339_millis(&row.updated_at),
        }
    }
}

/// Runs both probes concurrently and combines them with what the pipeline reported.
pub(super) async fn report(probes: &Probes, health: &Health) -> HealthReport {
    let (postgres, kafka) = tokio::join!(probes.postgres(), probes.kafka());
    let mut breakers = Vec::new();
    let mut checks = BTreeMap::new();
    let postgres = Probed {
        outcome: postgres.outcome.map(|rows| breakers.extend(rows.into_iter().map(BreakerSummary::from))),
        latency: postgres.latency,
    };
    checks.insert(Dependency::Postgres.as_str(), check(&postgres, health.report(Dependency::Postgres)));
    checks.insert(Dependency::Kafka.as_str(), check(&kafka, health.report(Dependency::Kafka)));
    // Not probed (most deployments have no registry): listed only while the pipeline reports it down.
    if let Some(report) = health.report(Dependency::SchemaRegistry) {
        checks.insert(
            Dependency::SchemaRegistry.as_str(),
            Check {
                status: "down",
                required: true,
                latency_ms: None,
                reason: Some(format!("the pipeline reports: {}", report.reason)),
                since: Some(format_rfc3339_millis(&report.since)),
            },
        );
    }
    let ready = checks.values().all(|c| c.status == "up");
    let alertmanager = match probes.alertmanager().await {
        Some(probed) => Check { required: false, ..check(&probed, None) },
        None => Check { status: "disabled", required: false, latency_ms: None, reason: None, since: None },
    };
    checks.insert(ALERTMANAGER, alertmanager);
    HealthReport { status: if ready { "ready" } else { "not_ready" }, checks, breakers }
}

fn check(probed: &Probed<()>, reported: Option<Report>) -> Check {
    let mut reasons = Vec::new();
    if let Err(failure) = &probed.outcome {
        reasons.push(failure.reason.clone());
    }
    if let Some(report) = &reported {
        reasons.push(format!("the pipeline reports: {}", report.reason));
    }
    Check {
        status: if reasons.is_empty() { "up" } else { "down" },
        required: true,
        latency_ms: Some(probed.latency.as_millis() as u64),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        since: reported.map(|r| format_rfc3339_millis(&r.since)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Probed<()> {
        Probed { outcome: Ok(()), latency: Duration::from_millis(3) }
    }

    #[test]
    fn a_dependency_the_pipeline_reports_down_is_down_even_when_its_probe_passes() {
        let health = Health::new();
        health.set_not_ready(Dependency::Postgres, "commit failed, retrying");
        let check = check(&up(), health.report(Dependency::Postgres));
        assert_eq!(check.status, "down");
        assert_eq!(check.reason.as_deref(), Some("the pipeline reports: commit failed, retrying"));
        assert!(check.since.is_some());
        assert!(!health.is_ready());
    }

    #[test]
    fn set_ready_clears_the_report_and_repeating_a_report_keeps_its_start() {
        let health = Health::new();
        health.set_not_ready(Dependency::Kafka, "first");
        let since = health.report(Dependency::Kafka).unwrap().since;
        health.set_not_ready(Dependency::Kafka, "second");
        assert_eq!(health.report(Dependency::Kafka), Some(Report { reason: "second".into(), since }));
        health.set_ready(Dependency::Kafka);
        assert!(health.is_ready());
        assert_eq!(check(&up(), health.report(Dependency::Kafka)).status, "up");
    }

    #[test]
    fn a_failed_probe_shows_its_reason_but_never_its_detail() {
        let failed = Probed {
            outcome: Err(Failure {
                reason: "cannot reach PostgreSQL: connection refused".into(),
                detail: "secret".into(),
            }),
            latency: Duration::from_millis(1),
        };
        let shown = serde_json::to_string(&check(&failed, None)).unwrap();
        assert!(shown.contains("connection refused") && !shown.contains("secret"), "{shown}");
    }

    #[test]
    fn database_errors_are_described_without_their_text() {
        let io = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "postgres://u:pw@h/db"));
        assert_eq!(describe_db_error(&io), "cannot reach PostgreSQL: connection refused");
        let config = sqlx::Error::Configuration("bad url postgres://u:pw@h/db".into());
        assert!(!describe_db_error(&config).contains("pw"));
        assert!(!describe_db_error(&sqlx::Error::Protocol("pw".into())).contains("pw"));
    }
}
