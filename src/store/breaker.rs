//! The breaker rows: read, lock, and apply a decision with everything it implies (incident, alerts, state event)
//! in the caller's transaction.

mod lifecycle;
pub mod manual;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, Row, postgres::PgRow};

use super::{alerts, outbox};
use crate::alert::{self, AlertIdentity, AlertText};
use crate::breaker::{Breaker, Decision, Evidence, Outcome};
use crate::event::{BreakerState, BreakerStateChanged, Severity};

/// The actor of automatic decisions, as the older system named it.
pub const AUTOMATIC_ACTOR: &str = "circuit_breaker";
/// Who resolves an incident when probation passes.
pub const AUTO_RECOVER_ACTOR: &str = "system-auto-recover";

/// One breaker as stored: the state machine's record plus what the store keeps around it.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerRow {
    /// The breaker's name.
    pub name: String,
    /// What the state machine needs.
    pub record: Breaker,
    /// +1 per state change.
    pub version: i64,
    /// The open incident, while there is one.
    pub incident_id: Option<String>,
    /// Who opened it.
    pub disabled_by: Option<String>,
    /// Why it is open.
    pub disabled_reason: Option<String>,
    /// Time of the last failing evaluation.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// End of the last bucket evaluated (event time).
    pub last_evaluated_at: Option<DateTime<Utc>>,
    /// Whether the drift warning is firing.
    pub warning_active: bool,
    /// Last change of the row (wall clock of the database).
    pub updated_at: DateTime<Utc>,
}

/// Settings that shape what a decision writes besides the state.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// The `instance` label of alerts.
    pub instance: String,
    /// Where alerts point operators.
    pub runbook_url: String,
    /// The drift threshold in force, for state events.
    pub drift_threshold: f64,
}

/// The columns `from_row` reads, as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "name, state, version, disabled_by, disabled_reason, disabled_until, open_ttl_seconds, incident_id, \
         severity, opened_at, consecutive_failures, last_failure_at, half_open_since, last_evaluated_at, \
         warning_active, updated_at"
    };
}

fn from_row(row: &PgRow) -> Result<BreakerRow, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let severity: Option<String> = row.try_get("severity")?;
    let decode = |column: &str, value: &str| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unexpected value `{value}`").into(),
    };
    Ok(BreakerRow {
        name: row.try_get("name")?,
        record: Breaker {
            state: BreakerState::from_symbol(&state).ok_or_else(|| decode("state", &state))?,
            consecutive_failures: row.try_get::<i32, _>("consecutive_failures")? as u32,
            opened_at: row.try_get("opened_at")?,
            disabled_until: row.try_get("disabled_until")?,
            ttl_seconds: row.try_get::<i64, _>("open_ttl_seconds")? as u64,
            half_open_since: row.try_get("half_open_since")?,
            severity: match severity {
                Some(s) => Some(Severity::from_symbol(&s).ok_or_else(|| decode("severity", &s))?),
                None => None,
            },
        },
        version: row.try_get("version")?,
        incident_id: row.try_get("incident_id")?,
        disabled_by: row.try_get("disabled_by")?,
        disabled_reason: row.try_get("disabled_reason")?,
        last_failure_at: row.try_get("last_failure_at")?,
        last_evaluated_at: row.try_get("last_evaluated_at")?,
        warning_active: row.try_get("warning_active")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Every breaker, by name, without locking.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<BreakerRow>, sqlx::Error> {
    let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM costsim_cb_state ORDER BY name"))
        .persistent(false)
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// One breaker, without locking.
pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Option<BreakerRow>, sqlx::Error> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM costsim_cb_state WHERE name = $1"))
        .persistent(false)
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// One breaker, locked until the transaction ends: every decision about it is taken under this lock.
///
/// `FOR NO KEY UPDATE`, not `FOR UPDATE`: batches take `FOR KEY SHARE` on the row first (the foreign key of their
/// bucket rows), and two batches upgrading that to `FOR UPDATE` at once deadlock; `NO KEY UPDATE` still excludes
/// every other decision and update of the row, and the name (its key) never changes.
pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<Option<BreakerRow>, sqlx::Error> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM costsim_cb_state WHERE name = $1 FOR NO KEY UPDATE"))
        .persistent(false)
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Creates a breaker row if it does not exist yet (the migration seeds `costsim_v2`).
pub async fn ensure(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO costsim_cb_state (name) VALUES ($1) ON CONFLICT ON CONSTRAINT uq_costsim_cb_state_name DO NOTHING",
    )
    .persistent(false)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a decision taken on a locked row: the new state, and for a transition its incident, alert-queue and
/// state-event rows. Returns the state event when the state changed (or an open breaker's disable was changed).
///
/// The alert lifecycle is written here too, so it commits with the decision: a trip fires the incident's
/// `CostSimV2Disabled` alert; a reopen or a new disable of an open breaker re-fires it with the new text (same
/// labels); a close or an enable resolves it (same labels, `endsAt`). The first warning-band evaluation fires
/// `CostSimV2DriftWarning`, later ones add nothing (`warning_active`), and an evaluation at or below the warning
/// level, or leaving the closed state, resolves it.
///
/// `actor` is who decided ([`AUTOMATIC_ACTOR`] for the state machine); `now` is the decision time.
pub async fn apply(
    conn: &mut PgConnection,
    row: &BreakerRow,
    decision: &Decision,
    actor: &str,
    settings: &ApplySettings,
    now: DateTime<Utc>,
    evaluated_at: Option<DateTime<Utc>>,
) -> Result<Option<BreakerStateChanged>, sqlx::Error> {
    let next = &decision.next;
    let mut incident_id = row.incident_id.clone();
    let mut disabled_by = row.disabled_by.clone();
    let mut disabled_reason = row.disabled_reason.clone();
    let (mut p95, mut samples) = (None, 0i64);
    let changes_state = match &decision.outcome {
        Outcome::Trip { severity, reason, evidence } => {
            let id = open_incident(conn, &row.name, *severity, reason, Some(evidence), now).await?;
            let identity = identity(&row.name, *severity, &id, settings);
            let text = AlertText {
                reason,
                evidence: Some(evidence),
                disabled_until: next.disabled_until,
                runbook_url: &settings.runbook_url,
            };
            alerts::enqueue(conn, &alert::firing(&identity, &text, now), "disable", &row.name, Some(&id)).await?;
            (p95, samples) = (evidence.p95_drift, evidence.sample_count as i64);
            incident_id = Some(id);
            (disabled_by, disabled_reason) = (Some(actor.to_owned()), Some(reason.clone()));
            true
        }
        Outcome::Disable { reason } => {
            let severity = next.severity.unwrap_or(Severity::P2);
            match &incident_id {
                None => {
                    let id = open_incident(conn, &row.name, severity, reason, None, now).await?;
                    let identity = identity(&row.name, severity, &id, settings);
                    let text = AlertText {
                        reason,
                        evidence: None,
                        disabled_until: next.disabled_until,
                        runbook_url: &settings.runbook_url,
                    };
                    let payload = alert::firing(&identity, &text, now);
                    alerts::enqueue(conn, &payload, "disable", &row.name, Some(&id)).await?;
                    incident_id = Some(id);
                }
                Some(id) => {
                    let text = AlertText {
                        reason,
                        evidence: None,
                        disabled_until: next.disabled_until,
                        runbook_url: &settings.runbook_url,
                    };
                    lifecycle::refire(conn, &identity(&row.name, severity, id, settings), &text, now).await?;
                }
            }
            (disabled_by, disabled_reason) = (Some(actor.to_owned()), Some(reason.clone()));
            true
        }
        Outcome::Reopen { severity, reason, evidence } => {
            if let Some(id) = &incident_id {
                let text = AlertText {
                    reason,
                    evidence: Some(evidence),
                    disabled_until: next.disabled_until,
                    runbook_url: &settings.runbook_url,
                };
                lifecycle::refire(conn, &identity(&row.name, *severity, id, settings), &text, now).await?;
            }
            (p95, samples) = (evidence.p95_drift, evidence.sample_count as i64);
            disabled_reason = Some(reason.clone());
            true
        }
        Outcome::HalfOpen { .. } => true,
        Outcome::Close { reason, evidence } => {
            (p95, samples) = (evidence.p95_drift, evidence.sample_count as i64);
            if let Some(id) = &incident_id {
                resolve_incident(conn, row, id, AUTO_RECOVER_ACTOR, reason, settings, now).await?;
            }
            (incident_id, disabled_by, disabled_reason) = (None, None, None);
            true
        }
        Outcome::Enable { reason } if row.record.state != BreakerState::Closed => {
            if let Some(id) = &incident_id {
                resolve_incident(conn, row, id, actor, reason, settings, now).await?;
            }
            (incident_id, disabled_by, disabled_reason) = (None, None, None);
            true
        }
        Outcome::Enable { .. } | Outcome::None | Outcome::InsufficientData { .. } | Outcome::Warn { .. } => false,
    };
    let warning_active = lifecycle::drift_warning(conn, row, decision, settings, now).await?;
    let failing = next.consecutive_failures > row.record.consecutive_failures;
    let version = row.version + i64::from(changes_state);
    sqlx::query(
        "UPDATE costsim_cb_state SET state = $2, version = $3, disabled_by = $4, disabled_reason = $5, \
         disabled_until = $6, open_ttl_seconds = $7, incident_id = $8, severity = $9, opened_at = $10, \
         consecutive_failures = $11, last_failure_at = CASE WHEN $12 THEN $13 ELSE last_failure_at END, \
         half_open_since = $14, last_evaluated_at = COALESCE($15, last_evaluated_at), warning_active = $16, \
         updated_at = now() WHERE name = $1",
    )
    .persistent(false)
    .bind(&row.name)
    .bind(next.state.as_str())
    .bind(version)
    .bind(&disabled_by)
    .bind(&disabled_reason)
    .bind(next.disabled_until)
    .bind(next.ttl_seconds as i64)
    .bind(&incident_id)
    .bind(next.severity.map(Severity::as_str))
    .bind(next.opened_at)
    .bind(next.consecutive_failures as i32)
    .bind(failing)
    .bind(now)
    .bind(next.half_open_since)
    .bind(evaluated_at)
    .bind(warning_active)
    .execute(&mut *conn)
    .await?;
    if !changes_state {
        return Ok(None);
    }
    let change = BreakerStateChanged {
        event_id: uuid::Uuid::new_v4().to_string(),
        breaker: row.name.clone(),
        version,
        from_state: row.record.state,
        to_state: next.state,
        reason: decision.outcome.reason().unwrap_or_default().to_owned(),
        severity: next.severity.filter(|_| next.state != BreakerState::Closed),
        incident_id: incident_id.clone().or_else(|| row.incident_id.clone()),
        p95_drift: p95,
        sample_count: samples,
        drift_threshold: settings.drift_threshold,
        disabled_until: next.disabled_until.filter(|_| next.state == BreakerState::Open),
        actor: actor.to_owned(),
        occurred_at: now,
    };
    outbox::enqueue(conn, &change).await?;
    Ok(Some(change))
}

fn identity(breaker: &str, severity: Severity, incident_id: &str, settings: &ApplySettings) -> AlertIdentity {
    AlertIdentity {
        breaker: breaker.to_owned(),
        severity,
        incident_id: incident_id.to_owned(),
        instance: settings.instance.clone(),
    }
}

async fn open_incident(
    conn: &mut PgConnection,
    breaker: &str,
    severity: Severity,
    reason: &str,
    evidence: Option<&Evidence>,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    let (drift, samples, details) = match evidence {
        Some(e) => (e.p95_drift.or((severity == Severity::P3).then_some(1.0)), e.sample_count as i32, None),
        None => (Some(0.0), 0, Some(json!({ "manual_disable": true }).to_string())),
    };
    sqlx::query(
        "INSERT INTO costsim_cb_incidents (id, circuit_breaker_name, \"timestamp\", reason, severity, drift_score, \
         sample_count, evidence, details_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .persistent(false)
    .bind(&id)
    .bind(breaker)
    .bind(now)
    .bind(reason)
    .bind(severity.as_str())
    .bind(drift)
    .bind(samples)
    .bind(evidence.map(|e| json!(e)))
    .bind(details)
    .execute(conn)
    .await?;
    Ok(id)
}

async fn resolve_incident(
    conn: &mut PgConnection,
    row: &BreakerRow,
    incident_id: &str,
    resolved_by: &str,
    notes: &str,
    settings: &ApplySettings,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE costsim_cb_incidents SET resolved = true, resolved_at = $2, resolved_by = $3, resolution_notes = $4 \
         WHERE id = $1 AND NOT resolved",
    )
    .persistent(false)
    .bind(incident_id)
    .bind(now)
    .bind(resolved_by)
    .bind(notes)
    .execute(&mut *conn)
    .await?;
    // The same labels as the firing alert, with an end: Alertmanager resolves that very alert.
    let firing = match alerts::firing_payload(conn, incident_id).await? {
        Some(firing) => firing,
        // Its rows were purged: rebuild the labels the way the trip wrote them.
        None => {
            let severity = row.record.severity.unwrap_or(Severity::P1);
            let identity = identity(&row.name, severity, incident_id, settings);
            let text =
                AlertText { reason: notes, evidence: None, disabled_until: None, runbook_url: &settings.runbook_url };
            alert::firing(&identity, &text, row.record.opened_at.unwrap_or(now))
        }
    };
    alerts::enqueue(conn, &alert::resolved(&firing, now), "enable", &row.name, Some(incident_id)).await?;
    Ok(())
}
