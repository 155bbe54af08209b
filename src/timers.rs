//! Wall-clock breaker transitions: the ones that must happen even when no event arrives.
//!
//! # Guarantee
//! An open breaker whose `disabled_until` has passed (with auto-recovery on) goes half-open, and a half-open
//! breaker whose probation has elapsed by the wall clock closes or reopens, within about one tick of being due,
//! exactly once across any number of instances: each transition is decided under the breaker row's lock
//! (`SELECT … FOR NO KEY UPDATE`) after re-checking that it is still due, by the pure [`decide`], and committed in the
//! same transaction as everything it implies (incident resolution, alert-queue row, state-event outbox row, all
//! written by [`breaker::apply`]). Closed breakers are never judged here: the pipeline judges them once per
//! closed bucket, in event time.
//!
//! Each tick also deletes drift buckets no decision can see any more: older than the breaker's latest
//! evaluation minus twice the longer of the window and the probation.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::breaker::{Breaker, BreakerConfig, decide};
use crate::event::{BreakerState, BreakerStateChanged};
use crate::metrics::Metrics;
use crate::store::breaker::{self, AUTOMATIC_ACTOR, ApplySettings};
use crate::store::{buckets, offsets};
use crate::window::WindowSummary;

/// Time between two ticks of [`run`].
pub const TICK: Duration = Duration::from_secs(1);

/// Why a tick failed; the next tick tries again.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// PostgreSQL failed or is unreachable.
    #[error("cannot run the timers of breaker {breaker}: {source}")]
    Database {
        /// The breaker being handled.
        breaker: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
}

/// Where the pipeline stands, so probation is not judged over buckets it has not filled yet.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The processor's consumer group.
    pub group: String,
    /// The results topic.
    pub topic: String,
    /// `COSTSIM_IDLE_PARTITION_SECONDS`, as the merged watermark uses it.
    pub idle_seconds: f64,
}

/// Whether the pipeline lags at `now`: partitions are registered and their merged watermark is unknown or more
/// than a bucket behind the wall clock. A probation judged then would count the samples of buckets still
/// waiting in Kafka as missing and reopen for "too few samples"; it waits instead (a stream that stopped keeps
/// its breaker half-open until events come again: without them there is no evidence either way).
pub fn lags(marks: &[offsets::Mark], config: &BreakerConfig, now: DateTime<Utc>) -> bool {
    !marks.is_empty()
        && offsets::merged_watermark(marks)
            .is_none_or(|merged| now - merged > TimeDelta::milliseconds(config.bucket_millis as i64))
}

/// Whether a wall-clock transition is due at `now`: an open breaker past its `disabled_until` with
/// auto-recovery on, or a half-open breaker whose probation has elapsed. Never for a closed or latched breaker.
pub fn due(record: &Breaker, config: &BreakerConfig, now: DateTime<Utc>) -> bool {
    match record.state {
        BreakerState::Closed => false,
        BreakerState::Open => config.auto_recover && record.disabled_until.is_some_and(|until| now >= until),
        BreakerState::HalfOpen => record.half_open_since.is_none_or(|since| now - since >= config.probation()),
    }
}

/// One tick at `now`: makes each due transition of `breakers` and prunes their old buckets; returns the state
/// changes committed, in the order of `breakers`.
pub async fn tick(
    pool: &PgPool,
    breakers: &[String],
    config: &BreakerConfig,
    settings: &ApplySettings,
    progress: &Progress,
    now: DateTime<Utc>,
) -> Result<Vec<BreakerStateChanged>, TimerError> {
    let mut changes = Vec::new();
    for name in breakers {
        let failed = |source| TimerError::Database { breaker: name.clone(), source };
        if let Some(change) = transition(pool, name, config, settings, progress, now).await.map_err(failed)? {
            tracing::info!(breaker = %name, version = change.version, from = %change.from_state,
                to = %change.to_state, reason = %change.reason, "Breaker state changed on the clock.");
            changes.push(change);
        }
        let pruned = prune(pool, name, config).await.map_err(failed)?;
        if pruned > 0 {
            tracing::debug!(breaker = %name, buckets = pruned, "Pruned drift buckets no window can see.");
        }
    }
    Ok(changes)
}

/// Makes the breaker's due transition, if any, in one transaction under its row lock.
async fn transition(
    pool: &PgPool,
    name: &str,
    config: &BreakerConfig,
    settings: &ApplySettings,
    progress: &Progress,
    now: DateTime<Utc>,
) -> Result<Option<BreakerStateChanged>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Look without the lock first, so a tick with nothing due never waits for the pipeline's transactions.
    match breaker::get(&mut tx, name).await? {
        Some(row) if due(&row.record, config, now) => {}
        Some(_) => return Ok(None),
        None => {
            tracing::warn!(breaker = name, "No such breaker; its timers do nothing.");
            return Ok(None);
        }
    }
    let Some(row) = breaker::lock(&mut tx, name).await? else { return Ok(None) };
    // Another instance, the pipeline or an operator may have acted between the look and the lock.
    if !due(&row.record, config, now) {
        return Ok(None);
    }
    if row.record.state == BreakerState::HalfOpen {
        let marks = offsets::marks(&mut tx, &progress.group, &progress.topic, progress.idle_seconds).await?;
        if lags(&marks, config, now) {
            tracing::debug!(breaker = name, merged_watermark = ?offsets::merged_watermark(&marks),
                "Probation is due but the pipeline lags; judging it once the buckets are filled.");
            return Ok(None);
        }
    }
    let (start, end) = row.record.window_bounds(config, now);
    let stored = buckets::load(&mut tx, name, start, end).await?;
    let summary = WindowSummary::of_buckets(start, end, stored.iter().map(|(at, bucket)| (*at, bucket)));
    let decision = decide(&row.record, &summary, config, now);
    if decision.transition(&row.record).is_none() {
        return Ok(None);
    }
    let change = breaker::apply(&mut tx, &row, &decision, AUTOMATIC_ACTOR, settings, now, None).await?;
    tx.commit().await?;
    Ok(change)
}

/// Deletes the buckets older than the latest evaluation minus twice the longer of window and probation.
async fn prune(pool: &PgPool, name: &str, config: &BreakerConfig) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(latest) = breaker::get(&mut tx, name).await?.and_then(|row| row.last_evaluated_at) else {
        return Ok(0);
    };
    let keep = config.window().max(config.probation()) * 2;
    let pruned = buckets::prune(&mut tx, name, latest - keep).await?;
    tx.commit().await?;
    Ok(pruned)
}

/// Ticks every [`TICK`] with the wall clock until `cancel`; a failed tick is logged and the next one retries.
pub async fn run(
    pool: PgPool,
    breakers: Vec<String>,
    config: BreakerConfig,
    settings: ApplySettings,
    progress: Progress,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            // A tick cut short by cancellation rolls its transaction back: nothing half-done stays.
            result = async {
                ticks.tick().await;
                tick(&pool, &breakers, &config, &settings, &progress, Utc::now()).await
            } => result,
        };
        match result {
            Ok(changes) => changes.iter().for_each(|change| count(&metrics, change)),
            Err(err) => tracing::warn!(error = %err, "Breaker timer tick failed; the next tick retries."),
        }
    }
}

/// Counts a passed probation the way the pipeline counts it.
fn count(metrics: &Metrics, change: &BreakerStateChanged) {
    if change.from_state == BreakerState::HalfOpen && change.to_state == BreakerState::Closed {
        metrics.cb_auto_recovery_total.inc();
        metrics.cb_enabled_total.with_label_values(&["auto_recovery"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    fn open_until(until: Option<DateTime<Utc>>) -> Breaker {
        Breaker { state: BreakerState::Open, disabled_until: until, ..Breaker::closed() }
    }

    fn mark(watermark: Option<i64>, active: bool) -> offsets::Mark {
        offsets::Mark { partition: 0, watermark: watermark.map(at), active }
    }

    #[test]
    fn the_pipeline_lags_when_its_merged_watermark_is_unknown_or_more_than_a_bucket_behind() {
        let config = BreakerConfig { bucket_millis: 10_000, ..BreakerConfig::default() };
        assert!(!lags(&[], &config, at(1000)), "no pipeline registered: the clock alone decides");
        assert!(lags(&[mark(None, true)], &config, at(1000)));
        assert!(lags(&[mark(Some(989), true)], &config, at(1000)));
        assert!(!lags(&[mark(Some(990), true)], &config, at(1000)));
        assert!(lags(&[mark(Some(100), false)], &config, at(1000)), "a stream that stopped waits too");
    }

    #[test]
    fn a_closed_breaker_is_never_due() {
        assert!(!due(&Breaker::closed(), &BreakerConfig::default(), at(1_000_000)));
    }

    #[test]
    fn an_open_breaker_is_due_from_its_disabled_until_on() {
        let config = BreakerConfig::default();
        assert!(!due(&open_until(Some(at(100))), &config, at(99)));
        assert!(due(&open_until(Some(at(100))), &config, at(100)));
    }

    #[test]
    fn a_latched_breaker_or_one_without_auto_recovery_is_never_due() {
        let config = BreakerConfig::default();
        assert!(!due(&open_until(None), &config, at(1_000_000)));
        let manual_only = BreakerConfig { auto_recover: false, ..config };
        assert!(!due(&open_until(Some(at(100))), &manual_only, at(1_000_000)));
    }

    #[test]
    fn a_half_open_breaker_is_due_once_probation_has_elapsed() {
        let config = BreakerConfig { probation_seconds: 60, ..BreakerConfig::default() };
        let half_open = Breaker { state: BreakerState::HalfOpen, half_open_since: Some(at(100)), ..Breaker::closed() };
        assert!(!due(&half_open, &config, at(159)));
        assert!(due(&half_open, &config, at(160)));
    }
}
