//! `breaker status|disable|enable` as an operator runs them: each change goes through the transactional path
//! (incident, alert row, state event), repeats are no-ops that say so, and `status --json` shows every state.

use std::process::Output;

use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{command, database_env, fresh_kafka};

async fn breaker(pool: &PgPool, args: &[&str]) -> Output {
    let out = command(&fresh_kafka())
        .envs(database_env(pool))
        .env_remove("COSTSIM_DISABLE_TTL_SECONDS")
        .env_remove("COSTSIM_DISABLE_TTL_HOURS")
        .arg("breaker")
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "breaker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn status(pool: &PgPool) -> Value {
    let out = breaker(pool, &["status", "--json"]).await;
    let all: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    let ours = all.as_array().expect("an array").iter().find(|b| b["name"] == "costsim_v2").expect("costsim_v2");
    ours.clone()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test]
async fn a_latched_disable_and_an_enable_each_act_once_and_status_shows_every_state(pool: PgPool) {
    let before = status(&pool).await;
    assert_eq!((before["state"].as_str(), before["version"].as_i64()), (Some("closed"), Some(0)));
    assert!(before["since"].is_null(), "a breaker that never changed has no `since`");

    let disable = ["disable", "--reason", "maintenance window", "--latched", "--actor", "alice"];
    let out = breaker(&pool, &disable).await;
    assert!(stdout(&out).contains("closed -> open (latched until an enable)"), "{}", stdout(&out));
    let out = breaker(&pool, &disable).await;
    assert!(stdout(&out).contains("already disabled") && stdout(&out).contains("nothing changed"), "{}", stdout(&out));

    let open = status(&pool).await;
    assert_eq!(open["state"], "open");
    assert_eq!(open["latched"], true);
    assert!(open["disabled_until"].is_null());
    assert_eq!(open["reason"], "maintenance window");
    assert_eq!(open["actor"], "alice");
    assert_eq!(open["severity"], "P2");
    assert_eq!(open["version"], 1);
    assert!(open["since"].is_string());
    let incident = open["incident_id"].as_str().expect("an open incident").to_owned();
    assert_eq!(count(&pool, "SELECT count(*) FROM costsim_cb_incidents WHERE severity = 'P2'").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM costsim_alert_queue WHERE alert_type = 'disable'").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM costsim_breaker_events").await, 1);

    let enable = ["enable", "--reason", "maintenance over", "--actor", "bob"];
    let out = breaker(&pool, &enable).await;
    assert!(
        stdout(&out).contains(&format!("open -> closed, version 2, incident {incident} resolved")),
        "{}",
        stdout(&out)
    );
    let out = breaker(&pool, &enable).await;
    assert!(stdout(&out).contains("already closed") && stdout(&out).contains("nothing changed"), "{}", stdout(&out));

    let (resolved, by, notes): (bool, Option<String>, Option<String>) =
        sqlx::query_as("SELECT resolved, resolved_by, resolution_notes FROM costsim_cb_incidents WHERE id = $1")
            .bind(&incident)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((resolved, by.as_deref(), notes.as_deref()), (true, Some("bob"), Some("maintenance over")));
    let resolved_alert: Value =
        sqlx::query_scalar("SELECT payload FROM costsim_alert_queue WHERE alert_type = 'enable' AND incident_id = $1")
            .bind(&incident)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(resolved_alert[0]["endsAt"].is_string(), "the resolved alert ends the firing one: {resolved_alert}");
    let events: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT version, payload->>'to_state', payload->>'actor' FROM costsim_breaker_events ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events, [(1, "open".into(), "alice".into()), (2, "closed".into(), "bob".into())]);

    let closed = status(&pool).await;
    assert_eq!((closed["state"].as_str(), closed["version"].as_i64()), (Some("closed"), Some(2)));
    assert!(closed["incident_id"].is_null() && closed["since"].is_string());
}

#[sqlx::test]
async fn a_timed_disable_keeps_its_incident_when_its_ttl_is_changed(pool: PgPool) {
    breaker(&pool, &["disable", "--reason", "deploy", "--ttl", "30m"]).await;
    let first = status(&pool).await;
    assert_eq!((first["ttl_seconds"].as_u64(), first["latched"].as_bool()), (Some(1800), Some(false)));
    let until = chrono::DateTime::parse_from_rfc3339(first["disabled_until"].as_str().unwrap()).unwrap();
    let left = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::minutes(29) && left <= chrono::TimeDelta::minutes(30), "{left}");

    let out = breaker(&pool, &["disable", "--reason", "deploy", "--ttl", "1800s"]).await;
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    breaker(&pool, &["disable", "--reason", "deploy", "--ttl", "2h"]).await;
    let second = status(&pool).await;
    assert_eq!(second["ttl_seconds"], 7200);
    assert_eq!(second["incident_id"], first["incident_id"], "a changed TTL keeps the incident");
    assert_eq!(count(&pool, "SELECT count(*) FROM costsim_cb_incidents").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM costsim_breaker_events").await, 2);
}

#[sqlx::test]
async fn an_unknown_breaker_is_refused_with_the_names_that_exist(pool: PgPool) {
    let out = command(&fresh_kafka())
        .envs(database_env(&pool))
        .args(["breaker", "enable", "--reason", "x", "--name", "nope"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no breaker named `nope`") && stderr.contains("costsim_v2"), "{stderr}");
}
