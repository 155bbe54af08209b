//! Alert delivery against endpoints that misbehave, played by a tiny local server on port 0: an error answer gives
//! the backoff schedule and then the dead letter, a hang is cut by the timeout, and two drainers on one queue post
//! each row exactly once, in order per alert.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use costsim_breaker::alertmanager::{DrainOutcome, Drainer};
use costsim_breaker::metrics::Metrics;
use costsim_breaker::store::alerts;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::alerts::delivery;
use crate::helpers::{DEADLINE, app_pool};

/// How the fake Alertmanager answers a POST.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 after this many milliseconds.
    Accept(u64),
    /// 500 with a body.
    Fail,
    /// Never answers.
    Hang,
}

/// A local stand-in for Alertmanager that records every POSTed body; stops when dropped.
struct FakeAlertmanager {
    url: String,
    posts: Arc<Mutex<Vec<Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeAlertmanager {
    async fn start(behaviour: Behaviour) -> Self {
        let posts = Arc::new(Mutex::new(Vec::new()));
        let handler = |State((posts, behaviour)): State<(Arc<Mutex<Vec<Value>>>, Behaviour)>,
                       Json(body): Json<Value>| async move {
            posts.lock().unwrap().push(body);
            match behaviour {
                Behaviour::Accept(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    (StatusCode::OK, String::new())
                }
                Behaviour::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "boom: the store is full".to_owned()),
                Behaviour::Hang => std::future::pending::<(StatusCode, String)>().await,
            }
        };
        let app = axum::Router::new().route("/api/v2/alerts", post(handler)).with_state((posts.clone(), behaviour));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeAlertmanager { url, posts, server }
    }

    fn posts(&self) -> Vec<Value> {
        self.posts.lock().unwrap().clone()
    }
}

impl Drop for FakeAlertmanager {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Queues a test alert with its own labels; returns the row id.
async fn enqueue(pool: &PgPool, alert: &str, seq: usize) -> i64 {
    let payload = json!([{ "labels": { "alertname": alert }, "annotations": { "seq": seq.to_string() } }]);
    alerts::enqueue(&mut pool.acquire().await.unwrap(), &payload, "test", "costsim_v2", None).await.unwrap()
}

/// attempts, status, last_error, and the wait before the next attempt in seconds.
async fn row(pool: &PgPool, id: i64) -> (i32, String, String, f64) {
    sqlx::query_as(
        "SELECT attempts, status, COALESCE(last_error, ''), \
                EXTRACT(EPOCH FROM next_attempt_at - last_attempt_at)::float8 FROM costsim_alert_queue WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Makes every pending row due now, as if its backoff had passed.
async fn make_due(pool: &PgPool) {
    sqlx::query("UPDATE costsim_alert_queue SET next_attempt_at = now() WHERE status = 'pending'")
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test]
async fn an_error_answer_backs_off_with_growing_delays_and_dead_letters_at_max_attempts(pool: PgPool) {
    let fake = FakeAlertmanager::start(Behaviour::Fail).await;
    let metrics = Metrics::new();
    let drainer = Drainer::new(app_pool(&pool).await, delivery(&fake.url), metrics.clone()).unwrap();
    let id = enqueue(&pool, "Backoff", 0).await;
    sqlx::query("UPDATE costsim_alert_queue SET max_attempts = 4 WHERE id = $1").bind(id).execute(&pool).await.unwrap();

    for attempt in 1..=3 {
        assert_eq!(drainer.drain_once().await.unwrap(), DrainOutcome::Attempted { sent: 0, retrying: 1, dead: 0 });
        assert_eq!(drainer.drain_once().await.unwrap(), DrainOutcome::Empty, "not due during its backoff");
        let (attempts, status, error, wait) = row(&pool, id).await;
        assert_eq!((attempts, status.as_str()), (attempt, "pending"));
        assert_eq!(error, "HTTP 500: boom: the store is full");
        let base = 2f64.powi(attempt - 1);
        assert!((0.8 * base - 0.01..=1.2 * base + 0.01).contains(&wait), "attempt {attempt} waits {wait} s");
        make_due(&pool).await;
    }
    assert_eq!(drainer.drain_once().await.unwrap(), DrainOutcome::Attempted { sent: 0, retrying: 0, dead: 1 });
    let (attempts, status, _, _) = row(&pool, id).await;
    assert_eq!((attempts, status.as_str()), (4, "failed"));
    make_due(&pool).await;
    assert_eq!(drainer.drain_once().await.unwrap(), DrainOutcome::Empty, "a dead letter is not attempted again");
    assert_eq!(fake.posts().len(), 4);
    assert_eq!(metrics.cb_alert_send_failures_total.with_label_values(&["test", "http_500"]).get(), 4);

    // Far into the schedule the wait is capped at five minutes (with jitter below it).
    let late = enqueue(&pool, "Capped", 1).await;
    sqlx::query("UPDATE costsim_alert_queue SET attempts = 11, max_attempts = 20 WHERE id = $1")
        .bind(late)
        .execute(&pool)
        .await
        .unwrap();
    drainer.drain_once().await.unwrap();
    let (attempts, _, _, wait) = row(&pool, late).await;
    assert_eq!(attempts, 12);
    assert!((240.0 - 0.01..=300.01).contains(&wait), "capped: {wait} s");
}

#[sqlx::test]
async fn a_hanging_endpoint_is_cut_by_the_timeout_and_recorded_as_one(pool: PgPool) {
    let fake = FakeAlertmanager::start(Behaviour::Hang).await;
    let metrics = Metrics::new();
    let mut settings = delivery(&fake.url);
    settings.timeout = Duration::from_millis(500);
    let drainer = Drainer::new(app_pool(&pool).await, settings, metrics.clone()).unwrap();
    let id = enqueue(&pool, "Hang", 0).await;

    let started = tokio::time::Instant::now();
    assert_eq!(drainer.drain_once().await.unwrap(), DrainOutcome::Attempted { sent: 0, retrying: 1, dead: 0 });
    assert!(started.elapsed() < Duration::from_secs(5), "the timeout bounds the pass: {:?}", started.elapsed());
    let (attempts, status, error, _) = row(&pool, id).await;
    assert_eq!((attempts, status.as_str()), (1, "pending"));
    assert!(error.starts_with("Timeout: "), "{error}");
    assert_eq!(metrics.cb_alert_send_failures_total.with_label_values(&["test", "timeout"]).get(), 1);
    let lease: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT lease_until FROM costsim_alert_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(lease, None, "the claim is released with the outcome");
}

#[sqlx::test]
async fn two_drainers_on_one_queue_post_each_row_once_and_each_alert_in_order(pool: PgPool) {
    let fake = FakeAlertmanager::start(Behaviour::Accept(20)).await;
    // Ten alerts, three rows each (as a trip, a re-send and a resolution would be).
    let mut ids = Vec::new();
    for seq in 0..30 {
        ids.push(enqueue(&pool, &format!("Alert{}", seq % 10), seq).await);
    }
    let a = Drainer::new(app_pool(&pool).await, delivery(&fake.url), Metrics::new()).unwrap().with_batch_size(4);
    let b = a.clone();
    let drain_all = |drainer: Drainer| {
        let pool = pool.clone();
        async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            loop {
                let outcome = drainer.drain_once().await.unwrap();
                let pending: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM costsim_alert_queue WHERE status = 'pending'")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                if pending == 0 {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "{pending} rows still pending");
                if outcome == DrainOutcome::Empty {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    };
    tokio::join!(drain_all(a), drain_all(b));

    let posts = fake.posts();
    let seqs: Vec<usize> =
        posts.iter().map(|p| p[0]["annotations"]["seq"].as_str().unwrap().parse().unwrap()).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..30).collect::<Vec<_>>(), "every row posted exactly once");
    for alert in 0..10 {
        let order: Vec<usize> = seqs.iter().copied().filter(|s| s % 10 == alert).collect();
        assert_eq!(order, [alert, alert + 10, alert + 20], "rows of one alert arrive in the order queued");
    }
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_alert_queue WHERE status = 'sent'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sent, 30);
}
