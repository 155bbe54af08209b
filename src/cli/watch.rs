//! `watch`: follow the breaker-state topic and print one line (or one JSON object) per state change.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::codec::{breaker_state_changed_to_json, decode_breaker_state_changed};
use crate::event::{BreakerStateChanged, format_rfc3339_millis};
use crate::kafka::{KafkaConfig, TopicRole};

/// Arguments of `watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Topic to follow (defaults to the state topic).
    #[arg(long)]
    topic: Option<String>,
    /// Start with the oldest retained change instead of only new ones.
    #[arg(long)]
    from_beginning: bool,
    /// Print one JSON object per line, with the schema's field names.
    #[arg(long)]
    json: bool,
    /// Exit after printing this many changes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    kafka: KafkaConfig,
}

/// Runs `watch` until interrupted (or until `--count` changes were printed).
pub async fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let mut kafka = args.kafka.clone();
    if let Some(topic) = &args.topic {
        kafka.state_topic = topic.clone();
    }
    kafka.ensure_topics(&[TopicRole::State]).await?;
    let topic = kafka.state_topic.clone();
    let consumer = assigned_consumer(&kafka, &topic, args.from_beginning)?;
    let mut printed = 0u64;
    let mut undecodable = 0u64;
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message.with_context(|| format!("cannot read {topic}"))?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(payload) = message.payload() else { continue };
        match decode_breaker_state_changed(payload) {
            Ok(change) if args.json => println!("{}", breaker_state_changed_to_json(&change)),
            Ok(change) => println!("{}", describe(&change)),
            Err(err) => {
                undecodable += 1;
                tracing::warn!(topic, partition = message.partition(), offset = message.offset(), error = %err,
                    "Skipped an undecodable state record.");
                continue;
            }
        }
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    if undecodable > 0 {
        eprintln!("{undecodable} records on {topic} could not be decoded");
    }
    Ok(ExitCode::SUCCESS)
}

/// A consumer assigned every partition of the topic, outside any consumer group (nothing is committed).
fn assigned_consumer(kafka: &KafkaConfig, topic: &str, from_beginning: bool) -> anyhow::Result<StreamConsumer> {
    let mut config = kafka.client_config();
    // librdkafka wants a group id even for manual assignment; it is never joined or committed to.
    config.set("group.id", format!("costsim-breaker-watch-{}", uuid::Uuid::new_v4()));
    config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create().context("cannot create a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of {topic} from {}", kafka.brokers))?;
    let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    anyhow::ensure!(partitions > 0, "topic {topic} has no partitions on {}", kafka.brokers);
    let start = if from_beginning { Offset::Beginning } else { Offset::End };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(topic, partition, start)?;
    }
    consumer.assign(&assignment).with_context(|| format!("cannot assign the partitions of {topic}"))?;
    Ok(consumer)
}

/// One human-readable line for a state change.
fn describe(c: &BreakerStateChanged) -> String {
    let mut line = format!(
        "{} {} v{} {} -> {}",
        format_rfc3339_millis(&c.occurred_at),
        c.breaker,
        c.version,
        c.from_state,
        c.to_state
    );
    if let Some(severity) = c.severity {
        line += &format!(" {severity}");
    }
    if let Some(p95) = c.p95_drift {
        line += &format!(" p95={p95:.3}");
    }
    line += &format!(" n={} threshold={}", c.sample_count, c.drift_threshold);
    match (c.to_state, c.disabled_until) {
        (_, Some(until)) => line += &format!(" until={}", format_rfc3339_millis(&until)),
        (crate::event::BreakerState::Open, None) => line += " latched",
        _ => {}
    }
    if let Some(incident) = &c.incident_id {
        line += &format!(" incident={incident}");
    }
    line + &format!(" by {}: {}", c.actor, c.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BreakerState, Severity};
    use chrono::DateTime;

    #[test]
    fn a_trip_reads_as_one_line_with_its_evidence() {
        let change = BreakerStateChanged {
            event_id: "e".into(),
            breaker: "costsim_v2".into(),
            version: 2,
            from_state: BreakerState::Closed,
            to_state: BreakerState::Open,
            reason: "p95 drift 0.412 > 0.2".into(),
            severity: Some(Severity::P1),
            incident_id: Some("inc-9".into()),
            p95_drift: Some(0.4123),
            sample_count: 120,
            drift_threshold: 0.2,
            disabled_until: None,
            actor: "circuit_breaker".into(),
            occurred_at: DateTime::from_timestamp_millis(0).unwrap(),
        };
        assert_eq!(
            describe(&change),
            "1970-01-01T00:00:00.000Z costsim_v2 v2 closed -> open P1 p95=0.412 n=120 threshold=0.2 latched \
             incident=inc-9 by circuit_breaker: p95 drift 0.412 > 0.2"
        );
    }
}
