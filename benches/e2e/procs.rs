//! Child processes of the benchmark: the processor and the CLI from this build, the mock broker, `psql`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use costsim_breaker::kafka::KafkaConfig;
use tokio::process::{Child, Command};

/// The `costsim-breaker` binary measured: `COSTSIM_BENCH_EXE` (another build, to compare two versions), else
/// this build's.
pub fn exe() -> String {
    std::env::var("COSTSIM_BENCH_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_costsim-breaker").to_owned())
}

/// A `costsim-breaker` command with the Kafka and database settings of one phase.
pub fn cli(kafka: &KafkaConfig, database_url: &str) -> Command {
    let mut cmd = Command::new(exe());
    cmd.env("KAFKA_BROKERS", &kafka.brokers)
        .env("COSTSIM_RESULTS_TOPIC", &kafka.results_topic)
        .env("COSTSIM_STATE_TOPIC", &kafka.state_topic)
        .env("COSTSIM_DLQ_TOPIC", &kafka.dlq_topic)
        .env("COSTSIM_GROUP_ID", &kafka.group_id)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// Runs a CLI command to completion and returns its stdout; fails with its stderr.
pub async fn run_cli(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().await.with_context(|| format!("cannot start {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running `costsim-breaker run`, killed when dropped.
pub struct Processor {
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Processor {
    /// Starts `run` (alerts off, metrics on an ephemeral port) with engine overrides and extra arguments.
    pub fn start(
        kafka: &KafkaConfig,
        database_url: &str,
        settings: &[&str],
        extra: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut cmd = cli(kafka, database_url);
        cmd.args(["run", "--alerts", "off", "--http-addr", "127.0.0.1:0"]).args(extra);
        for s in settings {
            cmd.args(["--set", s]);
        }
        let file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).spawn().context("cannot start run")?;
        Ok(Processor { child, log: log.to_owned() })
    }

    /// Fails with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            anyhow::bail!("the processor exited ({status}); {}:\n{}", self.log.display(), tail.join("\n"));
        }
        Ok(())
    }

    /// Resident memory now, in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the processor has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmRSS line")?;
        Ok(kb * 1024)
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}

/// The mock broker (`examples/mock_kafka.rs`) with the run's topics, killed when dropped.
pub struct MockBroker {
    _child: Child,
    /// Its bootstrap address.
    pub brokers: String,
}

impl MockBroker {
    /// Starts the tool and reads the address it prints.
    pub async fn start(tool: &Path, topics: &[(String, i32)]) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = Command::new(tool)
            .args(topics.iter().map(|(t, p)| format!("{t}:{p}")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", tool.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the mock broker printed no address within 30 s")??
            .context("the mock broker exited")?;
        let brokers = line.strip_prefix("KAFKA_BROKERS=").context("unexpected first line")?.to_owned();
        Ok(MockBroker { _child: child, brokers })
    }
}

/// Times a `psql` command.
pub async fn psql(database_url: &str, command: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut cmd = Command::new("psql");
    cmd.args([database_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command]);
    run_cli(cmd, "psql").await?;
    Ok(started.elapsed())
}
