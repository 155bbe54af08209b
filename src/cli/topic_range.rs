//! Reading a range of a Kafka topic for `backtest` and `backfill`: every partition (or the chosen ones), outside
//! any consumer group (nothing is joined or committed), merged into one stream in event-time order.
//!
//! Each partition gets its own consumer and keeps its own order; the merged stream always takes the next
//! record of the partition whose next event is oldest. That is the order in which buckets close for several
//! partitions (the minimum of their watermarks, see `window`), and it does not depend on how the broker
//! interleaves fetches, so two runs over the same range give the same output.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::codec::{WriterSchemas, confluent_id};
use crate::event::SimulationResult;
use crate::kafka::KafkaConfig;
use crate::registry::Registry;

/// How long to wait for the broker on one request or one record before giving up.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// An input that gave no event: where it was, what kind of error, the message, and whether reading stopped.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rejected {
    /// `file:line` or `topic/partition@offset`.
    pub(super) place: String,
    /// The kind of error, short and stable.
    pub(super) class: &'static str,
    /// What was wrong.
    pub(super) message: String,
    /// Whether reading stopped there.
    pub(super) fatal: bool,
}

/// An event and where it was read: partition and offset.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Located {
    /// The decoded event.
    pub(super) event: SimulationResult,
    /// Its partition.
    pub(super) partition: i32,
    /// Its offset.
    pub(super) offset: i64,
}

/// A position in every partition of a topic: an offset, or the first record at or after a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    /// This offset in every partition (clamped to what the partition holds).
    Offset(i64),
    /// The first record whose Kafka timestamp is at or after this time.
    Time(DateTime<Utc>),
}

/// Parses `--from`/`--to`: a whole number is an offset, anything else RFC 3339.
pub(super) fn parse_position(s: &str) -> Result<Position, String> {
    if let Ok(offset) = s.parse::<i64>() {
        return if offset >= 0 { Ok(Position::Offset(offset)) } else { Err("an offset cannot be negative".into()) };
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| Position::Time(t.with_timezone(&Utc)))
        .map_err(|e| format!("`{s}` is neither an offset nor an RFC 3339 time ({e})"))
}

/// One partition's consumer and the offsets left to read, `[next, end)`.
struct PartitionReader {
    partition: i32,
    consumer: BaseConsumer,
    next: i64,
    end: i64,
}

/// A partition's next event: event time, partition, offset (ties broken by partition, so the order is total),
/// and the index of its reader.
type Head = (DateTime<Utc>, i32, i64, usize);

/// The records of `[from, to)` of every partition of a topic, merged by event time.
pub(super) struct TopicRange {
    topic: String,
    readers: Vec<PartitionReader>,
    /// The next decoded event of each partition that has one, oldest first.
    heads: BinaryHeap<Reverse<Head>>,
    events: Vec<Option<Located>>,
    /// Undecodable records and read errors, passed on as soon as they are met.
    rejected: VecDeque<Rejected>,
    failed: bool,
    /// The writer schemas records may come with.
    writers: WriterSchemas,
    /// Where the schemas of Confluent-framed records come from.
    registry: Option<Registry>,
}

impl TopicRange {
    /// How many records the range holds (decodable or not).
    pub(super) fn len(&self) -> u64 {
        self.readers.iter().map(|r| (r.end - r.next).max(0) as u64).sum::<u64>()
            + self.events.iter().flatten().count() as u64
    }

    /// Resolves the range in every partition (or only in `only`) and positions one consumer per partition at its
    /// start.
    pub(super) fn open(
        kafka: &KafkaConfig,
        (writers, registry): (WriterSchemas, Option<Registry>),
        topic: &str,
        only: Option<&[i32]>,
        from: Option<Position>,
        to: Option<Position>,
    ) -> anyhow::Result<Self> {
        kafka.check_connection_blocking()?;
        let probe = consumer(kafka)?;
        let metadata = probe
            .fetch_metadata(Some(topic), BROKER_TIMEOUT)
            .with_context(|| format!("cannot read the metadata of {topic} from {}", kafka.brokers))?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions on {}", kafka.brokers);
        if let Some(only) = only {
            if let Some(missing) = only.iter().find(|p| !partitions.contains(p)) {
                anyhow::bail!("topic {topic} has no partition {missing} (it has {})", partitions.len());
            }
        }
        let partitions = partitions.into_iter().filter(|p| only.is_none_or(|only| only.contains(p)));

        let mut readers = Vec::new();
        for partition in partitions {
            let (low, high) = probe
                .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
                .with_context(|| format!("cannot read the offsets of {topic}/{partition}"))?;
            let start = resolve(&probe, topic, partition, from, (low, high))?.unwrap_or(low);
            let end = resolve(&probe, topic, partition, to, (low, high))?.unwrap_or(high);
            if start >= end {
                continue;
            }
            let consumer = consumer(kafka)?;
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            consumer.assign(&assignment).with_context(|| format!("cannot assign {topic}/{partition}"))?;
            readers.push(PartitionReader { partition, consumer, next: start, end });
        }
        let mut range = TopicRange {
            topic: topic.to_string(),
            events: vec![None; readers.len()],
            readers,
            heads: BinaryHeap::new(),
            rejected: VecDeque::new(),
            failed: false,
            writers,
            registry,
        };
        for index in 0..range.readers.len() {
            range.refill(index);
        }
        Ok(range)
    }

    /// Reads partition `index` up to its next decodable event (queueing rejections on the way).
    fn refill(&mut self, index: usize) {
        let TopicRange { topic, readers, heads, events, rejected, failed, writers, registry } = self;
        let reader = &mut readers[index];
        while reader.next < reader.end {
            let error = match reader.consumer.poll(BROKER_TIMEOUT) {
                Some(Ok(message)) => Ok(message),
                Some(Err(error)) => Err(error.to_string()),
                None => Err(format!("no record within {} s", BROKER_TIMEOUT.as_secs())),
            };
            let message = match error {
                Ok(message) => message,
                Err(message) => {
                    *failed = true;
                    let place = format!("{topic}/{}@{}", reader.partition, reader.next);
                    rejected.push_back(Rejected { place, class: "read_error", message, fatal: true });
                    return;
                }
            };
            let offset = message.offset();
            reader.next = offset + 1;
            if offset >= reader.end {
                return;
            }
            let payload = message.payload().unwrap_or_default();
            if let (Some(id), Some(registry)) = (confluent_id(payload), registry.as_ref()) {
                // Ranges are read on tokio's blocking pool, where waiting for the runtime is allowed.
                let fetched = tokio::runtime::Handle::current().block_on(registry.fetch_missing(writers, vec![id]));
                if let Err(err) = fetched {
                    *failed = true;
                    let place = format!("{topic}/{}@{offset}", reader.partition);
                    rejected.push_back(Rejected {
                        place,
                        class: "registry_error",
                        message: err.to_string(),
                        fatal: true,
                    });
                    return;
                }
            }
            match writers.decode(payload).map(|d| d.event) {
                Ok(event) => {
                    heads.push(Reverse((event.occurred_at, reader.partition, offset, index)));
                    events[index] = Some(Located { event, partition: reader.partition, offset });
                    return;
                }
                Err(error) => rejected.push_back(Rejected {
                    place: format!("{topic}/{}@{offset}", reader.partition),
                    class: error.class(),
                    message: error.to_string(),
                    fatal: false,
                }),
            }
        }
    }
}

impl Iterator for TopicRange {
    type Item = Result<Located, Rejected>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(rejected) = self.rejected.pop_front() {
            return Some(Err(rejected));
        }
        if self.failed {
            return None;
        }
        let Reverse((_, _, _, index)) = self.heads.pop()?;
        let event = self.events[index].take().expect("a head has its event");
        self.refill(index);
        Some(Ok(event))
    }
}

/// A consumer for manual assignment: librdkafka wants a group id, which is never joined or committed to.
fn consumer(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    let mut config = kafka.client_config();
    config.set("group.id", format!("costsim-breaker-replay-{}", uuid::Uuid::new_v4()));
    config.set("enable.auto.commit", "false");
    config.set("enable.partition.eof", "false");
    config.create().context("cannot create a Kafka consumer")
}

/// The offset a position names in one partition, within `[low, high]`; `None` when there is no position.
fn resolve(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    position: Option<Position>,
    (low, high): (i64, i64),
) -> anyhow::Result<Option<i64>> {
    let offset = match position {
        None => return Ok(None),
        Some(Position::Offset(offset)) => offset,
        Some(Position::Time(at)) => {
            let mut query = TopicPartitionList::new();
            query.add_partition_offset(topic, partition, Offset::Offset(at.timestamp_millis()))?;
            let found = consumer
                .offsets_for_times(query, BROKER_TIMEOUT)
                .with_context(|| format!("cannot look up {topic}/{partition} by time"))?;
            match found.find_partition(topic, partition).map(|p| p.offset()) {
                Some(Offset::Offset(offset)) => offset,
                // No record at or after that time.
                _ => high,
            }
        }
    };
    Ok(Some(offset.clamp(low, high)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_an_offset_or_an_rfc_3339_time() {
        assert_eq!(parse_position("42"), Ok(Position::Offset(42)));
        let at = DateTime::parse_from_rfc3339("2025-11-27T08:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_position("2025-11-27T09:00:00+01:00"), Ok(Position::Time(at)));
        assert!(parse_position("-1").is_err());
        assert!(parse_position("yesterday").unwrap_err().contains("neither an offset nor an RFC 3339 time"));
    }
}
