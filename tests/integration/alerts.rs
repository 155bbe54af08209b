//! The alert lifecycle against the real Alertmanager of the stack (ALERTMANAGER_URL): a trip's alert becomes active
//! with its labels, is re-sent with a later end while the breaker stays open, and the same alert is resolved on
//! recovery; the drift warning fires once and resolves; an unreachable Alertmanager only delays delivery.
//! Each test names its alerts with its own `instance` label and reads only those back.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use costsim_breaker::alertmanager::{Delivery, DrainOutcome, Drainer, Endpoint};
use costsim_breaker::breaker::{Breaker, Decision, Evidence, Outcome, manual_disable, manual_enable};
use costsim_breaker::event::{BreakerState, Severity};
use costsim_breaker::metrics::Metrics;
use costsim_breaker::store::breaker::{self, ApplySettings};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{DEADLINE, app_pool};

const BREAKER: &str = "costsim_v2";

/// The stack's Alertmanager, as `scripts/stack env` exports it.
pub fn alertmanager_url() -> String {
    std::env::var("ALERTMANAGER_URL").unwrap_or_else(|_| "http://127.0.0.1:9093".to_owned())
}

/// Delivery to `url` with a short timeout and a one-minute re-send interval.
pub fn delivery(url: &str) -> Delivery {
    Delivery {
        endpoint: Endpoint::parse(url).unwrap(),
        timeout: Duration::from_secs(2),
        resend_interval: Duration::from_secs(60),
    }
}

/// A unique `instance` label, so a test finds its own alerts among everyone's.
pub fn instance() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// What decisions write besides the state, naming this test's instance.
pub fn settings(instance: &str) -> ApplySettings {
    ApplySettings {
        instance: instance.to_owned(),
        runbook_url: "ops/runbooks/costsim-circuit-breaker.md".into(),
        drift_threshold: 0.2,
    }
}

/// Applies a decision to the locked breaker row and commits, as the pipeline, the timers and the CLI do.
pub async fn decide(pool: &PgPool, instance: &str, decide: impl FnOnce(&Breaker) -> Decision) {
    let mut tx = pool.begin().await.unwrap();
    let row = breaker::lock(&mut tx, BREAKER).await.unwrap().unwrap();
    let decision = decide(&row.record);
    breaker::apply(&mut tx, &row, &decision, "tester", &settings(instance), Utc::now(), None).await.unwrap();
    tx.commit().await.unwrap();
}

/// The alerts Alertmanager holds as active for an instance (resolved alerts are not listed).
pub async fn active_alerts(instance: &str) -> Vec<Value> {
    let endpoint = Endpoint::parse(&alertmanager_url()).unwrap();
    let response = reqwest::Client::new()
        .get(endpoint.url().clone())
        .query(&[("filter", format!("instance=\"{instance}\""))])
        .send()
        .await
        .expect("Alertmanager answers");
    assert!(response.status().is_success(), "GET alerts: {}", response.status());
    response.json().await.unwrap()
}

/// Polls Alertmanager until the instance's active alerts satisfy `condition`, or fails at the deadline.
pub async fn alerts_until(instance: &str, what: &str, condition: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let alerts = active_alerts(instance).await;
        if condition(&alerts) {
            return alerts;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {DEADLINE:?}; active: {alerts:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The queue's rows as (alert_type, status), in id order.
pub async fn queue(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT COALESCE(alert_type, ''), status FROM costsim_alert_queue ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn pair(alert_type: &str, status: &str) -> (String, String) {
    (alert_type.to_owned(), status.to_owned())
}

fn evidence(p95: f64, failures: u32) -> Evidence {
    let now = Utc::now();
    Evidence {
        p95_drift: Some(p95),
        sample_count: 240,
        schema_errors: 0,
        consecutive_failures: failures,
        drift_threshold: 0.2,
        drift_warning_threshold: 0.15,
        min_samples: 50,
        failure_threshold: 3,
        schema_error_threshold: 5,
        window_start: now - TimeDelta::seconds(300),
        window_end: now,
        partitions_behind: Vec::new(),
    }
}

/// A closed breaker's evaluation: `outcome` with the record unchanged.
fn stay(record: &Breaker, outcome: Outcome) -> Decision {
    Decision { outcome, next: record.clone() }
}

fn trip(p95: f64) -> Decision {
    let now = Utc::now();
    let next = Breaker {
        state: BreakerState::Open,
        opened_at: Some(now),
        disabled_until: Some(now + TimeDelta::hours(1)),
        ttl_seconds: 3600,
        severity: Some(Severity::P1),
        ..Breaker::closed()
    };
    let reason = format!("p95 drift {p95:.4} > 0.2 for 3 consecutive evaluations");
    Decision { outcome: Outcome::Trip { severity: Severity::P1, reason, evidence: evidence(p95, 3) }, next }
}

fn close() -> Decision {
    let reason = "probation passed".to_owned();
    Decision { outcome: Outcome::Close { reason, evidence: evidence(0.05, 0) }, next: Breaker::closed() }
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or_default()
}

async fn drain(drainer: &Drainer) -> DrainOutcome {
    drainer.drain_once().await.expect("a drain pass")
}

#[sqlx::test]
async fn a_trip_fires_its_alert_in_alertmanager_and_recovery_resolves_that_same_alert(pool: PgPool) {
    let instance = instance();
    let metrics = Metrics::new();
    let drainer = Drainer::new(app_pool(&pool).await, delivery(&alertmanager_url()), metrics.clone()).unwrap();
    decide(&pool, &instance, |b| manual_disable(b, "bad model rollout", 3600, Utc::now())).await;
    let incident: String =
        sqlx::query_scalar("SELECT incident_id FROM costsim_cb_state").fetch_one(&pool).await.unwrap();

    assert_eq!(drain(&drainer).await, DrainOutcome::Attempted { sent: 1, retrying: 0, dead: 0 });
    assert_eq!(drain(&drainer).await, DrainOutcome::Empty);
    let active = alerts_until(&instance, "the trip's alert is active", |a| a.len() == 1).await;
    let alert = &active[0];
    assert_eq!(label(alert, "alertname"), "CostSimV2Disabled");
    assert_eq!(label(alert, "severity"), "p2");
    assert_eq!(label(alert, "component"), "costsim");
    assert_eq!(label(alert, "circuit_breaker"), BREAKER);
    assert_eq!(label(alert, "incident_id"), incident);
    assert!(alert["annotations"]["runbook_url"].as_str().unwrap().contains("ops/runbooks/"));
    assert!(alert["annotations"]["description"].as_str().unwrap().contains("Disabled until: "));
    let fingerprint = alert["fingerprint"].clone();
    let (sent, sent_at): (bool, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT alert_sent, alert_sent_at FROM costsim_cb_incidents WHERE id = $1")
            .bind(&incident)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(sent && sent_at.is_some(), "the incident records its delivered alert");

    decide(&pool, &instance, |b| manual_enable(b, "rolled back")).await;
    let resolution: Value = sqlx::query_scalar("SELECT payload FROM costsim_alert_queue WHERE alert_type = 'enable'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(resolution[0]["labels"], alert["labels"], "the resolution carries the very same label set");
    assert_eq!(drain(&drainer).await.sent(), 1);
    alerts_until(&instance, "the same alert is resolved", |a| a.iter().all(|x| x["fingerprint"] != fingerprint)).await;
    assert_eq!(queue(&pool).await, [pair("disable", "sent"), pair("enable", "sent")]);
    assert_eq!(metrics.cb_alert_delivery_seconds.get_sample_count(), 2);
}

#[sqlx::test]
async fn the_drift_warning_fires_once_and_a_trip_resolves_it_while_the_incident_alert_fires(pool: PgPool) {
    let instance = instance();
    let drainer = Drainer::new(app_pool(&pool).await, delivery(&alertmanager_url()), Metrics::new()).unwrap();
    decide(&pool, &instance, |b| stay(b, Outcome::Warn { evidence: evidence(0.17, 0) })).await;
    decide(&pool, &instance, |b| stay(b, Outcome::Warn { evidence: evidence(0.21, 1) })).await;
    decide(&pool, &instance, |b| stay(b, Outcome::InsufficientData { sample_count: 3, min_samples: 50 })).await;
    assert_eq!(queue(&pool).await, [pair("warning", "pending")], "one warning for a run of warning-band evaluations");

    drain(&drainer).await;
    let active = alerts_until(&instance, "the warning is active", |a| a.len() == 1).await;
    assert_eq!(label(&active[0], "alertname"), "CostSimV2DriftWarning");
    assert_eq!(label(&active[0], "severity"), "p2");
    assert_eq!(label(&active[0], "circuit_breaker"), BREAKER);
    assert!(active[0]["labels"].get("incident_id").is_none(), "the warning opens no incident");
    assert!(active[0]["annotations"]["description"].as_str().unwrap().contains("0.1700"));

    decide(&pool, &instance, |_| trip(0.31)).await;
    let row = breaker::get(&mut pool.acquire().await.unwrap(), BREAKER).await.unwrap().unwrap();
    assert!(!row.warning_active, "a trip ends the warning");
    drain(&drainer).await;
    let active = alerts_until(&instance, "only the incident alert is active", |a| {
        a.len() == 1 && label(&a[0], "alertname") == "CostSimV2Disabled"
    })
    .await;
    assert_eq!(label(&active[0], "severity"), "p1");
    let description = active[0]["annotations"]["description"].as_str().unwrap();
    for part in ["p95 drift: 0.3100", "threshold 0.2", "Sample count: 240", "Disabled until: "] {
        assert!(description.contains(part), "{part} missing from {description}");
    }

    decide(&pool, &instance, |_| close()).await;
    drain(&drainer).await;
    alerts_until(&instance, "everything is resolved after the close", <[Value]>::is_empty).await;
}

#[sqlx::test]
async fn drift_falling_back_below_the_warning_level_resolves_the_warning(pool: PgPool) {
    let instance = instance();
    let drainer = Drainer::new(app_pool(&pool).await, delivery(&alertmanager_url()), Metrics::new()).unwrap();
    decide(&pool, &instance, |b| stay(b, Outcome::Warn { evidence: evidence(0.18, 0) })).await;
    drain(&drainer).await;
    alerts_until(&instance, "the warning is active", |a| a.len() == 1).await;

    decide(&pool, &instance, |b| stay(b, Outcome::None)).await;
    assert_eq!(queue(&pool).await, [pair("warning", "sent"), pair("warning_resolved", "pending")]);
    drain(&drainer).await;
    alerts_until(&instance, "the warning is resolved", <[Value]>::is_empty).await;
    decide(&pool, &instance, |b| stay(b, Outcome::None)).await;
    assert_eq!(queue(&pool).await.len(), 2, "nothing more to resolve");
}

#[sqlx::test]
async fn a_firing_alert_is_resent_with_a_later_end_until_the_breaker_closes(pool: PgPool) {
    let instance = instance();
    let drainer = Drainer::new(app_pool(&pool).await, delivery(&alertmanager_url()), Metrics::new()).unwrap();
    decide(&pool, &instance, |b| manual_disable(b, "maintenance", 0, Utc::now())).await;
    let now = Utc::now();
    assert_eq!(drainer.resend_once(now).await.unwrap(), 0, "nothing to re-send before an interval passed");
    drain(&drainer).await;

    let later = now + TimeDelta::seconds(61);
    assert_eq!(drainer.resend_once(later).await.unwrap(), 1);
    assert_eq!(drainer.resend_once(later).await.unwrap(), 0, "one re-send pending at a time");
    let resend: Value = sqlx::query_scalar("SELECT payload FROM costsim_alert_queue WHERE alert_type = 'resend'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let ends: DateTime<Utc> = resend[0]["endsAt"].as_str().unwrap().parse().unwrap();
    let expected = later + TimeDelta::seconds(240);
    assert_eq!(ends.timestamp_millis(), expected.timestamp_millis(), "four intervals ahead");
    drain(&drainer).await;
    let active = alerts_until(&instance, "the re-send moved the end", |a| {
        a.len() == 1 && a[0]["endsAt"].as_str().and_then(|e| e.parse::<DateTime<Utc>>().ok()) == Some(ends)
    })
    .await;
    assert_eq!(label(&active[0], "alertname"), "CostSimV2Disabled");

    decide(&pool, &instance, |b| manual_enable(b, "done")).await;
    assert_eq!(drainer.resend_once(later + TimeDelta::seconds(600)).await.unwrap(), 0, "closed: no re-send");
    drain(&drainer).await;
    alerts_until(&instance, "resolved despite the later end of the re-send", <[Value]>::is_empty).await;
    let types: Vec<String> = queue(&pool).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(types, ["disable", "resend", "enable"]);
}

#[sqlx::test]
async fn an_unreachable_alertmanager_keeps_the_row_pending_with_backoff_then_it_is_delivered(pool: PgPool) {
    let instance = instance();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let metrics = Metrics::new();
    let down =
        Drainer::new(app_pool(&pool).await, delivery(&format!("http://127.0.0.1:{closed_port}")), metrics.clone())
            .unwrap();
    let up = Drainer::new(app_pool(&pool).await, delivery(&alertmanager_url()), metrics.clone()).unwrap();
    decide(&pool, &instance, |b| manual_disable(b, "maintenance", 3600, Utc::now())).await;

    assert_eq!(drain(&down).await, DrainOutcome::Attempted { sent: 0, retrying: 1, dead: 0 });
    let (status, attempts, error, wait): (String, i32, String, f64) = sqlx::query_as(
        "SELECT status, attempts, last_error, EXTRACT(EPOCH FROM next_attempt_at - last_attempt_at)::float8 \
         FROM costsim_alert_queue",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    assert!(!error.is_empty() && !error.starts_with("HTTP"), "{error}");
    assert!((0.8..=1.2).contains(&wait), "the first retry waits about 1 s: {wait}");
    assert_eq!(metrics.cb_alert_send_failures_total.with_label_values(&["disable", "connection"]).get(), 1);
    assert_eq!(drain(&up).await, DrainOutcome::Empty, "not due before its backoff ends");

    sqlx::query("UPDATE costsim_alert_queue SET next_attempt_at = now()").execute(&pool).await.unwrap();
    assert_eq!(drain(&up).await.sent(), 1);
    alerts_until(&instance, "delivered once Alertmanager answers", |a| a.len() == 1).await;
    assert_eq!(queue(&pool).await, [pair("disable", "sent")]);
}
