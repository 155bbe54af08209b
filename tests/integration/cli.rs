//! The `produce` and `watch` subcommands, run as a user runs them.

use std::process::Stdio;
use std::time::Duration;

use costsim_breaker::codec::{
    breaker_state_changed_from_json, encode_breaker_state_changed, simulation_result_from_json,
};
use costsim_breaker::event::{BreakerState, BreakerStateChanged, Severity};
use costsim_breaker::kafka::{ConfirmedSender, TopicRole};
use rdkafka::Message;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{DEADLINE, TempPath, command, fresh_kafka, read_records};

#[tokio::test]
async fn generated_events_written_to_a_file_are_sent_by_produce_input() {
    let kafka = fresh_kafka();
    let file = TempPath::new(".jsonl");
    let out = command(&kafka)
        .args(["produce", "--generate", "300", "--drift-profile", "spike", "--seed", "5"])
        .args(["--start-time", "2026-01-01T00:00:00Z", "--output"])
        .arg(&file.0)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file.0).unwrap();
    let written: Vec<_> = text.lines().map(|l| simulation_result_from_json(l).unwrap()).collect();
    assert_eq!(written.len(), 300);
    assert_eq!(written[0].occurred_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");

    let out = command(&kafka).args(["produce", "--input"]).arg(&file.0).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("produced 300 records") && stdout.contains("0 failed"), "{stdout}");
    let records = read_records(&kafka, &kafka.results_topic, 300).await;
    let mut sent: Vec<_> = records
        .iter()
        .map(|m| costsim_breaker::codec::decode_simulation_result(m.payload().unwrap()).unwrap().event_id)
        .collect();
    let mut expected: Vec<_> = written.into_iter().map(|e| e.event_id).collect();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn produce_reports_each_bad_line_by_number_sends_the_rest_and_exits_non_zero() {
    let kafka = fresh_kafka();
    let good = TempPath::new(".jsonl");
    let out = command(&kafka)
        .args(["produce", "--generate", "2", "--seed", "1", "--output"])
        .arg(&good.0)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<String> = std::fs::read_to_string(&good.0).unwrap().lines().map(str::to_owned).collect();
    let bad = TempPath::new(".jsonl");
    let negative = lines[1].replace("\"v1_cost_cents\":", "\"v1_cost_cents\":-");
    std::fs::write(&bad.0, format!("{}\n{{oops\n{negative}\n", lines[0])).unwrap();

    let out = command(&kafka).args(["produce", "--input"]).arg(&bad.0).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let path = bad.0.display().to_string();
    assert!(stderr.contains(&format!("{path}:2: bad JSON")), "{stderr}");
    assert!(stderr.contains(&format!("{path}:3: invalid event: `v1_cost_cents` is negative")), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("produced 1 records"));
    assert_eq!(read_records(&kafka, &kafka.results_topic, 1).await.len(), 1);
}

#[tokio::test]
async fn watch_json_prints_the_state_change_a_producer_wrote() {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::State]).await.unwrap();
    let change = BreakerStateChanged {
        event_id: uuid::Uuid::new_v4().to_string(),
        breaker: "costsim_v2".into(),
        version: 7,
        from_state: BreakerState::Closed,
        to_state: BreakerState::Open,
        reason: "p95 drift 0.43 > 0.2 for 3 evaluations".into(),
        severity: Some(Severity::P1),
        incident_id: Some("inc-42".into()),
        p95_drift: Some(0.43),
        sample_count: 512,
        drift_threshold: 0.2,
        disabled_until: chrono::DateTime::from_timestamp_millis(1_764_316_800_000),
        actor: "circuit_breaker".into(),
        occurred_at: chrono::DateTime::from_timestamp_millis(1_764_230_400_000).unwrap(),
    };
    let mut watch = command(&kafka)
        .args(["watch", "--json", "--from-beginning", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    sender.send(&kafka.state_topic, b"costsim_v2", &encode_breaker_state_changed(&change)).await.unwrap();
    assert_eq!(sender.finish().await.0.ok, 1);

    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("watch printed within the deadline");
    let line = line.unwrap().expect("watch printed a line");
    assert_eq!(breaker_state_changed_from_json(&line), Ok(change));
    let status = tokio::time::timeout(DEADLINE, watch.wait()).await.unwrap().unwrap();
    assert!(status.success(), "watch exits after --count changes");
}

#[tokio::test]
async fn produce_without_input_or_generate_explains_what_is_missing() {
    let kafka = fresh_kafka();
    let out = command(&kafka).args(["produce"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_reporting_command_whose_reader_goes_away_ends_quietly_instead_of_panicking() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = command(&fresh_kafka())
        .args(["backtest", "--input", "examples/drift-spike.jsonl", "--set", "disable_ttl_seconds=300"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first line is written (as `| head -1` after its line, at any time).
    drop(child.stdout.take());
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success() || out.status.signal() == Some(libc::SIGPIPE), "{:?}: {stderr}", out.status);
}

#[tokio::test]
async fn sigterm_while_run_waits_for_its_database_at_start_up_ends_it_cleanly_at_once() {
    // A "database" that accepts connections and never answers: start-up waits on it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("postgres://postgres@{}/nowhere", silent.local_addr().unwrap());
    let mut child = command(&fresh_kafka())
        .args(["run", "--alerts", "off"])
        .env("DATABASE_URL", &url)
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("COSTSIM_LEADER_DATABASE_URL")
        .spawn()
        .unwrap();
    // Its first connection attempt proves it is in start-up, past installing its SIGTERM handler.
    let (_held, _) = tokio::time::timeout(DEADLINE, silent.accept()).await.expect("run connects").unwrap();
    let status = crate::helpers::sigterm(&mut child, Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
}
