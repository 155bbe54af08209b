//! The alert drainer: the leader job (lock 7002) that delivers `costsim_alert_queue` to Alertmanager and re-sends
//! the alerts that are still firing.
//!
//! One pass ([`Drainer::drain_once`]) claims due rows with `FOR UPDATE SKIP LOCKED`, leases them (`lease_until`) and
//! commits before any HTTP call, so no row lock is held while Alertmanager answers; then it POSTs each row's JSON
//! array (concurrently, each bounded by the timeout), and records each outcome on the row it still holds: `sent`,
//! or one more attempt with the next due time after a capped, jittered backoff, or `failed` (dead letter) at
//! `max_attempts`. The lease outlives the timeout, so a row is attempted by one drainer at a time; a drainer that
//! dies mid-pass leaves its rows to be claimed again when the lease ends.
//!
//! Alertmanager forgets an alert that is not re-sent, so [`Drainer::resend_once`] queues a re-send of every alert
//! whose cause lasts (an open or half-open breaker's incident, a closed breaker's drift warning) once its newest
//! firing row is a re-send interval old and none is pending; the re-send ends a few intervals later unless re-sent
//! again. It checks the breaker under its row lock, so a re-send never lands after the resolution it would undo.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AlertConfigError, Delivery, Endpoint, SendFailure, retry_delay, send};
use crate::alert;
use crate::metrics::Metrics;
use crate::store::alerts::{self, Claimed, Failed, Firing};

/// Rows one pass claims at most (the older worker's batch size).
pub const DEFAULT_BATCH_SIZE: usize = 10;
/// Pause after a pass that found nothing due: a queued alert reaches Alertmanager within about this long.
pub const IDLE_POLL: Duration = Duration::from_millis(500);
/// How many re-send intervals ahead a re-send's `endsAt` lies: a few missed re-sends do not resolve the alert,
/// and an alert whose re-sends stop (the process is gone) resolves by itself soon after.
pub const RESEND_HORIZON: u32 = 4;
/// How often the drainer looks for alerts due for a re-send.
const RESEND_CHECK: Duration = Duration::from_secs(1);
/// How much longer than the delivery timeout a claim holds its rows: time to record the outcomes.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Longest pause between two passes after database failures.
const MAX_PASS_BACKOFF: Duration = Duration::from_secs(10);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Nothing was due: no pending row, or every due row is leased by another drainer or waits behind an older
    /// row of the same alert.
    Empty,
    /// Due rows were claimed and each was attempted once.
    Attempted {
        /// Delivered and marked `sent`.
        sent: usize,
        /// Failed and pending again after a backoff.
        retrying: usize,
        /// Failed for the last time and marked `failed`.
        dead: usize,
    },
}

impl DrainOutcome {
    /// Rows delivered by the pass.
    pub fn sent(&self) -> usize {
        match self {
            DrainOutcome::Empty => 0,
            DrainOutcome::Attempted { sent, .. } => *sent,
        }
    }
}

/// Why a pass or a re-send failed; delivery failures are not errors (they are recorded on the rows).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The claim could not be made or committed.
    #[error("cannot claim alert-queue rows: {0}")]
    Claim(#[source] sqlx::Error),
    /// An outcome could not be recorded; the row is attempted again when its lease ends.
    #[error("cannot record the delivery outcome of alert-queue row {id}: {source}")]
    Record {
        /// The row.
        id: i64,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// A re-send could not be looked for or queued.
    #[error("cannot queue the re-send of the alert of breaker {breaker}: {source}")]
    Resend {
        /// The breaker whose alert is firing (empty when listing them failed).
        breaker: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
}

/// Delivers the alert outbox to Alertmanager; cheap to clone (pool, client and metrics are shared).
#[derive(Clone)]
pub struct Drainer {
    pool: PgPool,
    client: reqwest::Client,
    delivery: Delivery,
    batch_size: i64,
    metrics: Metrics,
}

impl Drainer {
    /// A drainer of the queue in `pool` to `delivery.endpoint`, counting in `metrics`.
    pub fn new(pool: PgPool, delivery: Delivery, metrics: Metrics) -> Result<Self, AlertConfigError> {
        Ok(Drainer { pool, client: super::client()?, delivery, batch_size: DEFAULT_BATCH_SIZE as i64, metrics })
    }

    /// The same drainer claiming at most `rows` rows per pass (at least 1).
    pub fn with_batch_size(self, rows: usize) -> Self {
        Drainer { batch_size: rows.max(1) as i64, ..self }
    }

    /// Where it delivers.
    pub fn endpoint(&self) -> &Endpoint {
        &self.delivery.endpoint
    }

    /// One pass: claim and lease due rows, commit, deliver them, record each outcome.
    pub async fn drain_once(&self) -> Result<DrainOutcome, DrainError> {
        let lease = self.delivery.timeout + LEASE_MARGIN;
        let mut tx = self.pool.begin().await.map_err(DrainError::Claim)?;
        let rows = alerts::claim(&mut tx, self.batch_size, lease).await.map_err(DrainError::Claim)?;
        tx.commit().await.map_err(DrainError::Claim)?;
        if rows.is_empty() {
            return Ok(DrainOutcome::Empty);
        }
        let (endpoint, timeout) = (&self.delivery.endpoint, self.delivery.timeout);
        let results =
            futures::future::join_all(rows.iter().map(|row| send(&self.client, endpoint, &row.payload, timeout))).await;
        let (mut sent, mut retrying, mut dead) = (0, 0, 0);
        let mut first_error = None;
        for (row, result) in rows.iter().zip(results) {
            match self.record(row, result).await {
                Ok(Some(Failed::Retrying)) => retrying += 1,
                Ok(Some(Failed::Dead)) => dead += 1,
                Ok(Some(Failed::Lost)) => {}
                Ok(None) => sent += 1,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(DrainOutcome::Attempted { sent, retrying, dead }),
        }
    }

    /// Records one attempt's outcome on the row; `None` for a delivery.
    async fn record(&self, row: &Claimed, result: Result<(), SendFailure>) -> Result<Option<Failed>, DrainError> {
        let recorded = |source: sqlx::Error| DrainError::Record { id: row.id, source };
        let mut tx = self.pool.begin().await.map_err(recorded)?;
        let alert_type = type_label(row.alert_type.as_deref());
        let failure = match result {
            Ok(()) => {
                let latency = alerts::mark_sent(&mut tx, row.id).await.map_err(recorded)?;
                tx.commit().await.map_err(recorded)?;
                if let Some(latency) = latency {
                    self.metrics.cb_alert_delivery_seconds.observe(latency.max(0.0));
                }
                tracing::debug!(alert_id = row.id, alert_type, "Delivered an alert to Alertmanager.");
                return Ok(None);
            }
            Err(failure) => failure,
        };
        self.metrics.cb_alert_send_failures_total.with_label_values(&[alert_type, failure.error_type.as_str()]).inc();
        let delay = retry_delay(row.attempts.max(0) as u32, rand::random::<f64>());
        let outcome = alerts::mark_failed(&mut tx, row, &failure.message, delay).await.map_err(recorded)?;
        tx.commit().await.map_err(recorded)?;
        let attempts = row.attempts + 1;
        match outcome {
            Failed::Retrying => {
                tracing::warn!(alert_id = row.id, alert_type, attempts, max_attempts = row.max_attempts,
                error_type = %failure.error_type, error = %failure.message, retry_in = ?delay,
                "Alert delivery failed; retrying after a backoff.")
            }
            Failed::Dead => tracing::error!(alert_id = row.id, alert_type, attempts,
                error_type = %failure.error_type, error = %failure.message,
                "Alert delivery failed for the last time; dead-lettered (`costsim-breaker alerts retry` resends it)."),
            Failed::Lost => tracing::warn!(alert_id = row.id, alert_type, error = %failure.message,
                "Alert delivery failed after the claim expired; another drainer holds the row now."),
        }
        Ok(Some(outcome))
    }

    /// Queues a re-send, ending `RESEND_HORIZON` intervals after `now`, of each alert still firing whose newest
    /// firing row was queued at least one re-send interval before `now` and none is pending. Returns how many.
    pub async fn resend_once(&self, now: DateTime<Utc>) -> Result<usize, DrainError> {
        let failed = |breaker: &str| {
            let breaker = breaker.to_owned();
            move |source: sqlx::Error| DrainError::Resend { breaker, source }
        };
        let interval = self.delivery.resend_interval;
        let mut tx = self.pool.begin().await.map_err(failed(""))?;
        let firing = alerts::firing(&mut tx).await.map_err(failed(""))?;
        tx.commit().await.map_err(failed(""))?;
        let mut queued = 0;
        for alert in firing {
            let (breaker, incident_id, alert_type) = match &alert {
                Firing::Incident { breaker, incident_id } => (breaker.as_str(), Some(incident_id.as_str()), "resend"),
                Firing::Warning { breaker } => (breaker.as_str(), None, "warning"),
            };
            // Look without the lock first, so a check with nothing due never waits for a decision's transaction.
            let mut look = self.pool.begin().await.map_err(failed(breaker))?;
            let due = alerts::due_resend(&mut look, &alert, interval, now).await.map_err(failed(breaker))?;
            look.commit().await.map_err(failed(breaker))?;
            if due.is_none() {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(failed(breaker))?;
            if !alerts::still_firing(&mut tx, &alert).await.map_err(failed(breaker))? {
                continue;
            }
            let Some(payload) = alerts::due_resend(&mut tx, &alert, interval, now).await.map_err(failed(breaker))?
            else {
                continue;
            };
            let ahead = TimeDelta::from_std(interval * RESEND_HORIZON).unwrap_or(TimeDelta::MAX);
            let ends_at = now.checked_add_signed(ahead).unwrap_or(DateTime::<Utc>::MAX_UTC);
            alerts::enqueue(&mut tx, &alert::refreshed(&payload, ends_at), alert_type, breaker, incident_id)
                .await
                .map_err(failed(breaker))?;
            tx.commit().await.map_err(failed(breaker))?;
            tracing::debug!(breaker, alert_type, "Queued the re-send of a firing alert.");
            queued += 1;
        }
        Ok(queued)
    }

    /// Drains and re-sends until `cancel`: a pass again at once after one that attempted rows, after [`IDLE_POLL`]
    /// when nothing was due, and with capped backoff after database failures (each logged). A pass in flight is
    /// finished, not dropped, when `cancel` fires (it is bounded by the delivery timeout), so its outcomes are
    /// recorded.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(endpoint = %self.delivery.endpoint, timeout = ?self.delivery.timeout,
            resend_interval = ?self.delivery.resend_interval, "Alert drainer started.");
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(IDLE_POLL)
                .with_max_delay(MAX_PASS_BACKOFF)
                .without_max_times()
                .with_jitter()
                .build()
        };
        let mut delays = backoff();
        let mut last_resend_check: Option<Instant> = None;
        while !cancel.is_cancelled() {
            if last_resend_check.is_none_or(|at| at.elapsed() >= RESEND_CHECK) {
                last_resend_check = Some(Instant::now());
                match self.resend_once(Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(alerts = n, "Queued re-sends of firing alerts."),
                    Err(err) => tracing::warn!(error = %err, "Cannot queue re-sends of firing alerts; retrying."),
                }
            }
            let pause = match self.drain_once().await {
                Ok(DrainOutcome::Attempted { sent, retrying, dead }) => {
                    tracing::debug!(sent, retrying, dead, "Alert drain pass.");
                    delays = backoff();
                    continue;
                }
                Ok(DrainOutcome::Empty) => {
                    delays = backoff();
                    IDLE_POLL
                }
                Err(err) => {
                    tracing::warn!(error = %err, "Alert drain pass failed; retrying.");
                    delays.next().unwrap_or(MAX_PASS_BACKOFF)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// The `alert_type` metric label: one of the types this system writes, else `unknown` (labels stay bounded).
fn type_label(alert_type: Option<&str>) -> &'static str {
    match alert_type {
        Some("disable") => "disable",
        Some("resend") => "resend",
        Some("enable") => "enable",
        Some("warning") => "warning",
        Some("warning_resolved") => "warning_resolved",
        Some("canary_fail") => "canary_fail",
        Some("test") => "test",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_of_alert_types_stay_in_a_bounded_set() {
        assert_eq!(type_label(Some("disable")), "disable");
        assert_eq!(type_label(Some("warning_resolved")), "warning_resolved");
        assert_eq!(type_label(Some("anything a user wrote")), "unknown");
        assert_eq!(type_label(None), "unknown");
    }

    #[test]
    fn only_an_attempted_pass_reports_sent_rows() {
        assert_eq!(DrainOutcome::Empty.sent(), 0);
        assert_eq!(DrainOutcome::Attempted { sent: 2, retrying: 1, dead: 0 }.sent(), 2);
    }
}
