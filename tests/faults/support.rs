//! What every fault scenario shares: sizes from the environment, fresh topics and databases, polling with a
//! deadline, the processor as a child process, a deterministic event stream, the oracle and the report.

pub mod oracle;
pub mod processor;
pub mod report;
pub mod services;
pub mod stream;

use std::time::Duration;

use costsim_breaker::kafka::{KafkaConfig, TopicRole};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// How long a scenario waits for something that should take seconds.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A size of the long form, from the environment, or its default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// Topics and a group that exist for one scenario only, on `brokers`, with their topics created.
pub async fn fresh_kafka(brokers: &str) -> KafkaConfig {
    let kafka = crate::child::fresh_kafka(brokers, 3);
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.expect("topics");
    kafka
}

/// A private broker for one scenario, with the scenario's topics created on it. The shared broker serves every
/// engineer's tests at once; a scenario that counts recovery times and drives a million records must not share it.
pub async fn private_kafka() -> (services::PrivateBroker, KafkaConfig) {
    let broker = private_broker().await;
    let kafka = fresh_kafka(&broker.brokers()).await;
    (broker, kafka)
}

/// A private broker with no topic yet, for tests that name their own (see [`private_kafka`] for why not the shared
/// one).
pub async fn private_broker() -> services::PrivateBroker {
    services::PrivateBroker::start().await
}

/// The same topics read by another consumer group, so a second processor makes its own, independent run.
pub fn other_group(kafka: &KafkaConfig, suffix: &str) -> KafkaConfig {
    KafkaConfig { group_id: format!("{}-{suffix}", kafka.group_id), ..kafka.clone() }
}

/// A database of its own on a server, with the schema applied; dropped by [`Database::drop_now`] when the
/// scenario passed (a failed one leaves it for inspection, and says its name).
pub struct Database {
    /// Pooled connections for the scenario's queries.
    pub pool: PgPool,
    /// The URL a processor connects with.
    pub url: String,
    name: String,
    server: String,
}

impl Database {
    /// Creates `faults_<random>` on the server of `server_url` (any database URL of that server).
    pub async fn create(server_url: &str) -> Database {
        let name = format!("faults_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin = PgPoolOptions::new().max_connections(1).connect(server_url).await.expect("the server answers");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
        admin.close().await;
        let mut url = url::Url::parse(server_url).unwrap();
        url.set_path(&name);
        let pool = PgPoolOptions::new().max_connections(4).connect(url.as_str()).await.unwrap();
        costsim_breaker::store::migrate(&pool).await.unwrap();
        eprintln!("faults: database {name}");
        Database { pool, url: url.to_string(), name, server: server_url.to_owned() }
    }

    /// A database on the shared server of `DATABASE_URL`.
    pub async fn shared() -> Database {
        Database::create(&std::env::var("DATABASE_URL").expect("DATABASE_URL is set (scripts/stack env)")).await
    }

    /// Drops the database (its connections closed first).
    pub async fn drop_now(self) {
        self.pool.close().await;
        let admin = PgPoolOptions::new().max_connections(1).connect(&self.server).await.unwrap();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await.unwrap();
    }

    /// A count (or any bigint) the scenario polls.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Provenance rows stored so far.
    pub async fn stored(&self) -> i64 {
        self.scalar("SELECT count(*) FROM costsim_provenance").await
    }

    /// Records committed so far: the sum of the next offsets of every partition.
    pub async fn committed(&self) -> i64 {
        self.scalar("SELECT coalesce(sum(next_offset), 0)::bigint FROM costsim_consumed_offsets").await
    }
}

/// Polls `check` every 50 ms until it yields a value, failing with `what` if it does not within `deadline`.
pub async fn poll<T>(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `db` committed more than `than` records; returns how many.
pub async fn committed_beyond(db: &Database, than: i64, within: Duration) -> i64 {
    poll(&format!("a commit beyond {than} records"), within, async || {
        let n = db.committed().await;
        (n > than).then_some(n)
    })
    .await
}

/// Waits until `db` committed at least `count` records.
pub async fn committed_at_least(db: &Database, count: i64, within: Duration) {
    poll(&format!("{count} records committed"), within, async || (db.committed().await >= count).then_some(())).await
}

/// How long a run of `events` may take, on a slow shared machine: a minute, plus 2 ms per event.
pub fn run_deadline(events: u64) -> Duration {
    DEADLINE + Duration::from_millis(2 * events)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The Rust sources under `src/`, as (path, text).
pub fn rust_sources() -> Vec<(String, String)> {
    let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    assert!(files.len() > 50, "read the sources ({} files)", files.len());
    files
}
