//! Poison records: valid Avro that PostgreSQL or the window cannot take, mixed into good events. Each is set aside
//! in the dead-letter topic under its own class, every good event is stored, and `/health` stays 200 throughout:
//! one bad record from any producer never stalls a partition.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::event::SimulationResult;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::child::{database_url, produce};
use crate::support::processor::{Launch, Processor, health};
use crate::support::{DEADLINE, private_kafka};

const GOOD: u64 = 10_000;

fn good_events() -> Vec<SimulationResult> {
    Generator::new(GeneratorConfig {
        count: GOOD,
        profile: DriftProfile::Steady,
        start: Utc::now() - TimeDelta::seconds(120),
        events_per_second: 100.0,
        seed: 16,
        tenants: 9,
    })
    .collect()
}

/// A poison event: a good one with one field made bad.
fn poison(base: &SimulationResult, n: u32, spoil: impl FnOnce(&mut SimulationResult)) -> Vec<u8> {
    let mut event = base.clone();
    event.event_id = format!("poison-{n}");
    spoil(&mut event);
    encode_simulation_result(&event)
}

/// The dead letters on the topic: class, message and Kafka Connect's headers of each, by source offset.
fn dead_letters(kafka: &costsim_breaker::kafka::KafkaConfig, expected: usize) -> Vec<BTreeMap<String, String>> {
    let consumer: BaseConsumer =
        kafka.client_config().set("group.id", "poison-dlq-reader").set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&kafka.dlq_topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut letters = Vec::new();
    while letters.len() < expected && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.unwrap();
        let headers = message
            .headers()
            .expect("dead letters carry headers")
            .iter()
            .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
            .collect();
        letters.push(headers);
    }
    letters
}

#[sqlx::test]
async fn poison_among_ten_thousand_good_events_is_set_aside_and_nothing_stalls(pool: PgPool) {
    let (_broker, kafka) = private_kafka().await;
    let events = good_events();
    let base = &events[0];
    let poisons: Vec<(&str, Vec<u8>)> = vec![
        ("nul_character", poison(base, 1, |e| e.tenant_id = "acme\0corp".into())),
        ("field_too_long", poison(base, 2, |e| e.event_id = "x".repeat(8 * 1024))),
        ("past_event", poison(base, 3, |e| e.occurred_at = "0001-01-01T00:00:00Z".parse().unwrap())),
        ("future_event", poison(base, 4, |e| e.occurred_at = Utc::now() + TimeDelta::days(400))),
        ("record_too_large", poison(base, 5, |e| e.commit_sha = Some("c".repeat(70_000)))),
    ];
    // The poison goes in among the good events, spread over the partitions (keys are tenants).
    let mut records: Vec<(Vec<u8>, Vec<u8>)> =
        events.iter().map(|e| (e.tenant_id.clone().into_bytes(), encode_simulation_result(e))).collect();
    for (i, (_, payload)) in poisons.iter().enumerate() {
        let at = (i + 1) * records.len() / (poisons.len() + 1);
        records.insert(at, (format!("tenant-{}", i % 9).into_bytes(), payload.clone()));
    }

    let launch = Launch::new(&kafka, &database_url(&pool).await, &[]);
    let (a, b) = (Processor::start(&launch, "a"), Processor::start(&launch, "b"));
    let addrs = [a.http_addr().await, b.http_addr().await];
    produce(&kafka, &kafka.results_topic, records).await;

    let deadline = Instant::now() + DEADLINE * 3;
    loop {
        for addr in addrs {
            let (status, body) = health(addr).await.expect("the processor answers /health");
            assert_eq!(status, 200, "/health of {addr} while poison flows: {body}");
        }
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
        if stored == GOOD as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {stored} of {GOOD} good events stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let poisoned: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance WHERE event_id LIKE 'poison-%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(poisoned, 0);

    let letters = dead_letters(&kafka, poisons.len());
    let mut classes: Vec<&str> = letters.iter().map(|h| h["costsim.error.class"].as_str()).collect();
    classes.sort_unstable();
    let mut expected: Vec<&str> = poisons.iter().map(|(class, _)| *class).collect();
    expected.sort_unstable();
    assert_eq!(classes, expected, "each poison record once, with its class");
    for letter in &letters {
        assert_eq!(letter["__connect.errors.topic"], kafka.results_topic, "{letter:?}");
        assert_eq!(letter["__connect.errors.exception.class.name"], letter["costsim.error.class"]);
        assert!(!letter["__connect.errors.exception.message"].is_empty());
        assert_eq!(letter["__connect.errors.offset"], letter["costsim.source.offset"]);
    }
    for addr in addrs {
        assert_eq!(health(addr).await.map(|(status, _)| status), Some(200));
    }
}

#[sqlx::test]
async fn a_record_postgresql_refuses_is_dead_lettered_with_its_sqlstate_and_the_rest_commits(pool: PgPool) {
    let (_broker, kafka) = private_kafka().await;
    let events: Vec<SimulationResult> = good_events().into_iter().take(500).collect();
    // With the age bound lifted, an event dated 5000 BC passes our checks, and PostgreSQL refuses it (timestamps
    // end at 4713 BC): a data exception the batch must isolate instead of retrying for ever.
    let ancient = poison(&events[0], 1, |e| e.occurred_at = "-5000-01-01T00:00:00Z".parse().unwrap());
    let mut records: Vec<(Vec<u8>, Vec<u8>)> =
        events.iter().map(|e| (e.tenant_id.clone().into_bytes(), encode_simulation_result(e))).collect();
    records.insert(250, (events[250].tenant_id.clone().into_bytes(), ancient));
    produce(&kafka, &kafka.results_topic, records).await;

    let launch =
        Launch::new(&kafka, &database_url(&pool).await, &[]).env("COSTSIM_MAX_PAST_SECONDS", 1_000_000_000_000u64);
    let run = Processor::start(&launch, "a");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
        if stored == 500 {
            break;
        }
        assert!(Instant::now() < deadline, "only {stored} of 500 good events stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let letters = dead_letters(&kafka, 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["costsim.error.class"], "rejected_by_database");
    assert!(letters[0]["costsim.error.message"].contains("SQLSTATE 22008"), "{:?}", letters[0]);
    drop(run);
}
