//! The alerts a decision implies besides the trip and the resolution: an incident's alert fired again with new text
//! (reopen, new manual disable), and the drift warning of the warning band, fired once and resolved when drift falls
//! back. Written in the decision's transaction, like everything [`super::apply`] writes.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::{ApplySettings, BreakerRow};
use crate::alert::{self, AlertIdentity, AlertText};
use crate::breaker::{Decision, Outcome};
use crate::event::{BreakerState, format_rfc3339_millis};
use crate::store::alerts;

/// Queues the incident's alert again with the text of a reopen or a new disable: the labels and start of the alert
/// already queued (so Alertmanager updates that alert), the new reason, evidence and `disabled_until`.
pub(super) async fn refire(
    conn: &mut PgConnection,
    identity: &AlertIdentity,
    text: &AlertText<'_>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let current = alert::firing(identity, text, now);
    let payload = match alerts::firing_payload(conn, &identity.incident_id).await? {
        Some(previous) => alert::reannotated(&previous, &current),
        None => current,
    };
    alerts::enqueue(conn, &payload, "resend", &identity.breaker, Some(&identity.incident_id)).await?;
    Ok(())
}

/// Fires or resolves the breaker's drift warning as `decision` implies; returns whether it is firing afterwards (the
/// row's new `warning_active`).
///
/// It fires on a warning-band evaluation of a closed breaker when it was not firing, and resolves on an evaluation
/// at or below the warning level or when the breaker leaves the closed state (the incident's alert takes over).
/// Too few samples, or an enable of a closed breaker, is no evidence that drift fell back: the warning stays.
pub(super) async fn drift_warning(
    conn: &mut PgConnection,
    row: &BreakerRow,
    decision: &Decision,
    settings: &ApplySettings,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let closed = decision.next.state == BreakerState::Closed;
    match &decision.outcome {
        Outcome::Warn { evidence } if closed => {
            if !row.warning_active {
                let payload = alert::warning(&row.name, &settings.instance, evidence, &settings.runbook_url, now);
                alerts::enqueue(conn, &payload, "warning", &row.name, None).await?;
            }
            Ok(true)
        }
        _ if !row.warning_active => Ok(false),
        Outcome::None if closed => resolve_warning(conn, row, settings, now).await.map(|()| false),
        _ if !closed => resolve_warning(conn, row, settings, now).await.map(|()| false),
        _ => Ok(true),
    }
}

/// Queues the warning's resolution: the labels it fired with, `endsAt = now`.
async fn resolve_warning(
    conn: &mut PgConnection,
    row: &BreakerRow,
    settings: &ApplySettings,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let firing = match alerts::warning_payload(conn, &row.name).await? {
        Some(firing) => firing,
        // Its rows were purged: the labels are the breaker's and this deployment's.
        None => json!([{
            "labels": alert::warning_labels(&row.name, &settings.instance),
            "startsAt": format_rfc3339_millis(&now),
        }]),
    };
    alerts::enqueue(conn, &alert::resolved(&firing, now), "warning_resolved", &row.name, None).await?;
    Ok(())
}
