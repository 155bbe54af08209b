//! Which records wait for which partition's transaction: batches fill per partition, at most one batch per
//! partition is committing at a time (its commits stay in offset order), and a partition that had to seek back drops
//! what was read from its old position.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;

/// Records of one partition waiting for their transaction.
struct Pending {
    records: Vec<OwnedMessage>,
    since: Instant,
}

/// The processing loop's bookkeeping of batches, free of I/O so it can be tested alone.
#[derive(Default)]
pub struct Flow {
    pending: BTreeMap<i32, Pending>,
    /// Partitions with a batch committing now.
    busy: HashSet<i32>,
    /// After a seek, records of the partition still in flight from the old position are dropped until the record
    /// at the sought offset arrives.
    seeking: HashMap<i32, i64>,
}

impl Flow {
    /// Adds a record read from Kafka to its partition's batch (or drops it while the partition seeks).
    pub fn push(&mut self, message: OwnedMessage) {
        let partition = message.partition();
        if let Some(target) = self.seeking.get(&partition).copied() {
            if message.offset() != target {
                return;
            }
            self.seeking.remove(&partition);
        }
        let entry =
            self.pending.entry(partition).or_insert_with(|| Pending { records: Vec::new(), since: Instant::now() });
        entry.records.push(message);
    }

    /// Takes every batch that is full or has waited `max_wait` and whose partition has none committing, and marks
    /// those partitions busy.
    pub fn ready(&mut self, max_records: usize, max_wait: Duration) -> Vec<(i32, Vec<OwnedMessage>)> {
        let now = Instant::now();
        let ready: Vec<i32> = self
            .pending
            .iter()
            .filter(|(p, b)| !self.busy.contains(p) && (b.records.len() >= max_records || now >= b.since + max_wait))
            .map(|(p, _)| *p)
            .collect();
        ready
            .into_iter()
            .map(|p| {
                self.busy.insert(p);
                (p, self.pending.remove(&p).expect("listed").records)
            })
            .collect()
    }

    /// When the oldest batch that could start is due; `None` when there is none.
    pub fn due(&self, max_wait: Duration) -> Option<Instant> {
        self.pending.iter().filter(|(p, _)| !self.busy.contains(p)).map(|(_, b)| b.since + max_wait).min()
    }

    /// Whether some batch is full (it waits only for its partition's commit in flight).
    pub fn has_full(&self, max_records: usize) -> bool {
        self.pending.values().any(|b| b.records.len() >= max_records)
    }

    /// Records that a partition's batch finished; `seek` is the offset it must be read from again, if any.
    pub fn settle(&mut self, partition: i32, seek: Option<i64>) {
        self.busy.remove(&partition);
        if let Some(offset) = seek {
            // What was read after the refused batch continues the old position: read it again from `offset`.
            self.pending.remove(&partition);
            self.seeking.insert(partition, offset);
        }
    }

    /// Every waiting batch, for the last commits at shutdown (nothing is committing then).
    pub fn take_all(&mut self) -> Vec<(i32, Vec<OwnedMessage>)> {
        std::mem::take(&mut self.pending).into_iter().map(|(p, b)| (p, b.records)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(Some(vec![1]), None, "t".into(), Timestamp::NotAvailable, partition, offset, None)
    }

    fn offsets(batch: &[OwnedMessage]) -> Vec<i64> {
        batch.iter().map(|m| m.offset()).collect()
    }

    #[test]
    fn a_partition_with_a_batch_committing_gets_no_second_batch_until_it_settles() {
        let mut flow = Flow::default();
        (0..3).for_each(|o| flow.push(record(0, o)));
        let first = flow.ready(2, Duration::from_secs(60));
        assert_eq!(first.len(), 1);
        assert_eq!(offsets(&first[0].1), [0, 1, 2]);
        (3..6).for_each(|o| flow.push(record(0, o)));
        flow.push(record(1, 0));
        assert!(flow.has_full(2));
        let next = flow.ready(2, Duration::ZERO);
        assert_eq!(next.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [1], "partition 0 is still committing");
        assert!(flow.due(Duration::ZERO).is_none(), "nothing can start, so nothing is due");
        flow.settle(0, None);
        let after = flow.ready(2, Duration::from_secs(60));
        assert_eq!(offsets(&after[0].1), [3, 4, 5]);
    }

    #[test]
    fn a_batch_waits_for_its_time_unless_full() {
        let mut flow = Flow::default();
        flow.push(record(0, 0));
        assert!(flow.ready(10, Duration::from_secs(60)).is_empty());
        assert!(flow.due(Duration::from_secs(60)).is_some());
        assert_eq!(flow.ready(10, Duration::ZERO).len(), 1);
    }

    #[test]
    fn a_seek_drops_what_was_read_after_the_refused_batch_until_the_sought_record() {
        let mut flow = Flow::default();
        (5..7).for_each(|o| flow.push(record(0, o)));
        let _ = flow.ready(1, Duration::ZERO);
        (7..9).for_each(|o| flow.push(record(0, o)));
        flow.settle(0, Some(2));
        assert!(flow.take_all().is_empty(), "records read from the old position are dropped");
        flow.push(record(0, 9));
        flow.push(record(0, 2));
        flow.push(record(0, 3));
        let batch = flow.take_all();
        assert_eq!(offsets(&batch[0].1), [2, 3]);
    }
}
