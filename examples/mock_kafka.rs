//! A Kafka broker in memory, for benchmarks: librdkafka's mock cluster on 127.0.0.1, so `produce`, `run` and
//! the benchmark can be pointed at a broker whose own cost is small.
//!
//! `cargo run --release --example mock_kafka -- TOPIC:PARTITIONS ...` creates the topics (the mock cluster has no
//! CreateTopics API; our commands accept a broker that cannot create topics when they all exist), prints
//! `KAFKA_BROKERS=<address>` on stdout and serves until killed. Limits of the mock that shape its use: each
//! partition keeps only its newest 5 MiB (older record batches are dropped, so a reader must keep up with the
//! writer), there is no compaction, and everything lives in this process's memory.

use rdkafka::mocking::MockCluster;

fn main() {
    let topics: Vec<(String, i32)> = std::env::args()
        .skip(1)
        .map(|arg| {
            let (name, partitions) = arg.rsplit_once(':').unwrap_or((arg.as_str(), "1"));
            let partitions = partitions.parse().unwrap_or_else(|_| panic!("`{arg}` is not TOPIC:PARTITIONS"));
            (name.to_owned(), partitions)
        })
        .collect();
    let cluster = MockCluster::new(1).expect("librdkafka starts a mock cluster");
    for (name, partitions) in &topics {
        cluster.create_topic(name, *partitions, 1).unwrap_or_else(|e| panic!("cannot create topic {name}: {e}"));
    }
    println!("KAFKA_BROKERS={}", cluster.bootstrap_servers());
    // Serve until killed; the cluster's threads do the work.
    loop {
        std::thread::park();
    }
}
