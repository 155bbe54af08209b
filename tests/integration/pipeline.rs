//! `run` end to end against the real stack: events in, one transaction per batch, decisions and their rows out.

use std::process::Stdio;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig, TopicRole};
use rdkafka::Message;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;

use crate::helpers::{DEADLINE, app_url, command, fresh_kafka, read_records};

/// Engine settings small enough for a test: 1 s buckets in a 10 s window, 20 samples.
pub const FAST: &[&str] =
    &["bucket_seconds=1", "window_seconds=10", "probation_seconds=5", "min_samples=20", "disable_ttl_seconds=3600"];

/// A `run` process on a test's topics and database, killed when dropped.
pub struct Processor(pub tokio::process::Child);

impl Processor {
    /// Starts `run` with the given engine settings.
    pub async fn start(kafka: &KafkaConfig, pool: &PgPool, settings: &[&str]) -> Self {
        Self::start_with_url(kafka, &app_url(pool), settings, Stdio::null())
    }

    /// Starts `run` against a database URL, with stderr sent where asked.
    pub fn start_with_url(kafka: &KafkaConfig, url: &str, settings: &[&str], stderr: Stdio) -> Self {
        Self::start_with(kafka, url, settings, stderr, &[], &[])
    }

    /// Starts `run` against a database URL with extra environment and arguments, stderr sent where asked.
    pub fn start_with(
        kafka: &KafkaConfig,
        url: &str,
        settings: &[&str],
        stderr: Stdio,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let mut cmd = command(kafka);
        cmd.arg("run").env("DATABASE_URL", url).env("RUST_LOG", "warn").env("COSTSIM_HTTP_ADDR", "127.0.0.1:0");
        if let Some(leader) = crate::helpers::leader_url_for(url) {
            cmd.env("COSTSIM_LEADER_DATABASE_URL", leader);
        }
        // A killed member keeps its partitions until its session times out: keep that short in tests.
        cmd.args(["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]).args(args);
        cmd.envs(env.iter().copied());
        for s in settings {
            cmd.args(["--set", s]);
        }
        Processor(cmd.stderr(stderr).spawn().expect("run starts"))
    }

    /// Kills the process at once (SIGKILL): no shutdown, no last commit.
    pub async fn kill(mut self) {
        self.0.kill().await.unwrap();
    }
}

/// Sends events to the results topic, keyed by tenant, and waits for every delivery.
pub async fn produce(kafka: &KafkaConfig, events: &[costsim_breaker::event::SimulationResult]) {
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    for e in events {
        sender.send(&kafka.results_topic, e.tenant_id.as_bytes(), &encode_simulation_result(e)).await.unwrap();
    }
    let (counts, err) = sender.finish().await;
    assert_eq!((counts.failed, err), (0, None));
}

/// A spike stream whose event time ends now, so nothing is in the future.
pub fn spike(count: u64, events_per_second: f64, seed: u64) -> Vec<costsim_breaker::event::SimulationResult> {
    let span = TimeDelta::milliseconds((count as f64 / events_per_second * 1000.0) as i64);
    Generator::new(GeneratorConfig {
        count,
        profile: DriftProfile::Spike,
        start: Utc::now() - span - TimeDelta::seconds(5),
        events_per_second,
        seed,
        tenants: 9,
    })
    .collect()
}

/// Polls a query until it returns `expected` or the deadline passes.
pub async fn wait_for(pool: &PgPool, sql: &'static str, expected: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if got == expected || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test]
async fn a_breaching_stream_trips_exactly_once_with_its_incident_alert_and_state_event(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let events = spike(3000, 150.0, 3);
    produce(&kafka, &events).await;
    let _run = Processor::start(&kafka, &pool, FAST).await;

    let stored = wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 3000).await;
    assert_eq!(stored, 3000, "every event is stored once");
    let incidents = wait_for(&pool, "SELECT count(*) FROM costsim_cb_incidents", 1).await;
    assert_eq!(incidents, 1);
    let (severity, p95, samples, evidence): (String, Option<f64>, Option<i32>, serde_json::Value) =
        sqlx::query_as("SELECT severity, drift_score, sample_count, evidence FROM costsim_cb_incidents")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(severity, "P1");
    assert!(p95.unwrap() > 0.2, "the evidence names the p95: {p95:?}");
    assert!(samples.unwrap() >= 20);
    assert_eq!(evidence["drift_threshold"], 0.2);
    assert!(evidence.get("window_start").is_some() && evidence.get("window_end").is_some());

    let state: (String, i64) = sqlx::query_as("SELECT state, version FROM costsim_cb_state WHERE name = 'costsim_v2'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, ("open".to_owned(), 1));
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_alert_queue WHERE alert_type = 'disable'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(alerts, 1);
    let events: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT version, payload FROM costsim_breaker_events ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].1["from_state"].as_str(), events[0].1["to_state"].as_str()), (Some("closed"), Some("open")));
}

#[sqlx::test]
async fn a_garbage_record_lands_in_the_dead_letter_topic_and_the_stream_goes_on(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let events = spike(50, 100.0, 4);
    produce(&kafka, &events[..25]).await;
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    sender.send(&kafka.results_topic, b"tenant-000", b"not avro at all").await.unwrap();
    sender.finish().await;
    produce(&kafka, &events[25..]).await;
    let _run = Processor::start(&kafka, &pool, FAST).await;

    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 50).await, 50);
    let dead = read_records(&kafka, &kafka.dlq_topic, 1).await;
    assert_eq!(dead[0].payload(), Some(&b"not avro at all"[..]));
    let header = |name: &str| {
        use rdkafka::message::Headers;
        let headers = dead[0].headers().expect("dead letters carry headers");
        headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("costsim.source.topic").as_deref(), Some(kafka.results_topic.as_str()));
    assert_eq!(header("costsim.error.class").as_deref(), Some("wrong_magic"));
    assert!(header("costsim.source.offset").is_some() && header("costsim.error.message").is_some());
    let next: i64 = wait_for(&pool, "SELECT sum(next_offset)::bigint FROM costsim_consumed_offsets", 51).await;
    assert_eq!(next, 51, "the offset advanced past the dead letter");
}

/// Waits until the query's value reaches at least `at_least`.
async fn wait_at_least(pool: &PgPool, sql: &'static str, at_least: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if got >= at_least || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every stored event counted once in the window: bucket counts add up to the provenance rows.
async fn assert_window_counts_each_event_once(pool: &PgPool) {
    let (rows, counted): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM costsim_provenance), \
         (SELECT coalesce(sum(sample_count + schema_error_count + unscored_count), 0)::bigint FROM costsim_drift_buckets)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(counted, rows, "bucket counts equal stored events");
}

async fn transitions(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT payload->>'from_state', payload->>'to_state' FROM costsim_breaker_events ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_processor_killed_mid_stream_and_restarted_applies_every_event_once(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let events = spike(20_000, 1000.0, 5);
    produce(&kafka, &events).await;

    let count = "SELECT count(*) FROM costsim_provenance";
    for kill_at in [3_000, 9_000, 15_000] {
        let run = Processor::start(&kafka, &pool, FAST).await;
        let reached = wait_at_least(&pool, count, kill_at).await;
        assert!(reached >= kill_at, "only {reached} events stored before the kill");
        run.kill().await;
    }
    let _run = Processor::start(&kafka, &pool, FAST).await;
    assert_eq!(wait_for(&pool, count, 20_000).await, 20_000);
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
    assert_eq!(distinct, 20_000);
    assert_window_counts_each_event_once(&pool).await;
    let incidents: Vec<(String,)> =
        sqlx::query_as("SELECT severity FROM costsim_cb_incidents").fetch_all(&pool).await.unwrap();
    assert_eq!(incidents, [("P1".to_owned(),)], "one trip, as a run without kills makes");
    assert_eq!(transitions(&pool).await, [("closed".to_owned(), "open".to_owned())]);
}

#[sqlx::test]
async fn two_processors_in_one_group_make_one_incident_per_trip(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let _a = Processor::start(&kafka, &pool, FAST).await;
    let _b = Processor::start(&kafka, &pool, FAST).await;
    let events = spike(6000, 300.0, 6);
    produce(&kafka, &events).await;
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 6000).await, 6000);
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_cb_incidents", 1).await, 1);
    assert_window_counts_each_event_once(&pool).await;
    assert_eq!(transitions(&pool).await, [("closed".to_owned(), "open".to_owned())]);
}

#[sqlx::test]
async fn while_postgres_is_unreachable_no_offset_advances_and_processing_resumes_after(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let proxy = crate::proxy::Proxy::start(crate::helpers::app_server_addr()).await;
    let url = proxy.database_url(&pool);
    let mut run = Processor::start_with_url(&kafka, &url, FAST, Stdio::piped());
    let events = spike(200, 100.0, 7);
    produce(&kafka, &events[..100]).await;
    let offsets = "SELECT coalesce(sum(next_offset), 0)::bigint FROM costsim_consumed_offsets";
    assert_eq!(wait_for(&pool, offsets, 100).await, 100);

    proxy.cut();
    produce(&kafka, &events[100..]).await;
    // The processor says it could not commit and will retry; meanwhile nothing moved.
    let mut stderr = tokio::io::BufReader::new(run.0.stderr.take().unwrap()).lines();
    let saw_retry = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("retrying") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(saw_retry, Ok(true), "the processor reports the failed commit");
    // Keep reading, so the processor never blocks on a full stderr pipe.
    tokio::spawn(async move {
        while let Ok(Some(l)) = stderr.next_line().await {
            eprintln!("CHILD: {l}");
        }
    });
    let during: i64 = sqlx::query_scalar(offsets).fetch_one(&pool).await.unwrap();
    assert_eq!(during, 100, "no offset advanced while the database was unreachable");

    proxy.restore();
    assert_eq!(wait_for(&pool, offsets, 200).await, 200);
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 200).await, 200);
    assert_window_counts_each_event_once(&pool).await;
}

#[sqlx::test]
async fn a_trip_recovers_through_half_open_and_both_reach_the_state_topic(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let mut watch = command(&kafka)
        .args(["watch", "--json", "--from-beginning", "--count", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let settings =
        ["bucket_seconds=1", "window_seconds=5", "probation_seconds=3", "min_samples=20", "disable_ttl_seconds=3"];
    let _run = Processor::start(&kafka, &pool, &settings).await;

    // A live stream, as a user would send it: 30 s of events at 200/s with a drift spike from 12 s to 18 s.
    let mut stream = command(&kafka)
        .args([
            "produce",
            "--generate",
            "6000",
            "--drift-profile",
            "spike",
            "--events-per-second",
            "200",
            "--rate",
            "200",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let Ok(line) = tokio::time::timeout(DEADLINE, lines.next_line()).await else {
            let state: (String, Option<chrono::DateTime<Utc>>) =
                sqlx::query_as("SELECT state, last_evaluated_at FROM costsim_cb_state").fetch_one(&pool).await.unwrap();
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
            panic!("only {seen:?} within {DEADLINE:?}; breaker {state:?}, {stored} events stored");
        };
        let change: serde_json::Value = serde_json::from_str(&line.unwrap().expect("a line")).unwrap();
        seen.push((change["from_state"].as_str().unwrap().to_owned(), change["to_state"].as_str().unwrap().to_owned()));
    }
    stream.kill().await.unwrap();
    let expected = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")];
    assert_eq!(seen, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (resolved, by): (bool, Option<String>) =
        sqlx::query_as("SELECT resolved, resolved_by FROM costsim_cb_incidents").fetch_one(&pool).await.unwrap();
    assert_eq!((resolved, by.as_deref()), (true, Some("system-auto-recover")));
    // The incident's alerts; the drift warning may fire (and resolve) around the trip as well.
    let alerts: Vec<(String,)> =
        sqlx::query_as("SELECT alert_type FROM costsim_alert_queue WHERE incident_id IS NOT NULL ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(alerts, [("disable".to_owned(),), ("enable".to_owned(),)]);
}

#[sqlx::test]
async fn sigterm_commits_what_was_read_and_exits_cleanly(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let events = spike(500, 100.0, 8);
    produce(&kafka, &events).await;
    let mut run = Processor::start(&kafka, &pool, FAST).await;
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 500).await, 500);

    let status = crate::helpers::sigterm(&mut run.0, DEADLINE).await;
    assert!(status.success(), "a clean shutdown exits 0: {status:?}");
    let next: i64 = sqlx::query_scalar("SELECT sum(next_offset)::bigint FROM costsim_consumed_offsets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(next, 500, "every record read was committed");
}

#[sqlx::test]
async fn a_decision_taken_while_partitions_are_idle_names_them_in_its_evidence(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    // Every event goes to partition 0: partitions 1 and 2 never move, so after the idle timeout the merged
    // watermark passes them over and each decision is taken without them.
    let producer = kafka.producer().unwrap();
    let events = spike(3000, 150.0, 17);
    let payloads: Vec<Vec<u8>> = events.iter().map(encode_simulation_result).collect();
    // Sent all at once and awaited together: one delivery at a time would take minutes.
    let sends = events.iter().zip(&payloads).map(|(e, payload)| {
        let record = rdkafka::producer::FutureRecord::to(&kafka.results_topic)
            .partition(0)
            .key(e.tenant_id.as_bytes())
            .payload(payload);
        producer.send(record, Duration::from_secs(30))
    });
    for delivery in futures::future::join_all(sends).await {
        delivery.map_err(|(e, _)| e).unwrap();
    }
    let env = [("COSTSIM_IDLE_PARTITION_SECONDS", "2")];
    let _run = Processor::start_with(&kafka, &app_url(&pool), FAST, Stdio::null(), &env, &[]);
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_cb_incidents", 1).await, 1);
    let evidence: serde_json::Value =
        sqlx::query_scalar("SELECT evidence FROM costsim_cb_incidents").fetch_one(&pool).await.unwrap();
    assert_eq!(evidence["partitions_behind"], serde_json::json!([1, 2]), "{evidence}");
}
