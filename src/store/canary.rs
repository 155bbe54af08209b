//! Canary runs in PostgreSQL: drawing samples from provenance, `costsim_canary_reports`, and the canary's signal on
//! the breaker row (`canary_failing`, with its alert in the outbox).

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::alert::{self, CanaryText};
use crate::canary::{Evaluation, Sample};
use crate::store::alerts;

/// Alert type of a failed canary's firing alert (the older schema's declared name).
pub const FAILING_TYPE: &str = "canary_fail";
/// Alert type of the resolution a passing canary sends.
pub const RESOLVED_TYPE: &str = "canary_resolved";
/// How long a failing-canary alert stays active without news: past the next daily run, with slack for a late one.
pub const FAILING_ALERT_LIFETIME: TimeDelta = TimeDelta::hours(26);

/// Up to `limit` scored comparisons (V2 succeeded, both costs and a drift score) whose event time lies in
/// `[from, to)`, in an order fixed by `run_id`: a run's sample can be drawn again from its id, and two runs draw
/// different ones.
pub async fn samples(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
    run_id: &str,
) -> Result<Vec<Sample>, sqlx::Error> {
    let rows: Vec<(f64, f64, f64)> = sqlx::query_as(
        "SELECT v1_cost, v2_cost, drift_score FROM costsim_provenance \
         WHERE occurred_at >= $1 AND occurred_at < $2 AND v2_status = 'success' \
           AND v1_cost IS NOT NULL AND v2_cost IS NOT NULL AND drift_score IS NOT NULL \
         ORDER BY md5(event_id || $3) LIMIT $4",
    )
    .persistent(false)
    .bind(from)
    .bind(to)
    .bind(run_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(v1_cost, v2_cost, drift_score)| Sample { v1_cost, v2_cost, drift_score }).collect())
}

/// A canary run as stored: its evaluation and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Row id.
    pub id: i64,
    /// The run's id (12 hex characters).
    pub run_id: String,
    /// When the run was made.
    pub timestamp: DateTime<Utc>,
    /// The breaker the run reported to.
    pub breaker: Option<String>,
    /// `schedule`, `api` or `cli`.
    pub trigger: String,
    /// The API token's name or the CLI actor.
    pub requested_by: Option<String>,
    /// Start of the provenance window sampled (event time).
    pub window_start: Option<DateTime<Utc>>,
    /// End of that window.
    pub window_end: Option<DateTime<Utc>>,
    /// The limits and the sample size asked for.
    pub settings: Option<Value>,
    /// The measurements and verdict.
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// Artifact files (none: reports live in this table only).
    pub artifact_paths: Vec<String>,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
}

/// Who made a run and over what, as stored beside its evaluation.
#[derive(Debug, Clone)]
pub struct RunInfo<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// The breaker it reports to.
    pub breaker: &'a str,
    /// `schedule`, `api` or `cli`.
    pub trigger: &'a str,
    /// The API token's name or the CLI actor.
    pub requested_by: Option<&'a str>,
    /// The window sampled.
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// The limits and sample size.
    pub settings: Value,
    /// When the run was made.
    pub at: DateTime<Utc>,
}

/// The columns [`from_row`] reads.
macro_rules! columns {
    () => {
        "id, run_id, \"timestamp\", breaker, trigger, requested_by, window_start, window_end, settings, status, \
         total_samples, matching_samples, minor_drift_samples, major_drift_samples, median_cost_diff, p90_cost_diff, \
         kl_divergence, outlier_count, passed, failure_reasons_json, artifact_paths_json, created_at"
    };
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Report, sqlx::Error> {
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let status: String = row.try_get("status")?;
    let list = |column: &str| -> Result<Vec<String>, sqlx::Error> {
        match row.try_get::<Option<String>, _>(column)? {
            Some(json) => serde_json::from_str(&json).map_err(|e| decode(format!("{column}: {e}"))),
            None => Ok(Vec::new()),
        }
    };
    let count = |column: &str| -> Result<u64, sqlx::Error> { Ok(row.try_get::<i32, _>(column)?.max(0) as u64) };
    Ok(Report {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        timestamp: row.try_get("timestamp")?,
        breaker: row.try_get("breaker")?,
        trigger: row.try_get("trigger")?,
        requested_by: row.try_get("requested_by")?,
        window_start: row.try_get("window_start")?,
        window_end: row.try_get("window_end")?,
        settings: row.try_get("settings")?,
        evaluation: Evaluation {
            status: crate::canary::CanaryStatus::parse(&status).ok_or_else(|| decode(format!("status {status}")))?,
            total_samples: count("total_samples")?,
            matching_samples: count("matching_samples")?,
            minor_drift_samples: count("minor_drift_samples")?,
            major_drift_samples: count("major_drift_samples")?,
            median_cost_diff: row.try_get("median_cost_diff")?,
            p90_cost_diff: row.try_get("p90_cost_diff")?,
            kl_divergence: row.try_get("kl_divergence")?,
            outlier_count: row.try_get::<Option<i32>, _>("outlier_count")?.map(|n| n.max(0) as u64),
            passed: row.try_get("passed")?,
            failure_reasons: list("failure_reasons_json")?,
        },
        artifact_paths: list("artifact_paths_json")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Stores a run's report; lists are NULL when empty, as the older schema has them.
pub async fn insert(conn: &mut PgConnection, run: &RunInfo<'_>, e: &Evaluation) -> Result<Report, sqlx::Error> {
    let reasons = (!e.failure_reasons.is_empty())
        .then(|| serde_json::to_string(&e.failure_reasons).expect("a list of strings serializes"));
    let to_i32 = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let row = sqlx::query(concat!(
        "INSERT INTO costsim_canary_reports (run_id, \"timestamp\", breaker, trigger, requested_by, window_start, \
         window_end, settings, status, total_samples, matching_samples, minor_drift_samples, major_drift_samples, \
         median_cost_diff, p90_cost_diff, kl_divergence, outlier_count, passed, failure_reasons_json) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING ",
        columns!()
    ))
    .persistent(false)
    .bind(run.run_id)
    .bind(run.at)
    .bind(run.breaker)
    .bind(run.trigger)
    .bind(run.requested_by)
    .bind(run.window.0)
    .bind(run.window.1)
    .bind(&run.settings)
    .bind(e.status.as_str())
    .bind(to_i32(e.total_samples))
    .bind(to_i32(e.matching_samples))
    .bind(to_i32(e.minor_drift_samples))
    .bind(to_i32(e.major_drift_samples))
    .bind(e.median_cost_diff)
    .bind(e.p90_cost_diff)
    .bind(e.kl_divergence)
    .bind(e.outlier_count.map(to_i32))
    .bind(e.passed)
    .bind(reasons)
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

/// Which reports a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ReportFilter {
    /// Only this status (`pass`, `fail`, `error`, `skipped`).
    pub status: Option<String>,
    /// Only passed or only failed runs.
    pub passed: Option<bool>,
}

/// The newest `limit` reports matching the filter, and how many match in all.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ReportFilter,
    limit: i64,
) -> Result<(Vec<Report>, i64), sqlx::Error> {
    macro_rules! matching {
        () => {
            " FROM costsim_canary_reports WHERE ($1::text IS NULL OR status = $1) AND ($2::boolean IS NULL OR passed = $2)"
        };
    }
    let total: i64 = sqlx::query_scalar(concat!("SELECT count(*)", matching!()))
        .persistent(false)
        .bind(&filter.status)
        .bind(filter.passed)
        .fetch_one(&mut *conn)
        .await?;
    let rows =
        sqlx::query(concat!("SELECT ", columns!(), matching!(), " ORDER BY \"timestamp\" DESC, id DESC LIMIT $3"))
            .persistent(false)
            .bind(&filter.status)
            .bind(filter.passed)
            .bind(limit)
            .fetch_all(conn)
            .await?;
    Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
}

/// The report of one run.
pub async fn get(conn: &mut PgConnection, run_id: &str) -> Result<Option<Report>, sqlx::Error> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM costsim_canary_reports WHERE run_id = $1"))
        .persistent(false)
        .bind(run_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// When the newest scheduled run was made.
pub async fn last_scheduled(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(\"timestamp\") FROM costsim_canary_reports WHERE trigger = 'schedule'")
        .persistent(false)
        .fetch_one(conn)
        .await
}

/// What a run's verdict changed on its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The run failed: the canary alert was (re-)sent.
    Raised,
    /// The run passed after a failing one: the canary alert was resolved.
    Cleared,
    /// Nothing to change (a pass after a pass, or an `error` run, which judges nothing).
    Unchanged,
}

/// Records the run's verdict on its breaker under the breaker row's lock, and queues the canary alert: fired (or
/// re-sent with new text) on a failure, resolved when a pass follows a failure. The breaker's state, incident and
/// consecutive-failure count are never touched.
pub async fn record_signal(
    conn: &mut PgConnection,
    report: &Report,
    instance: &str,
    runbook_url: &str,
) -> Result<Signal, sqlx::Error> {
    let breaker = report.breaker.as_deref().unwrap_or_default();
    let failing: Option<bool> =
        sqlx::query_scalar("SELECT canary_failing FROM costsim_cb_state WHERE name = $1 FOR UPDATE")
            .persistent(false)
            .bind(breaker)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(was_failing) = failing else { return Ok(Signal::Unchanged) };
    let e = &report.evaluation;
    let signal = match (e.status, was_failing) {
        (crate::canary::CanaryStatus::Fail, _) => {
            let text = CanaryText {
                run_id: &report.run_id,
                reasons: &e.failure_reasons,
                kl_divergence: e.kl_divergence,
                total_samples: e.total_samples,
                runbook_url,
            };
            let payload = alert::canary_failing(
                breaker,
                instance,
                &text,
                report.timestamp,
                report.timestamp + FAILING_ALERT_LIFETIME,
            );
            alerts::enqueue(conn, &payload, FAILING_TYPE, breaker, None).await?;
            Signal::Raised
        }
        (crate::canary::CanaryStatus::Pass, true) => {
            if let Some(firing) = alerts::newest_payload(conn, breaker, FAILING_TYPE).await? {
                alerts::enqueue(conn, &alert::resolved(&firing, report.timestamp), RESOLVED_TYPE, breaker, None)
                    .await?;
            }
            Signal::Cleared
        }
        _ => Signal::Unchanged,
    };
    if e.status != crate::canary::CanaryStatus::Error {
        sqlx::query(
            "UPDATE costsim_cb_state SET canary_failing = $2, canary_run_id = $3, canary_checked_at = $4 \
             WHERE name = $1",
        )
        .persistent(false)
        .bind(breaker)
        .bind(e.status == crate::canary::CanaryStatus::Fail)
        .bind(&report.run_id)
        .bind(report.timestamp)
        .execute(conn)
        .await?;
    }
    Ok(signal)
}

/// The canary's newest verdict on a breaker: failing, by which run, when.
pub async fn signal_of(
    conn: &mut PgConnection,
    breaker: &str,
) -> Result<Option<(bool, Option<String>, Option<DateTime<Utc>>)>, sqlx::Error> {
    sqlx::query_as("SELECT canary_failing, canary_run_id, canary_checked_at FROM costsim_cb_state WHERE name = $1")
        .persistent(false)
        .bind(breaker)
        .fetch_optional(conn)
        .await
}

/// What the canary gauges of one breaker show.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryGauges {
    /// The breaker.
    pub breaker: String,
    /// Whether the newest judging run failed.
    pub failing: bool,
    /// The newest run's time, or the breaker's creation before the first run.
    pub last_run_or_created: DateTime<Utc>,
    /// KL divergence of the newest run that has one.
    pub kl_divergence: Option<f64>,
}

/// The canary gauges of every breaker.
pub async fn gauges(conn: &mut PgConnection) -> Result<Vec<CanaryGauges>, sqlx::Error> {
    let rows: Vec<(String, bool, DateTime<Utc>, Option<f64>)> = sqlx::query_as(
        "SELECT s.name, s.canary_failing, \
                COALESCE((SELECT max(r.\"timestamp\") FROM costsim_canary_reports r WHERE r.breaker = s.name), \
                         s.created_at), \
                (SELECT r.kl_divergence FROM costsim_canary_reports r \
                 WHERE r.breaker = s.name AND r.kl_divergence IS NOT NULL ORDER BY r.\"timestamp\" DESC, r.id DESC LIMIT 1) \
         FROM costsim_cb_state s ORDER BY s.name",
    ).persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(breaker, failing, last_run_or_created, kl_divergence)| CanaryGauges {
            breaker,
            failing,
            last_run_or_created,
            kl_divergence,
        })
        .collect())
}
