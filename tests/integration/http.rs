//! The metrics and health listener, served on port 0 and asked over real HTTP, as Prometheus and a load balancer
//! ask it.

use std::net::SocketAddr;
use std::time::Duration;

use costsim_breaker::http::{self, AppState, Dependency, Health};
use costsim_breaker::kafka::KafkaConfig;
use costsim_breaker::metrics::{Metrics, refresh};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::{DEADLINE, app_pool, fresh_kafka};

const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A listener on port 0 serving the router until dropped.
struct Server {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(state: AppState) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(http::serve(listener, http::router(state), cancel.clone()));
        Server { addr, cancel, task }
    }

    /// GET a path; the status, the headers (lower-cased names) and the body.
    async fn get(&self, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw)).await.expect("answered in time").unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_owned() };
        (status, head, body)
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, head, body) = self.get(path).await;
        assert!(head.contains("content-type: application/json"), "{head}");
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn state(pool: PgPool, kafka: &KafkaConfig, health: &Health) -> AppState {
    AppState::new(Metrics::new(), health.clone(), pool, kafka, PROBE_TIMEOUT).unwrap()
}

/// A port nothing listens on: bound, read, released.
async fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

#[sqlx::test]
async fn health_is_ready_and_lists_every_breaker_against_the_real_stack(pool: PgPool) {
    let server = Server::start(state(app_pool(&pool).await, &fresh_kafka(), &Health::new())).await;
    let (status, body) = server.get_json("/health").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["postgres"]["status"], "up", "{body:#}");
    assert_eq!(body["checks"]["kafka"]["status"], "up", "{body:#}");
    let breakers = body["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 1, "{body:#}");
    let breaker = &breakers[0];
    assert_eq!(
        (&breaker["name"], &breaker["state"], &breaker["version"]),
        (&"costsim_v2".into(), &"closed".into(), &0.into())
    );
    assert!(breaker["disabled_until"].is_null() && breaker["incident_id"].is_null(), "{breaker}");
    assert!(breaker["updated_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{breaker}");
}

#[sqlx::test]
async fn health_shows_an_open_breaker_with_its_incident_and_deadline(pool: PgPool) {
    sqlx::query(
        "UPDATE costsim_cb_state SET state = 'open', version = 4, incident_id = 'inc-7', \
         disabled_until = '2030-01-01T00:00:00Z' WHERE name = 'costsim_v2'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let server = Server::start(state(app_pool(&pool).await, &fresh_kafka(), &Health::new())).await;
    let (status, body) = server.get_json("/health").await;
    assert_eq!(status, 200, "an open breaker is a state, not a fault: {body:#}");
    let breaker = &body["breakers"][0];
    assert_eq!(breaker["state"], "open");
    assert_eq!(breaker["version"], 4);
    assert_eq!(breaker["incident_id"], "inc-7");
    assert_eq!(breaker["disabled_until"], "2030-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn health_is_not_ready_with_a_reason_when_postgres_is_unreachable_and_never_shows_the_url() {
    let url = format!("postgres://costsim:s3cret@127.0.0.1:{}/costsim", closed_port().await);
    let pool = PgPoolOptions::new().acquire_timeout(Duration::from_millis(500)).connect_lazy(&url).unwrap();
    let server = Server::start(state(pool, &fresh_kafka(), &Health::new())).await;
    let (status, head, text) = server.get("/health").await;
    assert_eq!(status, 503, "{text}");
    assert!(!text.contains("s3cret") && !text.contains("postgres://") && !head.contains("s3cret"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert!(body["checks"]["postgres"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{body:#}");
    assert_eq!(body["checks"]["kafka"]["status"], "up", "{body:#}");
    assert_eq!(body["breakers"], Value::Array(vec![]));

    let (status, live) = server.get_json("/health/live").await;
    assert_eq!((status, &live["status"]), (200, &"alive".into()), "liveness does not depend on the database");
}

#[sqlx::test]
async fn health_is_not_ready_with_a_reason_when_the_broker_is_unreachable(pool: PgPool) {
    let mut kafka = fresh_kafka();
    kafka.brokers = format!("127.0.0.1:{}", closed_port().await);
    let server = Server::start(state(app_pool(&pool).await, &kafka, &Health::new())).await;
    let (status, body) = server.get_json("/health").await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["checks"]["kafka"]["status"], "down");
    assert!(body["checks"]["kafka"]["reason"].as_str().is_some_and(|r| r.contains("metadata")), "{body:#}");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["breakers"][0]["name"], "costsim_v2", "the breakers are still shown");
}

#[sqlx::test]
async fn health_is_not_ready_while_the_pipeline_reports_a_dependency_down(pool: PgPool) {
    let health = Health::new();
    let server = Server::start(state(app_pool(&pool).await, &fresh_kafka(), &health)).await;
    health.set_not_ready(Dependency::Postgres, "the batch transaction failed; retrying in 2 s");
    let (status, body) = server.get_json("/health").await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["status"], "not_ready");
    let check = &body["checks"]["postgres"];
    assert_eq!(check["status"], "down");
    assert_eq!(check["reason"], "the pipeline reports: the batch transaction failed; retrying in 2 s");
    assert!(check["since"].is_string(), "{check}");

    health.set_ready(Dependency::Postgres);
    let (status, body) = server.get_json("/health").await;
    assert_eq!((status, &body["status"]), (200, &"ready".into()), "{body:#}");
}

#[sqlx::test]
async fn metrics_expose_the_domain_metrics_by_their_names(pool: PgPool) {
    let metrics = Metrics::new();
    let app = app_pool(&pool).await;
    refresh::refresh_once(&app, &metrics).await.unwrap();
    metrics.v2_drift_score.observe(0.12);
    let state = AppState::new(metrics, Health::new(), app, &fresh_kafka(), PROBE_TIMEOUT).unwrap();
    let server = Server::start(state).await;
    let (status, head, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    for line in [
        "costsim_v2_circuit_breaker_state{breaker=\"costsim_v2\"} 0",
        "costsim_cb_consecutive_failures{breaker=\"costsim_v2\"} 0",
        "costsim_cb_alert_queue_depth 0",
        "costsim_cb_auto_recovery_total 0",
        "costsim_outbox_pending_events 0",
        "costsim_outbox_lag_seconds 0",
        "costsim_v2_drift_score_bucket{le=\"0.15\"} 1",
        "costsim_batch_size_records_count 0",
        "# TYPE costsim_batch_commit_seconds histogram",
        "# TYPE costsim_gauges_refreshed_timestamp_seconds gauge",
    ] {
        assert!(text.lines().any(|l| l == line || l.starts_with(line)), "`{line}` missing from\n{text}");
    }
}

#[sqlx::test]
async fn an_unknown_path_is_a_404_and_serve_returns_once_cancelled(pool: PgPool) {
    let mut server = Server::start(state(app_pool(&pool).await, &fresh_kafka(), &Health::new())).await;
    let (status, body) = server.get_json("/costsim/nope").await;
    assert_eq!((status, &body["error"]), (404, &"no route for GET /costsim/nope".into()));

    server.cancel.cancel();
    let result = tokio::time::timeout(DEADLINE, &mut server.task).await.expect("serve returned after cancel").unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[sqlx::test]
async fn health_reports_alertmanager_without_letting_it_decide_readiness(pool: PgPool) {
    let kafka = fresh_kafka();
    let off = Server::start(state(app_pool(&pool).await, &kafka, &Health::new())).await;
    let (_, body) = off.get_json("/health").await;
    assert_eq!(body["checks"]["alertmanager"]["status"], "disabled", "{body:#}");

    let url = std::env::var("ALERTMANAGER_URL").expect("ALERTMANAGER_URL is set (scripts/stack env)");
    let endpoint = costsim_breaker::alertmanager::Endpoint::parse(&url).unwrap();
    let up = Server::start(
        state(app_pool(&pool).await, &kafka, &Health::new()).with_alertmanager(endpoint.ready_url()).unwrap(),
    )
    .await;
    let (status, body) = up.get_json("/health").await;
    assert_eq!((status, body["checks"]["alertmanager"]["status"].as_str()), (200, Some("up")), "{body:#}");
    assert_eq!(body["checks"]["alertmanager"]["required"], false);

    // Nothing listens on a port we just released: Alertmanager is down, the process stays ready.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let gone = costsim_breaker::alertmanager::Endpoint::parse(&format!("http://{closed}")).unwrap();
    let down = Server::start(
        state(app_pool(&pool).await, &kafka, &Health::new()).with_alertmanager(gone.ready_url()).unwrap(),
    )
    .await;
    let (status, body) = down.get_json("/health").await;
    assert_eq!(body["checks"]["alertmanager"]["status"], "down", "{body:#}");
    assert_eq!(body["checks"]["alertmanager"]["reason"], "cannot reach Alertmanager");
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
}
