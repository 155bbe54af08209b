//! The operator API under `/costsim`, behind bearer tokens.
//!
//! Tokens come from `COSTSIM_API_TOKENS` (`name:role:token,...`) or the file named by `COSTSIM_API_TOKENS_FILE`
//! (one `name:role:token` a line, blank lines and `#` comments ignored); roles are `read` < `write` < `admin`.
//! A missing or unknown token is a 401 with `WWW-Authenticate: Bearer`, a too-low role a 403; every error is
//! `{"error":{"code":"...","message":"..."}}`. Tokens are compared in constant time and never logged nor shown by
//! `Debug`. With no token configured every `/costsim` route answers 503 `auth_not_configured`.
//!
//! Routes: `GET /costsim/v2/status` and `GET /costsim/v2/incidents` (read), `POST /costsim/v2/disable` and
//! `POST /costsim/v2/reset` (admin), the last two through the same transactional path as `breaker disable|enable`
//! ([`manual`]); the report routes of [`super::reports`]: `GET /costsim/divergence`, `GET /costsim/canary/reports`,
//! `GET /costsim/canary/reports/{run_id}` (read) and `POST /costsim/canary/run` (write). Bodies are limited to
//! [`BODY_LIMIT`] bytes (413) and query strings to [`QUERY_LIMIT`] (414).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::breaker::BreakerConfig;
use crate::store::breaker::manual::{self, ManualError};
use crate::store::breaker::{self, ApplySettings, BreakerRow};

/// Largest request body the API reads.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Longest query string the API reads, in bytes.
pub const QUERY_LIMIT: usize = 2048;
/// Longest TTL a disable may ask for: ten years, as the CLI.
const MAX_TTL_SECONDS: u64 = 10 * 365 * 86_400;
/// Longest reason accepted.
const MAX_REASON: usize = 1000;

/// What a token may do; each role may do what the lower ones may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read the state and the incidents.
    Read,
    /// Run the canary (writes short of switching the breaker).
    Write,
    /// Disable and reset the breaker.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// One configured caller; its secret never appears in `Debug`.
#[derive(Clone)]
struct ApiToken {
    name: String,
    role: Role,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// The configured callers.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<ApiToken>,
}

/// A token configuration refused at start; names the entry, never its secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// An entry is not `name:role:token`.
    #[error("API token entry {0} is not name:role:token")]
    Malformed(usize),
    /// An entry has a blank name.
    #[error("API token entry {0} has an empty name")]
    EmptyName(usize),
    /// An entry's role is not read, write or admin.
    #[error("API token `{name}` (entry {entry}) has an unknown role `{role}`; use read, write or admin")]
    BadRole {
        /// Position, from 1.
        entry: usize,
        /// The caller's name.
        name: String,
        /// The role given.
        role: String,
    },
    /// An entry's token is blank.
    #[error("API token `{name}` (entry {entry}) has an empty token")]
    EmptyToken {
        /// Position, from 1.
        entry: usize,
        /// The caller's name.
        name: String,
    },
    /// Two entries share a name.
    #[error("API token name `{name}` appears twice (entry {entry})")]
    DuplicateName {
        /// Position of the second, from 1.
        entry: usize,
        /// The name.
        name: String,
    },
    /// The token file cannot be read.
    #[error("cannot read the API token file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ApiTokens {
    /// Reads `COSTSIM_API_TOKENS_FILE` if set, else `COSTSIM_API_TOKENS`; none configured is an empty set.
    pub fn from_env() -> Result<ApiTokens, TokenConfigError> {
        let layers = crate::config::layers();
        if let Some(path) = layers.value("COSTSIM_API_TOKENS_FILE") {
            let path = path.to_owned();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| TokenConfigError::File { path, reason: e.kind().to_string() })?;
            return ApiTokens::parse(text.lines().filter(|l| !l.trim().starts_with('#')));
        }
        let text = layers.value("COSTSIM_API_TOKENS").unwrap_or_default();
        ApiTokens::parse(text.split(','))
    }

    /// Parses `name:role:token` entries (the token may contain `:`); blank entries are skipped.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<ApiTokens, TokenConfigError> {
        let mut tokens: Vec<ApiToken> = Vec::new();
        for (i, entry) in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let entry_no = i + 1;
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(TokenConfigError::Malformed(entry_no));
            };
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(TokenConfigError::EmptyName(entry_no));
            }
            let Some(role) = Role::parse(role.trim()) else {
                return Err(TokenConfigError::BadRole { entry: entry_no, name, role: role.trim().to_owned() });
            };
            let secret = secret.trim();
            if secret.is_empty() {
                return Err(TokenConfigError::EmptyToken { entry: entry_no, name });
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(TokenConfigError::DuplicateName { entry: entry_no, name });
            }
            tokens.push(ApiToken { name, role, secret: secret.as_bytes().to_vec() });
        }
        Ok(ApiTokens { tokens })
    }

    /// Whether no caller is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller holding this token; every configured token is compared, in constant time.
    fn authenticate(&self, presented: &[u8]) -> Option<(&str, Role)> {
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.secret.as_slice().ct_eq(presented)) {
                found = Some((token.name.as_str(), token.role));
            }
        }
        found
    }
}

/// What the API needs besides the tokens: the pool, the breaker it drives and how decisions are written.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The callers.
    pub tokens: ApiTokens,
    /// The database.
    pub pool: PgPool,
    /// The breaker the routes show and switch.
    pub breaker: String,
    /// The engine's settings (thresholds, default disable TTL).
    pub engine: BreakerConfig,
    /// What decisions write besides the state.
    pub settings: ApplySettings,
    /// `COSTSIM_MODEL_VERSION`, default 2.0.0.
    pub model_version: String,
    /// `COSTSIM_ADAPTER_VERSION`, default 2.0.0.
    pub adapter_version: String,
    /// The canary's sample size and limits, for `POST /costsim/canary/run`.
    pub canary: crate::reports::CanarySettings,
}

impl ApiConfig {
    /// The versions from `COSTSIM_MODEL_VERSION` and `COSTSIM_ADAPTER_VERSION` (default 2.0.0).
    pub fn versions_from_env() -> (String, String) {
        let layers = crate::config::layers();
        let read = |key| layers.value(key).map(str::to_owned).unwrap_or_else(|| "2.0.0".into());
        (read("COSTSIM_MODEL_VERSION"), read("COSTSIM_ADAPTER_VERSION"))
    }
}

/// The `/costsim` routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/costsim/v2/status", get(status))
        .route("/costsim/v2/incidents", get(incidents))
        .route("/costsim/v2/disable", post(disable))
        .route("/costsim/v2/reset", post(reset))
        .merge(super::reports::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(limit_query))
}

/// Refuses a query string longer than [`QUERY_LIMIT`] before any handler parses it.
async fn limit_query(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match request.uri().query() {
        Some(query) if query.len() > QUERY_LIMIT => Failure::new(
            StatusCode::URI_TOO_LONG,
            "query_too_long",
            format!("the query string must be at most {QUERY_LIMIT} bytes"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure { status, code, message: message.into() }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// What the client is told.
    #[cfg(test)]
    pub(super) fn message(&self) -> &str {
        &self.message
    }

    pub(super) fn internal(err: impl std::fmt::Display) -> Failure {
        tracing::error!(error = %err, "API request failed.");
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<QueryRejection> for Failure {
    fn from(rejection: QueryRejection) -> Failure {
        Failure::bad_request(rejection.body_text())
    }
}

impl From<JsonRejection> for Failure {
    fn from(rejection: JsonRejection) -> Failure {
        let (status, code) = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        Failure::new(status, code, rejection.body_text())
    }
}

/// An authenticated caller and the API's configuration.
pub struct Caller {
    name: String,
    role: Role,
    api: Arc<ApiConfig>,
}

impl Caller {
    /// The API's configuration.
    pub(super) fn api(&self) -> &ApiConfig {
        &self.api
    }

    /// The token's name: the actor of what the caller does.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn require(&self, role: Role) -> Result<(), Failure> {
        if self.role >= role {
            return Ok(());
        }
        Err(Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this route needs the {} role; `{}` has {}", role.as_str(), self.name, self.role.as_str()),
        ))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Failure> {
        let Some(api) = state.api.clone().filter(|api| !api.tokens.is_empty()) else {
            return Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_not_configured",
                "no API token is configured (COSTSIM_API_TOKENS or COSTSIM_API_TOKENS_FILE)",
            ));
        };
        let unauthorized = |message| Failure::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let header =
            parts.headers.get(header::AUTHORIZATION).ok_or_else(|| unauthorized("a bearer token is required"))?;
        let presented = header
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let (name, role) = api.tokens.authenticate(presented).ok_or_else(|| unauthorized("unknown token"))?;
        Ok(Caller { name: name.to_owned(), role, api: api.clone() })
    }
}

fn status_of(api: &ApiConfig, row: &BreakerRow) -> Value {
    let engine = &api.engine;
    json!({
        "breaker": row.name,
        "state": row.record.state,
        "version": row.version,
        "reason": row.disabled_reason,
        "actor": row.disabled_by,
        "disabled_until": row.record.disabled_until,
        "latched": row.record.state == crate::event::BreakerState::Open && row.record.disabled_until.is_none(),
        "incident_id": row.incident_id,
        "thresholds": {
            "drift_threshold": engine.drift_threshold,
            "drift_warning_threshold": engine.drift_warning_threshold,
            "min_samples": engine.min_samples,
            "failure_threshold": engine.failure_threshold,
            "schema_error_threshold": engine.schema_error_threshold,
        },
        "model_version": api.model_version,
        "adapter_version": api.adapter_version,
    })
}

async fn status(caller: Caller) -> Result<Json<Value>, Failure> {
    caller.require(Role::Read)?;
    let api = &caller.api;
    let mut tx = api.pool.begin().await.map_err(Failure::internal)?;
    let row = breaker::get(&mut tx, &api.breaker).await.map_err(Failure::internal)?.ok_or_else(|| {
        Failure::new(StatusCode::NOT_FOUND, "no_breaker", format!("no breaker named `{}`", api.breaker))
    })?;
    let mut body = status_of(api, &row);
    // The window the latest decision judged: p95 and counts as the breaker saw them.
    body["window"] = match row.last_evaluated_at {
        Some(end) => {
            let start = end - api.engine.window();
            let buckets =
                crate::store::buckets::load(&mut tx, &api.breaker, start, end).await.map_err(Failure::internal)?;
            json!(crate::window::WindowSummary::of_buckets(start, end, buckets.iter().map(|(at, b)| (*at, b))))
        }
        None => Value::Null,
    };
    let canary = crate::store::canary::signal_of(&mut tx, &api.breaker).await.map_err(Failure::internal)?;
    tx.commit().await.map_err(Failure::internal)?;
    body["canary"] = match canary {
        Some((failing, run_id, checked_at)) => {
            json!({ "failing": failing, "run_id": run_id, "checked_at": checked_at })
        }
        None => Value::Null,
    };
    Ok(Json(body))
}

/// The query of `GET /costsim/v2/incidents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentsQuery {
    #[serde(default)]
    include_resolved: bool,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    10
}

async fn incidents(
    caller: Caller,
    query: Result<Query<IncidentsQuery>, QueryRejection>,
) -> Result<Json<Value>, Failure> {
    caller.require(Role::Read)?;
    let Query(query) = query?;
    if !(1..=100).contains(&query.limit) {
        return Err(Failure::bad_request("limit must be between 1 and 100"));
    }
    let api = &caller.api;
    macro_rules! filter {
        () => {
            " FROM costsim_cb_incidents WHERE circuit_breaker_name = $1 AND ($2 OR NOT resolved)"
        };
    }
    let mut tx = api.pool.begin().await.map_err(Failure::internal)?;
    let total: i64 = sqlx::query_scalar(concat!("SELECT count(*)", filter!()))
        .persistent(false)
        .bind(&api.breaker)
        .bind(query.include_resolved)
        .fetch_one(&mut *tx)
        .await
        .map_err(Failure::internal)?;
    let rows = sqlx::query(concat!(
        "SELECT id, \"timestamp\", reason, severity, drift_score, sample_count, resolved, resolved_at, resolved_by, \
         resolution_notes",
        filter!(),
        " ORDER BY \"timestamp\" DESC, id DESC LIMIT $3"
    ))
    .persistent(false)
    .bind(&api.breaker)
    .bind(query.include_resolved)
    .bind(query.limit)
    .fetch_all(&mut *tx)
    .await
    .map_err(Failure::internal)?;
    tx.commit().await.map_err(Failure::internal)?;
    let incidents = rows
        .iter()
        .map(|row| -> Result<Value, sqlx::Error> {
            Ok(json!({
                "id": row.try_get::<String, _>("id")?,
                "timestamp": row.try_get::<DateTime<Utc>, _>("timestamp")?,
                "reason": row.try_get::<String, _>("reason")?,
                "severity": row.try_get::<String, _>("severity")?,
                "drift_score": row.try_get::<Option<f64>, _>("drift_score")?,
                "sample_count": row.try_get::<Option<i32>, _>("sample_count")?,
                "resolved": row.try_get::<bool, _>("resolved")?,
                "resolved_at": row.try_get::<Option<DateTime<Utc>>, _>("resolved_at")?,
                "resolved_by": row.try_get::<Option<String>, _>("resolved_by")?,
                "resolution_notes": row.try_get::<Option<String>, _>("resolution_notes")?,
            }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::internal)?;
    Ok(Json(json!({ "breaker": api.breaker, "total": total, "incidents": incidents })))
}

fn reason(raw: &str) -> Result<String, Failure> {
    match raw.trim() {
        "" => Err(Failure::bad_request("reason must not be blank")),
        r if r.chars().count() > MAX_REASON => {
            Err(Failure::bad_request(format!("reason must be at most {MAX_REASON} characters")))
        }
        r => Ok(r.to_owned()),
    }
}

/// The body of `POST /costsim/v2/disable`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableBody {
    reason: String,
    ttl_seconds: Option<u64>,
    #[serde(default)]
    latched: bool,
}

fn manual_failure(err: ManualError) -> Failure {
    match err {
        ManualError::NoBreaker { .. } => Failure::new(StatusCode::NOT_FOUND, "no_breaker", err.to_string()),
        ManualError::Database { .. } => Failure::internal(err),
    }
}

async fn disable(caller: Caller, body: Result<Json<DisableBody>, JsonRejection>) -> Result<Json<Value>, Failure> {
    caller.require(Role::Admin)?;
    let Json(body) = body?;
    let reason = reason(&body.reason)?;
    let ttl = match (body.latched, body.ttl_seconds) {
        (true, Some(_)) => return Err(Failure::bad_request("give ttl_seconds or latched, not both")),
        (true, None) => 0,
        (false, Some(0)) => return Err(Failure::bad_request("ttl_seconds must be at least 1; use latched")),
        (false, Some(ttl)) if ttl > MAX_TTL_SECONDS => {
            return Err(Failure::bad_request(format!("ttl_seconds must be at most {MAX_TTL_SECONDS}")));
        }
        (false, Some(ttl)) => ttl,
        (false, None) => caller.api.engine.disable_ttl_seconds,
    };
    let api = &caller.api;
    let done = manual::disable(&api.pool, &api.breaker, &reason, ttl, &caller.name, &api.settings)
        .await
        .map_err(manual_failure)?;
    if done.changed {
        tracing::info!(breaker = %api.breaker, actor = %caller.name, %reason, ttl, "Breaker disabled over HTTP.");
    }
    Ok(Json(json!({ "changed": done.changed, "status": status_of(api, &done.after) })))
}

/// The query of `POST /costsim/v2/reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetQuery {
    reason: String,
}

async fn reset(caller: Caller, query: Result<Query<ResetQuery>, QueryRejection>) -> Result<Json<Value>, Failure> {
    caller.require(Role::Admin)?;
    let Query(query) = query?;
    let reason = reason(&query.reason)?;
    let api = &caller.api;
    let done =
        manual::enable(&api.pool, &api.breaker, &reason, &caller.name, &api.settings).await.map_err(manual_failure)?;
    if done.changed {
        tracing::info!(breaker = %api.breaker, actor = %caller.name, %reason, "Breaker reset over HTTP.");
    }
    Ok(Json(json!({ "changed": done.changed, "status": status_of(api, &done.after) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_roles_ordered_and_colons_in_tokens() {
        let tokens = ApiTokens::parse("alice:admin:s3:cr3t, bob:read:xyz".split(',')).unwrap();
        assert_eq!(tokens.authenticate(b"s3:cr3t"), Some(("alice", Role::Admin)));
        assert_eq!(tokens.authenticate(b"xyz"), Some(("bob", Role::Read)));
        assert_eq!(tokens.authenticate(b"nope"), None);
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        assert!(ApiTokens::parse("".split(',')).unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry_never_the_token() {
        let err = ApiTokens::parse(["alice:root:topsecret"]).unwrap_err();
        assert!(err.to_string().contains("alice") && !err.to_string().contains("topsecret"), "{err}");
        assert_eq!(
            ApiTokens::parse(["alice:read: "]).unwrap_err(),
            TokenConfigError::EmptyToken { entry: 1, name: "alice".into() }
        );
        let err = ApiTokens::parse(["a:read:one", "a:admin:two"]).unwrap_err();
        assert_eq!(err, TokenConfigError::DuplicateName { entry: 2, name: "a".into() });
        assert!(!err.to_string().contains("two"));
        assert_eq!(ApiTokens::parse(["justasecret"]).unwrap_err(), TokenConfigError::Malformed(1));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let tokens = ApiTokens::parse(["alice:admin:topsecret"]).unwrap();
        let debug = format!("{tokens:?}");
        assert!(debug.contains("alice") && !debug.contains("topsecret"), "{debug}");
    }
}
