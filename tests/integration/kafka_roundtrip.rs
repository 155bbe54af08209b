//! Events keep every field through the real broker.

use std::collections::HashMap;

use costsim_breaker::codec::{decode_simulation_result, encode_simulation_result};
use costsim_breaker::event::{SimulationResult, Source, V2Status};
use costsim_breaker::kafka::{ConfirmedSender, TopicRole};
use rdkafka::Message;

use crate::helpers::{fresh_kafka, key_of, read_records};

fn sparse_event(id: &str) -> SimulationResult {
    SimulationResult {
        event_id: id.into(),
        occurred_at: chrono::DateTime::from_timestamp_millis(1_764_230_400_999).unwrap(),
        tenant_id: "tenant-x".into(),
        run_id: None,
        input_hash: "00".into(),
        source: Source::Canary,
        v1_cost_cents: 0,
        v1_feasible: false,
        v1_duration_ms: None,
        v2_status: V2Status::SchemaError,
        v2_cost_cents: None,
        v2_feasible: None,
        v2_duration_ms: None,
        v2_confidence: None,
        model_version: "2.1.0".into(),
        adapter_version: "2.0.3".into(),
        commit_sha: None,
    }
}

#[tokio::test]
async fn produced_events_come_back_from_the_broker_with_every_field() {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results]).await.unwrap();
    let mut events: Vec<SimulationResult> =
        costsim_breaker::generate::Generator::new(costsim_breaker::generate::GeneratorConfig {
            count: 40,
            profile: costsim_breaker::generate::DriftProfile::Spike,
            start: chrono::DateTime::from_timestamp_millis(1_764_230_400_000).unwrap(),
            events_per_second: 5.0,
            seed: 11,
            tenants: 4,
        })
        .collect();
    events.push(sparse_event("sparse-1"));
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    for e in &events {
        sender.send(&kafka.results_topic, e.tenant_id.as_bytes(), &encode_simulation_result(e)).await.unwrap();
    }
    let (counts, first_error) = sender.finish().await;
    assert_eq!((counts.ok, counts.failed, first_error), (events.len() as u64, 0, None));

    let records = read_records(&kafka, &kafka.results_topic, events.len()).await;
    let by_id: HashMap<String, SimulationResult> = records
        .iter()
        .map(|m| {
            let event = decode_simulation_result(m.payload().unwrap()).expect("decodes");
            assert_eq!(key_of(m), event.tenant_id, "records are keyed by tenant");
            (event.event_id.clone(), event)
        })
        .collect();
    assert_eq!(by_id.len(), events.len());
    for e in &events {
        assert_eq!(by_id.get(&e.event_id), Some(e));
    }
}

#[tokio::test]
async fn topics_are_created_with_their_roles_settings_and_creating_them_again_is_harmless() {
    let kafka = fresh_kafka();
    let roles = [TopicRole::Results, TopicRole::State, TopicRole::DeadLetter];
    kafka.ensure_topics(&roles).await.unwrap();
    kafka.ensure_topics(&roles).await.unwrap();
    let consumer: rdkafka::consumer::BaseConsumer = kafka.client_config().create().unwrap();
    use rdkafka::consumer::Consumer;
    for (role, partitions) in [(TopicRole::Results, 3), (TopicRole::State, 1), (TopicRole::DeadLetter, 1)] {
        let topic = kafka.topic(role);
        let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(metadata.topics()[0].partitions().len(), partitions, "{topic}");
    }
}
