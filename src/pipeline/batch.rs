//! One partition's batch in one transaction: fence on the stored offset, dead letters, provenance, bucket updates,
//! the new offset, and the decisions of every bucket that closed.

use std::collections::{BTreeMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::{Header, Headers as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer as _};
use sqlx::PgConnection;

use super::bounds::Breach;
use super::dead_letters::{CLASS_HEADER, DEAD_LETTERED_AT_HEADER, DeadLetterLog};
use super::flow::Batch;
use super::{Pipeline, gaps};
use crate::codec::WriterKind;
use crate::drift::{Observation, Verdict};
use crate::event::SimulationResult;
use crate::kafka::{ConfirmedSender, RecordCopy};
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
    /// Shared by the batches of every partition.
    pub dead_letter_log: DeadLetterLog,
}

impl<'p> Batcher<'p> {
    /// Prepares the dead-letter producer.
    pub fn new(pipeline: &'p Pipeline, window: WindowSpec) -> anyhow::Result<Self> {
        let dlq = pipeline.kafka.dead_letter_producer()?;
        Ok(Batcher { pipeline, window, dlq, dead_letter_log: DeadLetterLog::default() })
    }

    /// Applies the records of one partition (in offset order) in one transaction. When PostgreSQL refuses the
    /// batch for good (a data exception, a check violation, a program limit: see [`is_permanent`]), the batch is
    /// halved until each refused record stands alone; those are dead-lettered as `rejected_by_database` with the
    /// SQLSTATE and message, and the rest commits. Transient failures are returned for the caller to retry; parts
    /// already committed are then skipped by the offset fence.
    pub async fn commit(&self, partition: i32, batch: &Batch) -> Result<Outcome, BatchError> {
        let err = match self.commit_part(partition, batch, None).await {
            Err(BatchError::Database(err)) if is_permanent(&err) => err,
            other => return other,
        };
        tracing::warn!(partition, records = batch.records.len(), error = %err,
            "PostgreSQL refused the batch for good; isolating the records it refuses.");
        // Parts in offset order, each with its failure when already known: a part commits only after every part
        // before it did, or the offset fence would skip the records of a part still being isolated.
        let mut parts: VecDeque<(Batch, Option<sqlx::Error>)> = VecDeque::from([(batch.clone(), Some(err))]);
        let mut outcome = Outcome::AlreadyDone;
        while let Some((part, failed)) = parts.pop_front() {
            let err = match failed {
                Some(err) => err,
                None => match self.commit_part(partition, &part, None).await {
                    Ok(Outcome::Seek(offset)) => return Ok(Outcome::Seek(offset)),
                    Ok(done) => {
                        outcome = outcome.then(done);
                        continue;
                    }
                    Err(BatchError::Database(err)) if is_permanent(&err) => err,
                    Err(other) => return Err(other),
                },
            };
            if part.records.len() > 1 {
                let (front, back) = part.halves();
                parts.push_front((back, None));
                parts.push_front((front, None));
                continue;
            }
            let breach = Breach { class: "rejected_by_database", reason: describe_rejection(&err) };
            match self.commit_part(partition, &part, Some(&breach)).await? {
                Outcome::Seek(offset) => return Ok(Outcome::Seek(offset)),
                done => outcome = outcome.then(done),
            }
        }
        Ok(outcome)
    }

    /// One transaction over `batch`; with `reject`, every new record is dead-lettered for that reason instead of
    /// applied (its offset still commits).
    async fn commit_part(&self, partition: i32, batch: &Batch, reject: Option<&Breach>) -> Result<Outcome, BatchError> {
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
        let mut tally = Tally { duplicate: (records.len() - fresh.len()) as u64, ..Tally::default() };
        self.account_for_gaps(&mut tx, partition, position.next_offset, &fresh, &mut tally).await?;

        let now = Utc::now();
        let limits = p.settings.limits();
        let mut events = Vec::with_capacity(fresh.len());
        let mut origins = Vec::with_capacity(fresh.len());
        let mut dead = Vec::new();
        for message in &fresh {
            let payload = message.payload().unwrap_or_default();
            let checked = match reject {
                Some(breach) => Err(breach.clone()),
                None => limits
                    .check_size(payload.len())
                    .and_then(|()| {
                        p.writers.decode(payload).map_err(|err| Breach { class: err.class(), reason: err.to_string() })
                    })
                    .and_then(|decoded| {
                        if decoded.writer == WriterKind::LegacyFingerprint {
                            tally.legacy_fingerprint += 1;
                        }
                        limits.check_event(&decoded.event, now).map(|()| decoded.event)
                    }),
            };
            match checked {
                Ok(event) => {
                    events.push(event);
                    origins.push(Some(provenance::KafkaOrigin { topic, partition, offset: message.offset() }));
                }
                Err(Breach { class, reason }) => dead.push(DeadLetter { message, class, reason }),
            }
        }
        self.send_dead_letters(&dead).await?;
        tally.dead_letters = dead.iter().map(|d| d.class).collect();

        let refs: Vec<&SimulationResult> = events.iter().collect();
        let inserted = provenance::insert(&mut tx, &refs, &origins).await?;
        let breaker = crate::store::breaker::get(&mut tx, &p.settings.breaker).await?;
        let evaluated_at = breaker.and_then(|r| r.last_evaluated_at);
        let horizon = evaluated_at.map(|at| self.lateness_horizon(at));
        let contributions = self.contributions(&events, &inserted, horizon, &mut tally);
        let source = buckets::Source { breaker: &p.settings.breaker, topic, partition };
        buckets::merge(&mut tx, source, &contributions).await?;

        let last = fresh.last().expect("fresh is not empty");
        let watermark = events.iter().map(|e| e.occurred_at).max().or(position.watermark);
        let next_offset = last.offset() + 1;
        offsets::save(&mut tx, group, topic, partition, offsets::Position { next_offset, watermark }).await?;
        super::evaluate::closed_buckets(p, self.window, &mut tx, evaluated_at).await?;
        tx.commit().await?;
        tally.count(&p.metrics, &events);
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
        tally: &mut Tally,
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
                tally.lost += (lost.end - lost.start) as u64;
            }
            if let Some(skipped) = split.unreadable {
                tracing::debug!(
                    topic,
                    partition,
                    first_offset = skipped.start,
                    end_offset = skipped.end,
                    "Skipped offsets without a readable record."
                );
                tally.unreadable += (skipped.end - skipped.start) as u64;
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

    /// Each newly inserted event's contribution to its bucket; duplicates and too-late events are only tallied.
    fn contributions(
        &self,
        events: &[SimulationResult],
        inserted: &HashSet<String>,
        horizon: Option<DateTime<Utc>>,
        tally: &mut Tally,
    ) -> BTreeMap<DateTime<Utc>, Bucket> {
        let mut seen = HashSet::with_capacity(inserted.len());
        let mut contributions: BTreeMap<DateTime<Utc>, Bucket> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            if !inserted.contains(&event.event_id) || !seen.insert(event.event_id.as_str()) {
                tally.duplicate += 1;
                continue;
            }
            let start = self.window.bucket_start(event.occurred_at);
            if horizon.is_some_and(|h| start < h) {
                tally.too_late += 1;
                continue;
            }
            tally.inserted.push(index);
            contributions.entry(start).or_default().record(Observation::of(event));
        }
        contributions
    }

    /// Sends every dead letter and waits for each delivery. A dead letter keeps the original key, value,
    /// headers and timestamp, and adds ours (`costsim.*`) and Kafka Connect's (`__connect.errors.*`), so tools
    /// made for Connect's dead-letter queues read it too.
    async fn send_dead_letters(&self, dead: &[DeadLetter<'_>]) -> Result<(), BatchError> {
        if dead.is_empty() {
            return Ok(());
        }
        let p = self.pipeline;
        let dlq = p.kafka.dlq_topic.as_str();
        let mut sender = ConfirmedSender::new(&self.dlq);
        let dead_lettered_at = crate::event::format_rfc3339_millis(&Utc::now());
        for d in dead {
            let m = d.message;
            let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
            let mut headers = OwnedHeaders::new();
            if let Some(original) = m.headers() {
                for header in original.iter() {
                    headers = headers.insert(header);
                }
            }
            for (key, value) in [
                ("costsim.source.topic", m.topic()),
                ("costsim.source.partition", &partition),
                ("costsim.source.offset", &offset),
                (CLASS_HEADER, d.class),
                ("costsim.error.message", &d.reason),
                (DEAD_LETTERED_AT_HEADER, &dead_lettered_at),
                ("__connect.errors.topic", m.topic()),
                ("__connect.errors.partition", &partition),
                ("__connect.errors.offset", &offset),
                ("__connect.errors.exception.class.name", d.class),
                ("__connect.errors.exception.message", &d.reason),
            ] {
                headers = headers.insert(Header { key, value: Some(value) });
            }
            self.dead_letter_log.record(d.class, m.topic(), m.partition(), m.offset(), &d.reason);
            let copy = RecordCopy {
                key: m.key(),
                payload: m.payload().unwrap_or_default(),
                timestamp: m.timestamp().to_millis(),
            };
            sender
                .send_copy(dlq, copy, headers)
                .await
                .map_err(|e| BatchError::DeadLetter { topic: dlq.to_owned(), message: e.to_string() })?;
        }
        let (_, first_error) = sender.finish().await;
        if let Some(message) = first_error {
            return Err(BatchError::DeadLetter { topic: dlq.to_owned(), message });
        }
        Ok(())
    }
}

/// What a batch counts, applied to the metrics only once its transaction committed: a batch retried after a
/// failure counts once.
#[derive(Debug, Default)]
struct Tally {
    duplicate: u64,
    too_late: u64,
    lost: u64,
    unreadable: u64,
    /// Records read under an old (apache-avro) fingerprint of their writer.
    legacy_fingerprint: u64,
    /// Indexes of the events inserted and counted in their bucket.
    inserted: Vec<usize>,
    /// The class of each dead letter sent.
    dead_letters: Vec<&'static str>,
}

impl Tally {
    /// Adds the batch's counts to the metrics; `events` are the batch's decoded events.
    fn count(&self, metrics: &crate::metrics::Metrics, events: &[SimulationResult]) {
        let outcome = |label: &str, n: u64| metrics.events_total.with_label_values(&[label]).inc_by(n);
        outcome("duplicate", self.duplicate);
        outcome("too_late", self.too_late);
        outcome("inserted", self.inserted.len() as u64);
        outcome("dead_letter", self.dead_letters.len() as u64);
        metrics.records_lost_to_retention_total.inc_by(self.lost);
        metrics.offsets_skipped_total.inc_by(self.unreadable);
        metrics.legacy_fingerprint_records_total.inc_by(self.legacy_fingerprint);
        for class in &self.dead_letters {
            metrics.dlq_records_total.with_label_values(&[class]).inc();
        }
        for event in self.inserted.iter().map(|&i| &events[i]) {
            observe_event(metrics, event);
            if let Observation::Drift(score) = Observation::of(event) {
                metrics.v2_drift_score.observe(score);
                metrics.v2_comparison_verdict_total.with_label_values(&[Verdict::of(score).as_str()]).inc();
            }
        }
    }
}

impl Outcome {
    /// The outcome of two consecutive parts of one batch.
    fn then(self, next: Outcome) -> Outcome {
        match (self, next) {
            (Outcome::Committed { records: a, .. }, Outcome::Committed { next_offset, records: b }) => {
                Outcome::Committed { next_offset, records: a + b }
            }
            (Outcome::Committed { .. }, _) => self,
            (_, next) => next,
        }
    }
}

/// Whether PostgreSQL refused the data itself, so retrying the same records can never succeed: data exceptions
/// (class 22: a NUL byte, a value out of range), a NOT NULL or check violation, a program limit (an index entry
/// too large). Connection losses, timeouts, serialization failures and deadlocks are transient.
pub fn is_permanent(err: &sqlx::Error) -> bool {
    let Some(code) = err.as_database_error().and_then(|e| e.code()) else { return false };
    code.starts_with("22") || matches!(code.as_ref(), "23502" | "23514" | "54000" | "54001")
}

/// The dead letter's reason for a record PostgreSQL refused: the SQLSTATE and the server's message.
fn describe_rejection(err: &sqlx::Error) -> String {
    match err.as_database_error() {
        Some(db) => {
            format!("PostgreSQL refused the record: SQLSTATE {}: {}", db.code().unwrap_or_default(), db.message())
        }
        None => format!("PostgreSQL refused the record: {err}"),
    }
}

/// The per-event metrics the older system declared and never recorded (docs/DOMAIN.md, *Metric names*): V2 status, V2
/// run time and |V2 − V1| cost.
fn observe_event(metrics: &crate::metrics::Metrics, event: &SimulationResult) {
    metrics.v2_simulations_total.with_label_values(&[event.v2_status.as_str()]).inc();
    if let Some(ms) = event.v2_duration_ms {
        metrics.v2_simulation_duration_ms.observe(ms as f64);
    }
    if let Some(v2) = event.v2_cost_cents {
        metrics.v2_cost_delta_cents.observe(v2.abs_diff(event.v1_cost_cents) as f64);
    }
}
