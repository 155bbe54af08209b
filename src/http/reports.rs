//! The report routes under `/costsim`: the divergence report and the canary (reports, one report, a run now).
//!
//! `GET /costsim/divergence` (read): `start_date`, `end_date` (RFC 3339, or `YYYY-MM-DD` meaning that whole UTC
//! day), `days` (1 to 90, default 7; the window's length when not both dates are given), `tenant_id`, `samples`
//! (0 to 100 detailed rows, default 100). `GET /costsim/canary/reports` (read): `limit` (1 to 100, default 10),
//! `status` (pass, fail, error, skipped), `passed`; `total` is the number of matching reports, not the page
//! length. `GET /costsim/canary/reports/{run_id}` (read). `POST /costsim/canary/run` (write): `sample_count`
//! (10 to 1000), `drift_threshold` (the KL threshold, 0 to 1), `window_hours` (1 to 2160); unset ones come from
//! the `COSTSIM_CANARY_*` settings; the run is made at once and its report returned.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{Caller, Failure, Role};
use crate::canary::CanaryStatus;
use crate::reports;
use crate::store::canary::{self as stored, ReportFilter};
use crate::store::divergence::{self, DivergenceQuery};

/// Longest divergence window.
const MAX_DAYS: i64 = 90;
/// Longest tenant id accepted.
const MAX_TENANT: usize = 200;
/// Longest run id accepted in a path.
const MAX_RUN_ID: usize = 64;

/// The report routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/costsim/divergence", get(divergence_report))
        .route("/costsim/canary/reports", get(canary_reports))
        .route("/costsim/canary/reports/{run_id}", get(canary_report))
        .route("/costsim/canary/run", post(canary_run))
}

/// The query of `GET /costsim/divergence`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DivergenceParams {
    start_date: Option<String>,
    end_date: Option<String>,
    days: Option<i64>,
    tenant_id: Option<String>,
    samples: Option<i64>,
}

/// A window bound: RFC 3339, or a date meaning its UTC midnight (`end` of a date: the next midnight, so the day is
/// included).
fn bound(name: &str, raw: &str, end: bool) -> Result<DateTime<Utc>, Failure> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| Failure::bad_request(format!("{name} must be RFC 3339 or YYYY-MM-DD, not `{raw}`")))?;
    let date = if end { date.succ_opt().unwrap_or(date) } else { date };
    Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

/// The window of a divergence report at `now`.
fn window(p: &DivergenceParams, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), Failure> {
    if p.days.is_some_and(|d| !(1..=MAX_DAYS).contains(&d)) {
        return Err(Failure::bad_request(format!("days must be between 1 and {MAX_DAYS}")));
    }
    let span = TimeDelta::days(p.days.unwrap_or(7));
    let start = p.start_date.as_deref().map(|s| bound("start_date", s, false)).transpose()?;
    let end = p.end_date.as_deref().map(|s| bound("end_date", s, true)).transpose()?;
    let (start, end) = match (start, end) {
        (Some(_), Some(_)) if p.days.is_some() => {
            return Err(Failure::bad_request("give start_date and end_date, or one of them with days, not all three"));
        }
        (Some(start), Some(end)) => (start, end),
        (Some(start), None) => (start, start + span),
        (None, Some(end)) => (end - span, end),
        (None, None) => (now - span, now),
    };
    if start >= end {
        return Err(Failure::bad_request("start_date must be before end_date"));
    }
    if end - start > TimeDelta::days(MAX_DAYS) {
        return Err(Failure::bad_request(format!("the window may span at most {MAX_DAYS} days")));
    }
    Ok((start, end))
}

async fn divergence_report(
    caller: Caller,
    query: Result<Query<DivergenceParams>, QueryRejection>,
) -> Result<Json<Value>, Failure> {
    caller.require(Role::Read)?;
    let Query(params) = query?;
    let (start, end) = window(&params, Utc::now())?;
    let tenant_id = match params.tenant_id.as_deref().map(str::trim) {
        Some("") => return Err(Failure::bad_request("tenant_id must not be blank")),
        Some(t) if t.chars().count() > MAX_TENANT => {
            return Err(Failure::bad_request(format!("tenant_id must be at most {MAX_TENANT} characters")));
        }
        t => t.map(str::to_owned),
    };
    let detailed = params.samples.unwrap_or(100);
    if !(0..=100).contains(&detailed) {
        return Err(Failure::bad_request("samples must be between 0 and 100"));
    }
    let api = caller.api();
    let query = DivergenceQuery { start, end, tenant_id, drift_threshold: api.engine.drift_threshold, detailed };
    let mut tx = api.pool.begin().await.map_err(Failure::internal)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(Failure::internal)?;
    let report = divergence::report(&mut tx, &query).await.map_err(Failure::internal)?;
    tx.commit().await.map_err(Failure::internal)?;
    Ok(Json(serde_json::to_value(report).map_err(Failure::internal)?))
}

/// The query of `GET /costsim/canary/reports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsParams {
    limit: Option<i64>,
    status: Option<String>,
    passed: Option<bool>,
}

async fn canary_reports(
    caller: Caller,
    query: Result<Query<ReportsParams>, QueryRejection>,
) -> Result<Json<Value>, Failure> {
    caller.require(Role::Read)?;
    let Query(params) = query?;
    let limit = params.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(Failure::bad_request("limit must be between 1 and 100"));
    }
    if let Some(status) = params.status.as_deref().filter(|s| CanaryStatus::parse(s).is_none()) {
        return Err(Failure::bad_request(format!("status must be pass, fail, error or skipped, not `{status}`")));
    }
    let filter = ReportFilter { status: params.status, passed: params.passed };
    let mut tx = caller.api().pool.begin().await.map_err(Failure::internal)?;
    let (reports, total) = stored::list(&mut tx, &filter, limit).await.map_err(Failure::internal)?;
    tx.commit().await.map_err(Failure::internal)?;
    Ok(Json(json!({ "total": total, "reports": reports })))
}

async fn canary_report(caller: Caller, run_id: Result<Path<String>, PathRejection>) -> Result<Json<Value>, Failure> {
    caller.require(Role::Read)?;
    let Path(run_id) = run_id.map_err(|e| Failure::bad_request(e.body_text()))?;
    if run_id.len() > MAX_RUN_ID {
        return Err(Failure::bad_request(format!("run_id must be at most {MAX_RUN_ID} characters")));
    }
    let mut tx = caller.api().pool.begin().await.map_err(Failure::internal)?;
    let report = stored::get(&mut tx, &run_id).await.map_err(Failure::internal)?;
    tx.commit().await.map_err(Failure::internal)?;
    let report = report.ok_or_else(|| {
        Failure::new(StatusCode::NOT_FOUND, "no_report", format!("no canary report with run_id `{run_id}`"))
    })?;
    Ok(Json(serde_json::to_value(report).map_err(Failure::internal)?))
}

/// The query of `POST /costsim/canary/run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunParams {
    sample_count: Option<u32>,
    drift_threshold: Option<f64>,
    window_hours: Option<u32>,
}

async fn canary_run(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RunParams>, QueryRejection>,
) -> Result<(StatusCode, Json<Value>), Failure> {
    caller.require(Role::Write)?;
    let Query(params) = query?;
    if params.sample_count.is_some_and(|n| !(10..=1000).contains(&n)) {
        return Err(Failure::bad_request("sample_count must be between 10 and 1000"));
    }
    if params.drift_threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err(Failure::bad_request("drift_threshold must be between 0 and 1"));
    }
    if params.window_hours.is_some_and(|h| !(1..=2160).contains(&h)) {
        return Err(Failure::bad_request("window_hours must be between 1 and 2160"));
    }
    let api = caller.api();
    let by = Some(caller.name().to_owned());
    let mut request = api.canary.request(&api.breaker, "api", by, &api.settings.instance, &api.settings.runbook_url);
    request.sample_count = params.sample_count.unwrap_or(request.sample_count);
    request.window_hours = params.window_hours.unwrap_or(request.window_hours);
    request.limits.kl_threshold = params.drift_threshold.unwrap_or(request.limits.kl_threshold);
    let (report, signal) =
        reports::run_canary(&api.pool, &request, Some(&state.metrics), Utc::now()).await.map_err(Failure::internal)?;
    let mut body = serde_json::to_value(report).map_err(Failure::internal)?;
    body["signal"] = json!(signal);
    Ok((StatusCode::CREATED, Json(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(start: Option<&str>, end: Option<&str>, days: Option<i64>) -> DivergenceParams {
        DivergenceParams {
            start_date: start.map(Into::into),
            end_date: end.map(Into::into),
            days,
            tenant_id: None,
            samples: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_default_window_is_the_last_seven_days() {
        let now = at("2026-11-27T12:00:00Z");
        assert_eq!(window(&params(None, None, None), now).unwrap(), (at("2026-11-20T12:00:00Z"), now));
    }

    #[test]
    fn dates_cover_whole_days_and_days_extends_one_bound() {
        let now = at("2026-11-27T12:00:00Z");
        let w = window(&params(Some("2026-11-01"), Some("2026-11-02"), None), now).unwrap();
        assert_eq!(w, (at("2026-11-01T00:00:00Z"), at("2026-11-03T00:00:00Z")));
        let w = window(&params(Some("2026-11-01T06:00:00Z"), None, Some(1)), now).unwrap();
        assert_eq!(w, (at("2026-11-01T06:00:00Z"), at("2026-11-02T06:00:00Z")));
        let w = window(&params(None, Some("2026-11-10"), Some(2)), now).unwrap();
        assert_eq!(w, (at("2026-11-09T00:00:00Z"), at("2026-11-11T00:00:00Z")));
    }

    #[test]
    fn bad_windows_are_refused_with_the_reason() {
        let now = at("2026-11-27T12:00:00Z");
        let reason = |p| window(&p, now).unwrap_err().message().to_owned();
        assert!(reason(params(None, None, Some(91))).contains("days"));
        assert!(reason(params(Some("2026-11-05"), Some("2026-11-01"), None)).contains("before"));
        assert!(reason(params(Some("2026-01-01"), Some("2026-11-01"), None)).contains("90 days"));
        assert!(reason(params(Some("yesterday"), None, None)).contains("start_date"));
        assert!(reason(params(Some("2026-11-01"), Some("2026-11-02"), Some(1))).contains("not all three"));
    }
}
