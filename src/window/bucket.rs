//! One tumbling bucket of a breaker's window, and the summary of a set of buckets.
//!
//! A bucket is the unit of storage and of merging: the store keeps one row per (breaker, bucket start) and merges
//! each partition's contribution into it with [`Bucket::merge`]; a decision reads the rows of a window and
//! summarizes them with [`WindowSummary::of_buckets`]. Both operations are exact and independent of order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sketch::DriftSketch;
use crate::drift::Observation;

/// What a window bucket holds: the drift scores of its events as a sketch, and counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Drift scores of the events whose V2 run succeeded; its count is the bucket's sample count.
    pub drift: DriftSketch,
    /// Events whose V2 output broke its schema.
    pub schema_errors: u64,
    /// Events whose V2 run failed or timed out (no drift score).
    pub unscored: u64,
}

impl Bucket {
    /// Adds one event's contribution.
    pub fn record(&mut self, observation: Observation) {
        match observation {
            Observation::Drift(score) => self.drift.add(score),
            Observation::SchemaError => self.schema_errors += 1,
            Observation::NoScore => self.unscored += 1,
        }
    }

    /// Adds everything `other` holds, e.g. another partition's contribution to the same bucket.
    pub fn merge(&mut self, other: &Bucket) {
        self.drift.merge(&other.drift);
        self.schema_errors += other.schema_errors;
        self.unscored += other.unscored;
    }

    /// Events with a drift score.
    pub fn samples(&self) -> u64 {
        self.drift.count()
    }

    /// Whether the bucket holds no event at all.
    pub fn is_empty(&self) -> bool {
        self.samples() == 0 && self.schema_errors == 0 && self.unscored == 0
    }
}

/// What a decision sees of a window: its bounds, its p95 drift and its counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSummary {
    /// Start of the first bucket included (inclusive).
    pub start: DateTime<Utc>,
    /// End of the last bucket included (exclusive).
    pub end: DateTime<Utc>,
    /// Nearest-rank p95 of the drift scores (relative accuracy 0.75 %); `None` without samples.
    pub p95_drift: Option<f64>,
    /// The largest drift score (exact).
    pub max_drift: Option<f64>,
    /// Events with a drift score.
    pub sample_count: u64,
    /// Events whose V2 output broke its schema.
    pub schema_errors: u64,
    /// Events whose V2 run failed or timed out.
    pub unscored: u64,
}

impl WindowSummary {
    /// Summarizes the buckets whose start lies in `[start, end)`; others are ignored, so the caller may pass a
    /// superset (e.g. all stored rows of a breaker).
    pub fn of_buckets<'a>(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        buckets: impl IntoIterator<Item = (DateTime<Utc>, &'a Bucket)>,
    ) -> Self {
        let mut total = Bucket::default();
        for (_, bucket) in buckets.into_iter().filter(|(at, _)| (start..end).contains(at)) {
            total.merge(bucket);
        }
        WindowSummary {
            start,
            end,
            p95_drift: total.drift.p95(),
            max_drift: total.drift.max(),
            sample_count: total.samples(),
            schema_errors: total.schema_errors,
            unscored: total.unscored,
        }
    }

    /// A summary of no events over `[start, end)`.
    pub fn empty(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self::of_buckets(start, end, [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    #[test]
    fn a_bucket_counts_each_kind_of_observation() {
        let mut bucket = Bucket::default();
        for o in [Observation::Drift(0.1), Observation::Drift(0.3), Observation::SchemaError, Observation::NoScore] {
            bucket.record(o);
        }
        assert_eq!((bucket.samples(), bucket.schema_errors, bucket.unscored), (2, 1, 1));
        assert!(!bucket.is_empty());
        assert!(Bucket::default().is_empty());
    }

    #[test]
    fn a_bucket_survives_a_json_round_trip_and_merges_into_stored_state() {
        let mut stored = Bucket::default();
        stored.record(Observation::Drift(0.25));
        stored.record(Observation::SchemaError);
        let mut stored: Bucket = serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
        let mut delta = Bucket::default();
        delta.record(Observation::Drift(0.5));
        let delta: Bucket = serde_json::from_str(&serde_json::to_string(&delta).unwrap()).unwrap();
        stored.merge(&delta);
        assert_eq!((stored.samples(), stored.schema_errors), (2, 1));
        assert_eq!(stored.drift.max(), Some(0.5));
    }

    #[test]
    fn a_summary_includes_only_buckets_that_start_inside_its_bounds() {
        let mut inside = Bucket::default();
        inside.record(Observation::Drift(0.1));
        let mut outside = Bucket::default();
        outside.record(Observation::Drift(0.9));
        outside.record(Observation::SchemaError);
        let buckets = [(at(0), &outside), (at(10), &inside), (at(20), &outside)];
        let summary = WindowSummary::of_buckets(at(10), at(20), buckets);
        assert_eq!(summary.sample_count, 1);
        assert_eq!(summary.schema_errors, 0);
        assert_eq!(summary.p95_drift, Some(0.1));
        assert_eq!((summary.start, summary.end), (at(10), at(20)));
    }

    #[test]
    fn an_empty_summary_has_no_p95() {
        let summary = WindowSummary::empty(at(0), at(300));
        assert_eq!((summary.p95_drift, summary.sample_count), (None, 0));
    }
}
