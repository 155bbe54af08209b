//! The rolling window of a breaker, in event time: tumbling buckets (default 10 s) inside a window (default
//! 5 min), each holding a drift sketch and counts.
//!
//! # When a bucket is closed
//! A bucket `[s, s + bucket)` is *closed* once event time has reached `s + bucket`; a decision is made once per
//! closed bucket, over the window that ends at that bucket's end. Event time is a watermark, never a clock:
//! - For one stream (a file, one partition), the watermark is the largest `occurred_at` seen so far, so the first
//!   event at or after a bucket's end closes it (and every empty bucket before it, in order).
//! - For several partitions feeding one breaker, the watermark of the merged stream is the **minimum over the
//!   partitions** of each partition's largest `occurred_at` ([`Watermarks`]). A bucket closes only when every
//!   partition has moved past it, so a slow partition's events still land before the bucket is judged, and N
//!   consumers decide as one would. A partition that stops receiving events holds buckets open; the live
//!   processor must drop an idle or revoked partition from [`Watermarks`] by its own policy, which is the only
//!   place where a wall clock may enter.
//!
//! # Late events
//! An event lands in its bucket while that bucket is still inside the window of the newest bucket (the one the
//! watermark is in), even if the bucket was already closed and judged: later decisions, whose windows still cover
//! it, see it. An event whose bucket has left the window is counted as too late and dropped.

mod bucket;
mod sketch;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

pub use bucket::{Bucket, WindowSummary};
pub use sketch::{DriftSketch, MIN_POSITIVE, RELATIVE_ACCURACY, SketchError};

use crate::drift::Observation;

/// The shape of a window: bucket length and window length, a whole number of buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    bucket_ms: i64,
    buckets: i64,
}

/// Why a window shape or a merge of windows is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The bucket length is not positive.
    #[error("bucket length must be positive, got {0} ms")]
    EmptyBucket(i64),
    /// The window is not a positive whole number of buckets.
    #[error("window length {window_ms} ms is not a positive multiple of the bucket length {bucket_ms} ms")]
    NotAMultiple {
        /// The window length.
        window_ms: i64,
        /// The bucket length.
        bucket_ms: i64,
    },
    /// Windows of different shapes cannot be merged.
    #[error("cannot merge windows of different shapes ({ours:?} and {theirs:?})")]
    DifferentShapes {
        /// This window's shape.
        ours: WindowSpec,
        /// The other window's shape.
        theirs: WindowSpec,
    },
}

impl WindowSpec {
    /// A window of `window` made of tumbling buckets of `bucket`.
    pub fn new(bucket: TimeDelta, window: TimeDelta) -> Result<Self, WindowError> {
        let (bucket_ms, window_ms) = (bucket.num_milliseconds(), window.num_milliseconds());
        if bucket_ms <= 0 {
            return Err(WindowError::EmptyBucket(bucket_ms));
        }
        if window_ms <= 0 || window_ms % bucket_ms != 0 {
            return Err(WindowError::NotAMultiple { window_ms, bucket_ms });
        }
        Ok(WindowSpec { bucket_ms, buckets: window_ms / bucket_ms })
    }

    /// The length of one bucket.
    pub fn bucket(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.bucket_ms)
    }

    /// The length of the window.
    pub fn length(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.bucket_ms * self.buckets)
    }

    /// The start of the bucket that holds `at` (buckets are aligned on the Unix epoch).
    pub fn bucket_start(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let ms = at.timestamp_millis().div_euclid(self.bucket_ms) * self.bucket_ms;
        DateTime::from_timestamp_millis(ms).expect("a bucket start precedes a valid time by less than a bucket")
    }

    /// The oldest bucket start still inside the window whose newest bucket starts at `newest`.
    fn horizon(&self, newest: DateTime<Utc>) -> DateTime<Utc> {
        newest - TimeDelta::milliseconds(self.bucket_ms * (self.buckets - 1))
    }
}

/// Where an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Into its bucket.
    Recorded,
    /// Nowhere: its bucket had already left the window.
    TooLate,
}

/// The buckets of one breaker's window, for one stream or the merge of several.
#[derive(Debug, Clone)]
pub struct Window {
    spec: WindowSpec,
    buckets: BTreeMap<DateTime<Utc>, Bucket>,
    /// Start of the bucket the watermark is in (the newest, still open bucket).
    newest: Option<DateTime<Utc>>,
    too_late: u64,
}

impl Window {
    /// An empty window of the given shape.
    pub fn new(spec: WindowSpec) -> Self {
        Window { spec, buckets: BTreeMap::new(), newest: None, too_late: 0 }
    }

    /// The window's shape.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Moves the watermark to `watermark` (a watermark never moves back) and returns the ends of the buckets
    /// that closed, oldest first, so the caller can decide once per closed bucket with [`Window::summary_ending`].
    pub fn advance(&mut self, watermark: DateTime<Utc>) -> ClosedBuckets {
        let target = self.spec.bucket_start(watermark);
        let Some(newest) = self.newest.filter(|n| *n < target) else {
            self.newest = self.newest.or(Some(target));
            return ClosedBuckets::none(self.spec.bucket());
        };
        // Buckets older than the current window are needed by no decision from here on.
        self.evict_before(self.spec.horizon(newest));
        self.newest = Some(target);
        ClosedBuckets { next_end: newest + self.spec.bucket(), last_end: target, step: self.spec.bucket() }
    }

    /// Adds one event at event time `at` to its bucket, unless that bucket has left the window.
    pub fn record(&mut self, at: DateTime<Utc>, observation: Observation) -> Placement {
        let start = self.spec.bucket_start(at);
        if self.newest.is_some_and(|newest| start < self.spec.horizon(newest)) {
            self.too_late += 1;
            return Placement::TooLate;
        }
        self.buckets.entry(start).or_default().record(observation);
        Placement::Recorded
    }

    /// The summary of the window that ends at `end`: the buckets starting in `[end − length, end)`.
    pub fn summary_ending(&self, end: DateTime<Utc>) -> WindowSummary {
        self.summary_between(end - self.spec.length(), end)
    }

    /// The summary of the buckets starting in `[start, end)` (e.g. only those since a breaker went half-open).
    pub fn summary_between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> WindowSummary {
        let range = if start < end { self.buckets.range(start..end) } else { self.buckets.range(end..end) };
        WindowSummary::of_buckets(start, end, range.map(|(at, b)| (*at, b)))
    }

    /// Whether any bucket starting in `[start, end)` holds an event.
    pub fn has_events_between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        start < end && self.buckets.range(start..end).any(|(_, b)| !b.is_empty())
    }

    /// The buckets of the current window (the one the newest bucket ends), by start, oldest first: what a store
    /// persists and merges. Older buckets may still be held for the decisions of the last advance.
    pub fn buckets(&self) -> impl Iterator<Item = (DateTime<Utc>, &Bucket)> {
        let horizon = self.newest.map_or(DateTime::<Utc>::MIN_UTC, |newest| self.spec.horizon(newest));
        self.buckets.range(horizon..).map(|(at, b)| (*at, b))
    }

    /// Events dropped because their bucket had left the window.
    pub fn too_late(&self) -> u64 {
        self.too_late
    }

    /// Merges another stream's window into this one: the result is the window of the merged stream (buckets
    /// add, the newest bucket is the later of the two, and buckets that left the merged window are dropped).
    pub fn merge(&mut self, other: &Window) -> Result<(), WindowError> {
        if self.spec != other.spec {
            return Err(WindowError::DifferentShapes { ours: self.spec, theirs: other.spec });
        }
        for (start, bucket) in &other.buckets {
            self.buckets.entry(*start).or_default().merge(bucket);
        }
        self.too_late += other.too_late;
        self.newest = self.newest.max(other.newest);
        if let Some(newest) = self.newest {
            self.evict_before(self.spec.horizon(newest));
        }
        Ok(())
    }

    fn evict_before(&mut self, horizon: DateTime<Utc>) {
        self.buckets = self.buckets.split_off(&horizon);
    }
}

/// The ends of the buckets that one advance of the watermark closed, oldest first.
#[derive(Debug, Clone)]
pub struct ClosedBuckets {
    next_end: DateTime<Utc>,
    last_end: DateTime<Utc>,
    step: TimeDelta,
}

impl ClosedBuckets {
    fn none(step: TimeDelta) -> Self {
        ClosedBuckets { next_end: DateTime::UNIX_EPOCH + step, last_end: DateTime::UNIX_EPOCH, step }
    }
}

impl Iterator for ClosedBuckets {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<Self::Item> {
        (self.next_end <= self.last_end).then(|| {
            let end = self.next_end;
            self.next_end += self.step;
            end
        })
    }
}

/// The event-time watermark of several partitions feeding one breaker: the minimum over partitions of each
/// partition's largest event time (see the module documentation for why).
#[derive(Debug, Clone, Default)]
pub struct Watermarks {
    by_partition: BTreeMap<i32, DateTime<Utc>>,
}

impl Watermarks {
    /// No partition yet.
    pub fn new() -> Self {
        Watermarks::default()
    }

    /// Notes an event of `partition` at `at`; a partition's watermark never moves back.
    pub fn observe(&mut self, partition: i32, at: DateTime<Utc>) {
        let mark = self.by_partition.entry(partition).or_insert(at);
        *mark = (*mark).max(at);
    }

    /// Stops waiting for `partition` (revoked, or idle by the caller's policy).
    pub fn remove(&mut self, partition: i32) {
        self.by_partition.remove(&partition);
    }

    /// The merged stream's watermark: buckets ending at or before it are closed. `None` before any event.
    pub fn merged(&self) -> Option<DateTime<Utc>> {
        self.by_partition.values().min().copied()
    }
}

#[cfg(test)]
mod tests;
