//! `BreakerView` and `watch` follow the state topic on the real broker: newest version wins, and fail open.

use std::process::Stdio;
use std::time::Duration;

use costsim_breaker::codec::{breaker_state_changed_from_json, encode_breaker_state_changed};
use costsim_breaker::event::{BreakerState, BreakerStateChanged, Severity};
use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig, TopicRole};
use costsim_breaker::view::{BreakerView, ViewConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::{DEADLINE, command, eventually, fresh_kafka};

fn change(breaker: &str, version: i64, from: BreakerState, to: BreakerState) -> BreakerStateChanged {
    BreakerStateChanged {
        event_id: uuid::Uuid::new_v4().to_string(),
        breaker: breaker.into(),
        version,
        from_state: from,
        to_state: to,
        reason: format!("test change v{version}"),
        severity: (to == BreakerState::Open).then_some(Severity::P1),
        incident_id: (to == BreakerState::Open).then(|| format!("inc-{version}")),
        p95_drift: Some(0.4),
        sample_count: 100,
        drift_threshold: 0.2,
        disabled_until: None,
        actor: "circuit_breaker".into(),
        occurred_at: chrono::DateTime::from_timestamp_millis(1_764_230_400_000 + version * 1000).unwrap(),
    }
}

async fn publish(kafka: &KafkaConfig, changes: &[BreakerStateChanged]) {
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    for c in changes {
        sender.send(&kafka.state_topic, c.breaker.as_bytes(), &encode_breaker_state_changed(c)).await.unwrap();
    }
    let (delivered, error) = sender.finish().await;
    assert_eq!((delivered.ok, error), (changes.len() as u64, None));
}

/// A fresh one-partition state topic that is not compacted, so the broker keeps every record a test sends: the
/// broker may compact superseded records away before a reader gets them, which is right, but would hide what the
/// reader itself drops.
async fn uncompacted_state_topic() -> KafkaConfig {
    let mut kafka = fresh_kafka();
    kafka.dlq_topic = kafka.state_topic.clone();
    kafka.ensure_topics(&[TopicRole::DeadLetter]).await.unwrap();
    kafka
}

/// A state topic of its own, and a view of it that stops when the returned token is cancelled.
async fn view(max_age: Duration) -> (KafkaConfig, BreakerView, CancellationToken) {
    let kafka = uncompacted_state_topic().await;
    let cancel = CancellationToken::new();
    let view = BreakerView::spawn(&kafka, &kafka.state_topic, ViewConfig { max_age }, cancel.clone()).unwrap();
    (kafka, view, cancel)
}

#[tokio::test]
async fn the_view_answers_disabled_once_an_open_state_is_on_the_topic() {
    let (kafka, view, cancel) = view(Duration::from_secs(10)).await;
    assert!(!view.is_v2_disabled("costsim_v2"), "unknown answers enabled");
    eventually("the empty topic is confirmed read", || view.is_fresh()).await;
    assert!(!view.is_v2_disabled("costsim_v2"), "still unknown");

    publish(&kafka, &[change("costsim_v2", 1, BreakerState::Closed, BreakerState::Open)]).await;
    eventually("the view answers disabled", || view.is_v2_disabled("costsim_v2")).await;
    let entry = view.state("costsim_v2").unwrap();
    assert_eq!((entry.change.version, entry.change.to_state, entry.fresh), (1, BreakerState::Open, true));
    assert!(!view.is_v2_disabled("another_breaker"));

    publish(&kafka, &[change("costsim_v2", 2, BreakerState::Open, BreakerState::HalfOpen)]).await;
    eventually("half-open runs V2 again", || !view.is_v2_disabled("costsim_v2")).await;
    cancel.cancel();
}

#[tokio::test]
async fn the_view_drops_duplicate_and_older_versions_sent_after_a_newer_one() {
    let (kafka, view, cancel) = view(Duration::from_secs(10)).await;
    publish(
        &kafka,
        &[
            change("costsim_v2", 3, BreakerState::Closed, BreakerState::Open),
            change("costsim_v2", 2, BreakerState::Open, BreakerState::Closed),
            // Same version, other content: a duplicate by its version, so dropped too.
            change("costsim_v2", 3, BreakerState::Open, BreakerState::Closed),
            change("sentinel", 1, BreakerState::Closed, BreakerState::Open),
        ],
    )
    .await;
    // The topic has one partition, so once the last record is in, every record before it was handled.
    eventually("the view read up to the sentinel", || view.state("sentinel").is_some()).await;
    let entry = view.state("costsim_v2").unwrap();
    assert_eq!((entry.change.version, entry.change.to_state), (3, BreakerState::Open), "{entry:?}");
    eventually("the view is fresh", || view.is_fresh()).await;
    assert!(view.is_v2_disabled("costsim_v2"));
    cancel.cancel();
}

#[tokio::test]
async fn the_view_fails_open_once_it_has_not_confirmed_the_topic_for_longer_than_max_age() {
    let (kafka, view, cancel) = view(Duration::from_millis(300)).await;
    publish(&kafka, &[change("costsim_v2", 1, BreakerState::Closed, BreakerState::Open)]).await;
    eventually("the view answers disabled", || view.is_v2_disabled("costsim_v2")).await;

    cancel.cancel(); // the follower stops: from now on nothing confirms the view
    eventually("the stale view answers enabled", || !view.is_v2_disabled("costsim_v2")).await;
    let entry = view.state("costsim_v2").unwrap();
    assert_eq!(entry.change.to_state, BreakerState::Open, "the last change is still known");
    assert!(!entry.fresh && !entry.disables_v2(), "{entry:?}");
    assert!(entry.confirmed_ago.is_some_and(|age| age > Duration::from_millis(300)), "{entry:?}");
}

#[tokio::test]
async fn the_view_fails_open_when_its_broker_goes_away_after_it_read_an_open_state() {
    // A broker of its own, killed mid-test: the shared one must stay up for everyone else.
    let dir = crate::pki::TempDir::new("costsim-view-tansu");
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let mut tansu = crate::tansu::start(&dir.0, &dir.0.join("tansu.log"), &address, &address, false);
    let mut kafka = fresh_kafka();
    kafka.brokers = address;
    kafka.check_connection().await.expect("the private broker answers");
    kafka.dlq_topic = kafka.state_topic.clone();
    kafka.ensure_topics(&[TopicRole::DeadLetter]).await.unwrap();
    let cancel = CancellationToken::new();
    let config = ViewConfig { max_age: Duration::from_secs(1) };
    let view = BreakerView::spawn(&kafka, &kafka.state_topic, config, cancel.clone()).unwrap();
    publish(&kafka, &[change("costsim_v2", 1, BreakerState::Closed, BreakerState::Open)]).await;
    eventually("the view answers disabled", || view.is_v2_disabled("costsim_v2")).await;

    // SIGKILL: tansu breaks on its own SIGTERM, and a dead broker is the point.
    tansu.kill().unwrap();
    tansu.wait().unwrap();
    eventually("the view answers enabled once it cannot confirm the topic", || !view.is_v2_disabled("costsim_v2"))
        .await;
    let entry = view.state("costsim_v2").unwrap();
    assert!(
        entry.change.to_state == BreakerState::Open && !entry.fresh,
        "the open state is known but stale: {entry:?}"
    );
    cancel.cancel();
}

#[tokio::test]
async fn watch_prints_each_version_once_and_skips_older_ones() {
    let kafka = uncompacted_state_topic().await;
    let v7 = change("costsim_v2", 7, BreakerState::Closed, BreakerState::Open);
    let v8 = change("costsim_v2", 8, BreakerState::Open, BreakerState::HalfOpen);
    let v6 = change("costsim_v2", 6, BreakerState::Open, BreakerState::Closed);
    publish(&kafka, &[v7.clone(), v7.clone(), v6, v8.clone()]).await;
    let mut watch = command(&kafka)
        .args(["watch", "--json", "--from-beginning", "--count", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while let Some(line) = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("watch printed").unwrap() {
        printed.push(breaker_state_changed_from_json(&line).unwrap());
    }
    assert_eq!(printed, [v7, v8]);
    let status = tokio::time::timeout(DEADLINE, watch.wait()).await.unwrap().unwrap();
    assert!(status.success());
}
