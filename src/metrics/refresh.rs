//! The gauges that describe shared state, re-read from PostgreSQL every few seconds: breaker state and consecutive
//! failures per breaker, the canary's verdict, KL divergence and last run per breaker, the pending alert count,
//! and the state-event outbox's backlog and lag.
//!
//! Guarantees: every replica reports the database's truth (not what it alone decided, unlike the older system's
//! per-process gauges, docs/DOMAIN.md, *11.32 Per-process gauges*), at most [`REFRESH_INTERVAL`] late while PostgreSQL
//! answers. One refresh reads everything in one read-only snapshot, so the gauges never mix two moments. When a refresh
//! fails the gauges keep their last values and `costsim_gauges_refreshed_timestamp_seconds` stops moving, which is what
//! an alert on staleness watches.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::event::BreakerState;
use crate::store;

/// How often the gauges are re-read: well under Prometheus's usual 15 s scrape, and a handful of cheap queries.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The value of `costsim_v2_circuit_breaker_state` for a state: 0 closed, 1 open, 2 half-open.
pub fn state_gauge_value(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

/// Reads every breaker row and both outboxes once, in one read-only snapshot, and sets the gauges.
pub async fn refresh_once(pool: &PgPool, metrics: &Metrics) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    let breakers = store::breaker::list(&mut tx).await?;
    let pending_alerts = store::backlog::pending_alerts(&mut tx).await?;
    let outbox = store::backlog::outbox(&mut tx).await?;
    let canaries = store::canary::gauges(&mut tx).await?;
    tx.commit().await?;

    for row in &breakers {
        metrics.v2_circuit_breaker_state.with_label_values(&[&row.name]).set(state_gauge_value(row.record.state));
        metrics.cb_consecutive_failures.with_label_values(&[&row.name]).set(i64::from(row.record.consecutive_failures));
    }
    for canary in &canaries {
        let breaker = [canary.breaker.as_str()];
        metrics.v2_canary_failing.with_label_values(&breaker).set(i64::from(canary.failing));
        let at = canary.last_run_or_created.timestamp_millis() as f64 / 1000.0;
        metrics.v2_canary_last_run_timestamp_seconds.with_label_values(&breaker).set(at);
        if let Some(kl) = canary.kl_divergence {
            metrics.v2_kl_divergence.with_label_values(&breaker).set(kl);
        }
    }
    metrics.cb_alert_queue_depth.set(pending_alerts);
    metrics.outbox_pending_events.set(outbox.pending);
    metrics.outbox_lag_seconds.set(outbox.oldest_age_seconds);
    metrics.gauges_refreshed_timestamp_seconds.set(Utc::now().timestamp_millis() as f64 / 1000.0);
    Ok(())
}

/// Refreshes the gauges every [`REFRESH_INTERVAL`] until `cancel` fires. A failed refresh is logged once when the
/// refresher starts failing and once when it recovers; it never ends the loop.
pub async fn run_refresher(pool: PgPool, metrics: Metrics, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
    // After a slow refresh, wait a full interval rather than firing a burst of catch-up refreshes.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = refresh_once(&pool, &metrics) => outcome,
        };
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("Refreshed the gauges from PostgreSQL again.");
            }
            Ok(()) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "Cannot refresh the gauges from PostgreSQL; they keep their last values.");
            }
            Err(err) => tracing::debug!(error = %err, "Cannot refresh the gauges from PostgreSQL."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_gauge_counts_closed_open_half_open_as_zero_one_two() {
        let values: Vec<i64> = BreakerState::ALL.iter().map(|s| state_gauge_value(*s)).collect();
        assert_eq!(values, [0, 1, 2]);
    }
}
