//! `dlq stats` and `dlq replay` as an operator runs them: dead letters counted by class, replayed after a fix
//! so every event is stored, and a second replay changes no table.

use std::process::Stdio;

use chrono::{TimeDelta, Utc};
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig, TopicRole};
use sqlx::PgPool;

use crate::helpers::{app_url, command, fresh_kafka, read_records, sigterm};
use crate::pipeline::{produce, wait_for};

const EVENTS: usize = 40;

/// `run` on the test's topics and database with extra environment; killed when dropped.
fn processor(kafka: &KafkaConfig, pool: &PgPool, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = command(kafka);
    cmd.arg("run")
        .env("DATABASE_URL", app_url(pool))
        .env("RUST_LOG", "warn")
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stderr(Stdio::null());
    cmd.spawn().expect("run starts")
}

async fn dlq(kafka: &KafkaConfig, args: &[&str]) -> String {
    let out = command(kafka).arg("dlq").args(args).output().await.unwrap();
    assert!(out.status.success(), "dlq {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Sum of the committed offsets of the results topic.
async fn consumed(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(sum(next_offset), 0)::bigint FROM costsim_consumed_offsets")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn dead_letters_are_counted_by_class_and_a_replay_after_a_fix_stores_each_event_once(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let events: Vec<_> = Generator::new(GeneratorConfig {
        count: EVENTS as u64,
        profile: DriftProfile::Steady,
        start: Utc::now() - TimeDelta::hours(2),
        events_per_second: 1.0,
        seed: 16,
        tenants: 3,
    })
    .collect();
    produce(&kafka, &events).await;
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    sender.send(&kafka.results_topic, b"tenant-x", b"not avro at all").await.unwrap();
    sender.finish().await;

    // A processor told to refuse anything older than an hour sets every event aside.
    let mut strict = processor(&kafka, &pool, &[("COSTSIM_MAX_PAST_SECONDS", "3600")]);
    read_records(&kafka, &kafka.dlq_topic, EVENTS + 1).await;
    // Stopped cleanly, so it leaves the group: on tansu a member that joins while a killed member's session is
    // alive gets no partition.
    assert!(sigterm(&mut strict, std::time::Duration::from_secs(30)).await.success());

    let stats: serde_json::Value = serde_json::from_str(&dlq(&kafka, &["stats", "--json"]).await).unwrap();
    assert_eq!(stats["total"], EVENTS as u64 + 1, "{stats}");
    assert_eq!(stats["by_class"]["past_event"], EVENTS as u64, "{stats}");
    assert_eq!(stats["by_class"]["wrong_magic"], 1, "{stats}");
    let table = dlq(&kafka, &["stats"]).await;
    assert!(table.contains("past_event") && table.contains("by hour:"), "{table}");

    let dry = dlq(&kafka, &["replay", "--class", "past_event", "--dry-run"]).await;
    assert!(dry.contains(&format!("would replay {EVENTS} of {}", EVENTS + 1)), "{dry}");

    // After the fix (the default bound of 30 days), a replay of that class stores every event.
    let _fixed = processor(&kafka, &pool, &[]);
    let out = dlq(&kafka, &["replay", "--class", "past_event"]).await;
    assert!(out.contains(&format!("replayed {EVENTS} of {}", EVENTS + 1)), "{out}");
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", EVENTS as i64).await, EVENTS as i64);

    // Replaying again sends the same records, which the processor recognises: no table changes.
    let before: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, kafka_offset FROM costsim_provenance ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    dlq(&kafka, &["replay", "--class", "past_event"]).await;
    let total = (EVENTS + 1 + 2 * EVENTS) as i64;
    let deadline = tokio::time::Instant::now() + crate::helpers::DEADLINE;
    while consumed(&pool).await < total {
        assert!(tokio::time::Instant::now() < deadline, "the second replay was not consumed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, kafka_offset FROM costsim_provenance ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before, after, "the second replay changed provenance");
    let stats: serde_json::Value = serde_json::from_str(&dlq(&kafka, &["stats", "--json"]).await).unwrap();
    assert_eq!(stats["total"], EVENTS as u64 + 1, "replayed events are not dead-lettered again: {stats}");
}
