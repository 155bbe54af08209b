//! `alerts stats|retry|purge` as an operator runs them, and `run`'s refusal to start with nowhere to send alerts.

use std::process::{Output, Stdio};

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;

use crate::helpers::{DEADLINE, app_url, command, database_env, fresh_kafka};

async fn alerts(pool: &PgPool, args: &[&str]) -> Output {
    let out = command(&fresh_kafka()).envs(database_env(pool)).arg("alerts").args(args).output().await.unwrap();
    assert!(out.status.success(), "alerts {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Inserts a row of the alert `name` with this status, queued `age` ago (a PostgreSQL interval).
async fn row(pool: &PgPool, name: &str, status: &str, age: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO costsim_alert_queue (payload, alert_type, status, sent_at, attempts, created_at) \
         VALUES ($1, 'test', $2, CASE WHEN $2 = 'sent' THEN now() END, CASE WHEN $2 = 'failed' THEN 10 ELSE 0 END, \
                 now() - $3::interval) RETURNING id",
    )
    .bind(json!([{ "labels": { "alertname": name } }]))
    .bind(status)
    .bind(age)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn statuses(pool: &PgPool) -> Vec<(i64, String, i32, i32)> {
    sqlx::query_as("SELECT id, status, attempts, max_attempts FROM costsim_alert_queue ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn stats_purge_and_retry_manage_the_queue(pool: PgPool) {
    let pending_new = row(&pool, "A", "pending", "1 minute").await;
    let pending_old = row(&pool, "B", "pending", "2 hours").await;
    let superseded = row(&pool, "C", "failed", "1 hour").await;
    let sent = row(&pool, "C", "sent", "30 minutes").await;
    let dead = row(&pool, "D", "failed", "10 minutes").await;
    row(&pool, "E", "sent", "40 days").await;
    row(&pool, "F", "failed", "40 days").await;

    let out = alerts(&pool, &["stats", "--json"]).await;
    let stats: Value = serde_json::from_slice(&out.stdout).expect("stats --json prints JSON");
    assert_eq!(
        (stats["pending"].as_i64(), stats["sent"].as_i64(), stats["failed"].as_i64()),
        (Some(2), Some(2), Some(3))
    );
    let age = stats["oldest_pending_age_seconds"].as_f64().unwrap();
    assert!((7200.0..7300.0).contains(&age), "the oldest pending row is two hours old: {age}");
    let text = stdout(&alerts(&pool, &["stats"]).await);
    assert!(text.contains("pending: 2") && text.contains("failed: 3"), "{text}");

    let out = alerts(&pool, &["purge", "--older-than", "30d"]).await;
    assert!(stdout(&out).contains("purged 2 sent or failed"), "{}", stdout(&out));

    let out = alerts(&pool, &["retry", "--max-retries", "5"]).await;
    assert!(stdout(&out).contains("retried 1 failed alert(s)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("left 1 failed"), "{}", stdout(&out));
    let expected = [
        (pending_new, "pending".to_owned(), 0, 10),
        (pending_old, "pending".to_owned(), 0, 10),
        (superseded, "failed".to_owned(), 10, 10),
        (sent, "sent".to_owned(), 0, 10),
        (dead, "pending".to_owned(), 0, 5),
    ];
    assert_eq!(statuses(&pool).await, expected, "pending rows are kept; the dead letter gets a fresh schedule");
    let due: bool = sqlx::query_scalar("SELECT next_attempt_at <= now() FROM costsim_alert_queue WHERE id = $1")
        .bind(dead)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(due, "a retried row is due at once");
}

#[sqlx::test]
async fn run_refuses_to_start_without_alertmanager_url_unless_alerts_are_off(pool: PgPool) {
    let kafka = fresh_kafka();
    let url = app_url(&pool);
    let out = command(&kafka)
        .arg("run")
        .env("DATABASE_URL", &url)
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("ALERTMANAGER_URL")
        .env_remove("COSTSIM_ALERTS")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must not start: {stderr}");
    assert!(stderr.contains("ALERTMANAGER_URL is not set") && stderr.contains("--alerts off"), "{stderr}");

    let mut run = command(&kafka);
    if let Some(leader) = crate::helpers::leader_url_for(&url) {
        run.env("COSTSIM_LEADER_DATABASE_URL", leader);
    }
    let mut run = run
        .args(["run", "--alerts", "off"])
        .env("DATABASE_URL", &url)
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("ALERTMANAGER_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(run.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("Alert delivery is off") {
                return line;
            }
        }
        panic!("run ended without saying that alert delivery is off");
    })
    .await
    .expect("run says at start that alert delivery is off");
    assert!(said.contains("stay pending"), "{said}");
    run.kill().await.unwrap();
}
