//! Confluent's wire format with Confluent's own Python serializer and deserializer, through
//! `tests/python/registry_stand_in.py`: a minimal stand-in for a Confluent Schema Registry written for these tests
//! (no registry server installs from the package registries the test setup may use), not a real registry.

use std::process::Stdio;

use costsim_breaker::kafka::{ConfirmedSender, TopicRole};
use rdkafka::Message;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::avro_interop::{
    evolved_records, evolved_writer, fastavro_record, header_of, lines, python, python_produce, repo, run_python,
    write_temp,
};
use crate::helpers::{command, fresh_kafka, read_records};
use crate::pipeline::{spike, wait_for};

/// The registry stand-in of `tests/python/registry_stand_in.py` (a minimal Confluent-compatible Schema Registry
/// written for these tests, not a real registry), with basic auth; killed when dropped.
struct RegistryStandIn {
    _child: tokio::process::Child,
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RegistryStandIn {
    /// Starts it; while `down_flag` exists it answers schema look-ups with 503.
    async fn start(user_info: &str, down_flag: Option<&std::path::Path>) -> Self {
        use tokio::io::AsyncBufReadExt;
        let (ok, _, err) = run_python(&["-c", "import confluent_kafka.schema_registry.avro"], "").await;
        assert!(
            ok,
            "the venv of COSTSIM_TEST_PYTHON lacks confluent-kafka's schemaregistry extra that \
             tests/python/requirements.txt pins: run scripts/test (scripts/stack up builds the venv anew): {err}"
        );
        let mut child = tokio::process::Command::new(python())
            .arg(repo("tests/python/registry_stand_in.py"))
            .arg(user_info)
            .args(down_flag)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(crate::helpers::DEADLINE, lines.next_line())
            .await
            .expect("the stand-in prints its port")
            .unwrap()
            .expect("a port line");
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        RegistryStandIn { _child: child, url: format!("http://127.0.0.1:{}", port.trim()), requests }
    }
}

#[sqlx::test]
async fn confluent_framed_records_from_confluents_serializer_are_stored_through_the_registry(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let registry = RegistryStandIn::start("costsim:s3cret", None).await;
    let events = spike(60, 100.0, 25);
    let confluent = ["--framing", "confluent", "--registry", &registry.url, "--registry-auth", "costsim:s3cret"];
    let evolved = write_temp(&evolved_writer());
    python_produce(&kafka, &evolved.0, &confluent, &evolved_records(&events[..30])).await;
    let reader = repo("schemas/simulation_result.avsc");
    python_produce(&kafka, &reader, &confluent, &lines(events[30..].iter().map(fastavro_record))).await;
    // An id the registry never gave out.
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    sender.send(&kafka.results_topic, b"tenant-x", &[0, 0, 0, 3, 231, 2, 4]).await.unwrap();
    sender.finish().await;

    let mut run = command(&kafka);
    run.arg("run")
        .envs(crate::helpers::database_env(&pool))
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env("COSTSIM_SCHEMA_REGISTRY_URL", &registry.url)
        .env("COSTSIM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "costsim:s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _run = run.spawn().unwrap();
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 60).await, 60);
    let dead = read_records(&kafka, &kafka.dlq_topic, 1).await;
    assert_eq!(header_of(&dead[0], "costsim.error.class").as_deref(), Some("unknown_schema_id"));
    assert!(header_of(&dead[0], "costsim.error.message").unwrap().contains("999"));
    let requests = registry.requests.lock().unwrap().clone();
    // Each id is fetched until it is cached: at most once per partition whose first batches race for it.
    for id in [1, 2] {
        let fetches = requests.iter().filter(|r| **r == format!("GET /schemas/ids/{id}")).count();
        assert!((1..=kafka.results_partitions as usize).contains(&fetches), "id {id}: {requests:?}");
    }
}

#[sqlx::test]
async fn state_events_in_confluent_framing_are_read_by_confluents_deserializer(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let registry = RegistryStandIn::start("costsim:s3cret", None).await;
    crate::pipeline::produce(&kafka, &spike(3000, 150.0, 26)).await;
    let mut run = command(&kafka);
    run.arg("run")
        .envs(crate::helpers::database_env(&pool))
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env("COSTSIM_SCHEMA_REGISTRY_URL", &registry.url)
        .env("COSTSIM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "costsim:s3cret")
        .env("COSTSIM_STATE_FORMAT", "confluent")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for s in crate::pipeline::FAST {
        run.args(["--set", s]);
    }
    let _run = run.spawn().unwrap();
    let published = read_records(&kafka, &kafka.state_topic, 1).await;
    let value = published[0].payload().unwrap();
    assert_eq!(value[0], 0, "Confluent's magic byte");

    let script = "import json, sys\n\
        from confluent_kafka.schema_registry import SchemaRegistryClient\n\
        from confluent_kafka.schema_registry.avro import AvroDeserializer\n\
        from confluent_kafka.serialization import MessageField, SerializationContext\n\
        url, topic, value = sys.argv[1], sys.argv[2], bytes.fromhex(sys.stdin.read().strip())\n\
        client = SchemaRegistryClient({'url': url, 'basic.auth.user.info': 'costsim:s3cret'})\n\
        change = AvroDeserializer(client)(value, SerializationContext(topic, MessageField.VALUE))\n\
        print(json.dumps({k: v for k, v in change.items() if k in ('breaker', 'version', 'from_state', 'to_state')}))\n";
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let (ok, out, err) = run_python(&["-c", script, &registry.url, &kafka.state_topic], &hex).await;
    assert!(ok, "AvroDeserializer: {err}");
    let change: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(change, json!({"breaker": "costsim_v2", "version": 1, "from_state": "closed", "to_state": "open"}));
    let requests = registry.requests.lock().unwrap().clone();
    let subject = format!("POST /subjects/{}-value/versions", kafka.state_topic);
    assert!(requests.iter().any(|r| r.starts_with(&subject)), "{requests:?}");
    // Our own reader (watch, the breaker view) reads it too.
    let ours = costsim_breaker::codec::decode_breaker_state_changed(value).unwrap();
    assert_eq!((ours.version, ours.to_state.as_str()), (1, "open"));
}

#[sqlx::test]
async fn while_the_registry_is_down_no_offset_moves_health_says_why_and_every_record_is_stored_after(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let down = crate::helpers::TempPath::new(".down");
    let registry = RegistryStandIn::start("costsim:s3cret", Some(&down.0)).await;
    let events = spike(40, 100.0, 27);
    let confluent = ["--framing", "confluent", "--registry", &registry.url, "--registry-auth", "costsim:s3cret"];
    let evolved = write_temp(&evolved_writer());
    python_produce(&kafka, &evolved.0, &confluent, &evolved_records(&events)).await;
    std::fs::write(&down.0, b"").unwrap();

    let env = [
        ("COSTSIM_SCHEMA_REGISTRY_URL", registry.url.as_str()),
        ("COSTSIM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "costsim:s3cret"),
    ];
    let (_run, addr) = crate::avro_interop::run_with_metrics(&kafka, &pool, &env).await;
    let deadline = tokio::time::Instant::now() + crate::helpers::DEADLINE;
    let health = loop {
        let answer = crate::avro_interop::http_get(addr, "/health").await;
        if answer.contains("schema_registry") {
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "health never named the registry: {answer}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(health.starts_with("HTTP/1.1 503") && health.contains("not_ready"), "{health}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
    let offsets: Option<i64> = sqlx::query_scalar("SELECT sum(next_offset)::bigint FROM costsim_consumed_offsets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((stored, offsets.unwrap_or(0)), (0, 0), "nothing applied, no offset moved while the registry is down");

    std::fs::remove_file(&down.0).unwrap();
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 40).await, 40);
    let requests = registry.requests.lock().unwrap().clone();
    assert!(requests.iter().filter(|r| r.starts_with("GET /schemas/ids/")).count() > 1, "retried: {requests:?}");
}
