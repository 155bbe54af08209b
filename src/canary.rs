//! The canary: a periodic verdict on V2 over a sample of recent comparisons (docs/DOMAIN.md, *The canary*), and when it
//! runs. Pure: samples, limits and times are parameters.
//!
//! A run looks at up to `sample_count` scored comparisons from the last `window_hours` of provenance and counts
//! them by verdict band (`match`, `minor_drift`, `major_drift` + `mismatch` as major), takes the median and p90
//! of |V2 − V1| cost (nearest rank, [`crate::divergence::percentile`]), the KL divergence of the V1 and V2 cost
//! histograms ([`crate::divergence`]) and the outliers (drift score above the outlier threshold). It fails, with
//! the older system's reasons in the same order, when the KL divergence is above its threshold, when outliers are
//! above their share, or when major-drift samples are above theirs (10 % by default, configurable here). With no
//! sample it reports `error`.
//!
//! A failed canary is a signal of its own on the breaker (`store::canary::record_signal`): it never touches the
//! per-event evaluation (the older system fed the KL into the same consecutive-failure counter, where one good
//! request wiped it out, docs/DOMAIN.md, *11.3 Canary and drift on one counter*).

#[cfg(test)]
mod tests;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use serde::Serialize;

use crate::divergence::{self, round_to};
use crate::drift::Verdict;

/// What a canary run concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryStatus {
    /// Every check held.
    Pass,
    /// At least one check failed; the reasons say which.
    Fail,
    /// The run could not judge (no sample).
    Error,
    /// Another instance runs the schedule (kept for the older schema; our runs are never skipped).
    Skipped,
}

impl CanaryStatus {
    /// The name stored in `costsim_canary_reports.status` and used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryStatus::Pass => "pass",
            CanaryStatus::Fail => "fail",
            CanaryStatus::Error => "error",
            CanaryStatus::Skipped => "skipped",
        }
    }

    /// The status of a stored name.
    pub fn parse(s: &str) -> Option<CanaryStatus> {
        [CanaryStatus::Pass, CanaryStatus::Fail, CanaryStatus::Error, CanaryStatus::Skipped]
            .into_iter()
            .find(|status| status.as_str() == s)
    }
}

/// The limits a run is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CanaryLimits {
    /// A KL divergence above this fails the run.
    pub kl_threshold: f64,
    /// A comparison whose drift score is above this is an outlier.
    pub outlier_threshold: f64,
    /// A share of outliers above this fails the run.
    pub outlier_max_pct: f64,
    /// A share of major-drift comparisons (major_drift and mismatch) above this fails the run.
    pub major_max_pct: f64,
}

impl Default for CanaryLimits {
    fn default() -> Self {
        CanaryLimits { kl_threshold: 0.2, outlier_threshold: 0.5, outlier_max_pct: 0.05, major_max_pct: 0.10 }
    }
}

/// One scored comparison from provenance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// V1's cost in cents.
    pub v1_cost: f64,
    /// V2's cost in cents.
    pub v2_cost: f64,
    /// The comparison's drift score.
    pub drift_score: f64,
}

/// The measurements and the verdict of a run over its samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Pass, fail or error.
    pub status: CanaryStatus,
    /// Samples judged.
    pub total_samples: u64,
    /// Samples in the `match` band.
    pub matching_samples: u64,
    /// Samples in the `minor_drift` band.
    pub minor_drift_samples: u64,
    /// Samples in the `major_drift` or `mismatch` band.
    pub major_drift_samples: u64,
    /// Median |V2 − V1| cost in cents; `None` without samples.
    pub median_cost_diff: Option<f64>,
    /// p90 |V2 − V1| cost in cents; `None` without samples.
    pub p90_cost_diff: Option<f64>,
    /// KL divergence of the cost histograms, 4 decimal places; `None` without samples.
    pub kl_divergence: Option<f64>,
    /// Samples whose drift score is above the outlier threshold; `None` without samples.
    pub outlier_count: Option<u64>,
    /// Whether every check held.
    pub passed: bool,
    /// Why the run failed, in the older system's order and wording.
    pub failure_reasons: Vec<String>,
}

/// Judges the samples against the limits.
pub fn evaluate(samples: &[Sample], limits: &CanaryLimits) -> Evaluation {
    let total = samples.len() as u64;
    if samples.is_empty() {
        return Evaluation {
            status: CanaryStatus::Error,
            total_samples: 0,
            matching_samples: 0,
            minor_drift_samples: 0,
            major_drift_samples: 0,
            median_cost_diff: None,
            p90_cost_diff: None,
            kl_divergence: None,
            outlier_count: None,
            passed: false,
            failure_reasons: vec!["No samples available".to_owned()],
        };
    }
    let (mut matching, mut minor, mut major, mut outliers) = (0, 0, 0, 0);
    for sample in samples {
        match Verdict::of(sample.drift_score) {
            Verdict::Match => matching += 1,
            Verdict::MinorDrift => minor += 1,
            Verdict::MajorDrift | Verdict::Mismatch => major += 1,
        }
        if sample.drift_score > limits.outlier_threshold {
            outliers += 1;
        }
    }
    let mut diffs: Vec<f64> = samples.iter().map(|s| (s.v2_cost - s.v1_cost).abs()).collect();
    diffs.sort_by(f64::total_cmp);
    let v1: Vec<f64> = samples.iter().map(|s| s.v1_cost).collect();
    let v2: Vec<f64> = samples.iter().map(|s| s.v2_cost).collect();
    let kl = divergence::kl_divergence(&v1, &v2);

    let mut reasons = Vec::new();
    if kl > limits.kl_threshold {
        reasons.push(format!("KL divergence {kl:.4} > {}", limits.kl_threshold));
    }
    let share = |n: u64| n as f64 / total as f64;
    if share(outliers) > limits.outlier_max_pct {
        reasons.push(format!("Outlier percentage {} > {}", percent(share(outliers)), percent(limits.outlier_max_pct)));
    }
    if share(major) > limits.major_max_pct {
        reasons.push(format!(
            "Major drift samples {} > {}%",
            percent(share(major)),
            round_to(limits.major_max_pct * 100.0, 6)
        ));
    }
    let passed = reasons.is_empty();
    Evaluation {
        status: if passed { CanaryStatus::Pass } else { CanaryStatus::Fail },
        total_samples: total,
        matching_samples: matching,
        minor_drift_samples: minor,
        major_drift_samples: major,
        median_cost_diff: divergence::percentile(&diffs, 0.5),
        p90_cost_diff: divergence::percentile(&diffs, 0.9),
        kl_divergence: Some(kl),
        outlier_count: Some(outliers),
        passed,
        failure_reasons: reasons,
    }
}

/// A share as Python's `{:.2%}` prints it: `0.0612` → `6.12%`.
fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// When the next scheduled run is due, given the daily time `at` (UTC) and the newest scheduled run.
///
/// A run whose slot passed while no instance was leading (the service was down at 03:00) is made up at once, one
/// run however many slots were missed; with no scheduled run on record the first is at the next slot, so a new
/// deployment does not judge data it has barely collected.
pub fn next_run(at: NaiveTime, last_scheduled: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive().and_time(at).and_utc();
    let latest_slot = if now >= today { today } else { today - TimeDelta::days(1) };
    match last_scheduled {
        Some(last) if last < latest_slot => now,
        _ => latest_slot + TimeDelta::days(1),
    }
}
