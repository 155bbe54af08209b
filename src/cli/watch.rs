//! `watch`: follow the breaker-state topic and print one line (or one JSON object) per state change.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::codec::breaker_state_changed_to_json;
use crate::event::{BreakerStateChanged, format_rfc3339_millis};
use crate::kafka::{KafkaConfig, TopicRole};
use crate::view::follower::{Follower, Start};

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

/// Runs `watch` until interrupted (or until `--count` changes were printed). It follows the topic as
/// [`BreakerView`](crate::view::BreakerView) does: every partition assigned, no consumer group, and each breaker's
/// change printed once (duplicate and older versions are dropped, at debug level).
pub async fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let mut kafka = args.kafka.clone();
    if let Some(topic) = &args.topic {
        kafka.state_topic = topic.clone();
    }
    // A subscriber never creates the topic it follows: on a managed cluster it may not, and a topic made here
    // would lack the processor's settings.
    kafka.check_connection().await?;
    kafka.require_topics(&[TopicRole::State]).await.context("watch creates no topic")?;
    let mut follower = Follower::new(&kafka, &kafka.state_topic, "watch")?;
    let start = if args.from_beginning { Start::Beginning } else { Start::End };
    follower.assign(start, Duration::from_secs(10)).await?;
    let mut printed = 0u64;
    loop {
        let next = tokio::select! {
            next = follower.next() => next?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(change) = next else { continue };
        if args.json {
            println!("{}", breaker_state_changed_to_json(&change));
        } else {
            println!("{}", describe(&change));
        }
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    if follower.undecodable() > 0 {
        eprintln!("{} records on {} could not be decoded", follower.undecodable(), follower.topic());
    }
    Ok(ExitCode::SUCCESS)
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
