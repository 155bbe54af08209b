//! The `/costsim` operator API over real HTTP on port 0: bearer tokens and roles, the status and incidents reads,
//! and disable/reset through the same transactional path as the CLI.

use std::net::SocketAddr;
use std::time::Duration;

use costsim_breaker::breaker::BreakerConfig;
use costsim_breaker::http::{self, ApiConfig, ApiTokens, AppState, Health};
use costsim_breaker::metrics::Metrics;
use costsim_breaker::store::breaker::ApplySettings;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::{app_pool, fresh_kafka};

pub const READER: &str = "read-secret";
pub const WRITER: &str = "write-secret";
pub const ADMIN: &str = "admin-secret";

/// The API on port 0 over a test's database, stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    cancel: CancellationToken,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Server {
    /// Serves the API with these `name:role:token` entries.
    pub async fn start(pool: PgPool, tokens: &str) -> Server {
        let pool = app_pool(&pool).await;
        let state = AppState::new(Metrics::new(), Health::new(), pool.clone(), &fresh_kafka(), Duration::from_secs(1))
            .unwrap()
            .with_api(ApiConfig {
                tokens: ApiTokens::parse(tokens.split(',')).unwrap(),
                pool,
                breaker: "costsim_v2".into(),
                engine: BreakerConfig::default(),
                settings: ApplySettings {
                    instance: "test".into(),
                    runbook_url: "runbook".into(),
                    drift_threshold: 0.2,
                },
                model_version: "2.0.0".into(),
                adapter_version: "2.0.0".into(),
                canary: costsim_breaker::reports::CanarySettings::from_env().unwrap(),
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(http::serve(listener, http::router(state), cancel.clone()));
        Server { addr, cancel, client: reqwest::Client::new() }
    }

    /// One request; returns the status and the JSON body.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if status == 401 {
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }
}

/// A reader, a writer and an admin.
pub fn tokens() -> String {
    format!("reader:read:{READER},writer:write:{WRITER},root:admin:{ADMIN}")
}

/// Asserts the stable error shape with this code.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert!(body["error"]["message"].is_string(), "{body:#}");
}

#[sqlx::test]
async fn every_route_answers_401_without_or_with_an_unknown_token_and_403_below_its_role(pool: PgPool) {
    let server = Server::start(pool, &tokens()).await;
    let routes = [
        (Method::GET, "/costsim/v2/status", None, READER, 200),
        (Method::GET, "/costsim/v2/incidents", None, READER, 200),
        (Method::GET, "/costsim/divergence", None, READER, 200),
        (Method::GET, "/costsim/canary/reports", None, READER, 200),
        (Method::POST, "/costsim/canary/run", None, WRITER, 201),
        (Method::POST, "/costsim/v2/disable", Some(json!({"reason": "x", "latched": true})), ADMIN, 200),
        (Method::POST, "/costsim/v2/reset?reason=x", None, ADMIN, 200),
    ];
    for (method, path, body, allowed, ok) in routes {
        let (status, reply) = server.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(status, 401, "{path}");
        assert_error(&reply, "unauthorized");
        let (status, reply) = server.call(method.clone(), path, Some("wrong"), body.clone()).await;
        assert_eq!(status, 401, "{path}");
        assert_error(&reply, "unauthorized");
        let below: &[&str] = match allowed {
            ADMIN => &[READER, WRITER],
            WRITER => &[READER],
            _ => &[],
        };
        {
            for &low in below {
                let (status, reply) = server.call(method.clone(), path, Some(low), body.clone()).await;
                assert_eq!(status, 403, "{path}");
                assert_error(&reply, "forbidden");
            }
        }
        let (status, reply) = server.call(method.clone(), path, Some(allowed), body.clone()).await;
        assert_eq!(status, ok, "{path}: {reply:#}");
        let (status, _) = server.call(method, path, Some(ADMIN), body).await;
        assert_eq!(status, ok, "admin may do everything: {path}");
    }
}

#[sqlx::test]
async fn without_tokens_the_api_is_503_and_health_stays_open(pool: PgPool) {
    let server = Server::start(pool, "").await;
    let (status, body) = server.call(Method::GET, "/costsim/v2/status", Some(ADMIN), None).await;
    assert_eq!(status, 503);
    assert_error(&body, "auth_not_configured");
    let (status, _) = server.call(Method::GET, "/health/live", None, None).await;
    assert_eq!(status, 200);
}

#[sqlx::test]
async fn status_shows_the_row_thresholds_and_versions(pool: PgPool) {
    let server = Server::start(pool, &tokens()).await;
    let (status, body) = server.call(Method::GET, "/costsim/v2/status", Some(READER), None).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["state"], "closed");
    assert!(body["reason"].is_null() && body["disabled_until"].is_null(), "{body:#}");
    assert_eq!(body["thresholds"]["drift_threshold"], BreakerConfig::default().drift_threshold);
    assert_eq!((&body["model_version"], &body["adapter_version"]), (&json!("2.0.0"), &json!("2.0.0")));
}

#[sqlx::test]
async fn disable_then_reset_changes_the_row_and_records_the_token_name(pool: PgPool) {
    let server = Server::start(pool.clone(), &tokens()).await;
    let body = json!({"reason": "maintenance", "ttl_seconds": 600});
    let (status, reply) = server.call(Method::POST, "/costsim/v2/disable", Some(ADMIN), Some(body.clone())).await;
    assert_eq!(status, 200, "{reply:#}");
    assert_eq!(reply["changed"], true);
    assert_eq!(reply["status"]["state"], "open");
    assert_eq!(reply["status"]["reason"], "maintenance");
    assert!(reply["status"]["disabled_until"].is_string(), "{reply:#}");
    let (state, by): (String, Option<String>) =
        sqlx::query_as("SELECT state, disabled_by FROM costsim_cb_state WHERE name = 'costsim_v2'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), by.as_deref()), ("open", Some("root")));
    let incident = reply["status"]["incident_id"].as_str().expect("an incident").to_owned();

    let (status, again) = server.call(Method::POST, "/costsim/v2/disable", Some(ADMIN), Some(body)).await;
    assert_eq!((status, &again["changed"]), (200, &json!(false)), "the same disable changes nothing");

    let (status, reply) = server.call(Method::POST, "/costsim/v2/reset?reason=fixed", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{reply:#}");
    assert_eq!((&reply["changed"], &reply["status"]["state"]), (&json!(true), &json!("closed")));
    let (resolved, resolved_by, notes): (bool, Option<String>, Option<String>) =
        sqlx::query_as("SELECT resolved, resolved_by, resolution_notes FROM costsim_cb_incidents WHERE id = $1")
            .bind(&incident)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((resolved, resolved_by.as_deref(), notes.as_deref()), (true, Some("root"), Some("fixed")));
    let (status, reply) = server.call(Method::POST, "/costsim/v2/reset?reason=fixed", Some(ADMIN), None).await;
    assert_eq!((status, &reply["changed"]), (200, &json!(false)), "a closed breaker changes nothing");
}

#[sqlx::test]
async fn incidents_are_newest_first_with_the_real_total(pool: PgPool) {
    let server = Server::start(pool, &tokens()).await;
    for i in 0..3 {
        let disable = json!({"reason": format!("cause {i}"), "latched": true});
        let (status, _) = server.call(Method::POST, "/costsim/v2/disable", Some(ADMIN), Some(disable)).await;
        assert_eq!(status, 200);
        let (status, _) = server.call(Method::POST, "/costsim/v2/reset?reason=ok", Some(ADMIN), None).await;
        assert_eq!(status, 200);
    }
    let disable = json!({"reason": "still broken", "latched": true});
    assert_eq!(server.call(Method::POST, "/costsim/v2/disable", Some(ADMIN), Some(disable)).await.0, 200);

    let (status, open) = server.call(Method::GET, "/costsim/v2/incidents", Some(READER), None).await;
    assert_eq!(status, 200, "{open:#}");
    assert_eq!(open["total"], 1, "{open:#}");
    assert_eq!(open["incidents"][0]["resolved"], false);

    let path = "/costsim/v2/incidents?include_resolved=true&limit=2";
    let (status, all) = server.call(Method::GET, path, Some(READER), None).await;
    assert_eq!(status, 200, "{all:#}");
    assert_eq!(all["total"], 4, "the real count, not the page: {all:#}");
    let page = all["incidents"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert!(page[0]["timestamp"].as_str() >= page[1]["timestamp"].as_str(), "{all:#}");
}

#[sqlx::test]
async fn bad_queries_and_bodies_are_400_with_the_error_shape(pool: PgPool) {
    let server = Server::start(pool, &tokens()).await;
    for path in [
        "/costsim/v2/incidents?limit=0",
        "/costsim/v2/incidents?limit=101",
        "/costsim/v2/incidents?limit=ten",
        "/costsim/v2/incidents?include_resolved=maybe",
        "/costsim/v2/incidents?bogus=1",
    ] {
        let (status, body) = server.call(Method::GET, path, Some(READER), None).await;
        assert_eq!(status, 400, "{path}: {body:#}");
        assert_error(&body, "bad_request");
    }
    for path in ["/costsim/v2/reset", "/costsim/v2/reset?reason=%20"] {
        let (status, body) = server.call(Method::POST, path, Some(ADMIN), None).await;
        assert_eq!(status, 400, "{path}: {body:#}");
        assert_error(&body, "bad_request");
    }
    for body in [
        json!({"reason": "x", "ttl_seconds": 60, "latched": true}),
        json!({"reason": "x", "ttl_seconds": 0}),
        json!({"reason": ""}),
        json!({"ttl_seconds": 60}),
    ] {
        let (status, reply) = server.call(Method::POST, "/costsim/v2/disable", Some(ADMIN), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {reply:#}");
        assert_error(&reply, "bad_request");
    }
    let huge = json!({"reason": "x".repeat(http::BODY_LIMIT + 1)});
    let (status, reply) = server.call(Method::POST, "/costsim/v2/disable", Some(ADMIN), Some(huge)).await;
    assert_eq!(status, 413, "{reply:#}");
    assert_error(&reply, "payload_too_large");
}

/// Starts `run` with these extra variables and returns it with the address its listener bound.
async fn run_with(
    pool: &PgPool,
    kafka: &costsim_breaker::kafka::KafkaConfig,
    vars: &[(&str, &str)],
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = crate::helpers::command(kafka);
    cmd.args(["run", "--alerts", "off"])
        .envs(crate::helpers::database_env(pool))
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env("COSTSIM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("COSTSIM_API_TOKENS")
        .env_remove("COSTSIM_API_TOKENS_FILE")
        .stderr(std::process::Stdio::piped());
    for (key, value) in vars {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("run starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(crate::helpers::DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(addr) = log["fields"]["addr"].as_str() {
                return addr.parse::<SocketAddr>().unwrap();
            }
        }
        panic!("run exited before it listened");
    })
    .await
    .expect("run listens in time");
    // Keep draining its log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[sqlx::test]
async fn run_reads_its_tokens_from_the_file_or_the_environment(pool: PgPool) {
    let kafka = fresh_kafka();
    let file = std::env::temp_dir().join(format!("costsim-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, "# operators\nops:admin:file-admin-secret\n\nviewer:read:file-read-secret\n").unwrap();
    let (child, addr) = run_with(&pool, &kafka, &[("COSTSIM_API_TOKENS_FILE", file.to_str().unwrap())]).await;
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, token: &str| {
        client.request(method, format!("http://{addr}{path}")).bearer_auth(token).send()
    };
    assert_eq!(call(Method::GET, "/costsim/v2/status", "file-read-secret").await.unwrap().status(), 200);
    assert_eq!(call(Method::POST, "/costsim/v2/reset?reason=x", "file-read-secret").await.unwrap().status(), 403);
    assert_eq!(call(Method::POST, "/costsim/v2/reset?reason=x", "file-admin-secret").await.unwrap().status(), 200);
    drop(child);
    std::fs::remove_file(&file).unwrap();

    let (_child, addr) = run_with(&pool, &kafka, &[("COSTSIM_API_TOKENS", "bot:write:env-write-secret")]).await;
    let post =
        |path: &str, token: &str| client.post(format!("http://{addr}{path}")).bearer_auth(token.to_owned()).send();
    let response = post("/costsim/canary/run", "env-write-secret").await.unwrap();
    assert_eq!(response.status(), 201);
    let report: Value = response.json().await.unwrap();
    assert_eq!((report["trigger"].as_str(), report["requested_by"].as_str()), (Some("api"), Some("bot")));
    assert_eq!(post("/costsim/canary/run", "file-admin-secret").await.unwrap().status(), 401, "the old file is gone");
}

#[sqlx::test]
async fn run_refuses_to_start_with_an_unreadable_token_file_or_a_bad_entry(pool: PgPool) {
    let kafka = fresh_kafka();
    for (key, value, expected) in [
        (
            "COSTSIM_API_TOKENS_FILE",
            "/nonexistent/costsim-tokens",
            "cannot read the API token file /nonexistent/costsim-tokens",
        ),
        ("COSTSIM_API_TOKENS", "alice:root:topsecret", "unknown role `root`"),
    ] {
        let output = crate::helpers::command(&kafka)
            .args(["run", "--alerts", "off"])
            .envs(crate::helpers::database_env(&pool))
            .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
            .env_remove("COSTSIM_API_TOKENS")
            .env_remove("COSTSIM_API_TOKENS_FILE")
            .env(key, value)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{key}={value} must stop run");
        assert!(stderr.contains(expected), "{key}: {stderr}");
        assert!(!stderr.contains("topsecret"), "a token never reaches the log: {stderr}");
    }
}
