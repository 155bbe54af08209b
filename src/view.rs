//! The fail-open answer for callers: [`BreakerView`] follows the breaker-state topic in the background and answers
//! "is V2 disabled?" at once, from memory.
//!
//! # Guarantees
//! - **Fail open.** The answer is "disabled" only when the newest known state of the breaker is `open` *and* the view
//!   is fresh. An unknown breaker, a view that has not caught up yet, or one that has not heard from the topic for
//!   longer than [`ViewConfig::max_age`] answers "enabled", as the older system decided (docs/DOMAIN.md, *Fail open*):
//!   V2 is shadow-only, so a wrong "enabled" costs only work, while a wrong "disabled" silently stops the comparison.
//! - **Newest version wins.** Per breaker only a `version` greater than every one seen counts; duplicates (the relay
//!   publishes at least once) and older versions are dropped and logged at debug.
//! - **Never blocks the caller.** Answers read a map under a read lock that the follower holds only to insert one
//!   entry; all Kafka calls run on the follower's task or tokio's blocking pool.
//!
//! # What "fresh" means
//! Freshness is measured from when the view last *confirmed it had read everything the topic held* (the next offset
//! of every partition at its high watermark, asked of the broker every [`ViewConfig::confirm_every`]), not from the
//! record's `occurred_at`. The topic carries changes only: a breaker latched open last week has an old `occurred_at`
//! and is still open, so an age taken from the record would turn every long disable into "enabled". What the view
//! cannot see is a processor that stopped publishing: that is the `costsim_outbox_lag_seconds` alert's job.
//!
//! # Start and failures
//! The view reads every partition from its beginning, outside any consumer group. The topic is compacted by
//! breaker name and the relay publishes each breaker's changes in version order, so even after compaction the view
//! finds each breaker's newest state. Until it has caught up once it answers "enabled". While the broker or the
//! topic cannot be reached the background task retries with capped backoff (logged once at warn), and the answers
//! age into "enabled" after `max_age`; the same happens once the task is cancelled.
//!
//! A breaker whose versions restart from a lower number (its row recreated) is ignored until the view restarts.

pub(crate) mod follower;
mod latest;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use tokio_util::sync::CancellationToken;

pub use self::follower::FollowError;

use self::follower::{Follower, Start};
use crate::event::BreakerStateChanged;
use crate::kafka::KafkaConfig;

/// How a view judges its own freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewConfig {
    /// How long after its last confirmation that it had read the whole topic the view's answers still count;
    /// past it every answer is "enabled".
    pub max_age: Duration,
}

impl Default for ViewConfig {
    /// Thirty seconds: several confirmations (one a second) may fail before callers fall back to "enabled".
    fn default() -> Self {
        ViewConfig { max_age: Duration::from_secs(30) }
    }
}

impl ViewConfig {
    /// How often the view asks the broker whether it has read everything: a third of `max_age`, so two missed
    /// confirmations are tolerated, between 10 ms and 1 s (a watermark request per partition is cheap).
    pub fn confirm_every(&self) -> Duration {
        (self.max_age / 3).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// A breaker's newest known change and how far the view can be trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewEntry {
    /// The newest change of the breaker the view has read.
    pub change: BreakerStateChanged,
    /// Time since the view last confirmed it had read the whole topic; `None` if it never has.
    pub confirmed_ago: Option<Duration>,
    /// Whether that confirmation is within `max_age`, so the answer below is trusted.
    pub fresh: bool,
}

impl ViewEntry {
    /// The fail-open answer for this entry: disabled only if fresh and open.
    pub fn disables_v2(&self) -> bool {
        latest::is_disabled(Some(self.change.to_state), self.fresh)
    }
}

/// What the follower has learnt, shared with every clone of the view.
#[derive(Debug, Default)]
struct Known {
    changes: HashMap<String, BreakerStateChanged>,
    confirmed_at: Option<Instant>,
}

/// The breakers' states as the state topic tells them, answering from memory; cheap to clone and share.
///
/// A std `RwLock`: callers are many and may be synchronous, the follower writes one entry at a time, and the lock is
/// never held across an await. A poisoned lock is read through: the data is a plain map, always consistent.
#[derive(Debug, Clone)]
pub struct BreakerView {
    known: Arc<RwLock<Known>>,
    config: ViewConfig,
}

impl BreakerView {
    /// Starts following `topic` from its beginning on a background task that runs until `cancel` fires; must be
    /// called within a Tokio runtime. While the broker or the topic is unreachable the task retries with capped
    /// backoff and the view answers "enabled". Fails only when the configuration does not make a consumer.
    pub fn spawn(
        kafka: &KafkaConfig,
        topic: &str,
        config: ViewConfig,
        cancel: CancellationToken,
    ) -> Result<BreakerView, FollowError> {
        let follower = Follower::new(kafka, topic, "view")?;
        let watermarks =
            kafka.metadata_client().map_err(|source| FollowError::Client { topic: topic.to_owned(), source })?;
        let view = BreakerView { known: Arc::default(), config };
        tokio::spawn(follow(follower, Arc::new(watermarks), Arc::clone(&view.known), config, cancel));
        Ok(view)
    }

    /// Whether V2 must not run for this breaker; `false` (enabled) when unknown or stale, so V2 fails open.
    pub fn is_v2_disabled(&self, breaker: &str) -> bool {
        let known = self.read();
        let fresh = latest::is_fresh(known.confirmed_at, Instant::now(), self.config.max_age);
        latest::is_disabled(known.changes.get(breaker).map(|c| c.to_state), fresh)
    }

    /// The newest known change of this breaker and its freshness, if the view has read any.
    pub fn state(&self, breaker: &str) -> Option<ViewEntry> {
        let known = self.read();
        let now = Instant::now();
        known.changes.get(breaker).map(|change| ViewEntry {
            change: change.clone(),
            confirmed_ago: known.confirmed_at.map(|at| now.saturating_duration_since(at)),
            fresh: latest::is_fresh(known.confirmed_at, now, self.config.max_age),
        })
    }

    /// Whether the view has confirmed, within `max_age`, that it had read the whole topic.
    pub fn is_fresh(&self) -> bool {
        latest::is_fresh(self.read().confirmed_at, Instant::now(), self.config.max_age)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Longest wait between attempts to assign the topic while it or the broker is missing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Longest wait for the topic's metadata when assigning: a broker slower than this is retried.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a partition's watermarks; a slow answer only delays the next confirmation, and the view goes
/// stale (fail open) if answers stay slower than `max_age`.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(2);

/// The view's background task: assign (with retries), then apply records and confirm completeness until cancelled.
async fn follow(
    mut follower: Follower,
    watermarks: Arc<BaseConsumer>,
    known: Arc<RwLock<Known>>,
    config: ViewConfig,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            attempt = follower.assign(Start::Beginning, METADATA_TIMEOUT) => attempt,
        };
        match attempt {
            Ok(()) if attempts > 0 => {
                tracing::info!(topic = follower.topic(), "Following the state topic now.");
                break;
            }
            Ok(()) => break,
            Err(err) => {
                attempts += 1;
                if attempts == 1 {
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64,
                        "Cannot follow the state topic yet; the view answers \"enabled\" meanwhile.");
                } else {
                    tracing::debug!(error = %err, attempts, "Still cannot follow the state topic.");
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }

    let mut ticks = tokio::time::interval(config.confirm_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut receive_failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            next = follower.next() => match next {
                Ok(Some(change)) => {
                    receive_failing = false;
                    let mut known = known.write().unwrap_or_else(PoisonError::into_inner);
                    known.changes.insert(change.breaker.clone(), change);
                }
                Ok(None) => receive_failing = false,
                // librdkafka reconnects by itself; the answers age into "enabled" if it stays down.
                Err(err) if !receive_failing => {
                    receive_failing = true;
                    tracing::warn!(error = %err, "Cannot read the state topic; retrying.");
                }
                Err(err) => tracing::debug!(error = %err, "Still cannot read the state topic."),
            },
            _ = ticks.tick() => {
                let asked_at = Instant::now();
                let caught_up = tokio::select! {
                    _ = cancel.cancelled() => return,
                    caught_up = follower.caught_up(&watermarks, WATERMARK_TIMEOUT) => caught_up,
                };
                match caught_up {
                    Ok(true) => known.write().unwrap_or_else(PoisonError::into_inner).confirmed_at = Some(asked_at),
                    Ok(false) => {}
                    Err(err) => tracing::debug!(error = %err, "Cannot confirm the view is complete."),
                }
            }
        }
    }
}
