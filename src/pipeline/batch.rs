//! One partition's batch in one transaction: fence on the stored offset, dead letters, provenance, bucket updates,
//! the new offset, and the decisions of every bucket that closed.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer as _};
use sqlx::PgConnection;

use super::flow::Batch;
use super::{Pipeline, gaps};
use crate::codec::WriterKind;
use crate::drift::{Observation, Verdict};
use crate::event::SimulationResult;
use crate::kafka::ConfirmedSender;
use crate::store::{buckets, offsets, provenance};
use crate::window::{Bucket, WindowSpec};

/// How long the broker may take to say where a partition's log starts.
const LOG_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a batch did not commit; every variant is transient: the batch is retried as it is.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// PostgreSQL failed or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The partition's log start could not be read from the broker (to tell deleted records from offsets
    /// without a readable record).
    #[error("log start of {topic} partition {partition}: {message}")]
    LogStart {
        /// The results topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What failed.
        message: String,
    },
    /// The schema registry could not be reached for the writer schema of a Confluent-framed record.
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// The dead-letter topic could not be written.
    #[error("dead-letter topic {topic}: {message}")]
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// What failed.
        message: String,
    },
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed; consumption of the partition continues at `next_offset`.
    Committed {
        /// The partition's next offset.
        next_offset: i64,
        /// Records applied (beyond the fence).
        records: usize,
    },
    /// Every record was below the stored offset: already applied by an earlier owner or run.
    AlreadyDone,
    /// The partition must be read from this offset (the stored one) before anything else.
    Seek(i64),
}

/// A record that cannot be applied, with why.
struct DeadLetter<'m> {
    message: &'m OwnedMessage,
    class: &'static str,
    reason: String,
}

/// Commits batches for one pipeline.
pub struct Batcher<'p> {
    pipeline: &'p Pipeline,
    window: WindowSpec,
    dlq: FutureProducer,
}

impl<'p> Batcher<'p> {
    /// Prepares the dead-letter producer.
    pub fn new(pipeline: &'p Pipeline, window: WindowSpec) -> anyhow::Result<Self> {
        Ok(Batcher { pipeline, window, dlq: pipeline.kafka.producer()? })
    }

    /// Applies the records of one partition (in offset order) in one transaction.
    pub async fn commit(&self, partition: i32, batch: &Batch) -> Result<Outcome, BatchError> {
        let p = self.pipeline;
        let (topic, group) = (p.kafka.results_topic.as_str(), p.kafka.group_id.as_str());
        let records = &batch.records;
        let (Some(first), Some(vouched_from)) = (records.first(), batch.vouched_from()) else {
            return Ok(Outcome::AlreadyDone);
        };
        if let Some(registry) = &p.registry {
            // Before the transaction, so a slow registry holds no lock; each id is fetched once per process.
            let ids: Vec<u32> =
                records.iter().filter_map(|m| crate::codec::confluent_id(m.payload().unwrap_or_default())).collect();
            registry.fetch_missing(&p.writers, ids).await?;
        }
        let mut tx = p.pool.begin().await?;
        let position = offsets::lock(&mut tx, group, topic, partition, first.offset()).await?;
        let fresh: Vec<&OwnedMessage> = records.iter().filter(|m| m.offset() >= position.next_offset).collect();
        let Some(head) = fresh.first() else {
            p.metrics.events_total.with_label_values(&["duplicate"]).inc_by(records.len() as u64);
            return Ok(Outcome::AlreadyDone);
        };
        if head.offset() > position.next_offset && vouched_from > position.next_offset {
            // Records between the stored offset and this batch were never read: read them first.
            return Ok(Outcome::Seek(position.next_offset));
        }
        self.account_for_gaps(&mut tx, partition, position.next_offset, &fresh).await?;
        p.metrics.events_total.with_label_values(&["duplicate"]).inc_by((records.len() - fresh.len()) as u64);

        let now = Utc::now();
        let latest_allowed = now + TimeDelta::seconds(p.settings.max_future_skew_seconds as i64);
        let mut events = Vec::with_capacity(fresh.len());
        let mut origins = Vec::with_capacity(fresh.len());
        let mut dead = Vec::new();
        for message in &fresh {
            let decoded = p.writers.decode(message.payload().unwrap_or_default());
            if decoded.as_ref().is_ok_and(|d| d.writer == WriterKind::LegacyFingerprint) {
                p.metrics.legacy_fingerprint_records_total.inc();
            }
            match decoded.map(|d| d.event) {
                Ok(event) if event.occurred_at > latest_allowed => dead.push(DeadLetter {
                    message,
                    class: "future_event",
                    reason: format!(
                        "occurred_at {} is more than {} s ahead of the processor's clock",
                        event.occurred_at, p.settings.max_future_skew_seconds
                    ),
                }),
                Ok(event) => {
                    events.push(event);
                    origins.push(Some(provenance::KafkaOrigin { topic, partition, offset: message.offset() }));
                }
                Err(err) => dead.push(DeadLetter { message, class: err.class(), reason: err.to_string() }),
            }
        }
        self.send_dead_letters(&dead).await?;

        let refs: Vec<&SimulationResult> = events.iter().collect();
        let inserted = provenance::insert(&mut tx, &refs, &origins).await?;
        let breaker = crate::store::breaker::get(&mut tx, &p.settings.breaker).await?;
        let evaluated_at = breaker.and_then(|r| r.last_evaluated_at);
        let horizon = evaluated_at.map(|at| self.lateness_horizon(at));
        let contributions = self.contributions(&events, &inserted, horizon);
        let source = buckets::Source { breaker: &p.settings.breaker, topic, partition };
        buckets::merge(&mut tx, source, &contributions).await?;

        let last = fresh.last().expect("fresh is not empty");
        let watermark = events.iter().map(|e| e.occurred_at).max().or(position.watermark);
        let next_offset = last.offset() + 1;
        offsets::save(&mut tx, group, topic, partition, offsets::Position { next_offset, watermark }).await?;
        super::evaluate::closed_buckets(p, self.window, &mut tx, evaluated_at).await?;
        tx.commit().await?;
        Ok(Outcome::Committed { next_offset, records: fresh.len() })
    }

    /// Records what the batch's read skipped from `start` on: records the broker deleted unread become rows of
    /// `costsim_lost_records` and an error; offsets without a readable record are only counted.
    async fn account_for_gaps(
        &self,
        tx: &mut PgConnection,
        partition: i32,
        start: i64,
        fresh: &[&OwnedMessage],
    ) -> Result<(), BatchError> {
        let gaps = gaps::skipped(start, fresh.iter().map(|m| m.offset()));
        if gaps.is_empty() {
            return Ok(());
        }
        let p = self.pipeline;
        let (topic, group) = (p.kafka.results_topic.as_str(), p.kafka.group_id.as_str());
        let log_start = self.log_start(partition).await?;
        for gap in gaps {
            let split = gaps::split(gap, log_start);
            if let Some(lost) = split.deleted {
                tracing::error!(
                    topic,
                    partition,
                    first_offset = lost.start,
                    end_offset = lost.end,
                    log_start,
                    records = lost.end - lost.start,
                    "Records were deleted by the broker before they were applied; recorded in costsim_lost_records."
                );
                offsets::record_lost(tx, group, topic, partition, lost.clone(), log_start).await?;
                p.metrics.records_lost_to_retention_total.inc_by((lost.end - lost.start) as u64);
            }
            if let Some(skipped) = split.unreadable {
                tracing::debug!(
                    topic,
                    partition,
                    first_offset = skipped.start,
                    end_offset = skipped.end,
                    "Skipped offsets without a readable record."
                );
                p.metrics.offsets_skipped_total.inc_by((skipped.end - skipped.start) as u64);
            }
        }
        Ok(())
    }

    /// The partition's log start offset, asked of the broker.
    async fn log_start(&self, partition: i32) -> Result<i64, BatchError> {
        let topic = self.pipeline.kafka.results_topic.as_str();
        // A metadata round trip, made only when a batch skips offsets.
        tokio::task::block_in_place(|| self.dlq.client().fetch_watermarks(topic, partition, LOG_START_TIMEOUT))
            .map(|(low, _high)| low)
            .map_err(|e| BatchError::LogStart { topic: topic.to_owned(), partition, message: e.to_string() })
    }

    /// Buckets starting before this time can be in no window judged after `evaluated_at`, so events for them are
    /// too late.
    fn lateness_horizon(&self, evaluated_at: DateTime<Utc>) -> DateTime<Utc> {
        evaluated_at + self.window.bucket() - self.window.length()
    }

    /// Each newly inserted event's contribution to its bucket; duplicates and too-late events are counted only.
    fn contributions(
        &self,
        events: &[SimulationResult],
        inserted: &HashSet<String>,
        horizon: Option<DateTime<Utc>>,
    ) -> BTreeMap<DateTime<Utc>, Bucket> {
        let metrics = &self.pipeline.metrics;
        let mut seen = HashSet::with_capacity(inserted.len());
        let mut contributions: BTreeMap<DateTime<Utc>, Bucket> = BTreeMap::new();
        for event in events {
            if !inserted.contains(&event.event_id) || !seen.insert(event.event_id.as_str()) {
                metrics.events_total.with_label_values(&["duplicate"]).inc();
                continue;
            }
            let start = self.window.bucket_start(event.occurred_at);
            if horizon.is_some_and(|h| start < h) {
                metrics.events_total.with_label_values(&["too_late"]).inc();
                continue;
            }
            observe_event(metrics, event);
            let observation = Observation::of(event);
            if let Observation::Drift(score) = observation {
                metrics.v2_drift_score.observe(score);
                metrics.v2_comparison_verdict_total.with_label_values(&[Verdict::of(score).as_str()]).inc();
            }
            metrics.events_total.with_label_values(&["inserted"]).inc();
            contributions.entry(start).or_default().record(observation);
        }
        contributions
    }

    /// Sends every dead letter with headers saying where it came from and why, and waits for each delivery.
    async fn send_dead_letters(&self, dead: &[DeadLetter<'_>]) -> Result<(), BatchError> {
        if dead.is_empty() {
            return Ok(());
        }
        let p = self.pipeline;
        let dlq = p.kafka.dlq_topic.as_str();
        let mut sender = ConfirmedSender::new(&self.dlq);
        for d in dead {
            let m = d.message;
            let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
            let headers = OwnedHeaders::new()
                .insert(Header { key: "costsim.source.topic", value: Some(m.topic()) })
                .insert(Header { key: "costsim.source.partition", value: Some(&partition) })
                .insert(Header { key: "costsim.source.offset", value: Some(&offset) })
                .insert(Header { key: "costsim.error.class", value: Some(d.class) })
                .insert(Header { key: "costsim.error.message", value: Some(&d.reason) });
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), class = d.class,
                error = %d.reason, "Sending a record to the dead-letter topic.");
            sender
                .send_with_headers(dlq, m.key(), m.payload().unwrap_or_default(), Some(headers))
                .await
                .map_err(|e| BatchError::DeadLetter { topic: dlq.to_owned(), message: e.to_string() })?;
        }
        let (counts, first_error) = sender.finish().await;
        if let Some(message) = first_error {
            return Err(BatchError::DeadLetter { topic: dlq.to_owned(), message });
        }
        for d in dead {
            p.metrics.dlq_records_total.with_label_values(&[d.class]).inc();
        }
        p.metrics.events_total.with_label_values(&["dead_letter"]).inc_by(counts.ok);
        Ok(())
    }
}

/// The per-event metrics the older system declared and never recorded (`domain.md` §8.1): V2 status, V2 run time
/// and |V2 − V1| cost.
fn observe_event(metrics: &crate::metrics::Metrics, event: &SimulationResult) {
    metrics.v2_simulations_total.with_label_values(&[event.v2_status.as_str()]).inc();
    if let Some(ms) = event.v2_duration_ms {
        metrics.v2_simulation_duration_ms.observe(ms as f64);
    }
    if let Some(v2) = event.v2_cost_cents {
        metrics.v2_cost_delta_cents.observe(v2.abs_diff(event.v1_cost_cents) as f64);
    }
}
