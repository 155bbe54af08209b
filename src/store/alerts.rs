//! The alert outbox `costsim_alert_queue`: rows written in the transaction of the decision that caused them, then
//! claimed row by row with a lease by the drainer, and marked sent, retried with backoff or dead-lettered.
//!
//! A row's identity is the label set of its alert (`payload->0->'labels'`), which is what Alertmanager identifies
//! an alert by. Rows of one identity are delivered in id order: a row is not claimable while an older row of the
//! same identity is still pending, so a resolved alert never overtakes the firing one it ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};

/// The alert types of incident alerts that fire (the trip's alert, then its re-sends and updates).
pub const FIRING_TYPES: [&str; 2] = ["disable", "resend"];

/// Queues one Alertmanager payload for delivery.
pub async fn enqueue(
    conn: &mut PgConnection,
    payload: &Value,
    alert_type: &str,
    breaker: &str,
    incident_id: Option<&str>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO costsim_alert_queue (payload, alert_type, circuit_breaker_name, incident_id) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .persistent(false)
    .bind(payload)
    .bind(alert_type)
    .bind(breaker)
    .bind(incident_id)
    .fetch_one(conn)
    .await
}

/// The newest firing payload queued for an incident (its trip alert or a later re-send): every payload of the
/// incident repeats its labels, and a resolution or update takes them from here.
pub async fn firing_payload(conn: &mut PgConnection, incident_id: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT payload FROM costsim_alert_queue WHERE incident_id = $1 AND alert_type = ANY($2) \
         ORDER BY id DESC LIMIT 1",
    )
    .persistent(false)
    .bind(incident_id)
    .bind(&FIRING_TYPES[..])
    .fetch_optional(conn)
    .await
}

/// The newest firing drift-warning payload queued for a breaker.
pub async fn warning_payload(conn: &mut PgConnection, breaker: &str) -> Result<Option<Value>, sqlx::Error> {
    newest_payload(conn, breaker, "warning").await
}

/// The newest payload of this alert type queued for a breaker (alerts without an incident repeat its labels).
pub async fn newest_payload(
    conn: &mut PgConnection,
    breaker: &str,
    alert_type: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT payload FROM costsim_alert_queue WHERE circuit_breaker_name = $1 AND alert_type = $2 \
         ORDER BY id DESC LIMIT 1",
    )
    .persistent(false)
    .bind(breaker)
    .bind(alert_type)
    .fetch_optional(conn)
    .await
}

/// A row claimed for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row's id.
    pub id: i64,
    /// The JSON array to POST.
    pub payload: Value,
    /// `disable`, `resend`, `enable`, `warning`, `warning_resolved`, … (`None` for rows written by hand).
    pub alert_type: Option<String>,
    /// The incident of an incident alert.
    pub incident_id: Option<String>,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Attempts after which the row is dead-lettered.
    pub max_attempts: i32,
    /// Until when this claim holds the row; also the fencing token of [`mark_failed`].
    pub lease_until: DateTime<Utc>,
}

/// Claims up to `limit` due rows for `lease`: pending, due, not leased by another drainer, and not behind an older
/// pending row of the same alert. Commit right after, before any delivery, so no row lock is held across HTTP.
pub async fn claim(conn: &mut PgConnection, limit: i64, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH due AS ( \
             SELECT q.id FROM costsim_alert_queue q \
             WHERE q.status = 'pending' AND q.next_attempt_at <= now() \
               AND (q.lease_until IS NULL OR q.lease_until < now()) \
               AND NOT EXISTS ( \
                   SELECT 1 FROM costsim_alert_queue o \
                   WHERE o.status = 'pending' AND o.id < q.id AND o.payload->0->'labels' = q.payload->0->'labels') \
             ORDER BY q.next_attempt_at, q.id \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE costsim_alert_queue q SET lease_until = now() + make_interval(secs => $2) \
         FROM due WHERE q.id = due.id \
         RETURNING q.id, q.payload, q.alert_type, q.incident_id, q.attempts, q.max_attempts, q.lease_until",
    )
    .persistent(false)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get("id")?,
                payload: row.try_get("payload")?,
                alert_type: row.try_get("alert_type")?,
                incident_id: row.try_get("incident_id")?,
                attempts: row.try_get("attempts")?,
                max_attempts: row.try_get("max_attempts")?,
                lease_until: row.try_get("lease_until")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

/// Marks a delivered row `sent` (and, for an incident's trip alert, the incident `alert_sent`); returns the time
/// from the row's creation to now in seconds, or `None` when the row was no longer pending.
pub async fn mark_sent(conn: &mut PgConnection, id: i64) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH sent AS ( \
             UPDATE costsim_alert_queue SET status = 'sent', sent_at = now(), last_attempt_at = now(), \
                 lease_until = NULL \
             WHERE id = $1 AND status = 'pending' \
             RETURNING incident_id, alert_type, EXTRACT(EPOCH FROM sent_at - created_at)::float8 AS latency), \
         incident AS ( \
             UPDATE costsim_cb_incidents i SET alert_sent = true, alert_sent_at = COALESCE(i.alert_sent_at, now()) \
             FROM sent WHERE i.id = sent.incident_id AND sent.alert_type = 'disable' \
             RETURNING i.id) \
         SELECT latency FROM sent",
    )
    .persistent(false)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What became of a failed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Pending again, due after the backoff.
    Retrying,
    /// Dead-lettered: `max_attempts` reached.
    Dead,
    /// The claim had expired and the row was claimed again (or marked) by someone else; nothing was written.
    Lost,
}

/// Records a failed attempt on a row this drainer still holds (`lease_until` as claimed): one more attempt, the
/// error, and either the next due time `retry_in` from now or `failed` once `max_attempts` is reached.
pub async fn mark_failed(
    conn: &mut PgConnection,
    row: &Claimed,
    error: &str,
    retry_in: Duration,
) -> Result<Failed, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE costsim_alert_queue SET attempts = attempts + 1, last_error = $3, last_attempt_at = now(), \
             lease_until = NULL, \
             status = CASE WHEN attempts + 1 >= max_attempts THEN 'failed' ELSE 'pending' END, \
             next_attempt_at = CASE WHEN attempts + 1 >= max_attempts THEN next_attempt_at \
                                    ELSE now() + make_interval(secs => $4) END \
         WHERE id = $1 AND status = 'pending' AND lease_until = $2 \
         RETURNING status",
    )
    .persistent(false)
    .bind(row.id)
    .bind(row.lease_until)
    .bind(error)
    .bind(retry_in.as_secs_f64())
    .fetch_optional(conn)
    .await?;
    Ok(match status.as_deref() {
        Some("failed") => Failed::Dead,
        Some(_) => Failed::Retrying,
        None => Failed::Lost,
    })
}

/// An alert still firing whose cause lasts: an open or half-open breaker's incident, or a closed breaker's drift
/// warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firing {
    /// The open incident of a breaker that is open or half-open.
    Incident {
        /// The breaker.
        breaker: String,
        /// Its open incident.
        incident_id: String,
    },
    /// The drift warning of a closed breaker.
    Warning {
        /// The breaker.
        breaker: String,
    },
}

/// Every alert whose cause lasts, read without locks (the re-send locks each breaker before acting).
pub async fn firing(conn: &mut PgConnection) -> Result<Vec<Firing>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, incident_id, state, warning_active FROM costsim_cb_state \
         WHERE (state <> 'closed' AND incident_id IS NOT NULL) OR (state = 'closed' AND warning_active) \
         ORDER BY name",
    )
    .persistent(false)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let breaker: String = row.try_get("name")?;
            Ok(match row.try_get::<Option<String>, _>("incident_id")? {
                Some(incident_id) if row.try_get::<String, _>("state")? != "closed" => {
                    Firing::Incident { breaker, incident_id }
                }
                _ => Firing::Warning { breaker },
            })
        })
        .collect()
}

/// Whether the alert is still firing, checked under the breaker row's lock until the transaction ends: a decision
/// that would resolve the alert waits for it, so a re-send queued in the same transaction can never land after that
/// resolution (and two re-senders by mistake take turns).
pub async fn still_firing(conn: &mut PgConnection, alert: &Firing) -> Result<bool, sqlx::Error> {
    let (breaker, incident) = match alert {
        Firing::Incident { breaker, incident_id } => (breaker, Some(incident_id)),
        Firing::Warning { breaker } => (breaker, None),
    };
    // NO KEY UPDATE, as `breaker::lock` takes it (see there why).
    let row = sqlx::query(
        "SELECT state, incident_id, warning_active FROM costsim_cb_state WHERE name = $1 FOR NO KEY UPDATE",
    )
    .persistent(false)
    .bind(breaker)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let state: String = row.try_get("state")?;
    Ok(match incident {
        Some(id) => state != "closed" && row.try_get::<Option<String>, _>("incident_id")?.as_ref() == Some(id),
        None => state == "closed" && row.try_get::<bool, _>("warning_active")?,
    })
}

/// The payload to re-send for a firing alert and whether a re-send is due at `now`: the newest firing payload,
/// when no firing row of the alert is pending and the newest was queued at least `interval` before `now`.
pub async fn due_resend(
    conn: &mut PgConnection,
    alert: &Firing,
    interval: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Value>, sqlx::Error> {
    let (by_incident, key, types): (bool, &str, Vec<&str>) = match alert {
        Firing::Incident { incident_id, .. } => (true, incident_id, FIRING_TYPES.to_vec()),
        Firing::Warning { breaker } => (false, breaker, vec!["warning"]),
    };
    let row = sqlx::query(
        "WITH mine AS ( \
             SELECT id, payload, status, created_at FROM costsim_alert_queue \
             WHERE alert_type = ANY($3) AND CASE WHEN $1 THEN incident_id = $2 ELSE circuit_breaker_name = $2 END) \
         SELECT (SELECT payload FROM mine ORDER BY id DESC LIMIT 1) AS payload, \
                EXISTS (SELECT 1 FROM mine WHERE status = 'pending') AS pending, \
                (SELECT max(created_at) FROM mine) AS newest",
    )
    .persistent(false)
    .bind(by_incident)
    .bind(key)
    .bind(&types)
    .fetch_one(conn)
    .await?;
    let payload: Option<Value> = row.try_get("payload")?;
    let pending: bool = row.try_get("pending")?;
    let newest: Option<DateTime<Utc>> = row.try_get("newest")?;
    let interval = chrono::TimeDelta::from_std(interval).unwrap_or(chrono::TimeDelta::MAX);
    let due = newest.is_some_and(|at| at.checked_add_signed(interval).is_some_and(|due| due <= now));
    Ok(payload.filter(|_| due && !pending))
}

/// Counts of the queue by status, for `alerts stats`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueStats {
    /// Rows waiting for delivery (due or in backoff).
    pub pending: i64,
    /// Rows delivered.
    pub sent: i64,
    /// Rows dead-lettered after `max_attempts`.
    pub failed: i64,
    /// When the oldest pending row was queued.
    pub oldest_pending_created_at: Option<DateTime<Utc>>,
    /// Its age in seconds by the database's clock.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// The queue's counts by status and the age of its oldest pending row.
pub async fn stats(conn: &mut PgConnection) -> Result<QueueStats, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, \
                count(*) FILTER (WHERE status = 'sent') AS sent, \
                count(*) FILTER (WHERE status = 'failed') AS failed, \
                min(created_at) FILTER (WHERE status = 'pending') AS oldest, \
                EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8 AS age \
         FROM costsim_alert_queue",
    )
    .persistent(false)
    .fetch_one(conn)
    .await?;
    Ok(QueueStats {
        pending: row.try_get("pending")?,
        sent: row.try_get("sent")?,
        failed: row.try_get("failed")?,
        oldest_pending_created_at: row.try_get("oldest")?,
        oldest_pending_age_seconds: row.try_get::<Option<f64>, _>("age")?.map(|age| age.max(0.0)),
    })
}

/// What `retry` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retried {
    /// Failed rows put back to pending.
    pub retried: u64,
    /// Failed rows left failed because a newer row of the same alert was delivered since (sending them now would
    /// bring back an alert state that is over).
    pub superseded: u64,
}

/// Puts dead-lettered rows back to pending with a fresh schedule: attempts reset to 0, `max_attempts` set to
/// `max_attempts`, due now. Rows superseded by a newer delivered row of the same alert stay failed.
pub async fn retry_failed(conn: &mut PgConnection, max_attempts: i32) -> Result<Retried, sqlx::Error> {
    let retried = sqlx::query(
        "UPDATE costsim_alert_queue q SET status = 'pending', attempts = 0, max_attempts = $1, \
             next_attempt_at = now(), lease_until = NULL \
         WHERE q.status = 'failed' AND NOT EXISTS ( \
             SELECT 1 FROM costsim_alert_queue n \
             WHERE n.id > q.id AND n.status = 'sent' AND n.payload->0->'labels' = q.payload->0->'labels')",
    )
    .persistent(false)
    .bind(max_attempts)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let superseded: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_alert_queue WHERE status = 'failed'")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Retried { retried, superseded: superseded as u64 })
}

/// Deletes sent and failed rows queued before `before`; pending rows are never deleted. Returns the count.
pub async fn purge(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM costsim_alert_queue WHERE status IN ('sent', 'failed') AND created_at < $1")
        .persistent(false)
        .bind(before)
        .execute(conn)
        .await?
        .rows_affected())
}
