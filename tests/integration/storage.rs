//! Bounded storage on a real database: provenance partitions created ahead and dropped at retention, idempotency
//! across partitions, the DEFAULT partition's rows moved when their partition arrives, the upgrade of a filled
//! unpartitioned table, and `storage maintain|stats` as an operator runs them.

use std::process::Output;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use costsim_breaker::storage::{self, StorageSettings};
use costsim_breaker::store::partitions::{self, Granularity};
use costsim_breaker::store::provenance::{self, ProvenanceRow, Writer};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::helpers::{command, database_env, fresh_kafka};

/// The defaults, with `ahead` hours of partitions ahead.
fn settings(ahead: u32) -> StorageSettings {
    StorageSettings {
        partition: Granularity::Daily,
        provenance_retention_days: 30,
        ahead_hours: ahead,
        interval_seconds: 3600,
        breaker_events_retention_days: 30,
        alert_queue_retention_days: 30,
        lost_records_retention_days: 365,
        canary_reports_retention_days: 365,
    }
}

fn row(event_id: &str, at: Option<DateTime<Utc>>) -> ProvenanceRow {
    ProvenanceRow {
        event_id: event_id.to_owned(),
        occurred_at: at,
        tenant_id: Some("t".to_owned()),
        v1_cost: Some(100.0),
        v2_cost: Some(110.0),
        ..ProvenanceRow::default()
    }
}

async fn insert(pool: &PgPool, rows: &[ProvenanceRow], writer: Writer) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    let mut ids: Vec<String> = provenance::insert_rows(&mut tx, rows, writer).await.unwrap().into_iter().collect();
    tx.commit().await.unwrap();
    ids.sort();
    ids
}

/// The partition each stored event is in, by event id.
async fn placement(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT event_id, tableoid::regclass::text FROM costsim_provenance ORDER BY event_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn list(pool: &PgPool) -> Vec<partitions::Partition> {
    let mut tx = pool.begin().await.unwrap();
    let list = partitions::list(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    list
}

/// Whether one bounded partition covers `at`.
fn covered(list: &[partitions::Partition], at: DateTime<Utc>) -> bool {
    list.iter().any(|p| matches!(p.bounds, Some((Some(from), Some(to))) if from <= at && at < to))
}

#[sqlx::test]
async fn partitions_are_created_ahead_and_dropped_at_retention(pool: PgPool) {
    let now = Utc::now();
    let s = settings(24 * 7);
    // A pass as of 40 days ago creates that day's partition; a row of that day lands in it.
    storage::maintain_at(&pool, &s, now - Duration::days(40)).await.unwrap();
    insert(
        &pool,
        &[row("old", Some(now - Duration::days(40))), row("recent", Some(now - Duration::hours(1)))],
        Writer::Processor,
    )
    .await;
    let old_partition = placement(&pool).await[0].1.clone();
    assert_ne!(old_partition, partitions::DEFAULT_PARTITION, "the old day had its partition");

    let report = storage::maintain_at(&pool, &s, now).await.unwrap();
    let after = list(&pool).await;
    for hours in (0..=24 * 7).step_by(6) {
        assert!(covered(&after, now + Duration::hours(hours)), "{hours} h ahead is covered: {after:?}");
    }
    assert!(report.created.iter().any(|c| c.bounds.from > now + Duration::days(3)), "{report:?}");
    assert!(report.dropped.iter().any(|d| d.name == old_partition), "{report:?}");
    // Dropped whole: no partition ends at or before the cutoff, the old row is gone, the recent one is kept.
    let cutoff = now - Duration::days(30);
    assert!(after.iter().all(|p| !matches!(p.bounds, Some((_, Some(to))) if to <= cutoff)), "{after:?}");
    let kept: Vec<String> = placement(&pool).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(kept, ["recent"]);
}

#[sqlx::test]
async fn an_event_produced_twice_counts_once_across_a_partition_boundary(pool: PgPool) {
    storage::maintain_at(&pool, &settings(72), Utc::now()).await.unwrap();
    // Either side of tomorrow's midnight (UTC): two partitions.
    let midnight = Granularity::Daily.floor(Utc::now()) + Duration::days(1);
    let before = row("before-midnight", Some(midnight - Duration::microseconds(1)));
    let after = row("after-midnight", Some(midnight));
    assert_eq!(
        insert(&pool, &[before.clone(), after.clone()], Writer::Processor).await,
        ["after-midnight", "before-midnight"]
    );
    // Produced again, in one batch and in the next, and backfilled: nothing new.
    assert!(insert(&pool, &[after.clone(), before.clone(), after.clone()], Writer::Processor).await.is_empty());
    assert!(insert(&pool, &[before.clone(), after.clone()], Writer::Backfill).await.is_empty());
    let placed = placement(&pool).await;
    assert_eq!(placed.len(), 2);
    assert_ne!(placed[0].1, placed[1].1, "the two events are in two partitions: {placed:?}");
    // Rows without an event time (the DEFAULT partition) are unique on their id alone.
    let untimed = row("untimed", None);
    assert_eq!(insert(&pool, std::slice::from_ref(&untimed), Writer::Backfill).await, ["untimed"]);
    assert!(insert(&pool, std::slice::from_ref(&untimed), Writer::Backfill).await.is_empty());
    // A backfilled row the processor meets is claimed once, and counted once.
    let claimed = row("claimed", Some(midnight));
    assert_eq!(insert(&pool, std::slice::from_ref(&claimed), Writer::Backfill).await, ["claimed"]);
    assert_eq!(insert(&pool, std::slice::from_ref(&claimed), Writer::Processor).await, ["claimed"]);
    assert!(insert(&pool, std::slice::from_ref(&claimed), Writer::Processor).await.is_empty());
    // Lookups by key find each stored row, timed or not, and only those.
    let mut tx = pool.begin().await.unwrap();
    let probe = [before, after, untimed, row("absent", Some(midnight)), row("absent-untimed", None)];
    let mut found: Vec<String> = provenance::existing_event_ids(&mut tx, &probe).await.unwrap().into_iter().collect();
    tx.commit().await.unwrap();
    found.sort();
    assert_eq!(found, ["after-midnight", "before-midnight", "untimed"]);
}

#[sqlx::test]
async fn rows_no_partition_covers_wait_in_default_and_move_when_theirs_is_created(pool: PgPool) {
    let now = Utc::now();
    let s = settings(72);
    let far = now + Duration::days(20);
    insert(&pool, &[row("far", Some(far)), row("untimed", None)], Writer::Processor).await;
    assert_eq!(placement(&pool).await[0].1, partitions::DEFAULT_PARTITION, "no partition covers 20 days ahead yet");
    // Beyond the horizon, a pass leaves it waiting.
    let report = storage::maintain_at(&pool, &s, now).await.unwrap();
    assert!(report.created.iter().all(|c| c.moved_rows == 0), "{report:?}");
    // When the horizon reaches it, its partition is created with the row in it.
    let report = storage::maintain_at(&pool, &s, far - Duration::hours(24)).await.unwrap();
    let moved: u64 = report.created.iter().map(|c| c.moved_rows).sum();
    assert_eq!(moved, 1, "{report:?}");
    let placed = placement(&pool).await;
    assert_eq!(placed[0].0, "far");
    assert_ne!(placed[0].1, partitions::DEFAULT_PARTITION);
    assert_eq!(placed[1], ("untimed".to_owned(), partitions::DEFAULT_PARTITION.to_owned()));
    // The moved row is still the event's only row.
    assert!(insert(&pool, &[row("far", Some(far))], Writer::Processor).await.is_empty());
}

async fn storage_cli(pool: &PgPool, args: &[&str]) -> Output {
    let out = command(&fresh_kafka()).envs(database_env(pool)).arg("storage").args(args).output().await.unwrap();
    assert!(out.status.success(), "storage {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[sqlx::test]
async fn storage_maintain_is_idempotent_and_stats_report_every_table(pool: PgPool) {
    // An expired partition made by hand, a published state event and a sent alert past their retention.
    let old = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    sqlx::query(
        "CREATE TABLE costsim_provenance_2020010100_2020010200 PARTITION OF costsim_provenance \
         FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-01-02 00:00:00+00')",
    )
    .execute(&pool)
    .await
    .unwrap();
    insert(&pool, &[row("2020", Some(old)), row("now", Some(Utc::now()))], Writer::Processor).await;
    sqlx::query(
        "INSERT INTO costsim_alert_queue (payload, alert_type, status, sent_at, created_at) VALUES \
         ('[]', 'a', 'sent', now(), now() - interval '40 days'), ('[]', 'a', 'sent', now(), now() - interval '39 days')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let args = ["maintain", "--json", "--provenance-partitions-ahead-hours", "168"];
    let first: Value = serde_json::from_slice(&storage_cli(&pool, &args).await.stdout).unwrap();
    let names = |v: &Value, key: &str| -> Vec<String> {
        v[key].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&first, "dropped"), ["costsim_provenance_2020010100_2020010200"]);
    assert!(!names(&first, "created").is_empty(), "a week ahead goes past what the migration created: {first}");
    let deleted = |v: &Value, table: &str| {
        v["deleted"].as_array().unwrap().iter().find(|d| d["table"] == table).map(|d| d["rows"].as_u64().unwrap())
    };
    // The older of the two rows of the same alert is deleted, the newest kept.
    assert_eq!(deleted(&first, "costsim_alert_queue"), Some(1));
    let partitions_after_first = list(&pool).await;

    let second: Value = serde_json::from_slice(&storage_cli(&pool, &args).await.stdout).unwrap();
    assert!(names(&second, "created").is_empty() && names(&second, "dropped").is_empty(), "{second}");
    assert!(second["deleted"].as_array().unwrap().iter().all(|d| d["rows"] == 0), "{second}");
    assert_eq!(list(&pool).await, partitions_after_first);
    let text = String::from_utf8(storage_cli(&pool, &args[..1]).await.stdout).unwrap();
    assert!(text.contains("storage maintain: created 0, dropped 0, deleted 0 rows"), "{text}");

    let stats: Value =
        serde_json::from_slice(&storage_cli(&pool, &["stats", "--json", "--exact"]).await.stdout).unwrap();
    let tables = stats["tables"].as_array().unwrap();
    let provenance = tables.iter().find(|t| t["table"] == "costsim_provenance").expect("provenance is listed");
    assert_eq!(provenance["rows"], 1, "{provenance}");
    assert_eq!(provenance["partitions"].as_u64().unwrap() as usize, partitions_after_first.len());
    assert!(provenance["bytes"].as_i64().unwrap() > 0);
    assert!(provenance["oldest"].is_string() && provenance["newest"].is_string(), "{provenance}");
    let queue = tables.iter().find(|t| t["table"] == "costsim_alert_queue").unwrap();
    assert_eq!((queue["rows"].as_i64(), queue["partitions"].as_i64()), (Some(1), Some(0)));
    for table in ["costsim_breaker_events", "costsim_lost_records", "costsim_canary_reports"] {
        assert!(tables.iter().any(|t| t["table"] == table), "{table} is listed");
    }
}

/// Count and digest of every provenance row, every column, in id order.
async fn digest(conn: &mut PgConnection) -> (i64, String) {
    sqlx::query_as(
        "SELECT count(*), md5(string_agg(concat_ws('|', id, event_id, occurred_at, run_id, tenant_id, variant_slug, \
         source, model_version, adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, cost_delta, \
         v1_feasible, v2_feasible, v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, kafka_partition, \
         kafka_offset, processed, created_at), E'\\n' ORDER BY id)) FROM costsim_provenance",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_upgrade_moves_every_row_of_a_filled_table_once(pool: PgPool) {
    let migrator = &costsim_breaker::store::MIGRATOR;
    let mut conn = pool.acquire().await.unwrap();
    migrator.run_to(20261127000003, &mut *conn).await.unwrap();
    // 20,000 rows over 45 days, some without an event time, some only backfilled.
    sqlx::query(
        "INSERT INTO costsim_provenance (event_id, occurred_at, tenant_id, variant_slug, source, v1_cost, v2_cost, \
         cost_delta, v2_status, drift_score, verdict, payload, kafka_topic, kafka_partition, kafka_offset, processed) \
         SELECT 'e-' || g, CASE WHEN g % 997 = 0 THEN NULL ELSE now() - (g % 45) * interval '1 day' \
                + (g % 86400) * interval '1 second' END, 't' || (g % 7), 'v2', 'sandbox', g, g + 1, 1, 'success', \
                0.01, 'match', jsonb_build_object('g', g), 'topic', g % 3, g, g % 11 <> 0 \
         FROM generate_series(1, 20000) g",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let before = digest(&mut conn).await;
    assert_eq!(before.0, 20000);

    migrator.run(&mut *conn).await.unwrap();
    assert_eq!(digest(&mut conn).await, before, "the same rows, column for column");
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'costsim_provenance'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(kind, "p", "provenance is partitioned");
    let in_default: i64 =
        sqlx::query_scalar("SELECT count(*) FROM costsim_provenance_default").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(in_default, 20000 / 997, "only the rows without an event time are in DEFAULT");
    drop(conn);
    // New rows get ids after the moved ones, and every moved event is still known by its key.
    assert_eq!(insert(&pool, &[row("new", Some(Utc::now()))], Writer::Processor).await, ["new"]);
    let new_id: i64 =
        sqlx::query_scalar("SELECT id FROM costsim_provenance WHERE event_id = 'new'").fetch_one(&pool).await.unwrap();
    assert_eq!(new_id, 20001);
    let stored: Vec<(String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT event_id, occurred_at FROM costsim_provenance").fetch_all(&pool).await.unwrap();
    let again: Vec<ProvenanceRow> = stored.iter().map(|(id, at)| row(id, *at)).collect();
    assert!(insert(&pool, &again, Writer::Backfill).await.is_empty(), "nothing is inserted twice");
}

#[sqlx::test]
async fn retention_deletes_old_rows_of_the_other_tables_but_keeps_what_live_code_reads(pool: PgPool) {
    let exec = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    // Three versions of the breaker, all published 40 days ago; version 3 is the current one.
    exec("UPDATE costsim_cb_state SET version = 3 WHERE name = 'costsim_v2'").await;
    exec(
        "INSERT INTO costsim_breaker_events (event_id, breaker, version, payload, created_at, published_at) \
         SELECT 'se-' || v, 'costsim_v2', v, '{}', now() - interval '40 days', now() - interval '40 days' \
         FROM generate_series(1, 3) v",
    )
    .await;
    // An unpublished old one would be kept too (it has not reached the topic): version 4 of a later change.
    exec(
        "INSERT INTO costsim_breaker_events (event_id, breaker, version, payload, created_at) \
         VALUES ('se-4', 'costsim_v2', 4, '{}', now() - interval '40 days')",
    )
    .await;
    exec(
        "INSERT INTO costsim_lost_records (consumer_group, topic, \"partition\", first_offset, end_offset, \
         log_start_offset, detected_at) VALUES ('g', 't', 0, 0, 10, 10, now() - interval '400 days'), \
         ('g', 't', 0, 10, 20, 20, now() - interval '10 days')",
    )
    .await;
    exec(
        "INSERT INTO costsim_canary_reports (run_id, \"timestamp\", breaker, trigger, status) VALUES \
         ('old-1', now() - interval '400 days', 'costsim_v2', 'schedule', 'pass'), \
         ('old-2', now() - interval '399 days', 'costsim_v2', 'schedule', 'pass'), \
         ('old-api', now() - interval '398 days', 'costsim_v2', 'api', 'fail')",
    )
    .await;
    exec(
        "INSERT INTO costsim_alert_queue (payload, alert_type, status, created_at) \
         VALUES ('[]', 'old-pending', 'pending', now() - interval '90 days'), \
                ('[]', 'old-pending', 'pending', now() - interval '89 days')",
    )
    .await;

    let report = storage::maintain_at(&pool, &settings(72), Utc::now()).await.unwrap();
    let deleted = |table: &str| report.deleted.iter().find(|d| d.table == table).map(|d| d.rows);
    assert_eq!(deleted("costsim_breaker_events"), Some(2), "{report:?}");
    assert_eq!(deleted("costsim_lost_records"), Some(1), "{report:?}");
    assert_eq!(deleted("costsim_canary_reports"), Some(1), "{report:?}");
    assert_eq!(deleted("costsim_alert_queue"), Some(0), "pending rows are never deleted: {report:?}");

    let kept = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, String>(sql).fetch_all(&pool).await.unwrap() }
    };
    assert_eq!(kept("SELECT event_id FROM costsim_breaker_events ORDER BY version").await, ["se-3", "se-4"]);
    assert_eq!(kept("SELECT run_id FROM costsim_canary_reports ORDER BY run_id").await, ["old-2", "old-api"]);
    assert_eq!(kept("SELECT first_offset::text FROM costsim_lost_records").await, ["10"]);
}
