//! Offsets a read skips, on the real broker: records deleted by retention before `run` applied them are recorded
//! as lost and consumption goes on. (Transaction markers, which tansu 0.6.0 cannot write, are covered from
//! librdkafka's mock cluster in the fault suite.)

use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::event::SimulationResult;
use costsim_breaker::kafka::{KafkaConfig, TopicRole};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureRecord;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;

use crate::helpers::app_url;
use crate::helpers::{DEADLINE, fresh_kafka};
use crate::pipeline::{Processor, produce, spike, wait_for};

/// Engine settings of the pipeline tests.
const FAST: &[&str] = &["bucket_seconds=1", "window_seconds=10", "min_samples=20", "disable_ttl_seconds=3600"];

/// A fresh configuration whose results topic has one partition, so offsets are easy to name.
async fn one_partition() -> KafkaConfig {
    let mut kafka = fresh_kafka();
    kafka.results_partitions = 1;
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    kafka
}

/// Sends events with a record timestamp `age` in the past and waits for every delivery.
async fn produce_aged(kafka: &KafkaConfig, events: &[SimulationResult], age: chrono::TimeDelta) {
    let producer = kafka.producer().unwrap();
    let timestamp = (Utc::now() - age).timestamp_millis();
    for e in events {
        let payload = encode_simulation_result(e);
        let record =
            FutureRecord::to(&kafka.results_topic).key(e.tenant_id.as_bytes()).payload(&payload).timestamp(timestamp);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(err, _)| err).unwrap();
    }
}

/// The partition's log start and end offsets, as the broker reports them.
fn watermarks(kafka: &KafkaConfig) -> (i64, i64) {
    let client = kafka.metadata_client().unwrap();
    // `#[sqlx::test]` runs on a current-thread runtime, and nothing else needs it meanwhile: block.
    client.fetch_watermarks(&kafka.results_topic, 0, Duration::from_secs(10)).unwrap()
}

/// Stops `run` with SIGTERM, so it leaves the group at once (a killed member may hold tansu 0.6.0's group).
async fn stop(mut run: Processor) {
    let status = crate::helpers::sigterm(&mut run.0, DEADLINE).await;
    assert!(status.success(), "{status:?}");
}

async fn next_offset(pool: &PgPool, kafka: &KafkaConfig) -> i64 {
    sqlx::query_scalar("SELECT next_offset FROM costsim_consumed_offsets WHERE topic = $1 AND \"partition\" = 0")
        .bind(&kafka.results_topic)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn records_deleted_before_they_were_applied_are_recorded_as_lost_and_consumption_goes_on(pool: PgPool) {
    let kafka = one_partition().await;
    let events = spike(200, 100.0, 21);
    let count = "SELECT count(*) FROM costsim_provenance";
    // Kafka deletes the oldest records first, so the records the first processor applies are old too: 5 s short of
    // the topic's 7-day retention, so the broker deletes them (tansu: at its maintenance, every 5 s in the stack)
    // only after they were applied.
    let first = Processor::start(&kafka, &pool, FAST).await;
    produce_aged(&kafka, &events[..50], chrono::TimeDelta::days(7) - chrono::TimeDelta::seconds(5)).await;
    assert_eq!(wait_for(&pool, count, 50).await, 50);
    stop(first).await;

    // While no processor runs, 100 records arrive that are already past retention, then 50 fresh ones.
    produce_aged(&kafka, &events[50..150], chrono::TimeDelta::days(8)).await;
    produce(&kafka, &events[150..]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while watermarks(&kafka).0 < 150 {
        assert!(tokio::time::Instant::now() < deadline, "the broker never deleted the old records");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut second = Processor::start_with_url(&kafka, &app_url(&pool), FAST, Stdio::piped());
    let mut lines = tokio::io::BufReader::new(second.0.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("deleted by the broker") {
                return line;
            }
        }
        panic!("run ended without reporting the deleted records")
    })
    .await
    .expect("the loss is reported within the deadline");
    assert!(said.contains("first_offset=50 end_offset=150 log_start=150 records=100"), "{said}");

    assert_eq!(wait_for(&pool, count, 100).await, 100, "the records before and after the loss are applied");
    let lost: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
        "SELECT \"partition\", first_offset, end_offset, log_start_offset FROM costsim_lost_records \
         WHERE topic = $1 AND consumer_group = $2",
    )
    .bind(&kafka.results_topic)
    .bind(&kafka.group_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(lost, [(0, 50, 150, 150)]);
    assert_eq!(next_offset(&pool, &kafka).await, 200);
}
