//! The processor under test as a child process, and what the input-fault tests need around it: fresh topics, the
//! test database's URL, confirmed production, topic counts and polling with a deadline.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use sqlx::PgPool;
use tokio::time::Instant;

/// A fresh set of topic and group names on `brokers`, used by this test only.
pub fn fresh_kafka(brokers: &str, partitions: i32) -> KafkaConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let id = &id[..12];
    KafkaConfig {
        brokers: brokers.to_owned(),
        results_topic: format!("faults-{id}.results"),
        state_topic: format!("faults-{id}.state"),
        dlq_topic: format!("faults-{id}.dlq"),
        group_id: format!("faults-{id}"),
        results_partitions: partitions,
        replication_factor: Some(1),
        min_insync_replicas: None,
        kafka_config: None,
        options: Vec::new(),
    }
}

/// The stack's broker (`scripts/stack env`).
pub fn stack_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The URL of the database a `#[sqlx::test]` pool points at: DATABASE_URL's server, the test's database.
pub async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (scripts/stack env)");
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// A running `costsim-breaker run`, killed when dropped; its stderr goes to a file the test can read.
pub struct Run {
    /// The child process.
    pub child: tokio::process::Child,
    /// Where its stderr is written.
    pub log: PathBuf,
}

/// How to start a [`Run`]: database, Kafka, extra environment and arguments.
pub struct RunSpec<'a> {
    /// The topics and brokers.
    pub kafka: &'a KafkaConfig,
    /// DATABASE_URL of the child.
    pub database_url: String,
    /// Extra environment variables (set after the defaults, so they win).
    pub env: Vec<(String, String)>,
    /// Extra arguments after `run`.
    pub args: Vec<String>,
    /// Whether alerts are delivered (`--alerts on`); off by default, so no Alertmanager is needed.
    pub alerts: bool,
}

impl<'a> RunSpec<'a> {
    /// `run` on these topics and this database, with alerts off and the listener on port 0.
    pub fn new(kafka: &'a KafkaConfig, database_url: String) -> Self {
        RunSpec { kafka, database_url, env: Vec::new(), args: Vec::new(), alerts: false }
    }

    /// Delivers alerts (to ALERTMANAGER_URL, which the caller sets).
    pub fn alerts_on(mut self) -> Self {
        self.alerts = true;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The command, not yet started.
    pub fn command(&self) -> tokio::process::Command {
        let k = self.kafka;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_costsim-breaker"));
        cmd.arg("run")
            // By environment, not flag, so a test can still set COSTSIM_ALERTS to something else.
            .env("COSTSIM_ALERTS", if self.alerts { "on" } else { "off" })
            .args(&self.args)
            .env_remove("COSTSIM_LEADER_DATABASE_URL")
            .env_remove("COSTSIM_API_TOKENS")
            .env_remove("COSTSIM_API_TOKENS_FILE")
            .env("KAFKA_BROKERS", &k.brokers)
            .env("COSTSIM_RESULTS_TOPIC", &k.results_topic)
            .env("COSTSIM_STATE_TOPIC", &k.state_topic)
            .env("COSTSIM_DLQ_TOPIC", &k.dlq_topic)
            .env("COSTSIM_GROUP_ID", &k.group_id)
            .env("COSTSIM_RESULTS_PARTITIONS", k.results_partitions.to_string())
            .env("DATABASE_URL", &self.database_url)
            .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Starts the process.
    pub fn start(self) -> Run {
        let log = std::env::temp_dir().join(format!("costsim-faults-{}.log", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&log).unwrap();
        let child = self.command().stderr(file).spawn().expect("run starts");
        Run { child, log }
    }
}

impl Run {
    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test with the log if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("run exited ({status}):\n{}", self.stderr());
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        // tokio's Child can only SIGKILL; the graceful path needs SIGTERM.
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.expect("run stops").unwrap()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A Kafka record as the tests send it: key and payload.
pub type Record = (Vec<u8>, Vec<u8>);

/// Sends `(key, payload)` records to `topic` and waits for every delivery; panics if any failed.
pub async fn produce(kafka: &KafkaConfig, topic: &str, records: impl IntoIterator<Item = Record>) {
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    for (key, payload) in records {
        sender.send(topic, &key, &payload).await.unwrap();
    }
    let (counts, err) = sender.finish().await;
    assert_eq!((counts.failed, err), (0, None), "every record is delivered");
}

/// The high watermark of each partition of `topic`, in partition order. A busy broker may let one request time
/// out: each is retried for up to a minute.
pub fn end_offsets(kafka: &KafkaConfig, topic: &str) -> Vec<i64> {
    let client: BaseConsumer = kafka.metadata_client().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let retry = |what: &str, err: rdkafka::error::KafkaError| {
        assert!(std::time::Instant::now() < deadline, "{what} of {topic}: {err}");
    };
    let partitions = loop {
        match client.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(m) => break m.topics()[0].partitions().len() as i32,
            Err(e) => retry("metadata", e),
        }
    };
    (0..partitions)
        .map(|p| {
            loop {
                match client.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                    Ok((_, high)) => break high,
                    Err(e) => retry("watermarks", e),
                }
            }
        })
        .collect()
}

/// Polls `sql` (one BIGINT) until it equals `expected` or `within` passes; returns the last value.
pub async fn wait_for(pool: &PgPool, sql: &'static str, expected: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let got: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if got == expected || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the provenance table says about the events the processor stored from one topic: rows, distinct event
/// ids, distinct (partition, offset) pairs.
pub async fn provenance_counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT (kafka_partition, kafka_offset)) \
         FROM costsim_provenance",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The `next_offset` the processor committed per partition of `topic` (missing partitions as -1).
pub async fn committed_offsets(pool: &PgPool, topic: &str, partitions: usize) -> Vec<i64> {
    let rows: Vec<(i32, Option<i64>)> =
        sqlx::query_as("SELECT \"partition\", next_offset FROM costsim_consumed_offsets WHERE topic = $1")
            .bind(topic)
            .fetch_all(pool)
            .await
            .unwrap();
    let mut out = vec![-1; partitions];
    for (p, next) in rows {
        out[p as usize] = next.unwrap_or(-1);
    }
    out
}
