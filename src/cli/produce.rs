//! `produce`: simulation results to Kafka from a JSON Lines file or a generator, every delivery confirmed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::codec::{JsonLines, encode_simulation_result, simulation_result_to_json};
use crate::event::SimulationResult;
use crate::generate::{DriftProfile, Generator, GeneratorConfig};
use crate::kafka::{ConfirmedSender, KafkaConfig, TopicCreation, TopicRole};

/// How often a long run reports progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Arguments of `produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to write to (defaults to the results topic).
    #[arg(long)]
    topic: Option<String>,
    /// JSON Lines file of simulation results to send.
    #[arg(long, value_name = "FILE.jsonl", required_unless_present = "generate", conflicts_with = "generate")]
    input: Option<PathBuf>,
    /// Generate this many synthetic events instead of reading a file.
    #[arg(long, value_name = "N")]
    generate: Option<u64>,
    /// Drift profile of generated events.
    #[arg(long, value_enum, default_value_t = DriftProfile::Steady, requires = "generate")]
    drift_profile: DriftProfile,
    /// Event time of the first generated event (RFC 3339 or epoch milliseconds); default: now.
    #[arg(long, value_parser = parse_time, requires = "generate")]
    start_time: Option<DateTime<Utc>>,
    /// Generated events per second of event time.
    #[arg(long, default_value_t = 100.0, value_parser = parse_positive, requires = "generate")]
    events_per_second: f64,
    /// Seed of the generator; default: random (printed, so a run can be repeated).
    #[arg(long, requires = "generate")]
    seed: Option<u64>,
    /// Distinct tenants among generated events.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..), requires = "generate")]
    tenants: u32,
    /// Send at most this many records per second of wall time (default: as fast as the broker takes them).
    #[arg(long, value_parser = parse_positive)]
    rate: Option<f64>,
    /// Write the generated events to this JSON Lines file instead of sending them.
    #[arg(long, value_name = "FILE.jsonl", requires = "generate")]
    output: Option<PathBuf>,
    #[command(flatten)]
    topics: TopicCreation,
    #[command(flatten)]
    kafka: KafkaConfig,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("{ms} ms is out of range"));
    }
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("not RFC 3339: {e}"))
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

/// Runs `produce`; exits non-zero when any record was invalid or not delivered.
pub async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    if let Some(count) = args.generate {
        let seed = args.seed.unwrap_or_else(rand::random);
        let start = args.start_time.unwrap_or_else(|| truncate_to_second(Utc::now()));
        eprintln!("generating {count} {:?} events from {start} (seed {seed})", args.drift_profile);
        let events = Generator::new(GeneratorConfig {
            count,
            profile: args.drift_profile,
            start,
            events_per_second: args.events_per_second,
            seed,
            tenants: args.tenants,
        });
        if let Some(path) = &args.output {
            return write_jsonl(path, events);
        }
        return send(&args, events.map(Ok)).await;
    }
    let path = args.input.as_ref().expect("clap requires --input or --generate");
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut invalid = 0u64;
    let events = JsonLines::new(BufReader::new(file)).filter_map(|(line, parsed)| match parsed {
        Ok(event) => Some(Ok(event)),
        Err(err) => {
            eprintln!("{}:{line}: {err}", path.display());
            invalid += 1;
            None
        }
    });
    let code = send(&args, events).await?;
    if invalid > 0 {
        eprintln!("{invalid} invalid lines in {} were not sent", path.display());
        return Ok(ExitCode::FAILURE);
    }
    Ok(code)
}

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("a current time is in range")
}

fn write_jsonl(path: &PathBuf, events: impl Iterator<Item = SimulationResult>) -> anyhow::Result<ExitCode> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut written = 0u64;
    for event in events {
        writeln!(out, "{}", simulation_result_to_json(&event))
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {written} events to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn send(
    args: &ProduceArgs,
    events: impl Iterator<Item = anyhow::Result<SimulationResult>>,
) -> anyhow::Result<ExitCode> {
    let mut kafka = args.kafka.clone();
    if let Some(topic) = &args.topic {
        kafka.results_topic = topic.clone();
    }
    kafka.prepare_topics(&[TopicRole::Results, TopicRole::DeadLetter], &args.topics).await?;
    let topic = kafka.results_topic.as_str();
    let producer = kafka.producer()?;
    let mut sender = ConfirmedSender::new(&producer);
    let started = Instant::now();
    let mut last_report = started;
    let mut sent = 0u64;
    for event in events {
        let event = event?;
        if let Some(rate) = args.rate {
            // Pacing, not waiting for a condition: record n is due at n/rate seconds after the start.
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        sender
            .send(topic, event.tenant_id.as_bytes(), &encode_simulation_result(&event))
            .await
            .with_context(|| format!("cannot enqueue event {} for {topic}", event.event_id))?;
        sent += 1;
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            let acked = sender.counts().ok;
            eprintln!("… {sent} sent, {acked} acknowledged, {:.0} records/s", acked as f64 / secs(started));
        }
    }
    let (counts, first_error) = sender.finish().await;
    let elapsed = secs(started);
    println!(
        "produced {} records to {topic} in {elapsed:.2} s ({:.0} records/s); {} failed",
        counts.ok,
        counts.ok as f64 / elapsed,
        counts.failed
    );
    if let Some(err) = first_error {
        eprintln!("first delivery failure: {err}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64().max(1e-9)
}
