//! Kafka over SASL_SSL with SCRAM-SHA-512, through parts we did not write: a private tansu checks SCRAM against
//! the credentials in its own storage (`tansu user create`), socat's `OPENSSL-LISTEN` terminates TLS in front of
//! it with a server certificate `openssl` made for this test, and confluent-kafka reads what we published. Every
//! command that talks to Kafka goes through it: `produce` (secrets from a Java properties file), `run`, `watch`,
//! `backfill --topic` and `backtest --topic` (secrets from `COSTSIM_KAFKA_*`). A wrong password and an unknown CA
//! end a command within seconds, with an error that names the cause.

use std::process::Stdio;
use std::time::{Duration, Instant};

use costsim_breaker::kafka::KafkaConfig;
use sqlx::PgPool;

use crate::helpers::{app_url, command, fresh_kafka};
use crate::independent;
use crate::pipeline::wait_for;
use crate::pki::{Pki, TempDir, run};

const USER: &str = "costsim";
const PASSWORD: &str = "s3cret-Scram-512";
/// Engine settings small enough for a test, as the pipeline tests use.
const FAST: &[&str] =
    &["bucket_seconds=1", "window_seconds=10", "probation_seconds=5", "min_samples=20", "disable_ttl_seconds=3600"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (SIGKILL) when dropped: tansu breaks on its own SIGTERM, and nothing here needs a
/// clean shutdown.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private tansu requiring SCRAM, reachable only through socat's TLS listener.
struct SecureBroker {
    pki: Pki,
    dir: TempDir,
    tls_port: u16,
    _tansu: Killed,
    _socat: Killed,
}

impl SecureBroker {
    async fn start() -> SecureBroker {
        let pki = Pki::new();
        let dir = TempDir::new("costsim-secure-tansu");
        let (plain_port, tls_port) = (free_port(), free_port());
        let plain = format!("127.0.0.1:{plain_port}");

        // First without authentication, to store the user's SCRAM credentials in the broker's own storage.
        let tansu = Self::tansu(&dir, &plain, &plain, false);
        wait_until_answers(&plain, &[]).await;
        run(
            std::process::Command::new(crate::tansu::binary())
                .current_dir(&dir.0)
                .args(["user", "create", "--broker", &format!("tcp://{plain}"), USER, PASSWORD])
                .args(["--mechanism", "scram512"]),
            "tansu user create",
        );
        drop(tansu);

        // Then with authentication on the same storage, advertising the TLS port so clients stay behind TLS.
        let tansu = Self::tansu(&dir, &plain, &format!("127.0.0.1:{tls_port}"), true);
        let listen = format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            pki.path("server.crt").display(),
            pki.path("server.key").display()
        );
        let socat = std::process::Command::new("socat")
            .args([listen.as_str(), &format!("TCP:{plain}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("socat.log")).unwrap())
            .spawn()
            .expect("socat runs (scripts/stack up installs it)");
        let broker = SecureBroker { pki, dir, tls_port, _tansu: tansu, _socat: Killed(socat) };
        wait_until_answers(&broker.brokers(), &broker.properties(PASSWORD, &broker.pki.ca_cert())).await;
        broker
    }

    fn tansu(dir: &TempDir, listen: &str, advertise: &str, authentication: bool) -> Killed {
        Killed(crate::tansu::start(&dir.0, &dir.0.join("tansu.log"), listen, advertise, authentication))
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    /// librdkafka properties for SASL_SSL with SCRAM-SHA-512, this password and this CA file.
    fn properties(&self, password: &str, ca: &str) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", USER),
            ("sasl.password", password),
            ("ssl.ca.location", ca),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into()
    }

    /// The same properties as `COSTSIM_KAFKA_<PROPERTY>` variables.
    fn env(&self, password: &str, ca: &str) -> Vec<(String, String)> {
        self.properties(password, ca)
            .into_iter()
            .map(|(k, v)| (format!("COSTSIM_KAFKA_{}", k.to_uppercase().replace('.', "_")), v))
            .collect()
    }

    /// A test's topics on this broker.
    fn kafka(&self) -> KafkaConfig {
        KafkaConfig { brokers: self.brokers(), ..fresh_kafka() }
    }
}

/// Waits until a metadata request with these properties succeeds: the processor's own start-up check, which
/// retries a broker that is still starting and fails at once on a refused login.
async fn wait_until_answers(brokers: &str, properties: &[(String, String)]) {
    let kafka = KafkaConfig { brokers: brokers.to_owned(), options: properties.to_vec(), ..fresh_kafka() };
    kafka.check_connection().await.unwrap_or_else(|e| panic!("the private broker does not answer {brokers}: {e}"));
}

/// Runs a command with the broker's SCRAM settings in the environment; returns (success, stdout, stderr).
async fn costsim(
    kafka: &KafkaConfig,
    env: &[(String, String)],
    pool: Option<&PgPool>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = command(kafka);
    cmd.args(args).envs(env.iter().cloned());
    if let Some(pool) = pool {
        cmd.env("DATABASE_URL", app_url(pool));
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("ends").unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[sqlx::test]
async fn every_command_works_over_sasl_ssl_with_scram(pool: PgPool) {
    let broker = SecureBroker::start().await;
    let kafka = broker.kafka();
    let env = broker.env(PASSWORD, &broker.pki.ca_cert());

    // `produce` takes its secrets from a Java client's properties file, as Kafka's own tools do.
    let file = broker.dir.0.join("client.properties");
    std::fs::write(
        &file,
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{USER}\" \
             password=\"{PASSWORD}\";\nssl.ca.location={}\n",
            broker.pki.ca_cert()
        ),
    )
    .unwrap();
    let start = (chrono::Utc::now() - chrono::TimeDelta::seconds(30)).to_rfc3339();
    let file = file.display().to_string();
    let produce = [
        "produce",
        "--kafka-config",
        &file,
        "--generate",
        "2000",
        "--drift-profile",
        "spike",
        "--events-per-second",
        "100",
        "--start-time",
        &start,
        "--seed",
        "7",
    ];
    let (ok, out, err) = costsim(&kafka, &[], None, &produce).await;
    assert!(ok, "produce over SASL_SSL: {out}{err}");

    // `run` stores the stream and trips.
    let mut cmd = command(&kafka);
    cmd.arg("run")
        .envs(env.iter().cloned())
        .env("DATABASE_URL", app_url(&pool))
        .env("RUST_LOG", "warn")
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .stderr(Stdio::null());
    for s in FAST {
        cmd.args(["--set", s]);
    }
    let _run = cmd.spawn().expect("run starts");
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 2000).await, 2000);
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_cb_incidents", 1).await, 1);

    // The relay published the trip: `watch` sees it, and so does a client we did not write.
    let watch = ["watch", "--from-beginning", "--count", "1"];
    let (ok, out, err) = costsim(&kafka, &env, None, &watch).await;
    assert!(ok && out.contains("closed -> open"), "watch over SASL_SSL: {out}{err}");
    let props = broker.properties(PASSWORD, &broker.pki.ca_cert());
    let mut config: Vec<(&str, &str)> = props.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    config.push(("bootstrap.servers", &kafka.brokers));
    let state = independent::consume(&config, &kafka.state_topic, 1, 30).await.expect("confluent-kafka reads it");
    assert_eq!(state[0].0, b"costsim_v2", "the state event is keyed by breaker");

    // Replays read the topic through the same listener.
    let topic = kafka.results_topic.clone();
    let (ok, out, err) = costsim(&kafka, &env, Some(&pool), &["backfill", "--topic", &topic]).await;
    assert!(ok && out.contains("records 2000, inserted 0, duplicates skipped 2000"), "backfill: {out}{err}");
    let mut backtest = vec!["backtest", "--topic", &topic, "--json"];
    for s in FAST {
        backtest.extend(["--set", s]);
    }
    let (ok, out, err) = costsim(&kafka, &env, None, &backtest).await;
    assert!(ok, "backtest: {err}");
    let tripped = out.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|l| {
        l.get("from").and_then(|v| v.as_str()) == Some("closed") && l.get("to").and_then(|v| v.as_str()) == Some("open")
    });
    assert!(tripped, "backtest trips as run did: {out}");
}

/// Runs a command expecting it to fail within 30 s; returns its stderr.
async fn fails_fast(kafka: &KafkaConfig, env: &[(String, String)], pool: &PgPool, args: &[&str]) -> String {
    let started = Instant::now();
    let (ok, out, err) = costsim(kafka, env, Some(pool), args).await;
    let took = started.elapsed();
    assert!(!ok, "{args:?} should fail: {out}{err}");
    assert!(took < Duration::from_secs(30), "{args:?} took {took:?} to fail: {err}");
    println!("secure-kafka: {:?} failed in {:.1} s", args[0], took.as_secs_f64());
    err
}

#[sqlx::test]
async fn a_wrong_password_ends_each_command_within_seconds_naming_authentication(pool: PgPool) {
    let broker = SecureBroker::start().await;
    let kafka = broker.kafka();
    let env = broker.env("not-the-password", &broker.pki.ca_cert());
    for args in [&["produce", "--generate", "1"][..], &["run"], &["watch", "--count", "1"]] {
        let err = fails_fast(&kafka, &env, &pool, args).await;
        assert!(err.contains("refused authentication"), "{args:?}: {err}");
        assert!(!err.contains("not-the-password"), "the password never reaches the output: {err}");
    }
}

#[sqlx::test]
async fn an_unknown_ca_ends_each_command_within_seconds_naming_the_certificate(pool: PgPool) {
    let broker = SecureBroker::start().await;
    let kafka = broker.kafka();
    let env = broker.env(PASSWORD, &broker.pki.other_ca_cert());
    let topic = kafka.results_topic.clone();
    for args in [&["produce", "--generate", "1"][..], &["run"], &["backfill", "--topic", &topic]] {
        let err = fails_fast(&kafka, &env, &pool, args).await;
        assert!(err.contains("certificate") && err.contains("ssl.ca.location"), "{args:?}: {err}");
    }
}
