//! `dlq`: look at the dead-letter topic (`stats`) and send its records back to the results topic after a fix
//! (`replay`).
//!
//! A replay re-publishes each chosen dead letter's original key, value, timestamp and headers (ours and Kafka
//! Connect's removed), with `costsim.replayed.from` naming the dead letter. The processor stores an event once
//! however often it arrives (provenance is idempotent on `event_id`), so replaying twice changes no table; a
//! record that is still bad is dead-lettered again, and replays skip such second-generation dead letters unless
//! `--include-replayed` asks for them, so the topic does not feed itself.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, OwnedHeaders, OwnedMessage};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::event::format_rfc3339_millis;
use crate::kafka::{ConfirmedSender, KafkaConfig, RecordCopy};

use crate::pipeline::dead_letters::{CLASS_HEADER, DEAD_LETTERED_AT_HEADER, REPLAYED_FROM_HEADER};

const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `dlq`.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Count the dead letters by class and by hour of dead-lettering.
    Stats(StatsArgs),
    /// Re-publish dead letters to the results topic (after the producer or the processor was fixed).
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
struct StatsArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kafka: KafkaConfig,
}

#[derive(Debug, Clone, clap::Args)]
struct ReplayArgs {
    /// Only dead letters of this class (repeatable), e.g. `past_event`.
    #[arg(long = "class", value_name = "CLASS")]
    classes: Vec<String>,
    /// Only dead letters set aside at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    from_time: Option<DateTime<Utc>>,
    /// Only dead letters set aside before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    to_time: Option<DateTime<Utc>>,
    /// Also replay dead letters that came from an earlier replay.
    #[arg(long)]
    include_replayed: bool,
    /// Count what would be replayed, send nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    kafka: KafkaConfig,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s).map(Into::into).map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

/// Runs `dlq`.
pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DlqCommand::Stats(args) => stats(args).await,
        DlqCommand::Replay(args) => replay(args).await,
    }
}

/// A dead letter as `dlq` sees it.
struct Letter {
    message: OwnedMessage,
    class: String,
    at: Option<DateTime<Utc>>,
    replayed: bool,
}

impl Letter {
    fn of(message: OwnedMessage) -> Letter {
        let header = |key: &str| {
            message.headers().and_then(|h| {
                h.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let class = header(CLASS_HEADER).unwrap_or_else(|| "unknown".to_owned());
        // Older dead letters have no time header; their record time is the closest there is.
        let at = header(DEAD_LETTERED_AT_HEADER)
            .and_then(|t| parse_time(&t).ok())
            .or_else(|| message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis));
        let replayed = header(REPLAYED_FROM_HEADER).is_some();
        Letter { message, class, at, replayed }
    }
}

/// Reads every record of the dead-letter topic up to its end when the read started, calling `each` on each.
fn read_all(kafka: &KafkaConfig, mut each: impl FnMut(Letter)) -> anyhow::Result<u64> {
    kafka.check_connection_blocking()?;
    let topic = &kafka.dlq_topic;
    let mut config = kafka.client_config();
    config
        .set("group.id", format!("costsim-breaker-dlq-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config.create().context("cannot create a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    anyhow::ensure!(!partitions.is_empty(), "the broker at {} has no dead-letter topic `{topic}`", kafka.brokers);
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
            .with_context(|| format!("cannot read the offsets of {topic}/{partition}"))?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        }
    }
    let total: i64 = ends.values().sum();
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment)?;
    let mut read = 0u64;
    let mut last_progress = std::time::Instant::now();
    while !ends.is_empty() {
        let Some(result) = consumer.poll(BROKER_TIMEOUT) else {
            anyhow::bail!("no record of {topic} arrived within {} s; read {read}", BROKER_TIMEOUT.as_secs());
        };
        let message = result.with_context(|| format!("cannot read {topic}"))?.detach();
        let (partition, offset) = (message.partition(), message.offset());
        if ends.get(&partition).is_some_and(|end| offset >= end - 1) {
            ends.remove(&partition);
        }
        if ends.get(&partition).is_none_or(|end| offset < *end) {
            each(Letter::of(message));
            read += 1;
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            eprintln!("read {read} of about {total} dead letters");
            last_progress = std::time::Instant::now();
        }
    }
    Ok(read)
}

/// The counts of `dlq stats`.
#[derive(Debug, Default, serde::Serialize)]
struct Stats {
    topic: String,
    total: u64,
    by_class: BTreeMap<String, u64>,
    /// Per hour (its start, RFC 3339) and class.
    by_hour: BTreeMap<String, BTreeMap<String, u64>>,
    oldest: Option<String>,
    newest: Option<String>,
}

async fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let kafka = args.kafka;
    let stats = tokio::task::spawn_blocking(move || {
        let mut stats = Stats { topic: kafka.dlq_topic.clone(), ..Stats::default() };
        let (mut oldest, mut newest): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
        stats.total = read_all(&kafka, |letter| {
            *stats.by_class.entry(letter.class.clone()).or_default() += 1;
            let hour = letter
                .at
                .and_then(|at| at.duration_trunc(TimeDelta::hours(1)).ok())
                .map_or_else(|| "unknown".to_owned(), |h| format_rfc3339_millis(&h));
            *stats.by_hour.entry(hour).or_default().entry(letter.class).or_default() += 1;
            if let Some(at) = letter.at {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
                newest = Some(newest.map_or(at, |n| n.max(at)));
            }
        })?;
        stats.oldest = oldest.map(|t| format_rfc3339_millis(&t));
        stats.newest = newest.map(|t| format_rfc3339_millis(&t));
        anyhow::Ok(stats)
    })
    .await
    .context("the dead-letter read stopped")??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("dead letters on {}: {}", stats.topic, stats.total);
    if let (Some(oldest), Some(newest)) = (&stats.oldest, &stats.newest) {
        println!("set aside from {oldest} to {newest}");
    }
    for (class, n) in &stats.by_class {
        println!("  {class:<24} {n:>10}");
    }
    if !stats.by_hour.is_empty() {
        println!("by hour:");
        for (hour, classes) in &stats.by_hour {
            for (class, n) in classes {
                println!("  {hour}  {class:<24} {n:>10}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a dead letter is one the replay asked for.
fn chosen(args: &ReplayArgs, letter: &Letter) -> bool {
    (args.classes.is_empty() || args.classes.contains(&letter.class))
        && (args.include_replayed || !letter.replayed)
        && args.from_time.is_none_or(|from| letter.at.is_some_and(|at| at >= from))
        && args.to_time.is_none_or(|to| letter.at.is_some_and(|at| at < to))
}

/// The record's own headers, without those the dead-letter path added.
fn original_headers(message: &OwnedMessage, replayed_from: &str) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter().filter(|h| !h.key.starts_with("costsim.") && !h.key.starts_with("__connect.")) {
            headers = headers.insert(header);
        }
    }
    headers.insert(Header { key: REPLAYED_FROM_HEADER, value: Some(replayed_from) })
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from_time, args.to_time) {
        anyhow::ensure!(from < to, "--from-time must be before --to-time");
    }
    let filter = args.clone();
    let (letters, read) = tokio::task::spawn_blocking(move || {
        let mut letters = Vec::new();
        let read = read_all(&filter.kafka, |letter| {
            if chosen(&filter, &letter) {
                letters.push(letter);
            }
        })?;
        anyhow::Ok((letters, read))
    })
    .await
    .context("the dead-letter read stopped")??;
    let kafka = &args.kafka;
    let mut by_class: BTreeMap<&str, u64> = BTreeMap::new();
    for letter in &letters {
        *by_class.entry(letter.class.as_str()).or_default() += 1;
    }
    let summary = by_class.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ");
    if args.dry_run {
        println!(
            "dry run: would replay {} of {read} dead letters to {} ({summary})",
            letters.len(),
            kafka.results_topic
        );
        return Ok(ExitCode::SUCCESS);
    }
    kafka.require_topics(&[crate::kafka::TopicRole::Results]).await?;
    let producer = kafka.producer()?;
    let mut sender = ConfirmedSender::new(&producer);
    for letter in &letters {
        let m = &letter.message;
        let from = format!("{}/{}@{}", m.topic(), m.partition(), m.offset());
        let copy =
            RecordCopy { key: m.key(), payload: m.payload().unwrap_or_default(), timestamp: m.timestamp().to_millis() };
        sender
            .send_copy(&kafka.results_topic, copy, original_headers(m, &from))
            .await
            .with_context(|| format!("cannot send {from} to {}", kafka.results_topic))?;
    }
    let (counts, first_error) = sender.finish().await;
    println!(
        "replayed {} of {read} dead letters to {} ({summary}); {} failed",
        counts.ok, kafka.results_topic, counts.failed
    );
    if let Some(error) = first_error {
        eprintln!("first delivery failure: {error}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
