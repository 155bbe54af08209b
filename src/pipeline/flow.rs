//! Which records wait for which partition's transaction: batches fill per partition, at most one batch per
//! partition is committing at a time (its commits stay in offset order), a partition that had to seek back drops
//! what was read from its old position, and each batch says from which offset librdkafka's delivery of its
//! records was continuous, so the batch can tell offsets that hold no readable record from records never read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;

/// Records of one partition, in the order librdkafka delivered them, ready for one transaction.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The records, in offset order.
    pub records: Vec<OwnedMessage>,
    /// The offset from which every offset up to the last record was either delivered or skipped by librdkafka in
    /// one continuous read (no seek, no new assignment in between): the offset after the previous record it
    /// delivered, or the offset it was told to seek to. `None` when the batch starts a read (a new assignment).
    ///
    /// librdkafka skips only offsets that hold no record a consumer may read (transaction markers, aborted or
    /// compacted records) or that the broker no longer has (deleted by retention, after which it resumes at the
    /// log start); so a gap inside this span never hides a record that is still there.
    pub continuous_from: Option<i64>,
}

impl Batch {
    /// The first offset the batch vouches for: offsets from here to its last record were read through.
    pub fn vouched_from(&self) -> Option<i64> {
        let first = self.records.first()?.offset();
        Some(self.continuous_from.map_or(first, |from| from.min(first)))
    }

    /// The batch cut in two at its middle record (it has at least two); the back half vouches for the offsets
    /// from the front half's last record on, as the whole batch did.
    pub fn halves(&self) -> (Batch, Batch) {
        let (front, back) = self.records.split_at(self.records.len() / 2);
        let resume = front.last().map(|m| m.offset() + 1);
        (
            Batch { records: front.to_vec(), continuous_from: self.continuous_from },
            Batch { records: back.to_vec(), continuous_from: resume },
        )
    }
}

/// Records of one partition waiting for their transaction.
struct Pending {
    batch: Batch,
    since: Instant,
}

/// The processing loop's bookkeeping of batches, free of I/O so it can be tested alone.
#[derive(Default)]
pub struct Flow {
    pending: BTreeMap<i32, Pending>,
    /// Partitions with a batch committing now.
    busy: HashSet<i32>,
    /// When each partition's batch committing now started.
    committing_since: HashMap<i32, Instant>,
    /// After a seek, records of the partition still in flight from the old position are dropped until the first
    /// record at or after the sought offset arrives.
    seeking: HashMap<i32, i64>,
    /// Per partition, the offset after the last record delivered in the current continuous read.
    next: HashMap<i32, i64>,
    /// Partitions (re)assigned while a batch of theirs was committing: that batch belongs to the old read, so the
    /// seek it may ask for when it settles must not steer the new one.
    superseded: HashSet<i32>,
}

impl Flow {
    /// Adds a record read from Kafka to its partition's batch (or drops it while the partition seeks).
    pub fn push(&mut self, message: OwnedMessage) {
        let partition = message.partition();
        if let Some(target) = self.seeking.get(&partition).copied() {
            // librdkafka discards what it fetched from before a seek, so the first record at or after the target
            // is the first of the new read; anything below it is a leftover.
            if message.offset() < target {
                return;
            }
            self.seeking.remove(&partition);
            self.next.insert(partition, target);
        }
        let continuous_from = self.next.insert(partition, message.offset() + 1);
        let entry = self.pending.entry(partition).or_insert_with(|| Pending {
            batch: Batch { records: Vec::new(), continuous_from },
            since: Instant::now(),
        });
        entry.batch.records.push(message);
    }

    /// Takes every batch that is full or has waited `max_wait` and whose partition has none committing, and marks
    /// those partitions busy.
    pub fn ready(&mut self, max_records: usize, max_wait: Duration) -> Vec<(i32, Batch)> {
        let now = Instant::now();
        let ready: Vec<i32> = self
            .pending
            .iter()
            .filter(|(p, b)| {
                !self.busy.contains(p) && (b.batch.records.len() >= max_records || now >= b.since + max_wait)
            })
            .map(|(p, _)| *p)
            .collect();
        ready
            .into_iter()
            .map(|p| {
                self.busy.insert(p);
                self.committing_since.insert(p, now);
                let mut waiting = self.pending.remove(&p).expect("listed");
                if waiting.batch.records.len() <= max_records {
                    return (p, waiting.batch);
                }
                // More than a batch waited while the one before committed: the first `max_records` go now, the rest
                // wait on, continuing this read from the last record taken.
                let rest = waiting.batch.records.split_off(max_records);
                let resume = waiting.batch.records.last().map(|m| m.offset() + 1);
                let batch = Batch { records: rest, continuous_from: resume };
                self.pending.insert(p, Pending { batch, since: waiting.since });
                (p, waiting.batch)
            })
            .collect()
    }

    /// The partitions with at least `limit` records waiting whose batch in flight has been committing for `stall`
    /// or longer at `now` (waiting for a lock, or for PostgreSQL to come back): reading them pauses, so the others
    /// go on.
    pub fn stalled(&self, limit: usize, stall: Duration, now: Instant) -> BTreeSet<i32> {
        self.full(limit)
            .into_iter()
            .filter(|p| {
                self.committing_since.get(p).is_some_and(|since| now.saturating_duration_since(*since) >= stall)
            })
            .collect()
    }

    /// When the next partition with at least `limit` records waiting will count as stalled (see [`Flow::stalled`]),
    /// so the loop wakes to pause it.
    pub fn stall_due(&self, limit: usize, stall: Duration) -> Option<Instant> {
        self.full(limit).iter().filter_map(|p| self.committing_since.get(p)).map(|since| *since + stall).min()
    }

    /// How many records of `partition` wait for a batch.
    pub fn waiting(&self, partition: i32) -> usize {
        self.pending.get(&partition).map_or(0, |b| b.batch.records.len())
    }

    /// When the oldest batch that could start is due; `None` when there is none.
    pub fn due(&self, max_wait: Duration) -> Option<Instant> {
        self.pending.iter().filter(|(p, _)| !self.busy.contains(p)).map(|(_, b)| b.since + max_wait).min()
    }

    /// The partitions with at least `limit` records waiting (for their partition's commit in flight): reading them
    /// pauses until their batches start, so memory stays bounded while the other partitions go on.
    pub fn full(&self, limit: usize) -> BTreeSet<i32> {
        self.pending.iter().filter(|(_, b)| b.batch.records.len() >= limit).map(|(p, _)| *p).collect()
    }

    /// Whether nothing is waiting and nothing is committing.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.busy.is_empty()
    }

    /// Records that a partition's batch finished; `seek` is the offset it must be read from again, if any.
    pub fn settle(&mut self, partition: i32, seek: Option<i64>) {
        self.busy.remove(&partition);
        self.committing_since.remove(&partition);
        if self.superseded.remove(&partition) {
            return;
        }
        if let Some(offset) = seek {
            // What was read after the refused batch continues the old position: read it again from `offset`.
            self.pending.remove(&partition);
            self.next.remove(&partition);
            self.seeking.insert(partition, offset);
        }
    }

    /// Forgets what was read of partitions (re)assigned to this consumer: librdkafka starts them afresh at the
    /// group's committed offset, so what follows is a new read. Records still waiting from the earlier assignment
    /// are dropped (the fence makes the partition read them again if they were not applied), so no batch spans two
    /// reads. A batch of theirs still committing finishes, and the partition gets no other batch before it settles.
    pub fn reassigned(&mut self, partitions: &[i32]) {
        for partition in partitions {
            if self.busy.contains(partition) {
                self.superseded.insert(*partition);
            }
            self.pending.remove(partition);
            self.seeking.remove(partition);
            self.next.remove(partition);
        }
    }

    /// Every waiting batch, for the last commits at shutdown (nothing is committing then).
    pub fn take_all(&mut self) -> Vec<(i32, Batch)> {
        std::mem::take(&mut self.pending).into_iter().map(|(p, b)| (p, b.batch)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(Some(vec![1]), None, "t".into(), Timestamp::NotAvailable, partition, offset, None)
    }

    fn offsets(batch: &Batch) -> Vec<i64> {
        batch.records.iter().map(|m| m.offset()).collect()
    }

    #[test]
    fn a_partition_with_a_batch_committing_gets_no_second_batch_until_it_settles() {
        let mut flow = Flow::default();
        (0..2).for_each(|o| flow.push(record(0, o)));
        let first = flow.ready(2, Duration::from_secs(60));
        assert_eq!(first.len(), 1);
        assert_eq!(offsets(&first[0].1), [0, 1]);
        (2..5).for_each(|o| flow.push(record(0, o)));
        flow.push(record(1, 0));
        assert_eq!(flow.full(2), BTreeSet::from([0]));
        let next = flow.ready(2, Duration::ZERO);
        assert_eq!(next.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [1], "partition 0 is still committing");
        assert!(flow.due(Duration::ZERO).is_none(), "nothing can start, so nothing is due");
        flow.settle(0, None);
        let after = flow.ready(2, Duration::from_secs(60));
        assert_eq!(offsets(&after[0].1), [2, 3]);
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
    fn a_seek_drops_what_was_read_after_the_refused_batch_until_the_new_read_starts() {
        let mut flow = Flow::default();
        (5..7).for_each(|o| flow.push(record(0, o)));
        let _ = flow.ready(1, Duration::ZERO);
        (7..9).for_each(|o| flow.push(record(0, o)));
        flow.settle(0, Some(2));
        assert!(flow.take_all().is_empty(), "records read from the old position are dropped");
        flow.push(record(0, 1));
        flow.push(record(0, 2));
        flow.push(record(0, 3));
        let batch = flow.take_all().remove(0).1;
        assert_eq!(offsets(&batch), [2, 3]);
        assert_eq!(batch.vouched_from(), Some(2));
    }

    #[test]
    fn the_first_record_after_a_seek_vouches_for_the_offsets_librdkafka_skipped_to_reach_it() {
        let mut flow = Flow::default();
        flow.push(record(0, 40));
        let _ = flow.ready(1, Duration::ZERO);
        flow.settle(0, Some(10));
        // Offsets 10..25 were deleted by retention: librdkafka resumed at the log start.
        flow.push(record(0, 25));
        let batch = flow.take_all().remove(0).1;
        assert_eq!((batch.continuous_from, batch.vouched_from()), (Some(10), Some(10)));
    }

    #[test]
    fn a_batch_continues_the_read_of_the_batch_before_it_across_a_skipped_offset() {
        let mut flow = Flow::default();
        (0..3).for_each(|o| flow.push(record(0, o)));
        let first = flow.ready(3, Duration::ZERO).remove(0).1;
        assert_eq!(first.continuous_from, None, "the first batch of a read vouches only for its own records");
        assert_eq!(first.vouched_from(), Some(0));
        // Offset 3 is a transaction marker: librdkafka never delivers it.
        flow.push(record(0, 4));
        flow.settle(0, None);
        let second = flow.ready(3, Duration::ZERO).remove(0).1;
        assert_eq!(second.continuous_from, Some(3));
    }

    #[test]
    fn a_new_assignment_starts_a_new_read_and_drops_what_waited() {
        let mut flow = Flow::default();
        (0..3).for_each(|o| flow.push(record(0, o)));
        flow.push(record(1, 7));
        flow.reassigned(&[0]);
        flow.push(record(0, 9));
        let batches = flow.take_all();
        assert_eq!(batches.len(), 2);
        let (zero, one) = (&batches[0].1, &batches[1].1);
        assert_eq!((offsets(zero), zero.continuous_from), (vec![9], None));
        assert_eq!(offsets(one), [7], "other partitions keep their batches");
    }

    #[test]
    fn a_batch_of_the_old_read_that_settles_after_a_new_assignment_does_not_steer_the_new_read() {
        let mut flow = Flow::default();
        (0..3).for_each(|o| flow.push(record(0, o)));
        let _ = flow.ready(1, Duration::ZERO);
        flow.reassigned(&[0]);
        // The new read starts at the group's committed offset, which may lie past the old batch's seek target.
        flow.push(record(0, 20));
        assert!(flow.ready(1, Duration::ZERO).is_empty(), "the old batch is still committing");
        flow.settle(0, Some(3));
        let batch = flow.ready(1, Duration::ZERO).remove(0).1;
        assert_eq!((offsets(&batch), batch.continuous_from), (vec![20], None));
    }

    #[test]
    fn a_batch_never_holds_more_than_max_records_and_the_rest_continues_its_read() {
        let mut flow = Flow::default();
        (0..3).for_each(|o| flow.push(record(0, o)));
        let _ = flow.ready(3, Duration::ZERO);
        (3..10).for_each(|o| flow.push(record(0, o)));
        flow.settle(0, None);
        let next = flow.ready(3, Duration::from_secs(60)).remove(0).1;
        assert_eq!((offsets(&next), next.continuous_from), (vec![3, 4, 5], Some(3)));
        flow.settle(0, None);
        let then = flow.ready(3, Duration::from_secs(60)).remove(0).1;
        assert_eq!((offsets(&then), then.continuous_from), (vec![6, 7, 8], Some(6)));
        flow.settle(0, None);
        assert!(flow.ready(3, Duration::from_secs(60)).is_empty(), "one record is not a full batch yet");
    }

    #[test]
    fn a_partition_counts_as_stalled_once_its_batch_has_committed_for_the_stall_time_with_enough_waiting() {
        let mut flow = Flow::default();
        (0..2).for_each(|o| flow.push(record(0, o)));
        (0..2).for_each(|o| flow.push(record(1, o)));
        let _ = flow.ready(1, Duration::ZERO);
        (2..6).for_each(|o| flow.push(record(0, o)));
        flow.push(record(1, 2));
        let later = Instant::now() + Duration::from_secs(3);
        assert!(flow.stalled(4, Duration::from_secs(2), Instant::now()).is_empty(), "not committing long enough");
        assert_eq!(flow.stalled(4, Duration::from_secs(2), later), BTreeSet::from([0]), "partition 1 waits too little");
        flow.settle(0, None);
        assert!(flow.stalled(4, Duration::from_secs(2), later).is_empty(), "its commit finished");
    }

    #[test]
    fn only_the_partitions_with_a_full_batch_count_as_full() {
        let mut flow = Flow::default();
        (0..3).for_each(|o| flow.push(record(0, o)));
        flow.push(record(1, 0));
        (0..3).for_each(|o| flow.push(record(2, o)));
        assert_eq!(flow.full(3), BTreeSet::from([0, 2]));
        let _ = flow.ready(3, Duration::from_secs(60));
        assert!(flow.full(3).is_empty(), "full batches left for their commits");
    }

    #[test]
    fn idle_means_nothing_waits_and_nothing_commits() {
        let mut flow = Flow::default();
        assert!(flow.is_idle());
        flow.push(record(0, 0));
        assert!(!flow.is_idle());
        let _ = flow.ready(1, Duration::ZERO);
        assert!(!flow.is_idle(), "a batch is committing");
        flow.settle(0, None);
        assert!(flow.is_idle());
    }
}
