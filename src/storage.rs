//! Bounded storage: one maintenance pass creates the provenance partitions ahead of event time, drops the
//! expired ones, and applies the retention of the outboxes, lost records and canary reports. `run` repeats the
//! pass as a leader job ([`LeaderLock::StorageMaintenance`]); `storage maintain` runs one by hand.
//!
//! A pass is two transactions (retention, which the runtime role may do, then partitions, which need the table's
//! owner), each under a transaction-level advisory lock ([`MAINTENANCE_PASS_LOCK`]), so the leader and a hand-run
//! pass never interleave, and a second pass right after the first changes nothing. Its DDL waits
//! at most `lock_timeout` for the batches in flight: a pass that cannot get its locks fails and the next one
//! tries again, while ingest goes on (rows no partition covers land in the DEFAULT partition, never refused).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use crate::leader::LeaderLock;
use crate::leader::MAINTENANCE_PASS_LOCK;
use crate::store::partitions::{self, Bounds, Granularity};
use crate::store::retention;

/// Partitioning and retention settings, shared by `run` and `storage maintain`.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageSettings {
    /// Event time one provenance partition covers.
    #[arg(long = "provenance-partition", env = "COSTSIM_PROVENANCE_PARTITION", value_enum,
          default_value_t = Granularity::Daily)]
    pub partition: Granularity,
    /// Days of event time provenance keeps; older partitions are dropped whole.
    #[arg(long = "provenance-retention-days", env = "COSTSIM_PROVENANCE_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub provenance_retention_days: u32,
    /// Hours of event time past now that partitions exist for before their events arrive.
    #[arg(long = "provenance-partitions-ahead-hours", env = "COSTSIM_PROVENANCE_PARTITIONS_AHEAD_HOURS",
          default_value_t = 72, value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub ahead_hours: u32,
    /// Seconds between two maintenance passes of `run`'s leader.
    #[arg(long = "storage-maintenance-seconds", env = "COSTSIM_STORAGE_MAINTENANCE_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub interval_seconds: u64,
    /// Days published state events are kept (each breaker's newest is always kept).
    #[arg(long = "breaker-events-retention-days", env = "COSTSIM_BREAKER_EVENTS_RETENTION_DAYS",
          default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub breaker_events_retention_days: u32,
    /// Days sent and failed alert rows are kept (the newest row of each alert is always kept).
    #[arg(long = "alert-queue-retention-days", env = "COSTSIM_ALERT_QUEUE_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub alert_queue_retention_days: u32,
    /// Days lost-record ranges are kept.
    #[arg(long = "lost-records-retention-days", env = "COSTSIM_LOST_RECORDS_RETENTION_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub lost_records_retention_days: u32,
    /// Days canary reports are kept (each breaker's newest per trigger is always kept).
    #[arg(long = "canary-reports-retention-days", env = "COSTSIM_CANARY_REPORTS_RETENTION_DAYS",
          default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub canary_reports_retention_days: u32,
}

impl StorageSettings {
    /// Refuses settings under which partitions could run out between two passes.
    pub fn validate(&self) -> Result<(), String> {
        if u64::from(self.ahead_hours) * 3600 < 2 * self.interval_seconds {
            return Err(format!(
                "COSTSIM_PROVENANCE_PARTITIONS_AHEAD_HOURS ({}) must cover at least two maintenance intervals \
                 (COSTSIM_STORAGE_MAINTENANCE_SECONDS = {} s), or events may outrun their partitions",
                self.ahead_hours, self.interval_seconds
            ));
        }
        Ok(())
    }

    /// Time between two passes.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }
}

/// How long a pass waits for a lock (its DDL queues behind the batches in flight, and new batches queue behind
/// it): short, so ingest stalls at most this long and the next pass tries again.
const LOCK_TIMEOUT: &str = "5s";

/// A partition a pass created.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Created {
    /// Its name.
    pub name: String,
    /// Its range of event time.
    pub bounds: Bounds,
    /// Rows it took over from the DEFAULT partition.
    pub moved_rows: u64,
}

/// A partition a pass dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropped {
    /// Its name.
    pub name: String,
    /// The end of its range (it held nothing newer).
    pub to: Option<DateTime<Utc>>,
}

/// Rows a pass deleted from one table, and the cutoff it applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deleted {
    /// The table.
    pub table: &'static str,
    /// Rows deleted.
    pub rows: u64,
    /// Rows older than this were eligible.
    pub before: DateTime<Utc>,
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceReport {
    /// When the pass ran (its `now`).
    pub at: DateTime<Utc>,
    /// Whether it had to create the DEFAULT partition.
    pub created_default: bool,
    /// Partitions created, in order.
    pub created: Vec<Created>,
    /// Partitions dropped, in order.
    pub dropped: Vec<Dropped>,
    /// Rows deleted by table (the DEFAULT partition's expired rows under `costsim_provenance_default`).
    pub deleted: Vec<Deleted>,
}

impl MaintenanceReport {
    /// A report of nothing done yet.
    pub fn new(at: DateTime<Utc>) -> Self {
        MaintenanceReport { at, created_default: false, created: Vec::new(), dropped: Vec::new(), deleted: Vec::new() }
    }

    /// Adds what a later step of the same pass did.
    fn merge(&mut self, other: MaintenanceReport) {
        self.created_default |= other.created_default;
        self.created.extend(other.created);
        self.dropped.extend(other.dropped);
        self.deleted.extend(other.deleted);
    }

    /// Whether the pass changed nothing.
    pub fn is_empty(&self) -> bool {
        !self.created_default
            && self.created.is_empty()
            && self.dropped.is_empty()
            && self.deleted.iter().all(|d| d.rows == 0)
    }
}

impl std::fmt::Display for MaintenanceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.created_default {
            writeln!(f, "created {} (DEFAULT)", partitions::DEFAULT_PARTITION)?;
        }
        for c in &self.created {
            writeln!(
                f,
                "created {} [{}, {}) moved {} rows from DEFAULT",
                c.name,
                c.bounds.from.to_rfc3339(),
                c.bounds.to.to_rfc3339(),
                c.moved_rows
            )?;
        }
        for d in &self.dropped {
            writeln!(f, "dropped {} (events before {})", d.name, d.to.map_or("-".to_owned(), |t| t.to_rfc3339()))?;
        }
        for d in self.deleted.iter().filter(|d| d.rows > 0) {
            writeln!(f, "deleted {} rows of {} (before {})", d.rows, d.table, d.before.to_rfc3339())?;
        }
        let deleted: u64 = self.deleted.iter().map(|d| d.rows).sum();
        writeln!(
            f,
            "storage maintain: created {}, dropped {}, deleted {} rows",
            self.created.len() + usize::from(self.created_default),
            self.dropped.len(),
            deleted
        )
    }
}

/// The partition half of a pass at `now`, in the caller's transaction (commit it to apply): the DEFAULT
/// partition if missing, expired partitions dropped, partitions created up to the horizon and for the rows the
/// DEFAULT partition holds (up to the horizon), the DEFAULT partition's expired rows deleted. Needs the rights
/// of the table's owner (DDL).
pub async fn maintain_partitions(
    conn: &mut PgConnection,
    settings: &StorageSettings,
    now: DateTime<Utc>,
    report: &mut MaintenanceReport,
) -> Result<(), sqlx::Error> {
    pass_lock(conn).await?;
    let cutoff = now - TimeDelta::days(i64::from(settings.provenance_retention_days));
    let horizon = now + TimeDelta::hours(i64::from(settings.ahead_hours));

    let mut existing = partitions::list(conn).await?;
    report.created_default = partitions::ensure_default(conn, &existing).await?;
    if report.created_default {
        existing = partitions::list(conn).await?;
    }
    let default = existing.iter().find(|p| p.is_default()).map(|p| p.name.clone());

    // Dropped first: a slot of waiting DEFAULT rows is never created only to be dropped.
    for partition in partitions::expired(&existing, cutoff) {
        partitions::drop(conn, &partition).await?;
        report.dropped.push(Dropped { name: partition.name.clone(), to: partition.bounds.and_then(|(_, to)| to) });
    }
    existing.retain(|p| !report.dropped.iter().any(|d| d.name == p.name));

    let mut wanted = settings.partition.slots(now, horizon);
    if let Some(default) = &default {
        wanted.extend(partitions::default_slots(conn, default, settings.partition, cutoff).await?);
        let rows = partitions::expire_default(conn, default, cutoff).await?;
        report.deleted.push(Deleted { table: partitions::DEFAULT_PARTITION, rows, before: cutoff });
    }
    // Rows far in the future (a producer's clock) wait in DEFAULT until the horizon reaches them; a waiting slot
    // that starts before the cutoff is created from the cutoff's slot on.
    let floor = settings.partition.floor(cutoff);
    let wanted: Vec<Bounds> = wanted
        .into_iter()
        .filter(|b| b.to > cutoff && b.from <= horizon)
        .map(|b| Bounds { from: b.from.max(floor), to: b.to })
        .collect();
    for bounds in partitions::plan_creations(&existing, &wanted) {
        let moved_rows = partitions::create(conn, bounds, default.as_deref()).await?;
        report.created.push(Created { name: bounds.partition_name(), bounds, moved_rows });
    }
    Ok(())
}

/// The retention half of a pass at `now`, in the caller's transaction: rows deleted from the tables that are not
/// partitioned. Needs only the runtime role's rights.
pub async fn apply_retention(
    conn: &mut PgConnection,
    settings: &StorageSettings,
    now: DateTime<Utc>,
    report: &mut MaintenanceReport,
) -> Result<(), sqlx::Error> {
    pass_lock(conn).await?;
    let days = |n: u32| now - TimeDelta::days(i64::from(n));
    let mut delete = |table, rows, before| report.deleted.push(Deleted { table, rows, before });
    let before = days(settings.breaker_events_retention_days);
    delete("costsim_breaker_events", retention::breaker_events(conn, before).await?, before);
    let before = days(settings.alert_queue_retention_days);
    delete("costsim_alert_queue", retention::alert_queue(conn, before).await?, before);
    let before = days(settings.lost_records_retention_days);
    delete("costsim_lost_records", retention::lost_records(conn, before).await?, before);
    let before = days(settings.canary_reports_retention_days);
    delete("costsim_canary_reports", retention::canary_reports(conn, before).await?, before);
    Ok(())
}

/// Serialises passes (the leader's and hand-run ones) and bounds how long their DDL waits for ingest.
async fn pass_lock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .persistent(false)
        .bind(MAINTENANCE_PASS_LOCK)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .persistent(false)
        .bind(LOCK_TIMEOUT)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Why a pass failed, with what it did before.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {source}")]
pub struct PassError {
    /// `retention` or `partition maintenance`.
    pub step: &'static str,
    /// The database's error.
    #[source]
    pub source: sqlx::Error,
    /// What the pass did before it failed (committed).
    pub done: MaintenanceReport,
}

impl PassError {
    /// Whether the role lacks the rights (DDL on provenance needs its owner).
    pub fn is_permission(&self) -> bool {
        self.source.as_database_error().and_then(|e| e.code()).is_some_and(|c| c == "42501")
    }
}

/// One pass at `now`: retention in one transaction, then partitions in another, each committed, so a role
/// without DDL rights still applies retention.
pub async fn maintain_at(
    pool: &PgPool,
    settings: &StorageSettings,
    now: DateTime<Utc>,
) -> Result<MaintenanceReport, PassError> {
    let mut report = MaintenanceReport::new(now);
    for (name, partitions) in [("retention", false), ("partition maintenance", true)] {
        let mut attempt = MaintenanceReport::new(now);
        match step(pool, settings, now, &mut attempt, partitions).await {
            Ok(()) => report.merge(attempt),
            Err(source) => return Err(PassError { step: name, source, done: report }),
        }
    }
    Ok(report)
}

/// One step of a pass in its own transaction, committed.
async fn step(
    pool: &PgPool,
    settings: &StorageSettings,
    now: DateTime<Utc>,
    report: &mut MaintenanceReport,
    partitions: bool,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if partitions {
        maintain_partitions(&mut tx, settings, now, report).await?;
    } else {
        apply_retention(&mut tx, settings, now, report).await?;
    }
    tx.commit().await
}

/// The leader job: a pass at once, then one every interval, until `cancel`. A failed pass is logged and tried
/// again at the next interval (the partitions ahead leave that much time).
pub async fn run_maintenance(pool: PgPool, settings: StorageSettings, cancel: CancellationToken) {
    loop {
        let pass = tokio::select! {
            _ = cancel.cancelled() => return,
            pass = maintain_at(&pool, &settings, Utc::now()) => pass,
        };
        match pass {
            Ok(report) if report.is_empty() => tracing::debug!("Storage maintenance: nothing to do."),
            Ok(report) => tracing::info!(
                created = report.created.len(),
                dropped = report.dropped.len(),
                deleted = report.deleted.iter().map(|d| d.rows).sum::<u64>(),
                "Storage maintenance pass done."
            ),
            Err(err) if err.is_permission() => tracing::error!(error = %err,
                "Storage maintenance lacks the rights of the tables' owner: run `costsim-breaker storage maintain` \
                 as the migration role (e.g. from cron) so partitions are created ahead and expire."),
            Err(err) => tracing::error!(error = %err,
                "Storage maintenance pass failed; trying again at the next interval."),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(settings.interval()) => {}
        }
    }
}
