//! A mergeable quantile sketch of drift scores: `sketches-ddsketch` with a configuration chosen for drift, a
//! nearest-rank p95, and an exact, portable serialized form.
//!
//! What the crate (0.4.2) does, read from its source, and what follows here:
//! - Relative accuracy: a value `v` lands in bin `k = ⌊log_γ v⌋` with `γ = (1+α)/(1−α)`, and bin `k` reports
//!   `γ^k·(1+α)`, so every reported value is within `α` of a value of the same rank. The 1 % budget is met with
//!   `α = 0.75 %`, leaving room for floating-point effects at bin edges.
//! - Zeros and tiny values: values `≤ min_value` (1e-9 here, the crate's default) are counted in `zero_count` and
//!   reported as exactly 0. A drift score is 0 or at least `0.6 / v1_cost`, so only V1 costs above 6·10^8 cents can
//!   produce a positive score below 1e-9; such a score is reported as 0, an absolute error under 1e-9 that no
//!   threshold can see. Many zeros cost nothing and are exact.
//! - Bins: a dense store limited to 2048 bins that collapses its *lowest* bins when full. With `α = 0.75 %`,
//!   2048 bins span a factor of 2·10^13, more than [1e-9, 1], so drift scores never collapse anything.
//! - Rank: the crate's `quantile(q)` picks rank `⌊q·(n−1)⌋` (0-based), which is not the nearest rank
//!   `⌈q·n⌉` (1-based) our oracle and the older system use; for n = 10 it picks the 9th value instead of the
//!   10th. `p95` here computes the nearest rank in integers and asks the crate for exactly that rank. The answer
//!   is clamped to the exact min and max the crate keeps, so a constant stream reports its value exactly.
//! - Merge: exact (bin counts add) and independent of order; it fails only across different configurations.
//! - Serialization: the crate's serde form carries its configuration as floats, and `serde_json` does not read
//!   every float back bit for bit, after which merges fail as "different configs". The crate's binary encoding
//!   (DataDog's Java format: bins as varints, min/max/sum as raw bits) is exact and compact, so the serde form
//!   of a [`DriftSketch`] is those bytes (`null` when empty). A decoded sketch is checked against this
//!   configuration and rejected if it differs.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// The sketch's relative accuracy α: a reported quantile is within this fraction of a value of the same rank.
pub const RELATIVE_ACCURACY: f64 = 0.0075;
/// Positive values at or below this are counted as zero (the crate's default and the value its binary decoder
/// assumes).
pub const MIN_POSITIVE: f64 = 1e-9;
/// The crate's bin limit (its binary decoder assumes it too).
const MAX_BINS: u32 = 2048;

fn config() -> Config {
    Config::new(RELATIVE_ACCURACY, MAX_BINS, MIN_POSITIVE)
}

/// Why stored sketch bytes could not be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SketchError {
    /// The bytes are not a DDSketch in the binary format.
    #[error("undecodable drift sketch: {0}")]
    Undecodable(String),
    /// The bytes are a sketch with another accuracy, which cannot be merged with ours.
    #[error("drift sketch has another relative accuracy than {RELATIVE_ACCURACY}")]
    OtherAccuracy,
}

/// A mergeable sketch of drift scores (values in [0, 1]) with relative accuracy [`RELATIVE_ACCURACY`].
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Option<Vec<u8>>", into = "Option<Vec<u8>>")]
pub struct DriftSketch {
    // `None` until the first value: an empty sketch allocates nothing and serializes as `null`.
    inner: Option<DDSketch>,
}

impl DriftSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        DriftSketch::default()
    }

    /// Adds one score (finite and not negative; drift scores always are).
    pub fn add(&mut self, score: f64) {
        debug_assert!(score.is_finite() && score >= 0.0, "drift score out of range: {score}");
        self.inner.get_or_insert_with(|| DDSketch::new(config())).add(score);
    }

    /// Adds every value of `other` to this sketch; the result is the same in any order of merges.
    pub fn merge(&mut self, other: &DriftSketch) {
        let Some(theirs) = &other.inner else { return };
        match &mut self.inner {
            None => self.inner = Some(theirs.clone()),
            // Both sketches were built with `config()` (decoding checks it), so the merge cannot fail.
            Some(ours) => ours.merge(theirs).expect("drift sketches share one configuration"),
        }
    }

    /// How many scores were added.
    pub fn count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |s| s.count() as u64)
    }

    /// Whether no score was added.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The exact smallest score, if any.
    pub fn min(&self) -> Option<f64> {
        self.inner.as_ref().and_then(DDSketch::min)
    }

    /// The exact largest score, if any.
    pub fn max(&self) -> Option<f64> {
        self.inner.as_ref().and_then(DDSketch::max)
    }

    /// The 95th percentile by nearest rank (the `⌈0.95·n⌉`-th smallest score), within [`RELATIVE_ACCURACY`].
    pub fn p95(&self) -> Option<f64> {
        let n = self.count();
        // ⌈95·n / 100⌉ in integers, then 0-based.
        self.at_rank((95 * n).div_ceil(100).checked_sub(1)?)
    }

    /// The score of 0-based rank `rank` (approximately, within [`RELATIVE_ACCURACY`]).
    fn at_rank(&self, rank: u64) -> Option<f64> {
        let sketch = self.inner.as_ref()?;
        let n = sketch.count() as u64;
        if rank + 1 >= n {
            return sketch.max();
        }
        // The crate takes rank ⌊q·(n−1)⌋; aiming at the middle of [rank, rank+1) survives float rounding.
        let q = (rank as f64 + 0.5) / (n - 1) as f64;
        let estimate = sketch.quantile(q).expect("q is within [0, 1]")?;
        Some(estimate.clamp(sketch.min()?, sketch.max()?))
    }

    /// The sketch in DataDog's binary DDSketch format, or `None` when empty.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        self.inner.as_ref().filter(|s| s.count() > 0).map(DDSketch::to_java_bytes)
    }

    /// Reads a sketch written by [`DriftSketch::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchError> {
        let decoded = DDSketch::from_java_bytes(bytes).map_err(|e| SketchError::Undecodable(e.to_string()))?;
        // Merging into an empty sketch of our configuration both checks the configuration and adopts it.
        let mut sketch = DDSketch::new(config());
        sketch.merge(&decoded).map_err(|_| SketchError::OtherAccuracy)?;
        Ok(DriftSketch { inner: Some(sketch).filter(|s| s.count() > 0) })
    }
}

impl std::fmt::Debug for DriftSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftSketch")
            .field("count", &self.count())
            .field("min", &self.min())
            .field("p95", &self.p95())
            .field("max", &self.max())
            .finish()
    }
}

impl TryFrom<Option<Vec<u8>>> for DriftSketch {
    type Error = SketchError;

    fn try_from(bytes: Option<Vec<u8>>) -> Result<Self, Self::Error> {
        bytes.map_or_else(|| Ok(DriftSketch::new()), |b| DriftSketch::from_bytes(&b))
    }
}

impl From<DriftSketch> for Option<Vec<u8>> {
    fn from(sketch: DriftSketch) -> Self {
        sketch.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact nearest-rank p95 of `values`: the ⌈0.95·n⌉-th smallest.
    fn oracle_p95(values: &[f64]) -> Option<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = (95 * sorted.len()).div_ceil(100).checked_sub(1)?;
        Some(sorted[rank])
    }

    fn sketch_of(values: &[f64]) -> DriftSketch {
        let mut sketch = DriftSketch::new();
        values.iter().for_each(|v| sketch.add(*v));
        sketch
    }

    /// The sketch's error against the oracle: relative for values above `MIN_POSITIVE`, absolute below.
    pub(crate) fn p95_error(values: &[f64]) -> f64 {
        let (estimate, exact) = (sketch_of(values).p95().unwrap(), oracle_p95(values).unwrap());
        if exact <= MIN_POSITIVE { (estimate - exact).abs() } else { (estimate - exact).abs() / exact }
    }

    /// The binary form without the float sum (whose last bits depend on the order of additions): equal contents
    /// mean equal counts, min, max, zero count and bin counts.
    fn contents(sketch: &DriftSketch) -> Vec<u8> {
        let Some(mut bytes) = sketch.to_bytes() else { return Vec::new() };
        // Layout: A0 <var count> 88 <min: 8> 8C <max: 8> [84 <sum: 8>] ...
        assert_eq!(bytes[0], 0xA0);
        let count_len = bytes[1..].iter().take(9).position(|b| *b < 0x80).map_or(9, |i| i + 1);
        let sum_at = 1 + count_len + 18;
        if bytes.get(sum_at) == Some(&0x84) {
            bytes.drain(sum_at..sum_at + 9);
        }
        bytes
    }

    /// Drift-like values: many exact zeros, a bulk of small scores, a heavy tail, and tiny positive values.
    fn drift_values() -> impl Strategy<Value = Vec<f64>> {
        let value = prop_oneof![
            3 => Just(0.0),
            3 => 0.0..0.2f64,
            2 => (1e-9f64.ln()..0.0f64).prop_map(f64::exp),
            1 => (0.001f64..1.0).prop_map(|u| (0.01 / u).min(1.0)),
            1 => prop_oneof![Just(0.4), Just(0.6), Just(1.0), Just(0.2)],
        ];
        prop::collection::vec(value, 1..800)
    }

    /// Generic positive values over the whole range the bins cover, with a Pareto tail.
    fn wide_values() -> impl Strategy<Value = Vec<f64>> {
        let value = prop_oneof![
            1 => Just(0.0),
            2 => (1e-9f64.ln()..1e4f64.ln()).prop_map(f64::exp),
            2 => (1e-6f64..1.0).prop_map(|u| (1.0 / u.powf(1.0 / 1.1)).min(1e4)),
        ];
        prop::collection::vec(value, 1..800)
    }

    /// Shorter drift-like streams, for the merge properties that combine several.
    fn short_drift_values() -> impl Strategy<Value = Vec<f64>> {
        drift_values().prop_map(|mut v| {
            v.truncate(200);
            v
        })
    }

    proptest! {
        #[test]
        fn p95_is_within_one_percent_of_the_exact_nearest_rank_p95_for_drift_like_streams(values in drift_values()) {
            let error = p95_error(&values);
            prop_assert!(error <= 0.01, "error {error}");
            prop_assert!(error <= RELATIVE_ACCURACY * (1.0 + 1e-9), "error {error}");
        }

        #[test]
        fn p95_is_within_one_percent_for_heavy_tails_over_the_whole_range(values in wide_values()) {
            prop_assert!(p95_error(&values) <= RELATIVE_ACCURACY * (1.0 + 1e-9));
        }

        #[test]
        fn a_constant_stream_reports_its_value_exactly(value in prop_oneof![Just(0.0), 0.0..=1.0f64], n in 1usize..500) {
            let sketch = sketch_of(&vec![value; n]);
            prop_assert_eq!(sketch.p95(), Some(value));
        }

        #[test]
        fn merge_is_commutative(a in short_drift_values(), b in short_drift_values()) {
            let (sa, sb) = (sketch_of(&a), sketch_of(&b));
            let mut ab = sa.clone();
            ab.merge(&sb);
            let mut ba = sb.clone();
            ba.merge(&sa);
            prop_assert_eq!(ab.to_bytes(), ba.to_bytes());
            prop_assert_eq!(contents(&ab), contents(&ba));
        }

        #[test]
        fn merge_is_associative_and_equals_one_sketch_of_everything(
            a in short_drift_values(), b in short_drift_values(), c in short_drift_values()
        ) {
            let (sa, sb, sc) = (sketch_of(&a), sketch_of(&b), sketch_of(&c));
            let mut left = sa.clone();
            left.merge(&sb);
            left.merge(&sc);
            let mut bc = sb.clone();
            bc.merge(&sc);
            let mut right = sa.clone();
            right.merge(&bc);
            let all = sketch_of(&[a, b, c].concat());
            prop_assert_eq!(contents(&left), contents(&right));
            prop_assert_eq!(contents(&left), contents(&all));
        }

        #[test]
        fn a_sketch_survives_its_serialized_forms_and_still_merges(values in short_drift_values()) {
            let sketch = sketch_of(&values);
            let json = serde_json::to_string(&sketch).unwrap();
            let mut back: DriftSketch = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(contents(&back), contents(&sketch));
            back.merge(&sketch);
            prop_assert_eq!(back.count(), 2 * sketch.count());
        }
    }

    #[test]
    fn worst_p95_error_over_seeded_distributions_stays_under_the_accuracy() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut worst: f64 = 0.0;
        for round in 0..400 {
            let n = rng.random_range(1..3000);
            let values: Vec<f64> = (0..n)
                .map(|_| match round % 4 {
                    0 if rng.random_bool(0.7) => 0.0,
                    1 => (rng.random_range(1e-9f64.ln()..0.0)).exp(),
                    2 => (0.01 / rng.random_range(1e-4..1.0f64)).min(1.0),
                    _ => rng.random_range(0.0..1.0),
                })
                .collect();
            worst = worst.max(p95_error(&values));
        }
        eprintln!("worst p95 relative error over 400 seeded distributions: {worst:.6}");
        assert!(worst <= RELATIVE_ACCURACY * (1.0 + 1e-9), "{worst}");
    }

    #[test]
    fn p95_of_ten_values_is_the_tenth_not_the_ninth() {
        let values: Vec<f64> = (1..=10).map(|i| f64::from(i) / 10.0).collect();
        assert_eq!(sketch_of(&values).p95(), Some(1.0));
        let twenty: Vec<f64> = (1..=20).map(|i| f64::from(i) / 20.0).collect();
        let p95 = sketch_of(&twenty).p95().unwrap();
        assert!((p95 - 0.95).abs() <= 0.95 * RELATIVE_ACCURACY, "{p95}");
    }

    #[test]
    fn an_empty_sketch_has_no_p95_and_serializes_as_null() {
        let sketch = DriftSketch::new();
        assert_eq!(sketch.p95(), None);
        assert_eq!(serde_json::to_string(&sketch).unwrap(), "null");
        let back: DriftSketch = serde_json::from_str("null").unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn mostly_zeros_give_a_zero_p95_and_exact_zeros_count() {
        let mut values = vec![0.0; 96];
        values.extend([0.5; 4]);
        assert_eq!(sketch_of(&values).p95(), Some(0.0));
        values.extend([0.5; 2]);
        let p95 = sketch_of(&values).p95().unwrap();
        assert!((p95 - 0.5).abs() <= 0.5 * RELATIVE_ACCURACY, "{p95}");
    }

    #[test]
    fn bytes_of_another_accuracy_are_rejected() {
        let mut other = DDSketch::new(Config::new(0.02, MAX_BINS, MIN_POSITIVE));
        other.add(0.3);
        assert_eq!(DriftSketch::from_bytes(&other.to_java_bytes()).unwrap_err(), SketchError::OtherAccuracy);
        assert!(matches!(DriftSketch::from_bytes(&[0xff, 0x01]), Err(SketchError::Undecodable(_))));
    }
}
