//! The state-event outbox `costsim_breaker_events`: written with the decision, claimed row by row by the relay,
//! published to the state topic and then marked.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::codec::breaker_state_changed_to_json;
use crate::event::BreakerStateChanged;

/// Queues a state change for the relay.
pub async fn enqueue(conn: &mut PgConnection, change: &BreakerStateChanged) -> Result<(), sqlx::Error> {
    let payload: serde_json::Value =
        serde_json::from_str(&breaker_state_changed_to_json(change)).expect("our JSON form parses");
    sqlx::query("INSERT INTO costsim_breaker_events (event_id, breaker, version, payload) VALUES ($1, $2, $3, $4)")
        .persistent(false)
        .bind(&change.event_id)
        .bind(&change.breaker)
        .bind(change.version)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// One unpublished state event, claimed by the relay.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Unpublished {
    /// The outbox row.
    pub id: i64,
    /// The breaker, which is also the record key.
    pub breaker: String,
    /// The breaker's version this event set.
    pub version: i64,
    /// The `BreakerStateChanged` event in its JSON form.
    pub payload: serde_json::Value,
}

/// Claims up to `limit` unpublished events for this transaction, in version order per breaker.
///
/// Rows another transaction holds are skipped (`FOR UPDATE SKIP LOCKED`), and so is every row that has an older
/// unpublished row of the same breaker outside this claim: while another relay holds a breaker's older events,
/// this one publishes none of its newer ones, so a breaker's events never overtake each other.
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<Unpublished>, sqlx::Error> {
    sqlx::query_as(
        "WITH claimed AS ( \
             SELECT id, breaker, version, payload FROM costsim_breaker_events WHERE published_at IS NULL \
             ORDER BY breaker, version LIMIT $1 FOR UPDATE SKIP LOCKED) \
         SELECT c.id, c.breaker, c.version, c.payload FROM claimed c \
         WHERE NOT EXISTS ( \
             SELECT 1 FROM costsim_breaker_events o WHERE o.breaker = c.breaker AND o.version < c.version \
             AND o.published_at IS NULL AND o.id NOT IN (SELECT id FROM claimed)) \
         ORDER BY c.breaker, c.version",
    )
    .persistent(false)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Marks claimed events as published (delivered to the state topic).
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE costsim_breaker_events SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL")
        .persistent(false)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// When the change that set a breaker to `version` was decided; `None` for version 0 (never changed).
pub async fn changed_at(
    conn: &mut PgConnection,
    breaker: &str,
    version: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let at: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT (payload->>'occurred_at')::timestamptz FROM costsim_breaker_events WHERE breaker = $1 AND version = $2",
    )
    .persistent(false)
    .bind(breaker)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    Ok(at.flatten())
}
