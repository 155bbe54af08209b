//! `backfill` as a user runs it: a topic range inserts exactly that range and a rerun nothing; files of our JSON
//! lines and of both older record kinds land with their costs in the right columns; bad lines are reported by
//! number; `--dry-run` writes nothing; `--verify` says whether the table holds the input.

use std::time::Duration;

use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{KafkaConfig, TopicRole};
use rdkafka::producer::FutureRecord;
use sqlx::PgPool;

use crate::helpers::{command, database_env, fresh_kafka};
use crate::pipeline::{Processor, produce, spike, wait_for};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backfill");

/// Runs `backfill` with these arguments against the test's database; returns (exit ok, stdout, stderr).
async fn backfill(pool: &PgPool, kafka: &KafkaConfig, args: &[&str]) -> (bool, String, String) {
    let out = command(kafka).arg("backfill").args(args).envs(database_env(pool)).output().await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

async fn count(pool: &PgPool, filter: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM costsim_provenance WHERE {filter}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_topic_range_inserts_exactly_that_range_and_a_rerun_inserts_nothing(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results]).await.unwrap();
    let producer = kafka.producer().unwrap();
    let events: Vec<_> = Generator::new(GeneratorConfig {
        count: 12,
        profile: DriftProfile::Steady,
        start: chrono::DateTime::from_timestamp_millis(1_764_230_400_000).unwrap(),
        events_per_second: 5.0,
        seed: 3,
        tenants: 2,
    })
    .collect();
    for (i, event) in events.iter().enumerate() {
        let payload = encode_simulation_result(event);
        let record = FutureRecord::to(&kafka.results_topic).partition(i as i32 % 3).key("k").payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    let topic = kafka.results_topic.clone();
    let range = ["--topic", &topic, "--partitions", "0,2", "--from-offset", "1", "--to-offset", "3"];

    let (ok, out, err) = backfill(&pool, &kafka, &range).await;
    assert!(ok, "{err}");
    assert!(out.contains("records 4, inserted 4, duplicates skipped 0, invalid 0"), "{out}");
    let stored: Vec<(String, i32, i64, String)> = sqlx::query_as(
        "SELECT kafka_topic, kafka_partition, kafka_offset, source FROM costsim_provenance \
         ORDER BY kafka_partition, kafka_offset",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let places: Vec<(i32, i64)> = stored.iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(places, [(0, 1), (0, 2), (2, 1), (2, 2)]);
    assert!(stored.iter().all(|r| r.0 == topic && r.3 == "sandbox"), "{stored:?}");
    assert_eq!(count(&pool, "v1_cost IS NOT NULL AND v2_cost IS NOT NULL AND drift_score IS NOT NULL").await, 4);

    let (ok, out, _) = backfill(&pool, &kafka, &range).await;
    assert!(ok);
    assert!(out.contains("records 4, inserted 0, duplicates skipped 4"), "{out}");

    let (ok, out, _) = backfill(&pool, &kafka, &["--topic", &topic]).await;
    assert!(ok);
    assert!(out.contains("records 12, inserted 8, duplicates skipped 4"), "{out}");
    for table in ["costsim_consumed_offsets", "costsim_drift_buckets", "costsim_breaker_events"] {
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 0, "backfill writes nothing to {table}");
    }
}

#[sqlx::test]
async fn a_backfill_ahead_of_the_live_processor_takes_nothing_out_of_its_window(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    produce(&kafka, &spike(600, 100.0, 5)).await;
    let (ok, out, err) = backfill(&pool, &kafka, &["--topic", &kafka.results_topic]).await;
    assert!(ok && out.contains("records 600, inserted 600"), "{out}{err}");
    assert_eq!(count(&pool, "NOT processed").await, 600, "backfilled rows wait for the processor");

    let _run = Processor::start(&kafka, &pool, &["bucket_seconds=1", "window_seconds=10", "min_samples=20"]).await;
    let processed = wait_for(&pool, "SELECT count(*) FROM costsim_provenance WHERE processed", 600).await;
    assert_eq!(processed, 600, "the processor claims every backfilled row");
    let counted = wait_for(
        &pool,
        "SELECT coalesce(sum(sample_count + schema_error_count + unscored_count), 0)::bigint FROM costsim_drift_buckets",
        600,
    )
    .await;
    assert_eq!(counted, 600, "every event is counted in the window once");
    assert_eq!(count(&pool, "true").await, 600);
}

#[sqlx::test]
async fn older_records_and_our_lines_land_with_their_costs_in_the_right_columns(pool: PgPool) {
    let kafka = fresh_kafka();
    let (ok, out, err) = backfill(&pool, &kafka, &["--dir", FIXTURES]).await;
    assert!(ok, "{err}");
    assert!(out.contains("files 2, records 4, inserted 4, duplicates skipped 0, invalid 0"), "{out}");
    // File-provenance records carry the V2 cost, never as the V1 baseline.
    assert_eq!(count(&pool, "variant_slug = 'v2' AND source = 'backfill' AND v2_cost IS NOT NULL").await, 4);
    assert_eq!(count(&pool, "v1_cost IS NOT NULL").await, 0);
    let costs: Vec<f64> =
        sqlx::query_scalar("SELECT v2_cost FROM costsim_provenance ORDER BY v2_cost").fetch_all(&pool).await.unwrap();
    assert_eq!(costs, [410.0, 520.0, 630.0, 740.0], "compressed and plain records both decode");
    assert_eq!(count(&pool, "payload->'input'->>'budget_cents' = '1000'").await, 4);

    let (ok, out, _) = backfill(&pool, &kafka, &["--file", &fixture("historical_runs.json")]).await;
    assert!(ok && out.contains("records 3, inserted 3"), "{out}");
    let (ok, out, _) = backfill(&pool, &kafka, &["--file", &fixture("historical_run.json")]).await;
    assert!(ok && out.contains("records 1, inserted 1"), "{out}");
    assert_eq!(count(&pool, "variant_slug = 'v1' AND source = 'backfill' AND v1_cost IS NOT NULL").await, 3);
    assert_eq!(count(&pool, "event_id = 'legacy-run:hist-2' AND v1_cost = 250.5 AND runtime_ms = 40").await, 1);

    let (ok, out, _) = backfill(&pool, &kafka, &["--file", &fixture("results.jsonl")]).await;
    assert!(ok && out.contains("records 3, inserted 3"), "{out}");
    assert_eq!(count(&pool, "source = 'sandbox' AND cost_delta IS NOT NULL AND kafka_topic IS NULL").await, 3);

    let (ok, out, _) = backfill(&pool, &kafka, &["--dir", FIXTURES]).await;
    assert!(ok && out.contains("inserted 0, duplicates skipped 4"), "a rerun inserts nothing: {out}");
}

#[sqlx::test]
async fn bad_lines_are_reported_by_number_and_fail_the_run_unless_allowed(pool: PgPool) {
    let kafka = fresh_kafka();
    let file = fixture("malformed.jsonl");
    let (ok, out, err) = backfill(&pool, &kafka, &["--file", &file]).await;
    assert!(!ok, "invalid records fail the run");
    assert!(err.contains(&format!("{file}:2: bad JSON")), "{err}");
    assert!(err.contains(&format!("{file}:3: field `input_json`: bad Base64")), "{err}");
    assert!(err.contains(&format!("{file}:4: neither a simulation result")), "{err}");
    assert!(err.contains("3 invalid records (use --allow-invalid"), "{err}");
    assert!(out.contains("records 5, inserted 2, duplicates skipped 0, invalid 3"), "{out}");

    let (ok, out, _) = backfill(&pool, &kafka, &["--file", &file, "--allow-invalid"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("inserted 0, duplicates skipped 2, invalid 3"), "{out}");

    let (ok, _, err) = backfill(&pool, &kafka, &["--file", &file, "--from-offset", "1"]).await;
    assert!(!ok && err.contains("apply to --topic only"), "{err}");
}

#[sqlx::test]
async fn a_dry_run_counts_and_writes_nothing(pool: PgPool) {
    let kafka = fresh_kafka();
    let (ok, out, _) = backfill(&pool, &kafka, &["--dir", FIXTURES, "--dry-run"]).await;
    assert!(ok);
    assert!(out.contains("records 4, would insert 4, duplicates skipped 0"), "{out}");
    assert_eq!(count(&pool, "true").await, 0);

    backfill(&pool, &kafka, &["--file", &fixture("provenance_2025-11-26.jsonl")]).await;
    let (_, out, _) = backfill(&pool, &kafka, &["--dir", FIXTURES, "--dry-run"]).await;
    assert!(out.contains("records 4, would insert 2, duplicates skipped 2"), "{out}");
    assert_eq!(count(&pool, "true").await, 2);
}

#[sqlx::test]
async fn verify_reports_the_table_and_fails_with_the_reason_when_input_is_missing(pool: PgPool) {
    let kafka = fresh_kafka();
    let (ok, _, err) = backfill(&pool, &kafka, &["--verify"]).await;
    assert!(!ok);
    assert!(err.contains("the provenance table is empty"), "{err}");

    backfill(&pool, &kafka, &["--dir", FIXTURES]).await;
    backfill(&pool, &kafka, &["--file", &fixture("results.jsonl")]).await;
    let (ok, out, err) = backfill(&pool, &kafka, &["--verify", "--dir", FIXTURES]).await;
    assert!(ok, "{err}");
    assert!(out.contains("input: 4 records, 4 stored, 0 missing, 0 stored without a cost the input had"), "{out}");
    let row = out.lines().find(|l| l.starts_with("v2         backfill")).unwrap_or_default();
    assert_eq!(row.split_whitespace().skip(2).collect::<Vec<_>>(), ["4", "0", "4", "0"], "{out}");
    assert!(out.contains("drift: count 3, "), "{out}");
    assert_eq!(count(&pool, "true").await, 7, "verify writes nothing");

    let (ok, _, err) = backfill(&pool, &kafka, &["--verify", "--file", &fixture("historical_runs.json")]).await;
    assert!(!ok);
    assert!(err.contains("3 input records are not stored (e.g. legacy-run:hist-1"), "{err}");
}
