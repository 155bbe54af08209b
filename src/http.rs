//! HTTP adapter: the metrics and health listener (`--http-addr`, default 127.0.0.1:9464).
//!
//! Routes:
//! - `GET /metrics`: the Prometheus text exposition of every metric of the process;
//! - `GET /health`: readiness, 200 with `"status":"ready"` when PostgreSQL and the broker answer and the pipeline
//!   reports no dependency down, otherwise 503 with `"status":"not_ready"` and each failing check's reason; the
//!   body always carries the checks (also Alertmanager's reachability, which does not decide readiness) and every
//!   breaker's state (the probes and the pipeline's flags are described on [`Health`]);
//! - `GET /health/live`: liveness, 200 whenever the process serves HTTP at all.
//! - `/costsim/...`: the operator API behind bearer tokens (status, incidents, disable, reset, divergence, canary
//!   reports and runs), see [`ApiConfig`].
//!
//! Guarantees: the router is built apart from the server ([`router`], [`serve`]), so tests bind port 0; handlers
//! never block the async runtime; errors reach clients as [`ApiError`], where anything internal is a generic 500
//! whose detail goes only to the log; nothing served contains a connection string or a password.

mod api;
mod health;
mod reports;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::error::KafkaError;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::{ApiConfig, ApiTokens, BODY_LIMIT, QUERY_LIMIT, Role, TokenConfigError};
pub use health::{Dependency, Health, PROBE_CACHE, describe_db_error};

use crate::kafka::KafkaConfig;
use crate::metrics::Metrics;

/// Where the metrics and health listener binds, and how long its readiness probes may take.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpConfig {
    /// Address of the metrics and health listener (GET /metrics, /health, /health/live).
    #[arg(long = "http-addr", env = "COSTSIM_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub addr: SocketAddr,
    /// Longest a readiness probe (a PostgreSQL query, a broker metadata request) may take, in milliseconds.
    #[arg(long = "health-timeout-ms", env = "COSTSIM_HEALTH_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub probe_timeout_ms: u64,
}

impl HttpConfig {
    /// The probe timeout as a duration.
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
}

/// What the handlers share: the metrics, the readiness flags the pipeline flips, and the probes.
#[derive(Clone)]
pub struct AppState {
    metrics: Metrics,
    health: Health,
    probes: Arc<health::Probes>,
    api: Option<Arc<ApiConfig>>,
}

impl AppState {
    /// State for a listener reporting on this pool and broker; fails only when the Kafka client cannot be created
    /// from the configuration (a bad `-X` option), never because a dependency is down.
    pub fn new(
        metrics: Metrics,
        health: Health,
        pool: PgPool,
        kafka: &KafkaConfig,
        probe_timeout: Duration,
    ) -> Result<AppState, KafkaError> {
        let probes = health::Probes::new(pool, kafka, probe_timeout)?;
        Ok(AppState { metrics, health, probes: Arc::new(probes), api: None })
    }

    /// Also reports Alertmanager's readiness (`GET {base}/-/ready`) in `/health`, without letting it decide
    /// readiness.
    pub fn with_alertmanager(self, ready_url: url::Url) -> Result<AppState, reqwest::Error> {
        self.probes.set_alertmanager(ready_url)?;
        Ok(self)
    }

    /// Serves the `/costsim` API with this configuration; without it (or with no token) those routes answer 503.
    pub fn with_api(mut self, api: ApiConfig) -> AppState {
        self.api = Some(Arc::new(api));
        self
    }
}

/// The routes, with no listener attached.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(readiness))
        .route("/health/live", get(liveness))
        .merge(api::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Serves the router on the listener until `cancel` fires, then stops accepting, lets requests in flight finish
/// (a probe takes at most its timeout) and returns.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "Serving /metrics and /health.");
    }
    axum::serve(listener, router).with_graceful_shutdown(cancel.cancelled_owned()).await
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.try_render()?;
    let content_type = HeaderValue::from_static(prometheus::TEXT_FORMAT);
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

async fn readiness(State(state): State<AppState>) -> Response {
    let report = health::report(&state.probes, &state.health).await;
    let status = if report.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], Json(report)).into_response()
}

async fn liveness() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound { method, path: uri.path().to_owned() }
}

/// Every error a handler returns; internal ones become a generic 500 and are logged here, once.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route matches the request.
    #[error("no route for {method} {path}")]
    NotFound {
        /// The request's method.
        method: Method,
        /// The request's path, without the query.
        path: String,
    },
    /// The metrics registry could not be encoded.
    #[error("cannot render the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::NotFound { .. } => {
                (StatusCode::NOT_FOUND, Json(json!({ "error": self.to_string() }))).into_response()
            }
            ApiError::Metrics(_) => {
                tracing::error!(error = %self, "Request failed.");
                (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": "internal error" }))).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn an_internal_error_is_a_generic_500_without_its_detail() {
        let err = ApiError::Metrics(prometheus::Error::Msg("registry detail".into()));
        let (status, body) = body_of(err.into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, r#"{"error":"internal error"}"#);
    }

    #[tokio::test]
    async fn an_unknown_route_is_a_404_naming_it() {
        let err = ApiError::NotFound { method: Method::GET, path: "/nope".into() };
        let (status, body) = body_of(err.into_response()).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, r#"{"error":"no route for GET /nope"}"#));
    }
}
