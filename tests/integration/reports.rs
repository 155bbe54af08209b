//! Divergence and canary reports over seeded provenance, through the real API and the real schedule job: known KL
//! values (the three reference vectors of docs/DOMAIN.md, *KL divergence*), percentiles, the canary's own signal on the
//! breaker and its alert rows, and a missed daily slot made up at start.

use chrono::{DateTime, TimeDelta, Utc};
use costsim_breaker::drift::{Verdict, drift_score};
use costsim_breaker::metrics::Metrics;
use costsim_breaker::reports::{self, CanaryRequest, CanarySettings};
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::app_pool;
use crate::http_api::{READER, Server, WRITER, assert_error, tokens};
use crate::pipeline::wait_for;

/// Inserts one comparison per (V1, V2) pair at `at`, for `tenant`.
async fn seed(pool: &PgPool, tenant: &str, pairs: &[(i64, i64)], at: DateTime<Utc>) {
    for (i, &(v1, v2)) in pairs.iter().enumerate() {
        let score = drift_score(v1, v2, true, true);
        sqlx::query(
            "INSERT INTO costsim_provenance (event_id, occurred_at, tenant_id, model_version, input_hash, v1_cost, \
             v2_cost, cost_delta, v1_feasible, v2_feasible, v2_status, drift_score, verdict) \
             VALUES ($1, $2, $3, '2.1.0', $4, $5, $6, $7, true, true, 'success', $8, $9)",
        )
        .bind(format!("{tenant}-{i}-{}", uuid::Uuid::new_v4()))
        .bind(at + TimeDelta::milliseconds(i as i64))
        .bind(tenant)
        .bind(format!("{:064x}", i))
        .bind(v1 as f64)
        .bind(v2 as f64)
        .bind((v2 - v1) as f64)
        .bind(score)
        .bind(Verdict::of(score).as_str())
        .execute(pool)
        .await
        .unwrap();
    }
}

/// A V2 failure: no V2 cost, no score.
async fn seed_failure(pool: &PgPool, tenant: &str, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO costsim_provenance (event_id, occurred_at, tenant_id, v1_cost, v2_status) \
         VALUES ($1, $2, $3, 100, 'error')",
    )
    .bind(format!("{tenant}-failed-{}", uuid::Uuid::new_v4()))
    .bind(at)
    .bind(tenant)
    .execute(pool)
    .await
    .unwrap();
}

const EQUAL: [(i64, i64); 5] = [(100, 100); 5];
const LN5: [(i64, i64); 5] = [(100, 50), (100, 150), (100, 75), (100, 125), (100, 100)];
const LN3: [(i64, i64); 3] = [(100, 100), (100, 105), (100, 150)];

#[sqlx::test]
async fn divergence_gives_the_known_kl_of_each_tenant_and_the_nearest_rank_deltas(pool: PgPool) {
    let at = Utc::now() - TimeDelta::hours(1);
    seed(&pool, "equal", &EQUAL, at).await;
    seed(&pool, "five", &LN5, at).await;
    seed(&pool, "three", &LN3, at).await;
    seed_failure(&pool, "three", at).await;
    let server = Server::start(pool, &tokens()).await;
    let get = |tenant: &str| format!("/costsim/divergence?days=1&tenant_id={tenant}");

    let (status, equal) = server.call(Method::GET, &get("equal"), Some(READER), None).await;
    assert_eq!(status, 200, "{equal:#}");
    assert_eq!((equal["kl_divergence"].as_f64(), equal["delta_p90"].as_f64()), (Some(0.0), Some(0.0)));
    assert_eq!((equal["matching_rate"].as_f64(), equal["sample_count"].as_i64()), (Some(1.0), Some(5)));

    let (_, five) = server.call(Method::GET, &get("five"), Some(READER), None).await;
    assert_eq!(five["kl_divergence"].as_f64(), Some(1.6094), "{five:#}");
    // |Δ| sorted 0, 25, 25, 50, 50: median index 2, p90 index 4; drift 0.3 for ±50 is above 0.2.
    assert_eq!((five["delta_p50"].as_f64(), five["delta_p90"].as_f64()), (Some(25.0), Some(50.0)));
    assert_eq!((five["fail_ratio"].as_f64(), five["matching_rate"].as_f64()), (Some(0.4), Some(0.2)));
    assert_eq!(five["version"], "2.1.0");
    assert_eq!(five["detailed_samples"].as_array().unwrap().len(), 5);

    let (_, three) = server.call(Method::GET, &get("three"), Some(READER), None).await;
    assert_eq!(three["kl_divergence"].as_f64(), Some(1.0986), "{three:#}");
    assert_eq!((three["sample_count"].as_i64(), three["scored_count"].as_i64()), (Some(4), Some(3)));
    assert_eq!(three["matching_rate"].as_f64(), Some(0.5), "the failed V2 run is no match: 2 of 4");

    let (_, all) = server.call(Method::GET, "/costsim/divergence?samples=0", Some(READER), None).await;
    assert_eq!((all["sample_count"].as_i64(), all["detailed_samples"].as_array().unwrap().len()), (Some(14), 0));
    let (_, none) = server.call(Method::GET, "/costsim/divergence?end_date=2020-01-01", Some(READER), None).await;
    assert_eq!((none["sample_count"].as_i64(), none["kl_divergence"].as_f64()), (Some(0), Some(0.0)), "{none:#}");
    assert!(none["delta_p50"].is_null());
}

#[sqlx::test]
async fn bad_report_queries_are_400_with_the_error_shape(pool: PgPool) {
    let server = Server::start(pool, &tokens()).await;
    for path in [
        "/costsim/divergence?days=0",
        "/costsim/divergence?start_date=tomorrow",
        "/costsim/divergence?start_date=2026-01-02&end_date=2026-01-01",
        "/costsim/divergence?unknown=1",
        "/costsim/canary/reports?limit=0",
        "/costsim/canary/reports?status=great",
    ] {
        let (status, body) = server.call(Method::GET, path, Some(READER), None).await;
        assert_eq!(status, 400, "{path}: {body:#}");
        assert_error(&body, "bad_request");
    }
    let (status, body) = server.call(Method::POST, "/costsim/canary/run?sample_count=5", Some(WRITER), None).await;
    assert_eq!(status, 400, "{body:#}");
    let (status, body) = server.call(Method::GET, "/costsim/canary/reports/nope", Some(READER), None).await;
    assert_eq!(status, 404, "{body:#}");
    assert_error(&body, "no_report");
    let long = format!("/costsim/divergence?tenant_id={}", "x".repeat(3000));
    let (status, body) = server.call(Method::GET, &long, Some(READER), None).await;
    assert_eq!(status, 414, "{body:#}");
    assert_error(&body, "query_too_long");
}

async fn canary_alerts(pool: &PgPool) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT alert_type, payload FROM costsim_alert_queue WHERE alert_type LIKE 'canary%' ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_failed_canary_raises_its_own_signal_and_a_later_pass_clears_it(pool: PgPool) {
    let at = Utc::now() - TimeDelta::minutes(30);
    seed(&pool, "five", &LN5, at).await;
    let server = Server::start(pool.clone(), &tokens()).await;

    let (status, run) = server.call(Method::POST, "/costsim/canary/run?sample_count=10", Some(WRITER), None).await;
    assert_eq!(status, 201, "{run:#}");
    assert_eq!((run["status"].as_str(), run["passed"].as_bool()), (Some("fail"), Some(false)));
    assert_eq!((run["kl_divergence"].as_f64(), run["total_samples"].as_u64()), (Some(1.6094), Some(5)));
    assert_eq!(run["failure_reasons"][0], "KL divergence 1.6094 > 0.2");
    assert_eq!((run["trigger"].as_str(), run["requested_by"].as_str()), (Some("api"), Some("writer")));
    assert_eq!(run["signal"], "raised");
    let failed_id = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(failed_id.len(), 12);

    // Its own signal: the breaker's state and counters are untouched.
    let (state, failures, failing): (String, i32, bool) = sqlx::query_as(
        "SELECT state, consecutive_failures, canary_failing FROM costsim_cb_state WHERE name = 'costsim_v2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), failures, failing), ("closed", 0, true));
    let alerts = canary_alerts(&pool).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].1[0]["labels"]["alertname"], "CostSimV2CanaryFailing");
    assert!(alerts[0].1[0]["endsAt"].is_string(), "a failing canary alert ends by itself: {:#}", alerts[0].1);
    let (_, status_body) = server.call(Method::GET, "/costsim/v2/status", Some(READER), None).await;
    assert_eq!(
        (status_body["canary"]["failing"].as_bool(), status_body["canary"]["run_id"].as_str()),
        (Some(true), Some(failed_id.as_str()))
    );

    // The stored report reads back whole; the listing's total is the real count.
    let (status, stored) =
        server.call(Method::GET, &format!("/costsim/canary/reports/{failed_id}"), Some(READER), None).await;
    assert_eq!(status, 200, "{stored:#}");
    assert_eq!((stored["median_cost_diff"].as_f64(), stored["p90_cost_diff"].as_f64()), (Some(25.0), Some(50.0)));
    assert_eq!((stored["major_drift_samples"].as_u64(), stored["outlier_count"].as_u64()), (Some(2), Some(0)));

    // Newer, identical comparisons dominate a sample of the last hour... by being the only ones in it.
    sqlx::query("DELETE FROM costsim_provenance").execute(&pool).await.unwrap();
    seed(&pool, "equal", &[(100, 100); 20], Utc::now() - TimeDelta::minutes(5)).await;
    let (_, run) = server.call(Method::POST, "/costsim/canary/run?window_hours=1", Some(WRITER), None).await;
    assert_eq!((run["status"].as_str(), run["signal"].as_str()), (Some("pass"), Some("cleared")), "{run:#}");
    let alerts = canary_alerts(&pool).await;
    assert_eq!(alerts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["canary_fail", "canary_resolved"]);
    assert_eq!(alerts[1].1[0]["labels"], alerts[0].1[0]["labels"], "the resolution ends that very alert");

    let (_, list) = server.call(Method::GET, "/costsim/canary/reports?limit=1", Some(READER), None).await;
    assert_eq!((list["total"].as_i64(), list["reports"].as_array().unwrap().len()), (Some(2), 1));
    assert_eq!(list["reports"][0]["status"], "pass", "newest first");
    let (_, failed) = server.call(Method::GET, "/costsim/canary/reports?passed=false", Some(READER), None).await;
    assert_eq!(failed["total"].as_i64(), Some(1));
}

#[sqlx::test]
async fn a_canary_without_samples_is_an_error_that_changes_nothing(pool: PgPool) {
    let request = request();
    let (report, signal) = reports::run_canary(&app_pool(&pool).await, &request, None, Utc::now()).await.unwrap();
    assert_eq!((report.evaluation.status.as_str(), report.evaluation.passed), ("error", false));
    assert_eq!(format!("{signal:?}"), "Unchanged");
    assert!(canary_alerts(&pool).await.is_empty());
}

fn request() -> CanaryRequest {
    CanaryRequest {
        breaker: "costsim_v2".into(),
        trigger: "schedule",
        requested_by: None,
        sample_count: 100,
        window_hours: 24,
        limits: Default::default(),
        instance: "test".into(),
        runbook_url: "ops/runbooks/costsim-canary.md".into(),
    }
}

#[sqlx::test]
async fn the_schedule_makes_up_a_missed_daily_run_at_once_and_counts_it(pool: PgPool) {
    seed(&pool, "equal", &EQUAL, Utc::now() - TimeDelta::hours(2)).await;
    sqlx::query(
        "INSERT INTO costsim_canary_reports (run_id, \"timestamp\", status, breaker, trigger) \
         VALUES ('old', now() - interval '3 days', 'pass', 'costsim_v2', 'schedule')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let metrics = Metrics::new();
    let cancel = CancellationToken::new();
    let settings = CanarySettings::from_env().unwrap();
    let job = tokio::spawn(reports::run_schedule(
        app_pool(&pool).await,
        settings,
        request(),
        metrics.clone(),
        cancel.clone(),
    ));
    let sql = "SELECT count(*) FROM costsim_canary_reports WHERE trigger = 'schedule'";
    assert_eq!(wait_for(&pool, sql, 2).await, 2, "the missed slot is made up at once");
    assert_eq!(metrics.v2_canary_runs_total.with_label_values(&["pass"]).get(), 1);
    cancel.cancel();
    job.await.unwrap();

    // The refresher shows the newest run's KL and time to every replica.
    costsim_breaker::metrics::refresh::refresh_once(&app_pool(&pool).await, &metrics).await.unwrap();
    let text = metrics.render();
    assert!(text.contains("costsim_v2_kl_divergence{breaker=\"costsim_v2\"} 0"), "{text}");
    assert!(text.contains("costsim_v2_canary_failing{breaker=\"costsim_v2\"} 0"), "{text}");
}

#[sqlx::test]
async fn canary_reports_carry_the_known_kl_of_each_reference_vector(pool: PgPool) {
    let mut request = request();
    request.limits.kl_threshold = 2.0; // judge the KL alone, not the verdict
    let app = app_pool(&pool).await;
    for (pairs, kl) in [(&EQUAL[..], 0.0), (&LN5[..], 1.6094), (&LN3[..], 1.0986)] {
        sqlx::query("DELETE FROM costsim_provenance").execute(&pool).await.unwrap();
        seed(&pool, "t", pairs, Utc::now() - TimeDelta::minutes(10)).await;
        let (report, _) = reports::run_canary(&app, &request, None, Utc::now()).await.unwrap();
        assert_eq!(report.evaluation.kl_divergence, Some(kl), "{pairs:?}");
        assert_eq!(report.evaluation.total_samples, pairs.len() as u64);
        let stored: Option<f64> =
            sqlx::query_scalar("SELECT kl_divergence FROM costsim_canary_reports WHERE run_id = $1")
                .bind(&report.run_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored, Some(kl));
    }
}
