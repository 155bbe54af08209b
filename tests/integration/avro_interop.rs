//! Avro as implementations we did not write read and write it: fastavro (in the venv `$COSTSIM_TEST_PYTHON` names)
//! computes canonical forms and fingerprints, encodes the records confluent-kafka produces to the real broker, and
//! decodes our state events. The producer and subscriber that run are the examples of `examples/python`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use costsim_breaker::codec::{ParsedSchema, simulation_result_to_json};
use costsim_breaker::event::SimulationResult;
use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig, TopicRole};
use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

use crate::helpers::{TempPath, command, fresh_kafka, read_records};
use crate::pipeline::{Processor, spike, wait_for};

/// The venv's Python, with fastavro and confluent-kafka.
pub(crate) fn python() -> String {
    std::env::var("COSTSIM_TEST_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        panic!(
            "COSTSIM_TEST_PYTHON is not set: run the tests with scripts/test, or `eval \"$(scripts/stack env)\"` \
             first; it names the venv with fastavro and confluent-kafka these tests check our Avro against"
        )
    })
}

pub(crate) fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs a Python script with `stdin`; returns (exit ok, stdout, stderr).
pub(crate) async fn run_python(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = tokio::process::Command::new(python())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the test venv's python starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// fastavro's Parsing Canonical Form and CRC-64-AVRO fingerprint (the header's bytes, in hex) of each schema.
async fn fastavro_fingerprints(schemas: &[Value]) -> Vec<(String, String)> {
    let script = "import json, sys\n\
        from fastavro.schema import to_parsing_canonical_form, fingerprint\n\
        out = []\n\
        for s in json.load(sys.stdin):\n\
        \x20   c = to_parsing_canonical_form(s)\n\
        \x20   out.append([c, fingerprint(c, 'CRC-64-AVRO')])\n\
        print(json.dumps(out))\n";
    let (ok, out, err) = run_python(&["-c", script], &serde_json::to_string(schemas).unwrap()).await;
    assert!(ok, "fastavro: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The header bytes of a fingerprint, in hex, as fastavro prints them.
fn header_hex(fingerprint: u64) -> String {
    fingerprint.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn schema_file(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo(&format!("schemas/{name}"))).unwrap()).unwrap()
}

#[tokio::test]
async fn our_canonical_forms_and_fingerprints_are_fastavros() {
    let schemas = vec![
        schema_file("simulation_result.avsc"),
        schema_file("breaker_state_changed.avsc"),
        json!({"type": "record", "name": "Outer", "namespace": "a.b", "doc": "nested records and namespaces",
        "fields": [
            {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
                {"name": "when", "type": {"type": "int", "logicalType": "date"}},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
                {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}}
            ]}},
            {"name": "other", "type": {"type": "record", "name": "x.y.Other", "fields": [
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"], "default": "A"}},
                {"name": "again", "type": ["null", "Kind"], "default": null}
            ]}},
            {"name": "inner_again", "type": ["null", "Inner", "x.y.Other"]},
            {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 16, "aliases": ["H"]}},
            {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
            {"name": "money", "type": {"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal",
                "precision": 10, "scale": 2}},
            {"name": "note", "type": ["null", "string", "long", "double", "boolean", "bytes"], "default": null,
                "order": "ignore", "aliases": ["remark"]}
        ]}),
        json!({"type": "enum", "name": "Status", "namespace": "n", "symbols": ["ok", "late"], "doc": "caf\u{e9}"}),
        json!(["null", {"type": "array", "items": {"type": "long", "logicalType": "timestamp-millis"}}]),
    ];
    let expected = fastavro_fingerprints(&schemas).await;
    for (schema, (canonical, fingerprint)) in schemas.iter().zip(&expected) {
        let ours = ParsedSchema::from_json(schema).unwrap();
        assert_eq!(&ours.canonical_form(), canonical, "{schema}");
        assert_eq!(&header_hex(ours.fingerprint()), fingerprint, "{schema}");
    }

    // The CLI prints the same, for both schema files.
    let kafka = fresh_kafka();
    for (i, file) in ["schemas/simulation_result.avsc", "schemas/breaker_state_changed.avsc"].iter().enumerate() {
        let out = command(&kafka).args(["schema", "fingerprint"]).arg(repo(file)).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        let (number, header) = printed.trim().split_once(' ').expect("two fields");
        assert_eq!(header, expected[i].1, "{file}");
        assert_eq!(header_hex(u64::from_str_radix(number, 16).unwrap()), expected[i].1, "{file}");
        let out = command(&kafka).args(["schema", "canonical"]).arg(repo(file)).output().await.unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), expected[i].0, "{file}");
    }
}

/// A simulation result as fastavro takes it: `occurred_at` in milliseconds.
pub(crate) fn fastavro_record(e: &SimulationResult) -> Value {
    let mut v: Value = serde_json::from_str(&simulation_result_to_json(e)).unwrap();
    v["occurred_at"] = e.occurred_at.timestamp_millis().into();
    v
}

pub(crate) fn lines(records: impl IntoIterator<Item = Value>) -> String {
    records.into_iter().map(|r| format!("{r}\n")).collect()
}

/// Produces JSON lines with `examples/python/producer.py` and a writer schema file.
pub(crate) async fn python_produce(kafka: &KafkaConfig, schema: &Path, extra: &[&str], records: &str) {
    let producer = repo("examples/python/producer.py");
    let mut args = vec![
        producer.to_str().unwrap(),
        "--brokers",
        &kafka.brokers,
        "--topic",
        &kafka.results_topic,
        "--schema",
        schema.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_python(&args, records).await;
    assert!(ok, "producer.py: {err}");
    assert!(out.contains("sent"), "{out}");
}

pub(crate) fn header_of(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

#[sqlx::test]
async fn fastavro_single_object_records_sent_by_confluent_kafka_are_all_stored(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let events = spike(200, 100.0, 21);
    python_produce(&kafka, &repo("schemas/simulation_result.avsc"), &[], &lines(events.iter().map(fastavro_record)))
        .await;
    let _run = Processor::start(&kafka, &pool, &[]).await;
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 200).await, 200);
    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, v1_cost::bigint FROM costsim_provenance ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut expected: Vec<(String, i64)> = events.iter().map(|e| (e.event_id.clone(), e.v1_cost_cents)).collect();
    expected.sort();
    assert_eq!(stored, expected);
}

/// The reader schema with the changes an evolving producer makes: a field added (with a default, first), a
/// field dropped (the reader has a default), a new V2 status symbol, and `v2_confidence` widened to a union with
/// `float`.
pub(crate) fn evolved_writer() -> Value {
    let mut schema = schema_file("simulation_result.avsc");
    let fields = schema["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "commit_sha");
    fields.insert(0, json!({"name": "region", "type": ["null", "string"], "default": null}));
    for f in fields.iter_mut() {
        if f["name"] == "v2_status" {
            f["type"]["symbols"].as_array_mut().unwrap().push("cancelled".into());
            f["type"].as_object_mut().unwrap().remove("default");
        }
        if f["name"] == "v2_confidence" {
            f["type"] = json!(["null", "float", "double"]);
        }
    }
    schema["doc"] = "version 2 of a producer's schema".into();
    schema
}

/// A writer whose `v1_cost_cents` became a string: no record of it can be read.
fn incompatible_writer() -> Value {
    let mut schema = schema_file("simulation_result.avsc");
    for f in schema["fields"].as_array_mut().unwrap() {
        if f["name"] == "v1_cost_cents" {
            f["type"] = "string".into();
        }
    }
    schema
}

/// A directory of writer schemas for COSTSIM_SCHEMA_DIR, removed when dropped.
struct SchemaDir(PathBuf);

impl SchemaDir {
    fn new(schemas: &[(&str, &Value)]) -> Self {
        let dir = std::env::temp_dir().join(format!("costsim-schemas-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        for (name, schema) in schemas {
            std::fs::write(dir.join(name), serde_json::to_string_pretty(schema).unwrap()).unwrap();
        }
        SchemaDir(dir)
    }
}

impl Drop for SchemaDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn write_temp(schema: &Value) -> TempPath {
    let path = TempPath::new(".avsc");
    std::fs::write(&path.0, serde_json::to_string(schema).unwrap()).unwrap();
    path
}

/// Events in the evolved writer's shape: every third with the new status, all with a region, no commit_sha.
pub(crate) fn evolved_records(events: &[SimulationResult]) -> String {
    lines(events.iter().enumerate().map(|(i, e)| {
        let mut r = fastavro_record(e);
        r.as_object_mut().unwrap().remove("commit_sha");
        r["region"] = "eu-west".into();
        if i % 3 == 0 {
            r["v2_status"] = "cancelled".into();
        }
        r
    }))
}

/// Events in the incompatible writer's shape.
fn incompatible_records(events: &[SimulationResult]) -> String {
    lines(events.iter().map(|e| {
        let mut r = fastavro_record(e);
        r["v1_cost_cents"] = e.v1_cost_cents.to_string().into();
        r
    }))
}

#[sqlx::test]
async fn evolved_writers_are_resolved_and_incompatible_ones_dead_lettered_with_the_reason(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let (evolved, incompatible) = (evolved_writer(), incompatible_writer());
    let dir = SchemaDir::new(&[("v2.avsc", &evolved), ("broken.avsc", &incompatible)]);
    let events = spike(60, 100.0, 22);
    let (evolved_file, incompatible_file) = (write_temp(&evolved), write_temp(&incompatible));
    python_produce(&kafka, &evolved_file.0, &[], &evolved_records(&events[..30])).await;
    python_produce(&kafka, &incompatible_file.0, &[], &incompatible_records(&events[30..35])).await;
    python_produce(
        &kafka,
        &repo("schemas/simulation_result.avsc"),
        &[],
        &lines(events[35..].iter().map(fastavro_record)),
    )
    .await;

    let mut run = command(&kafka);
    run.arg("run")
        .envs(crate::helpers::database_env(&pool))
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env("COSTSIM_SCHEMA_DIR", &dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _run = run.spawn().unwrap();
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 55).await, 55);
    let cancelled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM costsim_provenance WHERE v2_status = 'error' AND commit_sha IS NULL AND event_id = ANY($1)",
    )
    .bind(events[..30].iter().step_by(3).map(|e| e.event_id.clone()).collect::<Vec<_>>())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(cancelled, 10, "a status the reader lacks reads as the reader's enum default");

    let dead = read_records(&kafka, &kafka.dlq_topic, 5).await;
    for d in &dead {
        assert_eq!(header_of(d, "costsim.error.class").as_deref(), Some("incompatible_schema"));
        let message = header_of(d, "costsim.error.message").unwrap();
        assert!(message.contains("v1_cost_cents") && message.contains("string"), "{message}");
    }

    // backtest and backfill read the same topic through the same schemas.
    let out = command(&kafka)
        .args(["backtest", "--topic", &kafka.results_topic, "--json"])
        .env("COSTSIM_SCHEMA_DIR", &dir.0)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a summary line");
    assert_eq!(summary["summary"]["events_read"], 55, "{stdout}\n{stderr}");
    assert_eq!(summary["summary"]["rejected_by_reason"]["incompatible_schema"], 5, "{stdout}\n{stderr}");
    assert_eq!(stderr.matches("cannot be read as the reader's").count(), 5, "{stderr}");
    sqlx::query("DELETE FROM costsim_provenance").execute(&pool).await.unwrap();
    let out = command(&kafka)
        .args(["backfill", "--topic", &kafka.results_topic, "--allow-invalid"])
        .envs(crate::helpers::database_env(&pool))
        .env("COSTSIM_SCHEMA_DIR", &dir.0)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("inserted 55"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn schema_check_passes_an_evolved_writer_and_lists_what_breaks_an_incompatible_one() {
    let kafka = fresh_kafka();
    let evolved = write_temp(&evolved_writer());
    let out = command(&kafka).args(["schema", "check"]).arg(&evolved.0).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resolves against"), "{stdout}");

    let mut broken = incompatible_writer();
    broken["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "tenant_id");
    let broken = write_temp(&broken);
    let out = command(&kafka).args(["schema", "check"]).arg(&broken.0).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("v1_cost_cents: the writer's string cannot be read as long"), "{stdout}");
    assert!(stdout.contains("tenant_id: the writer has no such field"), "{stdout}");
}

#[sqlx::test]
async fn state_events_are_decoded_by_fastavro_with_the_header_it_computes(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    crate::pipeline::produce(&kafka, &spike(3000, 150.0, 23)).await;
    let _run = Processor::start(&kafka, &pool, crate::pipeline::FAST).await;
    let published = read_records(&kafka, &kafka.state_topic, 1).await;
    // The relay publishes at least once: a repeated record must not count twice.
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    sender.send(&kafka.state_topic, b"costsim_v2", published[0].payload().unwrap()).await.unwrap();
    sender.finish().await;

    let subscriber = repo("examples/python/subscriber.py");
    let schema = repo("schemas/breaker_state_changed.avsc");
    let args = [
        subscriber.to_str().unwrap(),
        "--brokers",
        &kafka.brokers,
        "--topic",
        &kafka.state_topic,
        "--schema",
        schema.to_str().unwrap(),
    ];
    let (ok, out, err) = run_python(&args, "").await;
    assert!(ok, "subscriber.py: {err}");
    assert!(!err.contains("skipped a record"), "the header is the one fastavro computes: {err}");
    let printed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (changes, summary) = printed.split_at(printed.len() - 1);
    assert_eq!(changes.len(), 1, "the duplicate is dropped by version: {out}");
    assert_eq!((changes[0]["breaker"].as_str(), changes[0]["version"].as_i64()), (Some("costsim_v2"), Some(1)));
    assert_eq!((changes[0]["from_state"].as_str(), changes[0]["to_state"].as_str()), (Some("closed"), Some("open")));
    assert_eq!(summary[0], json!({"caught_up": true, "disabled": {"costsim_v2": true}}));
}

/// Starts `run` with JSON logs and returns it with the address of its `/metrics` listener, read from its log.
pub(crate) async fn run_with_metrics(
    kafka: &KafkaConfig,
    pool: &PgPool,
    env: &[(&str, &str)],
) -> (tokio::process::Child, std::net::SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut child = command(kafka)
        .arg("run")
        .envs(env.iter().copied())
        .envs(crate::helpers::database_env(pool))
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env("COSTSIM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Reading to the end keeps the child from blocking on a full pipe.
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok(Some(line)) = stderr.next_line().await {
            let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
            if log["fields"]["message"] == "Serving /metrics and /health." {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(log["fields"]["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let addr = tokio::time::timeout(crate::helpers::DEADLINE, rx).await.expect("the listener is logged").unwrap();
    (child, addr.parse().expect("a socket address"))
}

/// The whole HTTP/1.1 answer to a GET.
pub(crate) async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

/// The value of an unlabelled metric on `/metrics`.
async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = http_get(addr, "/metrics").await;
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
    line[name.len() + 1..].trim().parse().unwrap()
}

#[sqlx::test]
async fn records_with_the_old_fingerprint_are_still_stored_and_counted(pool: PgPool) {
    use costsim_breaker::codec::{LEGACY_SIMULATION_RESULT_FINGERPRINT, encode_simulation_result};
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let events = spike(40, 100.0, 24);
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    for (i, e) in events.iter().enumerate() {
        let mut bytes = encode_simulation_result(e);
        if i % 2 == 0 {
            bytes[2..10].copy_from_slice(&LEGACY_SIMULATION_RESULT_FINGERPRINT.to_le_bytes());
        }
        sender.send(&kafka.results_topic, e.tenant_id.as_bytes(), &bytes).await.unwrap();
    }
    assert_eq!(sender.finish().await.0.failed, 0);
    let (_run, addr) = run_with_metrics(&kafka, &pool, &[]).await;
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 40).await, 40);
    assert_eq!(metric(addr, "costsim_legacy_fingerprint_records_total").await, 20.0);
}
