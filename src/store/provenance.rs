//! Provenance rows: one per simulation result, idempotent on `event_id`, written in batches.

use std::collections::HashSet;

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

/// Inserts the events that are not stored yet and returns the ids of those inserted now (an id repeated in the
/// batch counts once). `origins` pairs with `events`; `None` for records that did not come from Kafka.
pub async fn insert(
    conn: &mut PgConnection,
    events: &[&SimulationResult],
    origins: &[Option<KafkaOrigin<'_>>],
) -> Result<HashSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let n = events.len();
    let mut cols = Columns::with_capacity(n);
    for (event, origin) in events.iter().zip(origins) {
        cols.push(event, *origin);
    }
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO costsim_provenance (event_id, occurred_at, run_id, tenant_id, variant_slug, source, \
         model_version, adapter_version, commit_sha, input_hash, v1_cost, v2_cost, cost_delta, v1_feasible, \
         v2_feasible, v2_status, drift_score, verdict, runtime_ms, kafka_topic, kafka_partition, kafka_offset) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::float8[], $14::bool[], \
         $15::bool[], $16::text[], $17::float8[], $18::text[], $19::int4[], $20::text[], $21::int4[], $22::int8[]) \
         ON CONFLICT ON CONSTRAINT uq_costsim_provenance_event_id DO NOTHING RETURNING event_id",
    )
    .bind(&cols.event_id)
    .bind(&cols.occurred_at)
    .bind(&cols.run_id)
    .bind(&cols.tenant_id)
    .bind(&cols.variant_slug)
    .bind(&cols.source)
    .bind(&cols.model_version)
    .bind(&cols.adapter_version)
    .bind(&cols.commit_sha)
    .bind(&cols.input_hash)
    .bind(&cols.v1_cost)
    .bind(&cols.v2_cost)
    .bind(&cols.cost_delta)
    .bind(&cols.v1_feasible)
    .bind(&cols.v2_feasible)
    .bind(&cols.v2_status)
    .bind(&cols.drift_score)
    .bind(&cols.verdict)
    .bind(&cols.runtime_ms)
    .bind(&cols.kafka_topic)
    .bind(&cols.kafka_partition)
    .bind(&cols.kafka_offset)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// The batch as one array per column, the shape `UNNEST` takes.
#[derive(Default)]
struct Columns {
    event_id: Vec<String>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    run_id: Vec<Option<String>>,
    tenant_id: Vec<String>,
    variant_slug: Vec<&'static str>,
    source: Vec<&'static str>,
    model_version: Vec<String>,
    adapter_version: Vec<String>,
    commit_sha: Vec<Option<String>>,
    input_hash: Vec<String>,
    v1_cost: Vec<f64>,
    v2_cost: Vec<Option<f64>>,
    cost_delta: Vec<Option<f64>>,
    v1_feasible: Vec<bool>,
    v2_feasible: Vec<Option<bool>>,
    v2_status: Vec<&'static str>,
    drift_score: Vec<Option<f64>>,
    verdict: Vec<Option<&'static str>>,
    runtime_ms: Vec<Option<i32>>,
    kafka_topic: Vec<Option<String>>,
    kafka_partition: Vec<Option<i32>>,
    kafka_offset: Vec<Option<i64>>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Columns { event_id: Vec::with_capacity(n), ..Default::default() }
    }

    fn push(&mut self, e: &SimulationResult, origin: Option<KafkaOrigin<'_>>) {
        let score = match Observation::of(e) {
            Observation::Drift(score) => Some(score),
            Observation::SchemaError | Observation::NoScore => None,
        };
        self.event_id.push(e.event_id.clone());
        self.occurred_at.push(e.occurred_at);
        self.run_id.push(e.run_id.clone());
        self.tenant_id.push(e.tenant_id.clone());
        self.variant_slug.push("v2");
        self.source.push(e.source.as_str());
        self.model_version.push(e.model_version.clone());
        self.adapter_version.push(e.adapter_version.clone());
        self.commit_sha.push(e.commit_sha.clone());
        self.input_hash.push(e.input_hash.clone());
        self.v1_cost.push(e.v1_cost_cents as f64);
        self.v2_cost.push(e.v2_cost_cents.map(|c| c as f64));
        self.cost_delta.push(e.v2_cost_cents.map(|v2| (v2 - e.v1_cost_cents) as f64));
        self.v1_feasible.push(e.v1_feasible);
        self.v2_feasible.push(e.v2_feasible);
        self.v2_status.push(e.v2_status.as_str());
        self.drift_score.push(score);
        self.verdict.push(score.map(|s| Verdict::of(s).as_str()));
        self.runtime_ms.push(e.v2_duration_ms.map(|d| d.clamp(0, i64::from(i32::MAX)) as i32));
        self.kafka_topic.push(origin.map(|o| o.topic.to_owned()));
        self.kafka_partition.push(origin.map(|o| o.partition));
        self.kafka_offset.push(origin.map(|o| o.offset));
    }
}
