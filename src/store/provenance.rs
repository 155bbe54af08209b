//! Provenance rows: one per simulation result or backfilled record, idempotent on `event_id`, written in batches
//! (one `INSERT … SELECT FROM UNNEST` per batch, one array per column).
//!
//! The table is partitioned by `occurred_at`, so its unique key is (`occurred_at`, `event_id`): an event's time is
//! part of the event, the same in every copy of it, so the key still stores each event once (see the migration
//! that partitions the table). Lookups go by that key, never by `event_id` alone, which would probe every
//! partition.

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

/// The batch insert up to its conflict action: one array per column, `$24` whether the rows are `processed`.
macro_rules! insert_rows_sql {
    () => {
        "INSERT INTO costsim_provenance (event_id, occurred_at, run_id, tenant_id, variant_slug, source, \
         model_version, adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, cost_delta, \
         v1_feasible, v2_feasible, v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, \
         kafka_partition, kafka_offset, processed) \
         SELECT e, o, r, t, vs, s, mv, av, cs, ih, oh, c1, c2, c2 - c1, f1, f2, st, d, vd, p::jsonb, ms, kt, kp, ko, \
         $24::bool \
         FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[], $13::float8[], $14::bool[], $15::bool[], \
         $16::text[], $17::float8[], $18::text[], $19::text[], $20::int4[], $21::text[], $22::int4[], $23::int8[]) \
         AS u(e, o, r, t, vs, s, mv, av, cs, ih, oh, c1, c2, f1, f2, st, d, vd, p, ms, kt, kp, ko) \
         ON CONFLICT ON CONSTRAINT uq_costsim_provenance_event_id "
    };
}

/// Inserts the rows whose `event_id` is not stored yet (for the processor: or stored only by a backfill) and
/// returns the ids inserted now; an id repeated in the batch counts once, the first row wins.
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
    let c = Columns::of(&unique);
    let sql = match writer {
        Writer::Processor => concat!(
            insert_rows_sql!(),
            "DO UPDATE SET processed = true WHERE NOT costsim_provenance.processed RETURNING event_id"
        ),
        Writer::Backfill => concat!(insert_rows_sql!(), "DO NOTHING RETURNING event_id"),
    };
    let inserted: Vec<String> = sqlx::query_scalar(sql)
        .persistent(false)
        .bind(&c.event_id)
        .bind(&c.occurred_at)
        .bind(&c.run_id)
        .bind(&c.tenant_id)
        .bind(&c.variant_slug)
        .bind(&c.source)
        .bind(&c.model_version)
        .bind(&c.adapter_version)
        .bind(&c.commit_sha)
        .bind(&c.input_hash)
        .bind(&c.output_hash)
        .bind(&c.v1_cost)
        .bind(&c.v2_cost)
        .bind(&c.v1_feasible)
        .bind(&c.v2_feasible)
        .bind(&c.v2_status)
        .bind(&c.drift_score)
        .bind(&c.verdict)
        .bind(&c.payload)
        .bind(&c.runtime_ms)
        .bind(&c.kafka_topic)
        .bind(&c.kafka_partition)
        .bind(&c.kafka_offset)
        .bind(writer == Writer::Processor)
        .fetch_all(conn)
        .await?;
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

/// The batch as one array per column, the shape `UNNEST` takes.
#[derive(Default)]
struct Columns<'a> {
    event_id: Vec<&'a str>,
    occurred_at: Vec<Option<DateTime<Utc>>>,
    run_id: Vec<Option<&'a str>>,
    tenant_id: Vec<Option<&'a str>>,
    variant_slug: Vec<Option<&'a str>>,
    source: Vec<Option<&'a str>>,
    model_version: Vec<Option<&'a str>>,
    adapter_version: Vec<Option<&'a str>>,
    commit_sha: Vec<Option<&'a str>>,
    input_hash: Vec<Option<&'a str>>,
    output_hash: Vec<Option<&'a str>>,
    v1_cost: Vec<Option<f64>>,
    v2_cost: Vec<Option<f64>>,
    v1_feasible: Vec<Option<bool>>,
    v2_feasible: Vec<Option<bool>>,
    v2_status: Vec<Option<&'a str>>,
    drift_score: Vec<Option<f64>>,
    verdict: Vec<Option<&'static str>>,
    // Sent as text and cast in SQL: one array type for any JSON value.
    payload: Vec<Option<String>>,
    runtime_ms: Vec<Option<i32>>,
    kafka_topic: Vec<Option<&'a str>>,
    kafka_partition: Vec<Option<i32>>,
    kafka_offset: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &[&'a ProvenanceRow]) -> Self {
        let mut c = Columns { event_id: Vec::with_capacity(rows.len()), ..Default::default() };
        for r in rows {
            c.event_id.push(&r.event_id);
            c.occurred_at.push(r.occurred_at);
            c.run_id.push(r.run_id.as_deref());
            c.tenant_id.push(r.tenant_id.as_deref());
            c.variant_slug.push(r.variant_slug.as_deref());
            c.source.push(r.source.as_deref());
            c.model_version.push(r.model_version.as_deref());
            c.adapter_version.push(r.adapter_version.as_deref());
            c.commit_sha.push(r.commit_sha.as_deref());
            c.input_hash.push(r.input_hash.as_deref());
            c.output_hash.push(r.output_hash.as_deref());
            c.v1_cost.push(r.v1_cost);
            c.v2_cost.push(r.v2_cost);
            c.v1_feasible.push(r.v1_feasible);
            c.v2_feasible.push(r.v2_feasible);
            c.v2_status.push(r.v2_status.as_deref());
            c.drift_score.push(r.drift_score);
            c.verdict.push(r.verdict);
            c.payload.push(r.payload.as_ref().map(|p| p.to_string()));
            c.runtime_ms.push(r.runtime_ms);
            c.kafka_topic.push(r.kafka_topic.as_deref());
            c.kafka_partition.push(r.kafka_partition);
            c.kafka_offset.push(r.kafka_offset);
        }
        c
    }
}
