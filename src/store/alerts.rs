//! The alert outbox `costsim_alert_queue`: rows written in the transaction of the decision that caused them.

use serde_json::Value;
use sqlx::PgConnection;

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
    .bind(payload)
    .bind(alert_type)
    .bind(breaker)
    .bind(incident_id)
    .fetch_one(conn)
    .await
}

/// The first firing payload queued for an incident, whose labels every later payload of it repeats.
pub async fn firing_payload(conn: &mut PgConnection, incident_id: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT payload FROM costsim_alert_queue WHERE incident_id = $1 AND alert_type = 'disable' ORDER BY id LIMIT 1",
    )
    .bind(incident_id)
    .fetch_optional(conn)
    .await
}
