//! Test fixtures: fresh topic and group names per test, the stack's addresses, the database code under test
//! connects to, and polling with a deadline.
//!
//! Behind PgBouncer (`scripts/pgbouncer test` sets `COSTSIM_TEST_POOLER_ADDR`), the harness stays direct:
//! `#[sqlx::test]` creates and drops each test's database on DATABASE_URL (it needs named statements and a
//! session lock) and the tests' own checks use that pool, while code under test gets the same database through
//! PgBouncer: [`app_pool`] for library code, [`database_env`] and [`app_url`] for child processes, whose leader
//! locks and migrations get the direct URL.

use std::time::Duration;

use costsim_breaker::kafka::KafkaConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// How long a test waits for something the stack should do in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The broker of the stack, as `scripts/stack env` exports it.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A Kafka configuration whose topics and group exist for this test only.
pub fn fresh_kafka() -> KafkaConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let id = &id[..12];
    KafkaConfig {
        brokers: brokers(),
        results_topic: format!("test-{id}.results"),
        state_topic: format!("test-{id}.state"),
        dlq_topic: format!("test-{id}.dlq"),
        group_id: format!("test-{id}"),
        results_partitions: 3,
        replication_factor: Some(1),
        min_insync_replicas: None,
        kafka_config: None,
        options: Vec::new(),
    }
}

/// The `costsim-breaker` binary built for these tests, with the environment pointing at a test's topics.
pub fn command(kafka: &KafkaConfig) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_costsim-breaker"));
    cmd.env("KAFKA_BROKERS", &kafka.brokers)
        .env("COSTSIM_RESULTS_TOPIC", &kafka.results_topic)
        .env("COSTSIM_STATE_TOPIC", &kafka.state_topic)
        .env("COSTSIM_DLQ_TOPIC", &kafka.dlq_topic)
        .env("COSTSIM_GROUP_ID", &kafka.group_id)
        .env("COSTSIM_RESULTS_PARTITIONS", kafka.results_partitions.to_string())
        // The suite's leader URL names the suite's database, not the test's: see `leader_url_for`.
        .env_remove("COSTSIM_LEADER_DATABASE_URL")
        .kill_on_drop(true);
    cmd
}

/// The pooler's `host:port` when the suite runs through one (`scripts/pgbouncer test`), else `None`.
pub fn pooler_addr() -> Option<(String, u16)> {
    let addr = std::env::var("COSTSIM_TEST_POOLER_ADDR").ok().filter(|a| !a.is_empty())?;
    let (host, port) = addr.rsplit_once(':').expect("COSTSIM_TEST_POOLER_ADDR is host:port");
    Some((host.to_owned(), port.parse().expect("COSTSIM_TEST_POOLER_ADDR has a numeric port")))
}

/// The address code under test reaches PostgreSQL at: the pooler's, else the stack's server.
pub fn app_server_addr() -> std::net::SocketAddr {
    let (host, port) = pooler_addr().unwrap_or_else(|| ("127.0.0.1".to_owned(), 5432));
    format!("{host}:{port}").parse().expect("an IP address and port")
}

/// The direct URL of the test's database: DATABASE_URL's server, the database `#[sqlx::test]` made.
pub fn direct_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (scripts/stack env)");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(pool.connect_options().get_database().expect("test databases are named"));
    url.to_string()
}

/// The URL code under test connects to: the test's database through the pooler when there is one, else direct.
pub fn app_url(pool: &PgPool) -> String {
    let mut url = url::Url::parse(&direct_url(pool)).expect("a URL");
    if let Some((host, port)) = pooler_addr() {
        url.set_host(Some(&host)).expect("a host");
        url.set_port(Some(port)).expect("a port");
    }
    url.to_string()
}

/// Behind the pooler, the direct URL of the database `url` names, for the leader locks and migrations of a child.
pub fn leader_url_for(url: &str) -> Option<String> {
    pooler_addr()?;
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (scripts/stack env)");
    let mut direct = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    direct.set_path(url::Url::parse(url).expect("a database URL").path());
    Some(direct.to_string())
}

/// The database settings of a child using the test's database: DATABASE_URL as code under test uses it and,
/// behind the pooler, COSTSIM_LEADER_DATABASE_URL direct.
pub fn database_env(pool: &PgPool) -> Vec<(&'static str, String)> {
    let url = app_url(pool);
    let leader = leader_url_for(&url).map(|l| ("COSTSIM_LEADER_DATABASE_URL", l));
    std::iter::once(("DATABASE_URL", url)).chain(leader).collect()
}

/// The pool handed to code under test: the test's database through the pooler when there is one (a pool of its
/// own, as large as the test's), else the test's pool itself.
pub async fn app_pool(pool: &PgPool) -> PgPool {
    let Some((host, port)) = pooler_addr() else { return pool.clone() };
    let options = (*pool.connect_options()).clone().host(&host).port(port);
    PgPoolOptions::new()
        .max_connections(pool.options().get_max_connections())
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("no pooler at {host}:{port} (scripts/pgbouncer up): {e}"))
}

/// Reads every partition of a topic from the beginning until `count` records arrived or the deadline passed.
pub async fn read_records(kafka: &KafkaConfig, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while records.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => records.push(message.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!("only {} of {count} records arrived on {topic} within {DEADLINE:?}", records.len()),
        }
    }
    records
}

/// A temporary file path that is removed when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    /// A new path in the system's temporary folder, not yet created.
    pub fn new(suffix: &str) -> Self {
        TempPath(std::env::temp_dir().join(format!("costsim-test-{}{suffix}", uuid::Uuid::new_v4())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The partition a record was read from and its decoded key, for assertions.
pub fn key_of(message: &OwnedMessage) -> String {
    String::from_utf8(message.key().expect("records are keyed").to_vec()).expect("utf-8 key")
}

/// Polls `condition` every 10 ms until it holds, failing the test if it does not within [`DEADLINE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends SIGTERM to a child and waits for it to exit, for at most `within`.
pub async fn sigterm(child: &mut tokio::process::Child, within: Duration) -> std::process::ExitStatus {
    let pid = child.id().expect("running").to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    tokio::time::timeout(within, child.wait()).await.expect("exits within the deadline").unwrap()
}
