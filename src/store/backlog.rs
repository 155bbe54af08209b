//! How much the two outboxes still hold: pending alert deliveries and unpublished state events. Read-only
//! aggregates for the gauges; they take no locks, so they never slow the drainer or the relay down.

use sqlx::{PgConnection, Row};

/// Unpublished rows of the state-event outbox `costsim_breaker_events`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxBacklog {
    /// State events written but not yet published.
    pub pending: i64,
    /// Age of the oldest of them in seconds, by the database's clock; 0 when there is none.
    pub oldest_age_seconds: f64,
}

/// Alert-queue rows still waiting for delivery (status `pending`, whether or not a retry is due yet).
pub async fn pending_alerts(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM costsim_alert_queue WHERE status = 'pending'")
        .persistent(false)
        .fetch_one(conn)
        .await
}

/// The state events the relay has not published yet. The age is computed by PostgreSQL (`now()` against
/// `created_at`), so it does not depend on this host's clock.
pub async fn outbox(conn: &mut PgConnection) -> Result<OutboxBacklog, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) AS pending, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds \
         FROM costsim_breaker_events WHERE published_at IS NULL",
    )
    .persistent(false)
    .fetch_one(conn)
    .await?;
    Ok(OutboxBacklog {
        pending: row.try_get("pending")?,
        oldest_age_seconds: row.try_get::<f64, _>("oldest_age_seconds")?.max(0.0),
    })
}
