//! Provenance rows: one per simulation result or backfilled record, idempotent on `event_id`, written in batches
//! (a binary COPY into a staging table, then one `INSERT … SELECT … ON CONFLICT` from it).
//!
//! The table is partitioned by `occurred_at`, so its unique key is (`occurred_at`, `event_id`): an event's time is
//! part of the event, the same in every copy of it, so the key still stores each event once (see the migration
//! that partitions the table). Lookups go by that key, never by `event_id` alone, which would probe every
//! partition.

/// PostgreSQL's binary COPY format of a batch.
mod copy;
/// What the table holds: totals per variant and source, costs, drift statistics (for `backfill --verify`).
pub mod stats;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::drift::{Observation, Verdict};
use crate::event::SimulationResult;

/// Where a record came from on Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaOrigin<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

/// One row of `costsim_provenance` as written; `cost_delta` is derived when both costs are present.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvenanceRow {
    /// The idempotency key.
    pub event_id: String,
    /// When the simulation ran, if known.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Caller run id.
    pub run_id: Option<String>,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// `v1` or `v2`: the model the row is about.
    pub variant_slug: Option<String>,
    /// `sandbox`, `canary`, `manual` or `backfill`.
    pub source: Option<String>,
    /// Model version stamp.
    pub model_version: Option<String>,
    /// Adapter version stamp.
    pub adapter_version: Option<String>,
    /// Git commit of the model.
    pub commit_sha: Option<String>,
    /// Hash of the input, in whatever format its writer used.
    pub input_hash: Option<String>,
    /// Hash of the output.
    pub output_hash: Option<String>,
    /// V1 (baseline) cost in cents.
    pub v1_cost: Option<f64>,
    /// V2 (shadow) cost in cents.
    pub v2_cost: Option<f64>,
    /// Whether V1 found the plan feasible.
    pub v1_feasible: Option<bool>,
    /// Whether V2 found the plan feasible.
    pub v2_feasible: Option<bool>,
    /// How V2's run ended.
    pub v2_status: Option<String>,
    /// Drift score of the V1/V2 pair.
    pub drift_score: Option<f64>,
    /// Verdict band of the drift score.
    pub verdict: Option<&'static str>,
    /// Full input and/or output.
    pub payload: Option<serde_json::Value>,
    /// Run time in milliseconds.
    pub runtime_ms: Option<i32>,
    /// Kafka topic the record was read from.
    pub kafka_topic: Option<String>,
    /// Its partition.
    pub kafka_partition: Option<i32>,
    /// Its offset.
    pub kafka_offset: Option<i64>,
}

impl ProvenanceRow {
    /// The row of a simulation result (variant `v2`, the event's source), with where it was read on Kafka.
    pub fn of_result(e: &SimulationResult, origin: Option<KafkaOrigin<'_>>) -> Self {
        let score = match Observation::of(e) {
            Observation::Drift(score) => Some(score),
            Observation::SchemaError | Observation::NoScore => None,
        };
        ProvenanceRow {
            event_id: e.event_id.clone(),
            occurred_at: Some(e.occurred_at),
            run_id: e.run_id.clone(),
            tenant_id: Some(e.tenant_id.clone()),
            variant_slug: Some("v2".to_owned()),
            source: Some(e.source.as_str().to_owned()),
            model_version: Some(e.model_version.clone()),
            adapter_version: Some(e.adapter_version.clone()),
            commit_sha: e.commit_sha.clone(),
            input_hash: Some(e.input_hash.clone()),
            output_hash: None,
            v1_cost: Some(e.v1_cost_cents as f64),
            v2_cost: e.v2_cost_cents.map(|c| c as f64),
            v1_feasible: Some(e.v1_feasible),
            v2_feasible: e.v2_feasible,
            v2_status: Some(e.v2_status.as_str().to_owned()),
            drift_score: score,
            verdict: score.map(|s| Verdict::of(s).as_str()),
            payload: None,
            runtime_ms: e.v2_duration_ms.map(|d| d.clamp(0, i64::from(i32::MAX)) as i32),
            kafka_topic: origin.map(|o| o.topic.to_owned()),
            kafka_partition: origin.map(|o| o.partition),
            kafka_offset: origin.map(|o| o.offset),
        }
    }
}

/// Who writes a batch, which decides what a stored row with the same `event_id` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The processor (`run`): its rows are `processed`; a row that only a backfill wrote is claimed (made
    /// `processed`) and returned as new, so the processor still counts that event in its window.
    Processor,
    /// A backfill: its rows are not `processed`, and a stored row is left as it is.
    Backfill,
}

/// Inserts (or claims, see [`Writer::Processor`]) the events the processor has not stored yet and returns their
/// ids (an id repeated in the batch counts once). `origins` pairs with `events`; `None` for records that did not
/// come from Kafka.
pub async fn insert(
    conn: &mut PgConnection,
    events: &[&SimulationResult],
    origins: &[Option<KafkaOrigin<'_>>],
) -> Result<HashSet<String>, sqlx::Error> {
    let rows: Vec<ProvenanceRow> =
        events.iter().zip(origins).map(|(event, origin)| ProvenanceRow::of_result(event, *origin)).collect();
    insert_rows(conn, &rows, Writer::Processor).await
}

/// The staging table a batch is copied into: dropped at commit (so no session behind a transaction-mode pooler
/// inherits it), and explicitly after the insert (so a second batch in the same transaction starts empty).
const CREATE_STAGE: &str = "CREATE TEMP TABLE costsim_provenance_stage (event_id text, occurred_at timestamptz, \
     run_id text, tenant_id text, variant_slug text, source text, model_version text, adapter_version text, \
     commit_sha text, input_hash text, output_hash text, v1_cost float8, v2_cost float8, v1_feasible bool, \
     v2_feasible bool, v2_status text, drift_score float8, verdict text, payload jsonb, runtime_ms int4, \
     kafka_topic text, kafka_partition int4, kafka_offset int8) ON COMMIT DROP";

/// The binary COPY into the staging table, in the column order of [`copy::encode`].
const COPY_STAGE: &str = "COPY costsim_provenance_stage (event_id, occurred_at, run_id, tenant_id, variant_slug, \
     source, model_version, adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, v1_feasible, \
     v2_feasible, v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, kafka_partition, kafka_offset) \
     FROM STDIN (FORMAT binary)";

/// The insert from the staging table up to its conflict action; `$1` whether the rows are `processed`.
macro_rules! insert_staged_sql {
    () => {
        "INSERT INTO costsim_provenance (event_id, occurred_at, run_id, tenant_id, variant_slug, source, \
         model_version, adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, cost_delta, \
         v1_feasible, v2_feasible, v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, \
         kafka_partition, kafka_offset, processed) \
         SELECT event_id, occurred_at, run_id, tenant_id, variant_slug, source, model_version, adapter_version, \
         commit_sha, input_hash, output_hash, v1_cost, v2_cost, v2_cost - v1_cost, v1_feasible, v2_feasible, \
         v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, kafka_partition, kafka_offset, $1::bool \
         FROM costsim_provenance_stage \
         ON CONFLICT ON CONSTRAINT uq_costsim_provenance_event_id "
    };
}

/// Inserts the rows whose `event_id` is not stored yet (for the processor: or stored only by a backfill) and
/// returns the ids inserted now; an id repeated in the batch counts once, the first row wins.
///
/// The batch is sent by binary COPY into a staging table, then inserted from it with the conflict action:
/// measured faster than one `INSERT … SELECT FROM UNNEST` of one array per column (`benches/storage/`). `conn`
/// must be in a transaction (the staging table lives until its commit).
pub async fn insert_rows(
    conn: &mut PgConnection,
    rows: &[ProvenanceRow],
    writer: Writer,
) -> Result<HashSet<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    // One statement may not touch a row twice with ON CONFLICT DO UPDATE: repeats are dropped here.
    let mut ids = HashSet::with_capacity(rows.len());
    let unique: Vec<&ProvenanceRow> = rows.iter().filter(|r| ids.insert(r.event_id.as_str())).collect();
    sqlx::query(CREATE_STAGE).persistent(false).execute(&mut *conn).await?;
    let mut copy = conn.copy_in_raw(COPY_STAGE).await?;
    if let Err(err) = copy.send(copy::encode(&unique)).await {
        copy.abort("the batch could not be sent").await?;
        return Err(err);
    }
    copy.finish().await?;
    let sql = match writer {
        Writer::Processor => concat!(
            insert_staged_sql!(),
            "DO UPDATE SET processed = true WHERE NOT costsim_provenance.processed RETURNING event_id"
        ),
        Writer::Backfill => concat!(insert_staged_sql!(), "DO NOTHING RETURNING event_id"),
    };
    let inserted: Vec<String> =
        sqlx::query_scalar(sql).persistent(false).bind(writer == Writer::Processor).fetch_all(&mut *conn).await?;
    sqlx::query("DROP TABLE costsim_provenance_stage").persistent(false).execute(&mut *conn).await?;
    Ok(inserted.into_iter().collect())
}

/// The ids of `rows` that are stored already, each looked up by its key (`occurred_at`, `event_id`): the unique
/// key the insert dedups on, which reaches one partition's index per row instead of every partition's.
pub async fn existing_event_ids(
    conn: &mut PgConnection,
    rows: &[ProvenanceRow],
) -> Result<HashSet<String>, sqlx::Error> {
    let keys = Keys::of(rows);
    let found: Vec<String> = sqlx::query_scalar(keyed_rows!("p.event_id"))
        .persistent(false)
        .bind(&keys.occurred_at)
        .bind(&keys.event_id)
        .bind(&keys.untimed)
        .fetch_all(conn)
        .await?;
    Ok(found.into_iter().collect())
}

/// `SELECT $columns` of the stored rows whose key is one of `$1` (`occurred_at`) × `$2` (`event_id`) pairwise, or
/// without an event time and an id in `$3`; `p` names the stored row.
macro_rules! keyed_rows {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM UNNEST($1::timestamptz[], $2::text[]) AS u(o, e) \
             JOIN costsim_provenance p ON p.occurred_at = u.o AND p.event_id = u.e UNION ALL SELECT ",
            $columns,
            " FROM costsim_provenance p WHERE p.occurred_at IS NULL AND p.event_id = ANY($3::text[])"
        )
    };
}
pub(crate) use keyed_rows;

/// The keys of a set of rows, split by whether they carry an event time.
pub(crate) struct Keys<'a> {
    /// Event times of the timed rows.
    pub(crate) occurred_at: Vec<DateTime<Utc>>,
    /// Ids of the timed rows, pairwise with `occurred_at`.
    pub(crate) event_id: Vec<&'a str>,
    /// Ids of the rows without an event time.
    pub(crate) untimed: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    /// The keys of `rows`.
    pub(crate) fn of(rows: &'a [ProvenanceRow]) -> Self {
        let mut keys = Keys { occurred_at: Vec::new(), event_id: Vec::new(), untimed: Vec::new() };
        for row in rows {
            match row.occurred_at {
                Some(at) => {
                    keys.occurred_at.push(at);
                    keys.event_id.push(&row.event_id);
                }
                None => keys.untimed.push(&row.event_id),
            }
        }
        keys
    }
}
