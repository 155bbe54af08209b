//! Retention of the tables that are not partitioned (the outboxes, lost records, canary reports), and what every
//! table of the system holds on disk (`storage stats`).
//!
//! These tables grow by rows a minute at most, not by thousands a second, so retention deletes rows; each delete
//! keeps the rows a live code path still reads.

use chrono::{DateTime, Utc};
use serde::Serialize;
// The statements name tables from `TABLES` only: audited.
use sqlx::{AssertSqlSafe, PgConnection};

/// Deletes state events published before `before`, except each breaker's newest one (its current version, whose
/// time `outbox::changed_at` reports). Unpublished rows are never deleted.
pub async fn breaker_events(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM costsim_breaker_events e WHERE e.published_at IS NOT NULL AND e.published_at < $1 \
         AND e.version < (SELECT s.version FROM costsim_cb_state s WHERE s.name = e.breaker)",
    )
    .persistent(false)
    .bind(before)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes sent and failed alerts queued before `before`, except the newest row of each alert (incident, breaker
/// and type), from which re-sends and resolutions start. Pending rows are never deleted.
pub async fn alert_queue(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM costsim_alert_queue WHERE status IN ('sent', 'failed') AND created_at < $1 \
         AND id NOT IN (SELECT max(id) FROM costsim_alert_queue GROUP BY incident_id, circuit_breaker_name, alert_type)",
    )
    .persistent(false)
    .bind(before)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes lost-record ranges detected before `before`.
pub async fn lost_records(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM costsim_lost_records WHERE detected_at < $1")
        .persistent(false)
        .bind(before)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Deletes canary reports of runs before `before`, except each breaker's newest (the canary signal and the
/// schedule read it).
pub async fn canary_reports(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM costsim_canary_reports r WHERE r.\"timestamp\" < $1 \
         AND r.id NOT IN (SELECT max(id) FROM costsim_canary_reports GROUP BY breaker, trigger)",
    )
    .persistent(false)
    .bind(before)
    .execute(conn)
    .await?
    .rows_affected())
}

/// What one table holds.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TableStats {
    /// The table.
    pub table: String,
    /// Its rows: counted with `exact`, otherwise PostgreSQL's estimate from its last ANALYZE (0 before the
    /// first).
    pub rows: i64,
    /// Bytes on disk, indexes and TOAST included, over every partition.
    pub bytes: i64,
    /// Leaf partitions (0 for a table that is not partitioned).
    pub partitions: i64,
    /// The oldest row's time (provenance: event time; others: the time the row was written or the run ran).
    pub oldest: Option<DateTime<Utc>>,
    /// The newest row's time.
    pub newest: Option<DateTime<Utc>>,
}

/// Each table with the column that dates its rows; every one has an index led by it or is small.
const TABLES: [(&str, &str); 9] = [
    ("costsim_provenance", "occurred_at"),
    ("costsim_breaker_events", "created_at"),
    ("costsim_alert_queue", "created_at"),
    ("costsim_lost_records", "detected_at"),
    ("costsim_canary_reports", "\"timestamp\""),
    ("costsim_cb_incidents", "\"timestamp\""),
    ("costsim_drift_buckets", "bucket_start"),
    ("costsim_consumed_offsets", "updated_at"),
    ("costsim_leader_leases", "acquired_at"),
];

/// Rows, bytes, partitions, oldest and newest of every table of the system.
pub async fn stats(conn: &mut PgConnection, exact: bool) -> Result<Vec<TableStats>, sqlx::Error> {
    let mut out = Vec::with_capacity(TABLES.len());
    for (table, column) in TABLES {
        let rows = if exact { format!("(SELECT count(*) FROM {table})") } else { "sizes.rows".to_owned() };
        let sql = format!(
            "WITH tree AS (SELECT relid FROM pg_partition_tree('{table}'::regclass) WHERE isleaf), \
             sizes AS (SELECT COALESCE(sum(pg_total_relation_size(t.relid)), 0)::int8 AS bytes, \
                              COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::int8 AS rows, \
                              count(*) FILTER (WHERE t.relid <> '{table}'::regclass) AS partitions \
                       FROM tree t JOIN pg_class c ON c.oid = t.relid) \
             SELECT '{table}' AS table, {rows} AS rows, sizes.bytes, sizes.partitions, \
                    (SELECT min({column}) FROM {table}) AS oldest, (SELECT max({column}) FROM {table}) AS newest \
             FROM sizes"
        );
        out.push(sqlx::query_as::<_, TableStats>(AssertSqlSafe(sql)).persistent(false).fetch_one(&mut *conn).await?);
    }
    Ok(out)
}
