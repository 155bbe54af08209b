//! What a run left behind, counted against what was produced: lost and duplicated events (provenance rows against
//! the topic's offsets), and the decisions (incidents, state events, alerts, final breaker row) in a form two runs
//! over the same events can be compared in, with the drift samples each bucket counted.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use costsim_breaker::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

use super::Database;

/// The results topic's end offset per partition (every partition starts at 0: nothing is ever deleted).
pub fn topic_ends(kafka: &KafkaConfig) -> Vec<(i32, i64)> {
    let client: BaseConsumer = kafka.client_config().create().unwrap();
    let topic = &kafka.results_topic;
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut ends: Vec<(i32, i64)> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = client.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            assert_eq!(low, 0, "partition {} starts at 0", p.id());
            (p.id(), high)
        })
        .collect();
    ends.sort_unstable();
    ends
}

/// Events lost and duplicated by one run, from its provenance rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Audit {
    /// Records on the topic.
    pub produced: i64,
    /// Provenance rows.
    pub rows: i64,
    /// Records of the topic with no provenance row (offsets missing in a partition's 0..end).
    pub lost: i64,
    /// Rows beyond one per record of the topic.
    pub duplicated: i64,
}

/// Counts a run's provenance against the topic: every offset of every partition once, and nothing else.
pub async fn audit(db: &Database, ends: &[(i32, i64)]) -> Audit {
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = ends.iter().copied().unzip();
    let per_partition: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(DISTINCT pr.kafka_offset) FILTER (WHERE pr.kafka_offset >= 0 AND pr.kafka_offset < e.end_offset) \
         FROM UNNEST($1::int4[], $2::int8[]) AS e(p, end_offset) \
         LEFT JOIN costsim_provenance pr ON pr.kafka_partition = e.p GROUP BY e.p",
    )
    .bind(&partitions)
    .bind(&offsets)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let total = db.stored().await;
    let produced: i64 = offsets.iter().sum();
    let covered: i64 = per_partition.iter().map(|(in_range,)| in_range).sum();
    // A row is a duplicate unless it is the first for an offset of the topic (event ids are unique anyway).
    let (lost, duplicated) = (produced - covered, total - covered);
    Audit { produced, rows: total, lost, duplicated }
}

/// The decisions of a run, with what differs between two runs by design (random ids, wall-clock times) taken out.
#[derive(Debug, Clone, PartialEq)]
pub struct Decisions {
    /// Per incident, oldest first: severity, reason, p95, samples, evidence, event-time timestamp, resolution.
    pub incidents: Vec<Value>,
    /// The state events' payloads in version order.
    pub state_events: Vec<Value>,
    /// The alert rows' type and payload in id order.
    pub alerts: Vec<Value>,
    /// The breaker row at the end.
    pub breaker: Value,
    /// Drift samples per bucket start, merged over the partitions: what the windows counted.
    pub buckets: BTreeMap<DateTime<Utc>, i64>,
}

impl Decisions {
    /// Trips: state changes from closed to open.
    pub fn trips(&self) -> usize {
        self.state_events.iter().filter(|e| e["from_state"] == "closed" && e["to_state"] == "open").count()
    }

    /// How many entries differ from `other` (counting the longer list's extra entries).
    pub fn differences(&self, other: &Decisions) -> usize {
        fn diff(a: &[Value], b: &[Value]) -> usize {
            a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
        }
        diff(&self.incidents, &other.incidents)
            + diff(&self.state_events, &other.state_events)
            + diff(&self.alerts, &other.alerts)
            + usize::from(self.breaker != other.breaker)
            + self.bucket_differences(other)
    }

    /// Buckets whose sample counts differ, over the span both runs still hold (the timers prune old buckets on
    /// their own schedule); a bucket one run lacks inside that span counts 0 samples.
    pub fn bucket_differences(&self, other: &Decisions) -> usize {
        let (Some((a_first, _)), Some((b_first, _))) =
            (self.buckets.first_key_value(), other.buckets.first_key_value())
        else {
            return self.buckets.len().max(other.buckets.len());
        };
        let from = *a_first.max(b_first);
        let starts: std::collections::BTreeSet<&DateTime<Utc>> =
            self.buckets.range(from..).chain(other.buckets.range(from..)).map(|(at, _)| at).collect();
        starts
            .into_iter()
            .filter(|at| self.buckets.get(at).unwrap_or(&0) != other.buckets.get(at).unwrap_or(&0))
            .count()
    }
}

/// Reads a run's decisions; incident ids become `incident-1`, `incident-2`, … in trip order.
pub async fn decisions(db: &Database) -> Decisions {
    let incidents: Vec<(Value, String)> = sqlx::query_as(
        "SELECT jsonb_build_object('severity', severity, 'reason', reason, 'p95', drift_score, \
                'samples', sample_count, 'evidence', evidence, 'at', \"timestamp\", 'resolved', resolved, \
                'resolved_by', resolved_by, 'resolution_notes', resolution_notes), id \
         FROM costsim_cb_incidents ORDER BY \"timestamp\", id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let ids: Vec<String> = incidents.iter().map(|(_, id)| id.clone()).collect();
    let state_events: Vec<(Value,)> =
        sqlx::query_as("SELECT payload FROM costsim_breaker_events ORDER BY breaker, version")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let alerts: Vec<(Value,)> = sqlx::query_as(
        "SELECT jsonb_build_object('type', alert_type, 'incident', incident_id, 'payload', payload) \
         FROM costsim_alert_queue ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // `last_evaluated_at` is compared too: the processor judges what closed once its loop goes quiet and again once
    // the last partitions turn idle, so how far evaluation got no longer depends on how the final batches of
    // concurrently committing partitions interleaved.
    let breaker: (Value,) = sqlx::query_as(
        "SELECT jsonb_build_object('state', state, 'version', version, 'disabled_until', disabled_until, \
                'open_ttl_seconds', open_ttl_seconds, 'incident_id', incident_id, 'severity', severity, \
                'opened_at', opened_at, 'consecutive_failures', consecutive_failures, \
                'half_open_since', half_open_since, 'last_evaluated_at', last_evaluated_at, \
                'warning_active', warning_active) \
         FROM costsim_cb_state ORDER BY name",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let buckets: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT bucket_start, sum(sample_count)::bigint FROM costsim_drift_buckets GROUP BY bucket_start",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let clean = |v: Value| normalize(v, &ids);
    Decisions {
        incidents: incidents.into_iter().map(|(v, _)| clean(v)).collect(),
        state_events: state_events.into_iter().map(|(v,)| clean(v)).collect(),
        alerts: alerts.into_iter().map(|(v,)| clean(v)).collect(),
        breaker: clean(breaker.0),
        buckets: buckets.into_iter().collect(),
    }
}

/// Replaces incident ids by their rank and drops the fields that are random or wall-clock by design.
fn normalize(value: Value, incident_ids: &[String]) -> Value {
    match value {
        Value::String(s) => {
            let mut s = s;
            for (i, id) in incident_ids.iter().enumerate() {
                s = s.replace(id.as_str(), &format!("incident-{}", i + 1));
            }
            Value::String(s)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| normalize(v, incident_ids)).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !WALL_CLOCK_OR_RANDOM.contains(&k.as_str()))
                .map(|(k, v)| (k, normalize(v, incident_ids)))
                .collect(),
        ),
        other => other,
    }
}

/// Fields two runs over the same events fill differently on purpose: the state event's own id, and the alert label
/// naming the instance that happened to decide (each processor of a scenario has its own `INSTANCE_ID`).
const WALL_CLOCK_OR_RANDOM: &[&str] = &["event_id", "instance"];
