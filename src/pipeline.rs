//! The processor behind `run`: consumes simulation results and, per partition and batch, commits ONE PostgreSQL
//! transaction holding the provenance rows, the drift-bucket updates, the consumed offset, the breaker decisions of
//! every bucket that closed, and their incident, alert and state-event rows.
//!
//! # Delivery guarantee
//! Every record of the results topic has its effects exactly once, across crashes, restarts and rebalances:
//! - the next offset of each partition lives in `costsim_consumed_offsets` and is updated in the batch's
//!   transaction, under a row lock taken first; a batch whose records lie below that offset is dropped (already
//!   done), one that starts above it is refused and the partition seeks back. So a zombie consumer that lost its
//!   partition, or a record re-delivered after a crash, can never apply twice, and nothing is skipped;
//! - provenance is idempotent on `event_id` too, and only newly inserted events reach the window, so an event
//!   produced twice counts once;
//! - breaker decisions are taken under the breaker row's lock, once per closed bucket (`last_evaluated_at`), over
//!   the buckets of all partitions, so N instances decide as one would;
//! - undecodable or invalid records go to the dead-letter topic, and the delivery is confirmed before the
//!   transaction that advances past them commits (a crash in between may repeat a dead letter, never lose one);
//! - a transient failure (database or broker unreachable) rolls back and retries with capped backoff; the offset
//!   does not move meanwhile;
//! - offsets skipped inside one continuous read of librdkafka's (see [`flow::Batch`]) are accounted for in the
//!   transaction that moves past them: below the partition's log start they are records the broker deleted
//!   before they were applied (retention outran the processor), each range a row of `costsim_lost_records`, an
//!   error and `costsim_records_lost_to_retention_total`; above it they hold no readable record (transaction
//!   markers, aborted or compacted records) and are counted in `costsim_offsets_skipped_total`. A batch that starts
//!   past the stored offset without such a read behind it makes the partition seek back first.
//!
//! It depends on: PostgreSQL being the only writer of these tables' truth, and librdkafka delivering a
//! partition's records in offset order within a read, discarding what it fetched before a seek. Kafka group
//! commits are made after each transaction for lag tools only; nothing reads them back except as a starting
//! position, which the fence corrects.

mod batch;
pub mod bounds;
pub mod dead_letters;
mod evaluate;
mod flow;
mod gaps;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::breaker::BreakerConfig;
use crate::http::{Dependency, describe_db_error};
use crate::kafka::KafkaConfig;
use crate::metrics::Metrics;
use crate::store::breaker::ApplySettings;
use crate::window::WindowSpec;
use evaluate::JudgeSchedule;
use flow::{Batch, Flow};

pub use batch::BatchError;

/// How the processor batches and judges; every field is a flag and an environment variable of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineSettings {
    /// Largest number of records of one partition committed in one transaction.
    #[arg(long, env = "COSTSIM_BATCH_MAX_RECORDS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_max_records: u32,
    /// Longest time, in milliseconds, a record waits in a batch before its transaction starts.
    #[arg(long, env = "COSTSIM_BATCH_MAX_WAIT_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub batch_max_wait_ms: u64,
    /// Seconds after which a partition with no new records (or nobody consuming it) stops holding back the
    /// event-time watermark; decisions wait at most this long for a quiet partition.
    #[arg(long, env = "COSTSIM_IDLE_PARTITION_SECONDS", default_value_t = 10.0, value_parser = idle_seconds)]
    pub idle_partition_seconds: f64,
    /// Events further in the future than this many seconds (by the wall clock) are dead-lettered: one bogus
    /// timestamp would otherwise close every bucket up to it.
    #[arg(long, env = "COSTSIM_MAX_FUTURE_SKEW_SECONDS", default_value_t = 300)]
    pub max_future_skew_seconds: u64,
    /// Events older than this many seconds (by the wall clock) are dead-lettered as `past_event`; the default is
    /// 30 days, as long as provenance is kept.
    #[arg(long, env = "COSTSIM_MAX_PAST_SECONDS", default_value_t = 30 * 86_400)]
    pub max_past_seconds: u64,
    /// Largest string field of an event, in bytes (PostgreSQL's index entries end near 2.7 kB); longer ones are
    /// dead-lettered as `field_too_long`.
    #[arg(long, env = "COSTSIM_MAX_FIELD_BYTES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=2048))]
    pub max_field_bytes: u32,
    /// Largest record value, in bytes; larger ones are dead-lettered unread as `record_too_large`.
    #[arg(long, env = "COSTSIM_MAX_RECORD_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_record_bytes: u32,
    /// The breaker these events feed.
    #[arg(long = "breaker", env = "COSTSIM_BREAKER_NAME", default_value = "costsim_v2")]
    pub breaker: String,
    /// Static group membership: this replica's `group.instance.id`, stable across its restarts and unique in the
    /// group, so a restarted replica gets its partitions back at once [default: none, dynamic membership].
    #[arg(long, env = "COSTSIM_GROUP_INSTANCE_ID", value_name = "ID")]
    pub group_instance_id: Option<String>,
    /// Static group membership with INSTANCE_ID (`--instance`) as the `group.instance.id`, which must then be set
    /// and unique per replica (a StatefulSet's pod name, say).
    #[arg(long, env = "COSTSIM_STATIC_MEMBERSHIP")]
    pub static_membership: bool,
}

/// A quiet-partition timeout: a finite number of seconds above 0 and at most a day (a negative or NaN value would
/// let every partition, or none, hold back the watermark).
fn idle_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        Ok(_) => Err(format!("`{s}` is not between 0 (exclusive) and 86400 seconds")),
        Err(e) => Err(format!("`{s}` is not a number of seconds: {e}")),
    }
}

/// Everything the processor needs, built once by `run`.
pub struct Pipeline {
    /// Pooled connections for batch transactions.
    pub pool: PgPool,
    /// Brokers, topics and group.
    pub kafka: KafkaConfig,
    /// Batching and judging settings.
    pub settings: PipelineSettings,
    /// The breaker engine's settings.
    pub engine: BreakerConfig,
    /// What decisions write besides the state.
    pub apply: ApplySettings,
    /// Where to count.
    pub metrics: Metrics,
    /// Readiness, set not ready while a dependency fails.
    pub health: crate::http::Health,
    /// The writer schemas records may come with.
    pub writers: crate::codec::WriterSchemas,
    /// The registry of Confluent-framed records' schemas, if one is configured.
    pub registry: Option<crate::registry::Registry>,
}

/// Batches' worth of records a partition may have waiting before reading stops.
const PAUSE_AFTER_BATCHES: usize = 8;
/// How long a partition's batch commits before the partition counts as stalled and is paused alone.
const STALL: Duration = Duration::from_secs(2);

/// What the consumer's context shares with the processing loop.
struct Context {
    metrics: Metrics,
    topic: String,
    /// Partitions newly assigned, for the loop to register before their first batch.
    assigned: tokio::sync::mpsc::UnboundedSender<Vec<i32>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                let label = partition.to_string();
                self.metrics.consumer_lag_records.with_label_values(&[&label]).set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = ?partitions(tpl), "Partitions assigned.");
                // The loop may have ended already; then there is nothing left to register.
                let _ = self.assigned.send(partitions(tpl));
            }
            Rebalance::Revoke(tpl) => tracing::info!(partitions = ?partitions(tpl), "Partitions revoked."),
            Rebalance::Error(err) => tracing::warn!(error = %err, "Rebalance failed."),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl PipelineSettings {
    /// The bounds every record is checked against before the database.
    pub fn limits(&self) -> bounds::Limits {
        bounds::Limits {
            max_record_bytes: self.max_record_bytes as usize,
            max_field_bytes: self.max_field_bytes as usize,
            max_past_seconds: self.max_past_seconds,
            max_future_skew_seconds: self.max_future_skew_seconds,
        }
    }
}

impl Pipeline {
    fn window(&self) -> anyhow::Result<WindowSpec> {
        self.engine.window_spec().context("invalid window settings")
    }

    fn consumer(
        &self,
        assigned: tokio::sync::mpsc::UnboundedSender<Vec<i32>>,
    ) -> anyhow::Result<StreamConsumer<Context>> {
        let mut config = self.kafka.client_config();
        config
            .set("group.id", &self.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000")
            // A fetch that waits for new data holds back the event past a bucket's end, hence the decision
            // (librdkafka's 500 ms; tansu holds a fetch that long even while records arrive). BENCHMARKS.md.
            .set("fetch.wait.max.ms", "100");
        if let Some(id) = &self.settings.group_instance_id {
            config.set("group.instance.id", id);
        }
        for (key, value) in &self.kafka.options {
            config.set(key, value);
        }
        let context = Context { metrics: self.metrics.clone(), topic: self.kafka.results_topic.clone(), assigned };
        let consumer: StreamConsumer<Context> =
            config.create_with_context(context).context("cannot create the Kafka consumer")?;
        consumer
            .subscribe(&[&self.kafka.results_topic])
            .with_context(|| format!("cannot subscribe to {}", self.kafka.results_topic))?;
        Ok(consumer)
    }

    /// Consumes until `cancel` fires, then finishes the batches in flight (within `shutdown_deadline`) and returns.
    ///
    /// Partitions commit concurrently, each batch on its own pooled connection, but at most one batch per
    /// partition is in flight, so a partition's batches commit in offset order and the fence never sees a gap.
    /// Nothing that waits for PostgreSQL holds up the loop: batches, partition registrations and judging passes
    /// run beside it, so the consumer is polled throughout an outage (librdkafka would leave the group after
    /// `max.poll.interval.ms` otherwise) and a rebalance meanwhile is taken in, its registration retried until the
    /// database is back.
    pub async fn run(&self, cancel: CancellationToken, shutdown_deadline: Duration) -> anyhow::Result<()> {
        let window = self.window()?;
        let (assigned_tx, mut assigned) = tokio::sync::mpsc::unbounded_channel();
        let consumer = self.consumer(assigned_tx)?;
        let batcher = batch::Batcher::new(self, window)?;
        let max_records = self.settings.batch_max_records as usize;
        let max_wait = Duration::from_millis(self.settings.batch_max_wait_ms);
        // A partition counts as idle this long after its last commit (plus a batch wait of margin).
        let idle_partitions = Duration::from_secs_f64(self.settings.idle_partition_seconds) + max_wait;
        // Every partition of the topic is registered first, so partitions with a backlog hold the merged watermark
        // back from the start; until a registration commits, no batch starts and nothing is judged.
        let mut unregistered: BTreeSet<i32> = self.all_partitions(&consumer)?;
        // Declared before the futures that borrow it.
        let drain = CancellationToken::new();
        let mut flow = Flow::default();
        let mut in_flight = FuturesUnordered::new();
        let mut side: FuturesUnordered<BoxFuture<'_, Side>> = FuturesUnordered::new();
        let (mut registering, mut judging) = (false, false);
        let mut paused = Paused::default();
        let mut judge = JudgeSchedule::default();
        tracing::info!(topic = %self.kafka.results_topic, group = %self.kafka.group_id, "Processor started.");
        loop {
            batcher.dead_letter_log.flush();
            if !registering && !unregistered.is_empty() {
                let partitions: Vec<i32> = std::mem::take(&mut unregistered).into_iter().collect();
                side.push(Box::pin(self.register_until_done(partitions, &cancel)));
                registering = true;
            }
            let held = registering;
            if !held && !judging && flow.is_idle() && judge.take_due(Instant::now()) {
                side.push(Box::pin(async {
                    self.judge_closed_buckets(window).await;
                    Side::Judged
                }));
                judging = true;
            }
            if !held {
                for (partition, batch) in flow.ready(max_records, max_wait) {
                    in_flight.push(self.flush(&consumer, &batcher, partition, batch, &cancel));
                }
            }
            // Backpressure. A partition with several batches waiting stops the reading of all (librdkafka keeps
            // what it prefetched meanwhile), which is enough while its commits go on; one whose commit has stalled
            // is paused alone instead, so the other partitions go on, and resumes once nothing of it waits. Only
            // stalls pause: a pause drops librdkafka's prefetch for the partition and a resume fetches it again,
            // and pausing whenever batches waited made `run` 2 to 3 times slower on tansu (docs/RELIABILITY.md).
            let high = max_records * PAUSE_AFTER_BATCHES;
            // While a registration retries no batch starts, so every partition that far behind counts as stalled.
            let stalled = if held { flow.full(high) } else { flow.stalled(high, STALL, Instant::now()) };
            paused.follow(&consumer, &self.kafka.results_topic, &flow, stalled);
            let behind = flow.full(high).iter().any(|p| !paused.contains(*p));
            // Only a loop with nothing to commit judges on its own; otherwise the next batch judges.
            let judge_due = if flow.is_idle() && !judging && !held { judge.next() } else { None };
            let batch_due = if held { None } else { flow.due(max_wait) };
            // A partition that stops the reading of all is paused once its commit counts as stalled: wake for it.
            let stall_due = if behind { flow.stall_due(high, STALL) } else { None };
            let due = [batch_due, judge_due, stall_due].into_iter().flatten().min();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some((partition, result)) = in_flight.next() => {
                    flow.settle(partition, result?);
                    judge.after_batch(Instant::now(), max_wait, idle_partitions);
                }
                Some(done) = side.next() => match done {
                    Side::Registered => registering = false,
                    Side::Judged => judging = false,
                },
                Some(partitions) = assigned.recv() => {
                    // A batch of the old read still committing finishes first (see `Flow::reassigned`); registering
                    // waits for its row lock meanwhile.
                    flow.reassigned(&partitions);
                    paused.reassigned(&consumer, &self.kafka.results_topic, &partitions);
                    unregistered.extend(partitions);
                }
                _ = sleep_until(due) => {}
                message = consumer.recv(), if !behind => match message {
                    Ok(m) => flow.push(m.detach()),
                    Err(err) => {
                        // A fatal error (another process with this group.instance.id fenced us out) ends the
                        // consumer for good: stop loudly rather than idle.
                        if let Some((code, reason)) = consumer.client().fatal_error() {
                            anyhow::bail!("the Kafka consumer stopped for good ({code:?}): {reason}");
                        }
                        // librdkafka retries other broker errors itself; they are reported, not fatal.
                        tracing::warn!(error = %err, "Kafka consumer error.");
                        self.metrics.transient_failures_total.with_label_values(&["kafka"]).inc();
                    }
                },
            }
        }
        drop(side);
        // Finish what was read: commit it now rather than have the next owner read it again.
        let finishing = async {
            while let Some((partition, result)) = in_flight.next().await {
                flow.settle(partition, result?);
            }
            if registering || !unregistered.is_empty() {
                // Not registered yet: what waits is left for the next owner, as nothing of it was committed.
                return anyhow::Ok(());
            }
            for (partition, batch) in flow.take_all() {
                in_flight.push(self.flush(&consumer, &batcher, partition, batch, &drain));
            }
            while let Some((_, result)) = in_flight.next().await {
                result?;
            }
            // What the last batches closed is judged before the partitions go to another owner or the stream stays
            // dry; a pass that is still due would otherwise wait for the next processor's batch.
            if judge.next().is_some() {
                self.judge_closed_buckets(window).await;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(shutdown_deadline, finishing).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                ?shutdown_deadline,
                "Shutdown deadline passed with batches uncommitted; their records will be consumed again."
            ),
        }
        batcher.dead_letter_log.flush();
        tracing::info!("Processor stopped.");
        Ok(())
    }

    /// Commits one partition's batch, retrying transient failures with capped backoff until it commits or `cancel`
    /// fires (then the records are simply left for the next owner: nothing was committed). Returns the partition
    /// and, when it had to seek back, the offset it seeks to.
    async fn flush(
        &self,
        consumer: &StreamConsumer<Context>,
        batcher: &batch::Batcher<'_>,
        partition: i32,
        batch: Batch,
        cancel: &CancellationToken,
    ) -> (i32, anyhow::Result<Option<i64>>) {
        (partition, self.commit_batch(consumer, batcher, partition, batch, cancel).await)
    }

    async fn commit_batch(
        &self,
        consumer: &StreamConsumer<Context>,
        batcher: &batch::Batcher<'_>,
        partition: i32,
        batch: Batch,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Option<i64>> {
        let started = batch.records.first().map(|_| Instant::now());
        let mut backoff = retry_backoff();
        let outcome = loop {
            match batcher.commit(partition, &batch).await {
                Ok(outcome) => {
                    self.health.set_ready(Dependency::Postgres);
                    self.health.set_ready(Dependency::Kafka);
                    break outcome;
                }
                Err(err) => {
                    let (dependency, reason) = match &err {
                        BatchError::Database(e) => (Dependency::Postgres, describe_db_error(e)),
                        BatchError::LogStart { topic, .. } => {
                            (Dependency::Kafka, format!("cannot read the log start of {topic}"))
                        }
                        BatchError::DeadLetter { topic, .. } => {
                            (Dependency::Kafka, format!("cannot write the dead-letter topic {topic}"))
                        }
                        BatchError::Registry(_) => {
                            (Dependency::SchemaRegistry, "cannot fetch a writer schema from the registry".to_owned())
                        }
                    };
                    self.health.set_not_ready(dependency, reason);
                    self.metrics.transient_failures_total.with_label_values(&[dependency.as_str()]).inc();
                    let delay = backoff.next().expect("retries forever");
                    tracing::warn!(partition, error = %err, retry_in = ?delay, "Batch not committed; retrying.");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        match outcome {
            batch::Outcome::Committed { next_offset, records: n } => {
                if let Some(started) = started {
                    self.metrics.batch_commit_seconds.observe(started.elapsed().as_secs_f64());
                }
                self.metrics.batch_size.observe(n as f64);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&self.kafka.results_topic, partition, Offset::Offset(next_offset))?;
                // For lag tools only; the fence in PostgreSQL is the truth.
                if let Err(err) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::debug!(partition, error = %err, "Kafka group commit failed (lag reporting only).");
                }
            }
            batch::Outcome::Seek(offset) => {
                tracing::info!(partition, offset, "Seeking to the offset recorded in PostgreSQL.");
                let topic = &self.kafka.results_topic;
                match consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(10)) {
                    Ok(()) => return Ok(Some(offset)),
                    // The fence refuses the partition's next batch too, which asks for the seek again.
                    Err(err) => tracing::warn!(partition, offset, error = %err, "Seek failed; will retry."),
                }
            }
            batch::Outcome::AlreadyDone => {}
        }
        Ok(None)
    }
}

impl Pipeline {
    /// Judges the buckets that closed without a batch to carry the decision; a failure waits for the next batch.
    async fn judge_closed_buckets(&self, window: WindowSpec) {
        if let Err(err) = evaluate::in_own_transaction(self, window).await {
            tracing::warn!(error = %describe_db_error(&err), "Judging closed buckets failed; the next batch will.");
            self.metrics.transient_failures_total.with_label_values(&[Dependency::Postgres.as_str()]).inc();
        }
    }

    /// Every partition of the results topic, from the broker's metadata.
    fn all_partitions(&self, consumer: &StreamConsumer<Context>) -> anyhow::Result<BTreeSet<i32>> {
        let topic = self.kafka.results_topic.clone();
        let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)))
            .with_context(|| format!("cannot read the metadata of {topic}"))?;
        Ok(metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect())
    }

    /// Registers partitions (see [`crate::store::offsets::register`]), retrying with capped backoff while
    /// PostgreSQL fails, until it commits or `cancel` fires.
    async fn register_until_done(&self, partitions: Vec<i32>, cancel: &CancellationToken) -> Side {
        let mut backoff = retry_backoff();
        loop {
            match self.register(&partitions).await {
                Ok(()) => {
                    self.health.set_ready(Dependency::Postgres);
                    return Side::Registered;
                }
                Err(err) => {
                    self.health.set_not_ready(Dependency::Postgres, describe_db_error(&err));
                    self.metrics.transient_failures_total.with_label_values(&[Dependency::Postgres.as_str()]).inc();
                    let delay = backoff.next().expect("retries forever");
                    tracing::warn!(?partitions, error = %describe_db_error(&err), retry_in = ?delay,
                        "Cannot register the assigned partitions; retrying (no batch starts meanwhile).");
                    tokio::select! {
                        _ = cancel.cancelled() => return Side::Registered,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Registers partitions in one transaction.
    async fn register(&self, partitions: &[i32]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        crate::store::offsets::register(&mut tx, &self.kafka.group_id, &self.kafka.results_topic, partitions).await?;
        tx.commit().await
    }
}

/// What a task beside the batches finished.
enum Side {
    /// A registration of assigned partitions committed (or gave up at shutdown).
    Registered,
    /// A judging pass ended (a failure waits for the next batch).
    Judged,
}

/// The partitions this consumer paused because their batch is full, kept in step with [`Flow::full`].
#[derive(Default)]
struct Paused(BTreeSet<i32>);

impl Paused {
    /// Pauses the `stalled` partitions not paused yet, and resumes paused ones once nothing of theirs waits (the
    /// stall ended and what was read went into batches). librdkafka resumes a paused partition after the last record it
    /// delivered, so a pause never breaks a batch's continuous read.
    fn follow(&mut self, consumer: &StreamConsumer<Context>, topic: &str, flow: &Flow, stalled: BTreeSet<i32>) {
        let pause: Vec<i32> = stalled.difference(&self.0).copied().collect();
        let resume: Vec<i32> =
            self.0.iter().copied().filter(|p| !stalled.contains(p) && flow.waiting(*p) == 0).collect();
        if !pause.is_empty() {
            match consumer.pause(&partition_list(topic, &pause)) {
                Ok(()) => tracing::info!(partitions = ?pause, "Paused reading: their commit stalled."),
                Err(err) => tracing::warn!(partitions = ?pause, error = %err, "Cannot pause partitions."),
            }
            self.0.extend(&pause);
        }
        if !resume.is_empty() {
            match consumer.resume(&partition_list(topic, &resume)) {
                Ok(()) => tracing::info!(partitions = ?resume, "Resumed reading."),
                Err(err) => tracing::warn!(partitions = ?resume, error = %err, "Cannot resume partitions."),
            }
            for p in &resume {
                self.0.remove(p);
            }
        }
    }

    /// Whether reading `partition` is paused.
    fn contains(&self, partition: i32) -> bool {
        self.0.contains(&partition)
    }

    /// Forgets and resumes (re)assigned partitions: their waiting records were dropped, so none is full.
    fn reassigned(&mut self, consumer: &StreamConsumer<Context>, topic: &str, partitions: &[i32]) {
        let resume: Vec<i32> = partitions.iter().copied().filter(|p| self.0.remove(p)).collect();
        if !resume.is_empty()
            && let Err(err) = consumer.resume(&partition_list(topic, &resume))
        {
            tracing::warn!(partitions = ?resume, error = %err, "Cannot resume reassigned partitions.");
        }
    }
}

fn partition_list(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for partition in partitions {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

/// The backoff of every retry of the processor: from 100 ms, doubling, jittered, at most 10 s between tries.
fn retry_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        // Jitter adds up to the delay again: at most 10 s between tries.
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}
