//! The state-event relay: publishes the `costsim_breaker_events` outbox to the compacted state topic.
//!
//! # Delivery guarantee
//! Every state change committed by a decision reaches the topic **at least once**, keyed by the breaker's name,
//! with the Avro single-object encoding of `BreakerStateChanged` (or Confluent's wire format, see
//! [`Relay::with_confluent_framing`]), and a breaker's changes appear on the topic in version order (which is their
//! commit order: versions grow under the breaker row's lock).
//!
//! How: one pass claims unpublished rows in a transaction (`FOR UPDATE SKIP LOCKED`, skipping a breaker's newer
//! rows while another transaction holds its older ones), sends them one by one with the idempotent producer,
//! awaiting each delivery before the next, then marks the delivered rows `published_at` and commits. A crash or a
//! lost connection between a delivery and the commit sends those rows again on the next pass; subscribers drop
//! records whose `version` they have already seen. Two relays running by mistake never hold the same row at
//! once, so they never publish it twice at the same time, nor a breaker's events out of order.
//!
//! It depends on: the state topic existing with one partition (`KafkaConfig::ensure_topics`), and the producer
//! being idempotent (`KafkaConfig::producer`), so librdkafka's own retries neither reorder nor repeat a record.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::codec::{DecodeError, breaker_state_changed_from_json, encode_breaker_state_changed};
use crate::registry::{Registry, RegistryError};
use crate::store::outbox::{self, Unpublished};

/// Rows one pass claims at most; state changes are rare, so a pass normally holds all that wait.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Pause after a pass that found nothing: well under the one-second decision-to-topic goal.
pub const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long a send may wait for room in librdkafka's queue (the delivery itself is bounded by
/// `message.timeout.ms`).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two passes after failures (database or broker unreachable).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOutcome {
    /// This many events were delivered and marked published.
    Delivered(usize),
    /// Nothing was publishable (none waits, or another relay holds what waits).
    Empty,
}

/// Why a pass failed; rows delivered before the failure are still marked published.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed or is unreachable.
    #[error("cannot read or mark the state-event outbox: {0}")]
    Database(#[from] sqlx::Error),
    /// The state schema could not be registered (Confluent framing).
    #[error("cannot register the state schema: {0}")]
    Registry(#[from] RegistryError),
    /// An outbox row does not hold a valid state event (a bug in whatever wrote it).
    #[error("outbox row {id} (breaker {breaker}, version {version}) is not a valid state event: {source}")]
    Payload {
        /// The outbox row.
        id: i64,
        /// Its breaker.
        breaker: String,
        /// Its version.
        version: i64,
        /// Why it does not decode.
        #[source]
        source: DecodeError,
    },
    /// The broker did not acknowledge a record.
    #[error("cannot deliver the state event of breaker {breaker} version {version} to {topic}: {source}")]
    Delivery {
        /// The state topic.
        topic: String,
        /// The event's breaker.
        breaker: String,
        /// The event's version.
        version: i64,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

/// Publishes the outbox to the state topic; cheap to clone (the pool and the producer are shared).
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    topic: String,
    batch_size: usize,
    /// With Confluent framing: the registry and the state schema's id there, registered on the first publish.
    confluent: Option<std::sync::Arc<Confluent>>,
}

/// Confluent framing of state events.
#[derive(Debug)]
struct Confluent {
    registry: Registry,
    id: tokio::sync::OnceCell<u32>,
}

impl Relay {
    /// A relay from the outbox in `pool` to `topic`, sending with `producer` (use `KafkaConfig::producer`, which
    /// is idempotent).
    pub fn new(pool: PgPool, producer: FutureProducer, topic: impl Into<String>) -> Self {
        Relay { pool, producer, topic: topic.into(), batch_size: DEFAULT_BATCH_SIZE, confluent: None }
    }

    /// The same relay writing Confluent's wire format (byte 0, the schema id, the body), with
    /// `BreakerStateChanged` registered under the subject `<state topic>-value`.
    pub fn with_confluent_framing(self, registry: Registry) -> Self {
        let confluent = Confluent { registry, id: tokio::sync::OnceCell::new() };
        Relay { confluent: Some(std::sync::Arc::new(confluent)), ..self }
    }

    /// The same relay claiming at most `rows` rows per pass (at least 1).
    pub fn with_batch_size(self, rows: usize) -> Self {
        Relay { batch_size: rows.max(1), ..self }
    }

    /// One pass: claims what is publishable, delivers it in order, marks it and commits.
    pub async fn relay_once(&self) -> Result<RelayOutcome, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = outbox::claim(&mut tx, self.batch_size as i64).await?;
        let mut delivered = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            match self.publish(row).await {
                Ok(()) => delivered.push(row.id),
                Err(err) => {
                    // Later rows of this breaker must not overtake this one: stop the pass here.
                    failure = Some(err);
                    break;
                }
            }
        }
        outbox::mark_published(&mut tx, &delivered).await?;
        tx.commit().await?;
        match failure {
            Some(err) => Err(err),
            None if delivered.is_empty() => Ok(RelayOutcome::Empty),
            None => Ok(RelayOutcome::Delivered(delivered.len())),
        }
    }

    /// Sends one row and waits for the broker's acknowledgement.
    async fn publish(&self, row: &Unpublished) -> Result<(), RelayError> {
        let change = breaker_state_changed_from_json(&row.payload.to_string()).map_err(|source| {
            RelayError::Payload { id: row.id, breaker: row.breaker.clone(), version: row.version, source }
        })?;
        let mut bytes = encode_breaker_state_changed(&change);
        if let Some(confluent) = &self.confluent {
            let subject = format!("{}-value", self.topic);
            let schema = crate::codec::SchemaKind::BreakerStateChanged.text();
            let id = *confluent.id.get_or_try_init(|| confluent.registry.register(&subject, schema)).await?;
            // The same body, behind Confluent's header (byte 0, the schema id) instead of the single-object one.
            bytes = [&[0u8][..], &id.to_be_bytes(), &bytes[10..]].concat();
        }
        let record = FutureRecord::to(&self.topic).key(row.breaker.as_bytes()).payload(&bytes);
        self.producer.send(record, QUEUE_TIMEOUT).await.map_err(|(source, _)| RelayError::Delivery {
            topic: self.topic.clone(),
            breaker: row.breaker.clone(),
            version: row.version,
            source,
        })?;
        tracing::debug!(breaker = %row.breaker, version = row.version, topic = %self.topic, "Published a state event.");
        Ok(())
    }

    /// Relays until `cancel`: again at once after a pass that delivered, after [`IDLE_POLL`] when idle, and with
    /// capped exponential backoff after failures (logged once each; nothing is skipped, so a row that can never
    /// be delivered holds its breaker's later rows back and shows in the outbox lag gauge).
    pub async fn run(self, cancel: CancellationToken) {
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(IDLE_POLL)
                .with_max_delay(MAX_BACKOFF)
                .without_max_times()
                .with_jitter()
                .build()
        };
        let mut delays = backoff();
        loop {
            let pass = tokio::select! {
                _ = cancel.cancelled() => return,
                pass = self.relay_once() => pass,
            };
            let pause = match pass {
                Ok(RelayOutcome::Delivered(n)) => {
                    tracing::info!(events = n, topic = %self.topic, "Published state events.");
                    delays = backoff();
                    continue;
                }
                Ok(RelayOutcome::Empty) => {
                    delays = backoff();
                    IDLE_POLL
                }
                Err(err) => {
                    tracing::warn!(topic = %self.topic, error = %err, "State-event relay pass failed; retrying.");
                    delays.next().unwrap_or(MAX_BACKOFF)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
