//! The wall-clock timers: an expired TTL goes half-open even with no event, probation closes or reopens by the
//! clock, every transition commits once with its state event, incident and alert rows, and old buckets go.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use costsim_breaker::breaker::{BreakerConfig, manual_disable};
use costsim_breaker::drift::Observation;
use costsim_breaker::event::BreakerState;
use costsim_breaker::store::breaker::{self, AUTO_RECOVER_ACTOR, ApplySettings, BreakerRow};
use costsim_breaker::store::buckets::{self, Source};
use costsim_breaker::timers::tick;
use costsim_breaker::window::Bucket;
use sqlx::PgPool;

use crate::helpers::app_pool;

const BREAKER: &str = "costsim_v2";

/// A minute-long TTL, a 30-second probation and a one-minute window of 10-second buckets.
fn config() -> BreakerConfig {
    BreakerConfig {
        disable_ttl_seconds: 60,
        max_disable_ttl_seconds: 3600,
        probation_seconds: 30,
        bucket_millis: 10_000,
        window_seconds: 60,
        min_samples: 20,
        ..BreakerConfig::default()
    }
}

fn settings() -> ApplySettings {
    ApplySettings { instance: "timers-test".into(), runbook_url: "runbook".into(), drift_threshold: 0.2 }
}

/// The start of the test's timeline, and a time `seconds` after it.
fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap() + TimeDelta::seconds(seconds)
}

/// Opens the breaker at `t(0)` by a manual disable with this TTL (0 = latched), as the CLI does.
async fn disable(pool: &PgPool, ttl_seconds: u64) {
    let mut tx = pool.begin().await.unwrap();
    let row = breaker::lock(&mut tx, BREAKER).await.unwrap().unwrap();
    let decision = manual_disable(&row.record, "maintenance", ttl_seconds, t(0));
    breaker::apply(&mut tx, &row, &decision, "alice", &settings(), t(0), None).await.unwrap();
    tx.commit().await.unwrap();
}

async fn row(pool: &PgPool) -> BreakerRow {
    breaker::get(&mut pool.acquire().await.unwrap(), BREAKER).await.unwrap().unwrap()
}

async fn events(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT version, payload->>'to_state' FROM costsim_breaker_events ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// No pipeline runs in these tests' databases: the timers go by the clock alone.
fn progress() -> costsim_breaker::timers::Progress {
    costsim_breaker::timers::Progress { group: "no-pipeline".into(), topic: "no-topic".into(), idle_seconds: 10.0 }
}

async fn at(pool: &PgPool, now: DateTime<Utc>) -> Vec<(BreakerState, BreakerState)> {
    let changes = tick(pool, &[BREAKER.to_owned()], &config(), &settings(), &progress(), now).await.unwrap();
    changes.iter().map(|c| (c.from_state, c.to_state)).collect()
}

/// Stores `count` drift scores of `score` in the bucket starting at `start`.
async fn samples(pool: &PgPool, start: DateTime<Utc>, score: f64, count: usize) {
    let mut bucket = Bucket::default();
    (0..count).for_each(|_| bucket.record(Observation::Drift(score)));
    let source = Source { breaker: BREAKER, topic: "results", partition: 0 };
    let mut conn = pool.acquire().await.unwrap();
    buckets::merge(&mut conn, source, &BTreeMap::from([(start, bucket)])).await.unwrap();
}

#[sqlx::test]
async fn an_expired_ttl_goes_half_open_once_and_writes_one_state_event(pool: PgPool) {
    let app = app_pool(&pool).await;
    disable(&pool, 60).await;
    assert_eq!(at(&app, t(59)).await, [], "not before disabled_until");
    assert_eq!(at(&app, t(60)).await, [(BreakerState::Open, BreakerState::HalfOpen)]);
    assert_eq!(at(&app, t(61)).await, [], "probation has only begun");

    let row = row(&pool).await;
    assert_eq!((row.record.state, row.record.half_open_since, row.version), (BreakerState::HalfOpen, Some(t(60)), 2));
    assert_eq!(events(&pool).await, [(1, "open".to_owned()), (2, "half_open".to_owned())]);
    assert!(row.incident_id.is_some(), "the incident stays open through probation");
}

#[sqlx::test]
async fn a_probation_without_samples_reopens_with_a_doubled_ttl(pool: PgPool) {
    let app = app_pool(&pool).await;
    disable(&pool, 60).await;
    at(&app, t(60)).await;
    assert_eq!(at(&app, t(89)).await, []);
    assert_eq!(at(&app, t(90)).await, [(BreakerState::HalfOpen, BreakerState::Open)]);

    let row = row(&pool).await;
    assert_eq!(row.record.state, BreakerState::Open);
    assert_eq!(row.record.ttl_seconds, 120);
    assert_eq!(row.record.disabled_until, Some(t(90 + 120)));
    assert_eq!(events(&pool).await.len(), 3);
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_cb_incidents WHERE NOT resolved")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 1, "a reopen keeps the one incident");
}

#[sqlx::test]
async fn a_due_probation_waits_while_the_pipeline_lags_and_is_judged_once_it_caught_up(pool: PgPool) {
    let app = app_pool(&pool).await;
    disable(&pool, 60).await;
    at(&app, t(60)).await;
    // The pipeline's only partition has applied events up to t(60): at t(90) it lags 30 s, three buckets.
    let mark = "INSERT INTO costsim_consumed_offsets (consumer_group, topic, \"partition\", next_offset, watermark) \
                VALUES ($1, $2, 0, 100, $3) ON CONFLICT ON CONSTRAINT pk_costsim_consumed_offsets \
                DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = now()";
    let progress = progress();
    sqlx::query(mark).bind(&progress.group).bind(&progress.topic).bind(t(60)).execute(&pool).await.unwrap();
    assert_eq!(at(&app, t(90)).await, [], "no 'too few samples' reopen while the buckets wait in Kafka");
    assert_eq!(row(&pool).await.record.state, BreakerState::HalfOpen);
    // Caught up to within a bucket: the probation is judged (no samples came, so it reopens).
    sqlx::query(mark).bind(&progress.group).bind(&progress.topic).bind(t(85)).execute(&pool).await.unwrap();
    assert_eq!(at(&app, t(91)).await, [(BreakerState::HalfOpen, BreakerState::Open)]);
}

#[sqlx::test]
async fn a_probation_with_enough_good_samples_closes_and_resolves_the_incident(pool: PgPool) {
    let app = app_pool(&pool).await;
    disable(&pool, 60).await;
    let incident = row(&pool).await.incident_id.unwrap();
    at(&app, t(60)).await;
    for start in [60, 70, 80] {
        samples(&pool, t(start), 0.01, 10).await;
    }
    assert_eq!(at(&app, t(90)).await, [(BreakerState::HalfOpen, BreakerState::Closed)]);

    let row = row(&pool).await;
    assert_eq!((row.record.state, row.version, row.incident_id), (BreakerState::Closed, 3, None));
    let (resolved, by): (bool, Option<String>) =
        sqlx::query_as("SELECT resolved, resolved_by FROM costsim_cb_incidents WHERE id = $1")
            .bind(&incident)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((resolved, by.as_deref()), (true, Some(AUTO_RECOVER_ACTOR)));
    let alerts: Vec<String> =
        sqlx::query_scalar("SELECT alert_type FROM costsim_alert_queue WHERE incident_id = $1 ORDER BY id")
            .bind(&incident)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(alerts, ["disable", "enable"], "the resolved alert is queued in the same transaction");
    assert_eq!(events(&pool).await.last(), Some(&(3, "closed".to_owned())));
}

#[sqlx::test]
async fn ticks_racing_on_a_due_breaker_make_its_transition_once(pool: PgPool) {
    let app = app_pool(&pool).await;
    disable(&pool, 60).await;
    let (a, b, c) = tokio::join!(at(&app, t(60)), at(&app, t(60)), at(&app, t(60)));
    assert_eq!(a.len() + b.len() + c.len(), 1);
    assert_eq!(events(&pool).await.len(), 2);
}

#[sqlx::test]
async fn latched_and_closed_breakers_are_left_alone(pool: PgPool) {
    let app = app_pool(&pool).await;
    assert_eq!(at(&app, t(0)).await, [], "closed breakers are judged by the pipeline, not the clock");
    disable(&pool, 0).await;
    assert_eq!(at(&app, t(365 * 24 * 3600)).await, [], "a latched breaker waits for an operator");
    assert_eq!(events(&pool).await.len(), 1);
}

#[sqlx::test]
async fn buckets_older_than_twice_the_window_before_the_latest_evaluation_are_pruned(pool: PgPool) {
    let app = app_pool(&pool).await;
    for start in [0, 170, 180, 290] {
        samples(&pool, t(start), 0.01, 1).await;
    }
    sqlx::query("UPDATE costsim_cb_state SET last_evaluated_at = $1 WHERE name = $2")
        .bind(t(300))
        .bind(BREAKER)
        .execute(&pool)
        .await
        .unwrap();
    at(&app, t(300)).await;
    // Window 60 s and probation 30 s: keep two minutes before the latest evaluation.
    let kept: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT bucket_start FROM costsim_drift_buckets ORDER BY bucket_start")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept, [t(180), t(290)]);
}
