//! Following the state topic: a consumer assigned every partition (no consumer group, nothing committed) that
//! decodes each record and passes on only the newest version per breaker. [`BreakerView`](super::BreakerView) and
//! `watch` share it.
//!
//! What it drops, and how it says so: undecodable records (warn, counted), tombstones (debug), and duplicate or
//! older versions of a breaker already passed on (debug). It also tells whether it has read everything the topic
//! held a moment ago ([`Follower::caught_up`]), which is what makes a view's answer fresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::latest::{Latest, Seen};
use crate::codec::decode_breaker_state_changed;
use crate::event::BreakerStateChanged;
use crate::kafka::{KafkaConfig, drain_events};

/// Where reading starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The oldest retained record: on a compacted topic, at least the last state of every breaker.
    Beginning,
    /// Only records written from now on.
    End,
}

/// Why following the state topic failed; every variant names the topic.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The configuration does not make a consumer (e.g. a bad `-X` option).
    #[error("cannot create a Kafka consumer for {topic}: {source}")]
    Client {
        /// The topic to follow.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The broker did not say which partitions the topic has.
    #[error("cannot read the metadata of {topic}: {source}")]
    Metadata {
        /// The topic to follow.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The topic does not exist (or has no partitions).
    #[error("topic {topic} has no partitions")]
    NoPartitions {
        /// The topic to follow.
        topic: String,
    },
    /// The partitions could not be assigned.
    #[error("cannot assign the partitions of {topic}: {source}")]
    Assign {
        /// The topic to follow.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Reading a record failed.
    #[error("cannot read {topic}: {source}")]
    Receive {
        /// The topic followed.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The broker did not give a partition's watermarks.
    #[error("cannot read the watermarks of {topic}/{partition}: {source}")]
    Watermarks {
        /// The topic followed.
        topic: String,
        /// The partition asked about.
        partition: i32,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// A blocking call to librdkafka did not complete (its thread panicked or the runtime is shutting down).
    #[error("a blocking Kafka call on {topic} did not complete: {detail}")]
    Blocking {
        /// The topic followed.
        topic: String,
        /// What the runtime said.
        detail: String,
    },
}

/// A consumer of the state topic that passes on each breaker's changes once, newest first-seen wins.
pub(crate) struct Follower {
    consumer: Arc<StreamConsumer>,
    topic: String,
    partitions: Vec<i32>,
    /// Next offset to read per partition, from the records received (whatever became of them).
    next_offsets: HashMap<i32, i64>,
    latest: Latest,
    undecodable: u64,
}

impl Follower {
    /// A consumer for the topic, not yet assigned; `purpose` names it in the broker's client list.
    pub(crate) fn new(kafka: &KafkaConfig, topic: &str, purpose: &str) -> Result<Self, FollowError> {
        let mut config = kafka.client_config();
        // librdkafka wants a group id even for manual assignment; it is never joined or committed to.
        config.set("group.id", format!("costsim-breaker-{purpose}-{}", uuid::Uuid::new_v4()));
        config.set("enable.auto.commit", "false");
        config.set("client.id", format!("costsim-breaker-{purpose}"));
        let consumer: StreamConsumer =
            config.create().map_err(|source| FollowError::Client { topic: topic.to_owned(), source })?;
        Ok(Follower {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            partitions: Vec::new(),
            next_offsets: HashMap::new(),
            latest: Latest::default(),
            undecodable: 0,
        })
    }

    /// The topic followed.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Records that could not be decoded so far.
    pub(crate) fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Assigns every partition of the topic from `start`; the metadata request (blocking in librdkafka) runs on the
    /// blocking pool and waits at most `timeout`.
    pub(crate) async fn assign(&mut self, start: Start, timeout: Duration) -> Result<(), FollowError> {
        let (consumer, topic) = (Arc::clone(&self.consumer), self.topic.clone());
        let metadata = self
            .blocking(move || consumer.fetch_metadata(Some(&topic), timeout))
            .await?
            .map_err(|source| FollowError::Metadata { topic: self.topic.clone(), source })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(FollowError::NoPartitions { topic: self.topic.clone() });
        }
        let offset = match start {
            Start::Beginning => Offset::Beginning,
            Start::End => Offset::End,
        };
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            assignment
                .add_partition_offset(&self.topic, *partition, offset)
                .map_err(|source| FollowError::Assign { topic: self.topic.clone(), source })?;
        }
        self.consumer
            .assign(&assignment)
            .map_err(|source| FollowError::Assign { topic: self.topic.clone(), source })?;
        self.partitions = partitions;
        Ok(())
    }

    /// Waits for the next record; `Some` when it is a breaker's newer change, `None` when it was dropped (and said
    /// so in the log). Cancel-safe: dropping the future loses no record.
    pub(crate) async fn next(&mut self) -> Result<Option<BreakerStateChanged>, FollowError> {
        let message =
            self.consumer.recv().await.map_err(|source| FollowError::Receive { topic: self.topic.clone(), source })?;
        let (topic, partition, offset) = (self.topic.as_str(), message.partition(), message.offset());
        self.next_offsets.insert(partition, offset + 1);
        let Some(payload) = message.payload() else {
            tracing::debug!(topic, partition, offset, "Skipped a tombstone on the state topic.");
            return Ok(None);
        };
        let change = match decode_breaker_state_changed(payload) {
            Ok(change) => change,
            Err(err) => {
                self.undecodable += 1;
                tracing::warn!(topic, partition, offset, error = %err, "Skipped an undecodable state record.");
                return Ok(None);
            }
        };
        match self.latest.observe(&change.breaker, change.version) {
            Seen::Newer => Ok(Some(change)),
            Seen::Duplicate { newest } | Seen::Older { newest } => {
                tracing::debug!(topic, partition, offset, breaker = %change.breaker, version = change.version,
                    newest, "Dropped a state record whose version was already seen or superseded.");
                Ok(None)
            }
        }
    }

    /// Whether every record the topic held when the broker answered has been received: for each assigned
    /// partition, the next offset to read is at the high watermark. Each watermark request waits at most `timeout`.
    ///
    /// `client` asks ([`KafkaConfig::metadata_client`]): a client of its own, because on the follower's own
    /// connection the request would queue behind the long-polling fetch (up to `fetch.wait.max.ms`, 500 ms).
    pub(crate) async fn caught_up(&self, client: &Arc<BaseConsumer>, timeout: Duration) -> Result<bool, FollowError> {
        let (client, topic) = (Arc::clone(client), self.topic.clone());
        let positions: Vec<(i32, Option<i64>)> =
            self.partitions.iter().map(|p| (*p, self.next_offsets.get(p).copied())).collect();
        self.blocking(move || {
            let answer = positions.into_iter().try_fold(true, |caught_up, (partition, next)| {
                let (low, high) = client
                    .fetch_watermarks(&topic, partition, timeout)
                    .map_err(|source| FollowError::Watermarks { topic: topic.clone(), partition, source })?;
                // Nothing received yet from a partition: it is read up to its start.
                Ok(caught_up && next.unwrap_or(low) >= high)
            });
            drain_events(&client, Duration::from_millis(5));
            answer
        })
        .await?
    }

    /// Runs a blocking librdkafka call on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(&self, call: impl FnOnce() -> T + Send + 'static) -> Result<T, FollowError> {
        tokio::task::spawn_blocking(call)
            .await
            .map_err(|err| FollowError::Blocking { topic: self.topic.clone(), detail: err.to_string() })
    }
}
