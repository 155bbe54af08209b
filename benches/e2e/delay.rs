//! Decision delay: from producing breaching events to their trip's state event on the state topic, under a
//! background stream, over many trips (each re-armed with `breaker enable`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use costsim_breaker::codec::{decode_breaker_state_changed, encode_simulation_result};
use costsim_breaker::event::{BreakerState, BreakerStateChanged, V2Status};
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::procs::{self, Processor};

/// The engine settings of the delay phase: 0.25 s buckets, a 2 s window, a trip on the first breach.
pub const SETTINGS: &[&str] = &[
    "bucket_seconds=0.25",
    "window_seconds=2",
    "failure_threshold=1",
    "min_samples=50",
    "probation_seconds=2",
    "disable_ttl_seconds=3600",
];

/// The bucket of [`SETTINGS`], in milliseconds.
const BUCKET_MS: i64 = 250;

/// Breaching events per trip: 3,000 at drift 0.6 against 10,000/s of drift near 0.09 puts well over 5 % of a 2 s
/// window above the threshold.
const BURST: u64 = 3000;

/// What the delay phase measured.
pub struct Delays {
    /// Seconds from the first breaching event sent to the trip's state event read from the topic.
    pub from_produce: Vec<f64>,
    /// Seconds from the end of the bucket holding the burst (when the decision may first be taken) to the same.
    pub from_bucket_close: Vec<f64>,
    /// Seconds from the bucket's end to the start of the transaction that decided (the outbox row's `created_at`).
    pub to_decision: Vec<f64>,
    /// Seconds from that transaction's start to the relay marking the state event delivered (`published_at`).
    pub to_published: Vec<f64>,
    /// Background events per second actually sent.
    pub background_rate: f64,
}

/// Runs `trips` trips against a processor already started with [`SETTINGS`] on `kafka` and `database_url`.
pub async fn measure(
    kafka: &KafkaConfig,
    database_url: &str,
    pool: &PgPool,
    processor: &mut Processor,
    trips: usize,
    rate: f64,
) -> anyhow::Result<Delays> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(kafka.clone(), events_tx));
    let stop = CancellationToken::new();
    let background = tokio::spawn(background(kafka.clone(), rate, stop.clone()));
    // Warm up: the group joined, the backlog is read and buckets are being judged.
    let warm = Instant::now();
    loop {
        processor.check_alive()?;
        let judged: Option<bool> =
            sqlx::query_scalar("SELECT last_evaluated_at IS NOT NULL FROM costsim_cb_state LIMIT 1")
                .fetch_optional(pool)
                .await
                .ok()
                .flatten();
        if judged == Some(true) && warm.elapsed() > Duration::from_secs(5) {
            break;
        }
        anyhow::ensure!(warm.elapsed() < Duration::from_secs(120), "the processor judged no bucket in 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let producer = kafka.producer()?;
    let mut delays = Delays {
        from_produce: vec![],
        from_bucket_close: vec![],
        to_decision: vec![],
        to_published: vec![],
        background_rate: 0.0,
    };
    // Trip 0 warms up what only the first trip uses (the first incident, the relay's first delivery) and is not
    // counted; its delay is printed like the others.
    for trip in 0..=trips {
        let sent_at = Utc::now();
        let mut sender = ConfirmedSender::new(&producer);
        for event in burst(trip as u64, sent_at) {
            sender.send(&kafka.results_topic, event.tenant_id.as_bytes(), &encode_simulation_result(&event)).await?;
        }
        let (_, error) = sender.finish().await;
        anyhow::ensure!(error.is_none(), "burst not delivered: {error:?}");
        let (seen_at, change) = wait_for(&mut events, BreakerState::Open, processor).await?;
        let bucket_end = DateTime::from_timestamp_millis((sent_at.timestamp_millis() / BUCKET_MS + 1) * BUCKET_MS)
            .expect("in range");
        let secs = |d: TimeDelta| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        if trip > 0 {
            delays.from_produce.push(secs(seen_at - sent_at));
            delays.from_bucket_close.push(secs(seen_at - bucket_end));
        }
        crate::say(&format!(
            "  trip {trip}/{trips}{}: state event v{} {:.3} s after the burst, {:.3} s after its bucket closed",
            if trip == 0 { " (warm-up, not counted)" } else { "" },
            change.version,
            secs(seen_at - sent_at),
            secs(seen_at - bucket_end)
        ));
        // Pacing, not waiting for a condition: the burst's bucket must leave the 2 s window before re-arming,
        // or the next evaluation would trip again on the same burst.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut enable = procs::cli(kafka, database_url);
        enable.args(["breaker", "enable", "--reason", "benchmark re-arm", "--actor", "costsim-bench"]);
        procs::run_cli(enable, "breaker enable").await?;
        wait_for(&mut events, BreakerState::Closed, processor).await?;
    }
    stop.cancel();
    delays.background_rate = background.await.context("background sender panicked")??;
    // The same trips taken apart from the outbox rows (the warm-up trip's row is the first).
    let parts: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM created_at - (payload->>'occurred_at')::timestamptz)::float8, \
         extract(epoch FROM published_at - created_at)::float8 FROM costsim_breaker_events \
         WHERE payload->>'to_state' = 'open' AND published_at IS NOT NULL ORDER BY version OFFSET 1",
    )
    .fetch_all(pool)
    .await
    .context("cannot read the state events' times")?;
    (delays.to_decision, delays.to_published) = parts.into_iter().unzip();
    watcher.abort();
    Ok(delays)
}

/// Waits for the next state event into `to`, skipping others.
async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<(DateTime<Utc>, BreakerStateChanged)>,
    to: BreakerState,
    processor: &mut Processor,
) -> anyhow::Result<(DateTime<Utc>, BreakerStateChanged)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        processor.check_alive()?;
        let left = deadline
            .checked_duration_since(Instant::now())
            .with_context(|| format!("no state event into {to} in 60 s"))?;
        match tokio::time::timeout(left.min(Duration::from_secs(1)), events.recv()).await {
            Ok(Some((at, change))) if change.to_state == to => return Ok((at, change)),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => anyhow::bail!("the state-topic watcher stopped"),
        }
    }
}

/// Breaching events stamped `at`: V2 costs twice V1 plus one dollar, drift 0.6 each.
fn burst(seed: u64, at: DateTime<Utc>) -> impl Iterator<Item = costsim_breaker::event::SimulationResult> {
    Generator::new(GeneratorConfig {
        count: BURST,
        profile: DriftProfile::Steady,
        start: at,
        events_per_second: 1e9,
        seed: 1_000_000 + seed,
        tenants: 50,
    })
    .map(move |mut e| {
        e.occurred_at = at;
        e.v2_status = V2Status::Success;
        e.v2_cost_cents = Some(e.v1_cost_cents * 2 + 100);
        e.v2_feasible = Some(e.v1_feasible);
        e
    })
}

/// Sends steady events stamped with the wall clock at `rate` per second until `stop`; returns the rate achieved.
async fn background(kafka: KafkaConfig, rate: f64, stop: CancellationToken) -> anyhow::Result<f64> {
    let producer = kafka.producer()?;
    let mut sender = ConfirmedSender::new(&producer);
    let mut events = Generator::new(GeneratorConfig {
        count: u64::MAX,
        profile: DriftProfile::Steady,
        start: Utc::now(),
        events_per_second: rate,
        seed: 7,
        tenants: 50,
    });
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.is_cancelled() {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        let now = Utc::now();
        while sent < due {
            let mut event = events.next().expect("endless");
            event.occurred_at = now;
            sender.send(&kafka.results_topic, event.tenant_id.as_bytes(), &encode_simulation_result(&event)).await?;
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (counts, error) = sender.finish().await;
    anyhow::ensure!(error.is_none(), "background records not delivered: {error:?}");
    Ok(counts.ok as f64 / elapsed)
}

/// Forwards every state event of the state topic with the wall-clock time it was read.
async fn watch(
    kafka: KafkaConfig,
    out: mpsc::UnboundedSender<(DateTime<Utc>, BreakerStateChanged)>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", "costsim-bench-watch")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&kafka.state_topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    loop {
        let message = consumer.recv().await?;
        let seen = Utc::now();
        if let Ok(change) = decode_breaker_state_changed(message.payload().unwrap_or_default())
            && out.send((seen, change)).is_err()
        {
            return Ok(());
        }
    }
}

/// The nearest-rank percentile `q` (0 to 1) of `values`.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
