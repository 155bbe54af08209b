//! The state-event outbox `costsim_breaker_events`: written with the decision, relayed to the state topic.

use sqlx::PgConnection;

use crate::codec::breaker_state_changed_to_json;
use crate::event::BreakerStateChanged;

/// Queues a state change for the relay.
pub async fn enqueue(conn: &mut PgConnection, change: &BreakerStateChanged) -> Result<(), sqlx::Error> {
    let payload: serde_json::Value =
        serde_json::from_str(&breaker_state_changed_to_json(change)).expect("our JSON form parses");
    sqlx::query("INSERT INTO costsim_breaker_events (event_id, breaker, version, payload) VALUES ($1, $2, $3, $4)")
        .bind(&change.event_id)
        .bind(&change.breaker)
        .bind(change.version)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}
