//! The state-event relay: the outbox reaches the state topic in version order per breaker, each row once per
//! pass, and two relays running at once never publish a row twice.

use std::collections::{BTreeMap, HashSet};

use costsim_breaker::codec::decode_breaker_state_changed;
use costsim_breaker::event::{BreakerState, BreakerStateChanged, Severity};
use costsim_breaker::kafka::KafkaConfig;
use costsim_breaker::relay::{Relay, RelayOutcome};
use costsim_breaker::store::{breaker, outbox};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sqlx::PgPool;

use crate::helpers::{DEADLINE, app_pool, fresh_kafka, key_of, read_records};

fn change(breaker: &str, version: i64) -> BreakerStateChanged {
    let (from_state, to_state) = if version % 2 == 1 {
        (BreakerState::Closed, BreakerState::Open)
    } else {
        (BreakerState::Open, BreakerState::Closed)
    };
    BreakerStateChanged {
        event_id: uuid::Uuid::new_v4().to_string(),
        breaker: breaker.to_owned(),
        version,
        from_state,
        to_state,
        reason: format!("change {version}"),
        severity: (to_state == BreakerState::Open).then_some(Severity::P2),
        incident_id: Some(format!("incident-{version}")),
        p95_drift: None,
        sample_count: 0,
        drift_threshold: 0.2,
        disabled_until: None,
        actor: "relay-test".into(),
        occurred_at: chrono::DateTime::from_timestamp_millis(1_764_230_400_000 + version * 1000).unwrap(),
    }
}

/// Writes the changes to the outbox in the order given, creating their breakers.
async fn enqueue(pool: &PgPool, changes: &[BreakerStateChanged]) {
    let mut tx = pool.begin().await.unwrap();
    for c in changes {
        breaker::ensure(&mut tx, &c.breaker).await.unwrap();
        outbox::enqueue(&mut tx, c).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM costsim_breaker_events WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Fresh topics whose state topic has one partition like the real one but is NOT compacted: the broker compacts
/// in the background (tansu every few seconds), which would rightly drop older versions of a key before the test
/// reads them, and these tests must see every record the relays sent.
async fn state_kafka() -> KafkaConfig {
    let kafka = fresh_kafka();
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create().unwrap();
    let topic = NewTopic::new(&kafka.state_topic, 1, TopicReplication::Fixed(1));
    let created = admin.create_topics(&[topic], &AdminOptions::new()).await.unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    kafka
}

/// Each breaker's versions in the order the topic holds them, and every event id seen.
fn versions_by_breaker(records: &[rdkafka::message::OwnedMessage]) -> (BTreeMap<String, Vec<i64>>, Vec<String>) {
    let mut versions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut ids = Vec::new();
    for record in records {
        let event = decode_breaker_state_changed(record.payload().expect("a payload")).expect("decodes");
        assert_eq!(key_of(record), event.breaker, "records are keyed by breaker");
        versions.entry(event.breaker).or_default().push(event.version);
        ids.push(event.event_id);
    }
    (versions, ids)
}

#[sqlx::test]
async fn the_relay_publishes_the_outbox_in_version_order_and_then_finds_it_empty(pool: PgPool) {
    let kafka = state_kafka().await;
    // Written out of version order, two breakers interleaved.
    let changes = [
        change("costsim_v2", 2),
        change("shadow_b", 1),
        change("costsim_v2", 1),
        change("costsim_v2", 3),
        change("shadow_b", 2),
    ];
    enqueue(&pool, &changes).await;
    let relay = Relay::new(app_pool(&pool).await, kafka.producer().unwrap(), &kafka.state_topic);

    assert_eq!(relay.relay_once().await.unwrap(), RelayOutcome::Delivered(5));
    assert_eq!(relay.relay_once().await.unwrap(), RelayOutcome::Empty);
    assert_eq!(unpublished(&pool).await, 0, "every delivered row is marked published");

    let records = read_records(&kafka, &kafka.state_topic, 5).await;
    let (versions, _) = versions_by_breaker(&records);
    assert_eq!(versions["costsim_v2"], [1, 2, 3]);
    assert_eq!(versions["shadow_b"], [1, 2]);
    let first = decode_breaker_state_changed(records[0].payload().unwrap()).unwrap();
    let sent = changes.iter().find(|c| c.event_id == first.event_id).expect("a change we wrote");
    assert_eq!(&first, sent, "the record carries the outbox event unchanged");
}

#[sqlx::test]
async fn two_relays_at_once_publish_every_row_exactly_once_and_in_order(pool: PgPool) {
    let kafka = state_kafka().await;
    let breakers = ["costsim_v2", "shadow_b", "shadow_c"];
    let changes: Vec<_> = (1..=15).flat_map(|v| breakers.map(|b| change(b, v))).collect();
    enqueue(&pool, &changes).await;

    // Small passes, so the two relays interleave on the same rows and breakers.
    let app = app_pool(&pool).await;
    let relays =
        [0, 1].map(|_| Relay::new(app.clone(), kafka.producer().unwrap(), &kafka.state_topic).with_batch_size(4));
    let drain = |relay: Relay| {
        let pool = pool.clone();
        async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            let mut delivered = 0;
            while unpublished(&pool).await > 0 {
                assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain within {DEADLINE:?}");
                match relay.relay_once().await.unwrap() {
                    RelayOutcome::Delivered(n) => delivered += n,
                    // The other relay holds what waits.
                    RelayOutcome::Empty => tokio::task::yield_now().await,
                }
            }
            delivered
        }
    };
    let [first, second] = relays;
    let (by_first, by_second) = tokio::join!(drain(first), drain(second));
    assert_eq!(by_first + by_second, changes.len(), "no row was delivered twice");

    let records = read_records(&kafka, &kafka.state_topic, changes.len()).await;
    let (versions, ids) = versions_by_breaker(&records);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), changes.len(), "every event once");
    for breaker in breakers {
        assert_eq!(versions[breaker], (1..=15).collect::<Vec<i64>>(), "{breaker} in version order");
    }
}
