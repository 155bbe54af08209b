//! The layered configuration, run as a user runs it: a `--config` file, the environment and flags in that order,
//! unknown names refused, and the managed-cluster switches (`--no-create-topics`, `--no-migrate`, `watch`
//! creating nothing) against the real broker and database.

use std::process::Stdio;
use std::time::Duration;

use costsim_breaker::kafka::{KafkaConfig, TopicRole};
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt as _;

use crate::helpers::{DEADLINE, TempPath, command, database_env, fresh_kafka};

/// Writes `text` to a fresh file with this suffix.
fn file(suffix: &str, text: &str) -> TempPath {
    let path = TempPath::new(suffix);
    std::fs::write(&path.0, text).unwrap();
    path
}

/// `config show --json` of `cmd`, parsed.
async fn shown(mut cmd: tokio::process::Command) -> serde_json::Value {
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The (value, source) `config show --json` gives a setting or a Kafka property.
fn setting<'a>(shown: &'a serde_json::Value, list: &str, name: &str) -> (Option<&'a str>, &'a str) {
    let item = shown[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {list}: {shown}"));
    (item["value"].as_str(), item["source"].as_str().unwrap())
}

#[tokio::test]
async fn file_environment_and_flags_override_each_other_in_that_order_and_secrets_stay_masked() {
    let kafka = fresh_kafka();
    let toml = file(
        ".toml",
        r#"
        database_url = "postgres://app:file-secret@db.example:5432/costsim?sslmode=verify-full"
        min_samples = 20
        window_seconds = 60
        http_addr = "0.0.0.0:9464"
        batch_max_records = 500

        [kafka]
        "sasl.username" = "from-file"
        sasl.mechanisms = "SCRAM-SHA-512"
        "#,
    );
    let properties = file(".properties", "sasl.password=props-secret\nssl.ca.location=/etc/ssl/ca.pem\n");
    let mut cmd = command(&kafka);
    cmd.arg("--config").arg(&toml.0).args(["config", "show", "--json", "--"]);
    cmd.arg("--kafka-config").arg(&properties.0);
    cmd.args(["--batch-max-records", "700", "--set", "window_seconds=120", "-X", "sasl.mechanisms=PLAIN"]);
    cmd.env("COSTSIM_MIN_SAMPLES", "30").env("COSTSIM_KAFKA_SASL_USERNAME", "from-env").env_remove("DATABASE_URL");
    let shown = shown(cmd).await;
    assert_eq!(setting(&shown, "settings", "COSTSIM_HTTP_ADDR"), (Some("0.0.0.0:9464"), "file"));
    assert_eq!(setting(&shown, "settings", "COSTSIM_MIN_SAMPLES"), (Some("30"), "env"));
    assert_eq!(setting(&shown, "settings", "COSTSIM_WINDOW_SECONDS"), (Some("120"), "flag"));
    assert_eq!(setting(&shown, "settings", "COSTSIM_BATCH_MAX_RECORDS"), (Some("700"), "flag"));
    assert_eq!(setting(&shown, "settings", "COSTSIM_DRIFT_THRESHOLD"), (Some("0.2"), "default"));
    assert_eq!(
        setting(&shown, "settings", "DATABASE_URL"),
        (Some("postgres://app:***@db.example:5432/costsim?sslmode=verify-full"), "file")
    );
    assert_eq!(setting(&shown, "kafka_properties", "sasl.username"), (Some("from-env"), "env"));
    assert_eq!(setting(&shown, "kafka_properties", "sasl.mechanisms"), (Some("PLAIN"), "flag"));
    assert_eq!(setting(&shown, "kafka_properties", "sasl.password"), (Some("***"), "file"));
    assert_eq!(setting(&shown, "kafka_properties", "ssl.ca.location"), (Some("/etc/ssl/ca.pem"), "file"));
    let text = shown.to_string();
    assert!(!text.contains("file-secret") && !text.contains("props-secret"), "{text}");
}

#[tokio::test]
async fn a_url_from_the_file_never_shows_its_password_in_help() {
    let toml = file(".toml", "database_url = \"postgres://app:help-secret@db/x\"\n");
    let out = command(&fresh_kafka()).arg("--config").arg(&toml.0).args(["run", "--help"]).output().await.unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("--database-url"), "{help}");
    assert!(!help.contains("help-secret"), "{help}");
}

#[tokio::test]
async fn an_unknown_key_or_costsim_variable_stops_start_up_with_its_name() {
    let kafka = fresh_kafka();
    let toml = file(".toml", "drift_threshold = 0.3\nprobation_secs = 60\n");
    let out = command(&kafka).arg("--config").arg(&toml.0).args(["breaker", "status"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown key `probation_secs`"), "{stderr}");

    let out =
        command(&kafka).env("COSTSIM_DRIFT_THRESHHOLD", "0.3").args(["breaker", "status"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`COSTSIM_DRIFT_THRESHHOLD`") && stderr.contains("COSTSIM_DRIFT_THRESHOLD"), "{stderr}");
}

/// `produce` of a few events with these extra arguments and environment; its exit status and stderr.
async fn produce(kafka: &KafkaConfig, config: &TempPath, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut cmd = command(kafka);
    cmd.arg("--config").arg(&config.0).args(["produce", "--generate", "5", "--seed", "3"]).args(args);
    // librdkafka's default would wait 30 s on a client that cannot speak to the broker.
    cmd.args(["-X", "message.timeout.ms=5000"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(DEADLINE, cmd.output()).await.expect("produce ends").unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn kafka_properties_reach_the_client_with_the_environment_over_the_file_and_flags_over_both() {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::DeadLetter]).await.unwrap();
    // A value librdkafka refuses when the client is made shows which layer won, at once.
    let config = file(".toml", "[kafka]\nsecurity.protocol = \"no-such-protocol\"\n");
    let (ok, stderr) = produce(&kafka, &config, &[], &[]).await;
    assert!(!ok && stderr.contains("no-such-protocol"), "the file's value reached the client: {stderr}");
    let (ok, stderr) = produce(&kafka, &config, &[("COSTSIM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")], &[]).await;
    assert!(ok, "the environment overrides the file: {stderr}");
    let env = [("COSTSIM_KAFKA_SECURITY_PROTOCOL", "no-such-protocol")];
    let (ok, stderr) = produce(&kafka, &config, &env, &["-X", "security.protocol=PLAINTEXT"]).await;
    assert!(ok, "-X overrides the environment: {stderr}");
    let env = [("COSTSIM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"), ("COSTSIM_KAFKA_NO_SUCH_PROPERTY", "1")];
    let (ok, stderr) = produce(&kafka, &config, &env, &[]).await;
    assert!(!ok && stderr.contains("no.such.property"), "librdkafka refuses an unknown property by name: {stderr}");
}

/// Runs `run` until it logs that it is up or exits; returns (exited, its stderr so far).
async fn run_until_started(cmd: &mut tokio::process::Command) -> (Option<std::process::ExitStatus>, String) {
    let mut child = cmd.stderr(Stdio::piped()).env("RUST_LOG", "info").spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        tokio::select! {
            line = lines.next_line() => match line.unwrap() {
                Some(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains("Processor started.") {
                        let status = crate::helpers::sigterm(&mut child, Duration::from_secs(30)).await;
                        assert!(status.success(), "{seen}");
                        return (None, seen);
                    }
                }
                None => return (Some(child.wait().await.unwrap()), seen),
            },
            _ = tokio::time::sleep_until(deadline) => panic!("run neither started nor stopped: {seen}"),
        }
    }
}

fn run_command(kafka: &KafkaConfig, pool: &PgPool, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = command(kafka);
    cmd.arg("run").args(extra).args(["--alerts", "off"]).env("COSTSIM_HTTP_ADDR", "127.0.0.1:0");
    cmd.envs(database_env(pool));
    cmd
}

#[sqlx::test(migrations = false)]
async fn with_topic_creation_off_run_refuses_missing_topics_and_an_uncompacted_state_topic(pool: PgPool) {
    let kafka = fresh_kafka();
    let (exited, stderr) = run_until_started(&mut run_command(&kafka, &pool, &["--no-create-topics"])).await;
    assert!(exited.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("--no-create-topics") && stderr.contains(&kafka.results_topic), "{stderr}");
    let missing: Vec<String> = [TopicRole::Results, TopicRole::State].iter().map(|r| kafka.topic(*r).into()).collect();
    for topic in &missing {
        assert!(!topic_exists(&kafka, topic).await, "{topic} was created although creation is off");
    }

    // A state topic made with the results' settings (delete, not compact) is refused by name.
    let uncompacted = KafkaConfig { state_topic: format!("{}-plain", kafka.state_topic), ..kafka.clone() };
    uncompacted.ensure_topics(&[TopicRole::Results, TopicRole::DeadLetter]).await.unwrap();
    let plain = KafkaConfig { results_topic: uncompacted.state_topic.clone(), ..kafka.clone() };
    plain.ensure_topics(&[TopicRole::Results]).await.unwrap();
    let (exited, stderr) = run_until_started(&mut run_command(&uncompacted, &pool, &["--no-create-topics"])).await;
    assert!(exited.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("not compact") && stderr.contains(&uncompacted.state_topic), "{stderr}");

    // With every topic as it must be, run starts without creating any.
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let (exited, stderr) = run_until_started(&mut run_command(&kafka, &pool, &["--no-create-topics"])).await;
    assert!(exited.is_none(), "{stderr}");
}

#[sqlx::test(migrations = false)]
async fn run_with_no_migrate_refuses_an_old_schema_and_starts_on_a_migrated_one(pool: PgPool) {
    let kafka = fresh_kafka();
    let (exited, stderr) = run_until_started(&mut run_command(&kafka, &pool, &["--no-migrate"])).await;
    assert!(exited.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("not current") && stderr.contains("costsim-breaker migrate"), "{stderr}");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'costsim%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tables, 0, "--no-migrate changed the schema");

    let out = command(&kafka).arg("migrate").envs(database_env(&pool)).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (exited, stderr) = run_until_started(&mut run_command(&kafka, &pool, &["--no-migrate"])).await;
    assert!(exited.is_none(), "{stderr}");
}

async fn topic_exists(kafka: &KafkaConfig, topic: &str) -> bool {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer as _;
        let client = kafka.metadata_client().unwrap();
        let metadata = client.fetch_metadata(None, Duration::from_secs(10)).unwrap();
        metadata.topics().iter().any(|t| t.name() == topic && !t.partitions().is_empty())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn watch_never_creates_the_topic_it_follows() {
    let kafka = fresh_kafka();
    let out = tokio::time::timeout(DEADLINE, command(&kafka).args(["watch", "--count", "1"]).output())
        .await
        .expect("watch ends")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&kafka.state_topic), "{stderr}");
    assert!(!topic_exists(&kafka, &kafka.state_topic).await, "watch created {}", kafka.state_topic);
}
