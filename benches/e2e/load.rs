//! Records in and out of Kafka for the benchmark: a generated stream sent with confirmed deliveries, the
//! processor driven to a count (with the input topped up while it reads), and a plain reader.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

use crate::procs::Processor;

/// Event-time density of the throughput streams: 1,000 events per second, so 5M events span 83 minutes.
pub const EVENTS_PER_SECOND: f64 = 1000.0;

/// A steady generated stream ending before now (no event is in the future), sent in chunks.
pub struct Feed {
    events: Generator,
    producer: FutureProducer,
    topic: String,
    /// Records delivered so far.
    pub produced: u64,
}

impl Feed {
    /// A stream of `count` events on `kafka`'s results topic.
    pub fn new(kafka: &KafkaConfig, count: u64, seed: u64) -> anyhow::Result<Self> {
        Self::of(kafka, stream_config(count, seed))
    }

    /// The stream `config` generates, on `kafka`'s results topic.
    pub fn of(kafka: &KafkaConfig, config: GeneratorConfig) -> anyhow::Result<Self> {
        Ok(Feed {
            events: Generator::new(config),
            producer: kafka.producer()?,
            topic: kafka.results_topic.clone(),
            produced: 0,
        })
    }

    /// Sends the next `n` events and waits for their deliveries.
    pub async fn send(&mut self, n: u64) -> anyhow::Result<()> {
        let mut sender = ConfirmedSender::new(&self.producer);
        for event in self.events.by_ref().take(n as usize) {
            sender.send(&self.topic, event.tenant_id.as_bytes(), &encode_simulation_result(&event)).await?;
        }
        let (counts, error) = sender.finish().await;
        if let Some(error) = error {
            anyhow::bail!("{} records not delivered: {error}", counts.failed);
        }
        self.produced += counts.ok;
        Ok(())
    }
}

/// The generator settings of the throughput streams (the COPY file uses the same, so the rows are the same).
pub fn stream_config(count: u64, seed: u64) -> GeneratorConfig {
    stream_config_at(count, seed, Utc::now() - stream_span(count) - TimeDelta::minutes(10))
}

/// The event time `count` events of a throughput stream cover.
pub fn stream_span(count: u64) -> TimeDelta {
    TimeDelta::milliseconds((count as f64 / EVENTS_PER_SECOND * 1000.0) as i64)
}

/// The generator settings of a throughput stream whose first event is stamped `start` (to the second).
pub fn stream_config_at(count: u64, seed: u64, start: DateTime<Utc>) -> GeneratorConfig {
    GeneratorConfig {
        count,
        profile: DriftProfile::Steady,
        start: fixed_start(start),
        events_per_second: EVENTS_PER_SECOND,
        seed,
        tenants: 50,
    }
}

fn fixed_start(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("in range")
}

/// How the input arrives while the processor runs.
pub enum Supply<'f> {
    /// Everything was produced beforehand.
    Upfront,
    /// Produced while the processor reads, keeping its backlog between `low` and `high` records (the mock
    /// broker keeps only 5 MiB per partition, so it cannot hold a large backlog).
    TopUp { feed: &'f mut Feed, low: u64, high: u64 },
}

/// When the processor's progress was first seen and when it reached the target.
pub struct Drive {
    /// Records committed when progress was first seen.
    pub first_count: u64,
    /// Elapsed from the first progress to the target.
    pub elapsed: Duration,
    /// Resident bytes of the processor as its committed count passed each whole million.
    pub rss: Vec<(u64, u64)>,
}

impl Drive {
    /// Records per second from the first progress seen to the target.
    pub fn rate(&self, target: u64) -> f64 {
        (target - self.first_count) as f64 / self.elapsed.as_secs_f64()
    }
}

/// How long the committed count may stand still before the phase fails: a broker that stops serving the group
/// (tansu, once, after a session timeout) would otherwise hold the whole benchmark for its hour.
const STALL: Duration = Duration::from_secs(180);

/// Waits until the processor has committed `target` records of `topic`, feeding it as `supply` says; prints
/// progress every 10 s; fails when nothing is committed for [`STALL`].
pub async fn drive(
    pool: &PgPool,
    topic: &str,
    processor: &mut Processor,
    target: u64,
    mut supply: Supply<'_>,
) -> anyhow::Result<Drive> {
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let mut report = Instant::now();
    let mut rss = Vec::new();
    let mut next_million = (crate::db::processed(pool, topic).await / 1_000_000 + 1) * 1_000_000;
    let mut moved = (Instant::now(), 0u64);
    loop {
        let done = crate::db::processed(pool, topic).await;
        if done != moved.1 {
            moved = (Instant::now(), done);
        }
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= next_million {
            rss.push((next_million, processor.rss_bytes()?));
            next_million = (done / 1_000_000 + 1) * 1_000_000;
        }
        if done >= target {
            let (at, first_count) = first.expect("progress seen");
            return Ok(Drive { first_count, elapsed: at.elapsed(), rss });
        }
        if let Supply::TopUp { feed, low, high } = &mut supply {
            let backlog = feed.produced.saturating_sub(done);
            if feed.produced < target && backlog < *low {
                feed.send((*high - backlog).min(target - feed.produced)).await?;
            }
        }
        processor.check_alive()?;
        if report.elapsed() >= Duration::from_secs(10) {
            report = Instant::now();
            let rate = first.map(|(at, n)| (done - n) as f64 / at.elapsed().as_secs_f64()).unwrap_or(0.0);
            crate::say(&format!("  … {done} of {target} committed ({rate:.0} records/s)"));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "no completion within an hour ({done} of {target})"
        );
        anyhow::ensure!(
            moved.0.elapsed() < STALL,
            "no progress for {} s at {done} of {target} committed (the processor's log: {})",
            STALL.as_secs(),
            processor.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `topic` from its beginning with a plain consumer (assigned partitions, no group, no processing), again
/// and again until `target` records were read; returns records and seconds from the first record to the last.
pub fn plain_read(kafka: &KafkaConfig, topic: &str, target: u64) -> anyhow::Result<(u64, f64)> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "costsim-bench-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("cannot create the reader")?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut per_pass = 0u64;
    let mut starts = Vec::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        per_pass += (high - low) as u64;
        starts.push((*p, low));
    }
    anyhow::ensure!(per_pass > 0, "{topic} is empty");
    let mut read = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while read < target {
        let mut tpl = TopicPartitionList::new();
        // Explicit offsets, as `backtest --topic` reads: tansu did not serve this reader from `Offset::Beginning`.
        for (p, low) in &starts {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*low))?;
        }
        consumer.assign(&tpl)?;
        let mut this_pass = 0u64;
        let deadline = Instant::now() + Duration::from_secs(600);
        while this_pass < per_pass && read < target {
            anyhow::ensure!(Instant::now() < deadline, "the reader stalled at {read} records");
            match consumer.poll(Duration::from_secs(1)) {
                Some(Ok(message)) => {
                    std::hint::black_box(message.payload_len());
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    this_pass += 1;
                    read += 1;
                }
                Some(Err(e)) => anyhow::bail!("read error: {e}"),
                None => {}
            }
        }
    }
    let first = first.expect("records were read");
    Ok((read, last.duration_since(first).as_secs_f64()))
}
