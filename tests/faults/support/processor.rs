//! `costsim-breaker run` as a child process: started with a scenario's topics, database and settings, its JSON log
//! kept (in memory for assertions, on disk for a post-mortem), its HTTP address read from that log, and killed
//! with SIGKILL or stopped with SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use costsim_breaker::kafka::KafkaConfig;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;

use super::{DEADLINE, poll};

/// Where processor logs are written: `COSTSIM_FAULTS_LOG_DIR`, else a folder under cargo's test temp dir.
pub fn log_dir() -> PathBuf {
    let dir = std::env::var_os("COSTSIM_FAULTS_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults-logs"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `costsim-breaker` binary with the environment naming a scenario's broker, topics and group; killed when
/// dropped.
pub fn cli(kafka: &KafkaConfig) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_costsim-breaker"));
    cmd.env("KAFKA_BROKERS", &kafka.brokers)
        .env("COSTSIM_RESULTS_TOPIC", &kafka.results_topic)
        .env("COSTSIM_STATE_TOPIC", &kafka.state_topic)
        .env("COSTSIM_DLQ_TOPIC", &kafka.dlq_topic)
        .env("COSTSIM_GROUP_ID", &kafka.group_id)
        .env("COSTSIM_RESULTS_PARTITIONS", kafka.results_partitions.to_string())
        .kill_on_drop(true);
    cmd
}

/// The consumer session timeout of every processor the suite starts: how long a killed member keeps its partitions.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start a processor.
#[derive(Clone)]
pub struct Launch {
    /// Topics, group and broker.
    pub kafka: KafkaConfig,
    /// The database URL.
    pub database_url: String,
    /// Engine settings (`--set key=value`).
    pub settings: Vec<String>,
    /// Extra environment, e.g. pipeline settings or `ALERTMANAGER_URL`.
    pub env: Vec<(String, String)>,
    /// `--alerts on|off`.
    pub alerts: bool,
}

impl Launch {
    /// A launch with the alert drainer off and no extra environment.
    pub fn new(kafka: &KafkaConfig, database_url: &str, settings: &[&str]) -> Launch {
        Launch {
            kafka: kafka.clone(),
            database_url: database_url.to_owned(),
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            alerts: false,
        }
    }

    /// The same launch with one more environment variable.
    pub fn env(mut self, key: &str, value: impl ToString) -> Launch {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// The same launch delivering alerts to `url`.
    pub fn alerts_to(mut self, url: &str) -> Launch {
        self.alerts = true;
        self.env("ALERTMANAGER_URL", url)
    }
}

/// One running `run` process, killed (SIGKILL) when dropped.
pub struct Processor {
    child: Child,
    /// The instance name it was given (`INSTANCE_ID`), which its leader leases carry.
    pub name: String,
    lines: Arc<Mutex<Vec<Value>>>,
    /// Where its log is written.
    pub log: PathBuf,
}

impl Processor {
    /// Starts a processor named `name` (unique within the scenario).
    pub fn start(launch: &Launch, name: &str) -> Processor {
        let kafka = &launch.kafka;
        let mut cmd = cli(kafka);
        cmd.env("DATABASE_URL", &launch.database_url)
            .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
            .env("COSTSIM_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn")
            .env("INSTANCE_ID", name)
            .env_remove("ALERTMANAGER_URL")
            .args(["run", "--alerts", if launch.alerts { "on" } else { "off" }])
            // A killed member keeps its partitions until its session times out: keep that short, yet long enough
            // for a broker that is busy with a million-record backlog to answer a heartbeat.
            .args([
                "-X",
                &format!("session.timeout.ms={}", SESSION_TIMEOUT.as_millis()),
                "-X",
                "heartbeat.interval.ms=1000",
            ])
            // A member that joined while the broker could not answer the topic's metadata is given no partition, and
            // notices the topic only at its next metadata refresh (5 min by default): see docs/RELIABILITY.md.
            .args(["-X", "topic.metadata.refresh.interval.ms=5000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in &launch.env {
            cmd.env(key, value);
        }
        for s in &launch.settings {
            cmd.args(["--set", s]);
        }
        let mut child = cmd.spawn().expect("run starts");
        let log = log_dir().join(format!("{}-{name}.log", kafka.group_id));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sink, mut file) = (lines.clone(), std::fs::File::create(&log).unwrap());
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        // Reading to the end keeps the child from ever blocking on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = writeln!(file, "{line}");
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(value);
                }
            }
        });
        Processor { child, name: name.to_owned(), lines, log }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// The address of its `/metrics` and `/health` listener, read from its log.
    pub async fn http_addr(&self) -> SocketAddr {
        poll("the processor's HTTP address in its log", DEADLINE, async || {
            self.find("Serving /metrics and /health.", |_| true)
                .map(|fields| fields["addr"].as_str().expect("addr field").parse().expect("a socket address"))
        })
        .await
    }

    /// The fields of the first log line with `message` whose fields satisfy `matches`.
    pub fn find(&self, message: &str, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        let lines = self.lines.lock().unwrap();
        lines.iter().map(|l| &l["fields"]).find(|f| f["message"] == message && matches(f)).cloned()
    }

    /// How many log lines carry `message` with fields satisfying `matches`.
    pub fn count(&self, message: &str, matches: impl Fn(&Value) -> bool) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().map(|l| &l["fields"]).filter(|f| f["message"] == message && matches(f)).count()
    }

    /// The last of `messages` logged with the field `job` equal to `job`.
    pub fn last_of(&self, job: &str, messages: &[&str]) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .map(|l| &l["fields"])
            .find(|f| f["job"] == job && messages.iter().any(|m| f["message"] == *m))
            .map(|f| f["message"].as_str().unwrap_or_default().to_owned())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("the child can be polled").is_none()
    }

    /// SIGKILL: no shutdown, no last commit.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, then waits for a clean exit (which must come within the shutdown deadline).
    pub async fn terminate(mut self) {
        let pid = self.pid().to_string();
        let sent = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 30 s of SIGTERM (log: {:?})", self.name, self.log))
            .unwrap();
        assert!(status.success(), "{} exited with {status:?} (log: {:?})", self.name, self.log);
    }
}

/// `GET /health` of a processor: the status code and the body.
pub async fn health(addr: SocketAddr) -> Option<(u16, Value)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let response = client.get(format!("http://{addr}/health")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}
