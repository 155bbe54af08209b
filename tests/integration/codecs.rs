//! Every compression codec a producer may use, from a producer we did not write: confluent-kafka sends batches
//! compressed with none, gzip, lz4 and zstd, and `run` stores every event of each. Snappy is left out only
//! because the stack's broker, tansu 0.6, cannot store snappy batches; librdkafka's snappy support is checked by
//! the unit test of its built-in features.

use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::TopicRole;
use sqlx::PgPool;

use crate::helpers::fresh_kafka;
use crate::independent;
use crate::pipeline::{Processor, wait_for};

const PER_CODEC: usize = 150;

#[sqlx::test]
async fn batches_of_every_codec_from_an_independent_producer_are_all_stored(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let codecs = ["none", "gzip", "lz4", "zstd"];
    let events: Vec<_> = Generator::new(GeneratorConfig {
        count: (PER_CODEC * codecs.len()) as u64,
        profile: DriftProfile::Steady,
        start: chrono::Utc::now() - chrono::TimeDelta::seconds(120),
        events_per_second: 10.0,
        seed: 14,
        tenants: 3,
    })
    .collect();
    for (codec, chunk) in codecs.iter().zip(events.chunks(PER_CODEC)) {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            chunk.iter().map(|e| (e.tenant_id.clone().into_bytes(), encode_simulation_result(e))).collect();
        // A long linger packs each codec's records into a few large batches, which librdkafka compresses.
        let config = [
            ("bootstrap.servers", kafka.brokers.as_str()),
            ("compression.type", codec),
            ("linger.ms", "200"),
            ("batch.num.messages", "10000"),
        ];
        let produced = independent::produce(&config, &kafka.results_topic, &records).await;
        assert_eq!((produced.delivered, produced.failed), (PER_CODEC as u64, 0), "{codec}: {:?}", produced.errors);
    }

    let _run = Processor::start(&kafka, &pool, &[]).await;
    let total = (PER_CODEC * codecs.len()) as i64;
    let stored = wait_for(&pool, "SELECT count(*) FROM costsim_provenance", total).await;
    assert_eq!(stored, total, "every event of every codec is stored");
    let lost: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_lost_records").fetch_one(&pool).await.unwrap();
    assert_eq!(lost, 0);
}
