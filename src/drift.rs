//! The drift of one V1/V2 comparison: its score in [0, 1], its verdict band, and what an event contributes to a
//! breaker's window.
//!
//! `score = 0.6·min(|v2−v1| / max(v1, 1), 1) + 0.4·[v1_feasible ≠ v2_feasible]`. Unlike the older system, a V1
//! cost of 0 is no blind spot (the `max(v1, 1)` denominator applies to it too) and nothing is rounded before a
//! comparison. The score is computed as one division of two integers, so it is the correctly rounded value of the
//! exact rational score (for costs below 2^50 cents): a score that is exactly 0.2 in exact arithmetic equals the
//! `f64` literal `0.2`, and band edges and thresholds compare as they would with exact numbers.

use serde::{Deserialize, Serialize};

use crate::event::{SimulationResult, V2Status};

/// Weight of the cost term, as the fraction `COST_WEIGHT / WEIGHT_DENOMINATOR` (0.6).
const COST_WEIGHT: u128 = 3;
/// Weight of the feasibility term, as the fraction `FEASIBILITY_WEIGHT / WEIGHT_DENOMINATOR` (0.4).
const FEASIBILITY_WEIGHT: u128 = 2;
/// Common denominator of the two weights.
const WEIGHT_DENOMINATOR: u128 = 5;

/// The drift score of one comparison, in [0, 1], unrounded.
pub fn drift_score(v1_cost_cents: i64, v2_cost_cents: i64, v1_feasible: bool, v2_feasible: bool) -> f64 {
    // Negative costs are rejected by `SimulationResult::validate`; clamping keeps this total for any input.
    let v1 = v1_cost_cents.max(0) as u128;
    let v2 = v2_cost_cents.max(0) as u128;
    let denominator = v1.max(1);
    let capped_delta = v1.abs_diff(v2).min(denominator);
    let mismatch = u128::from(v1_feasible != v2_feasible);
    // score = (3·min(Δ, d) + 2·d·mismatch) / (5·d): one rounding, in the final division.
    let numerator = COST_WEIGHT * capped_delta + FEASIBILITY_WEIGHT * denominator * mismatch;
    numerator as f64 / (WEIGHT_DENOMINATOR * denominator) as f64
}

/// The verdict band of a drift score; the wire form is lowercase (`minor_drift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Score ≤ 0.05.
    Match,
    /// 0.05 < score ≤ 0.15.
    MinorDrift,
    /// 0.15 < score ≤ 0.30.
    MajorDrift,
    /// Score > 0.30.
    Mismatch,
}

impl Verdict {
    /// The band a score falls in, compared on the unrounded score.
    pub fn of(score: f64) -> Self {
        if score <= 0.05 {
            Verdict::Match
        } else if score <= 0.15 {
            Verdict::MinorDrift
        } else if score <= 0.30 {
            Verdict::MajorDrift
        } else {
            Verdict::Mismatch
        }
    }

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::MinorDrift => "minor_drift",
            Verdict::MajorDrift => "major_drift",
            Verdict::Mismatch => "mismatch",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one event contributes to a breaker's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// V2 succeeded: a drift score.
    Drift(f64),
    /// V2 produced output that broke its schema; counts toward the schema-error rule.
    SchemaError,
    /// V2 failed or timed out: no drift score and no schema error, but the event was seen.
    NoScore,
}

impl Observation {
    /// The contribution of a validated event (`v2_status = success` guarantees the V2 fields are present; if they
    /// are missing anyway, the event carries no score).
    pub fn of(event: &SimulationResult) -> Self {
        match event.v2_status {
            V2Status::Success => match (event.v2_cost_cents, event.v2_feasible) {
                (Some(v2_cost), Some(v2_feasible)) => {
                    Observation::Drift(drift_score(event.v1_cost_cents, v2_cost, event.v1_feasible, v2_feasible))
                }
                _ => Observation::NoScore,
            },
            V2Status::SchemaError => Observation::SchemaError,
            V2Status::Error | V2Status::Timeout => Observation::NoScore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample_result;

    #[test]
    fn a_five_percent_cost_change_with_both_feasible_is_a_match_of_0_03() {
        let score = drift_score(100, 105, true, true);
        assert_eq!(score, 0.03);
        assert_eq!(Verdict::of(score), Verdict::Match);
    }

    #[test]
    fn a_fifty_percent_cost_change_is_major_drift_of_0_30() {
        let score = drift_score(100, 150, true, true);
        assert_eq!(score, 0.3);
        assert_eq!(Verdict::of(score), Verdict::MajorDrift);
    }

    #[test]
    fn a_feasibility_mismatch_alone_is_a_mismatch_of_0_40() {
        let score = drift_score(100, 100, true, false);
        assert_eq!(score, 0.4);
        assert_eq!(Verdict::of(score), Verdict::Mismatch);
    }

    #[test]
    fn a_tripled_cost_with_a_feasibility_mismatch_scores_the_maximum_of_1() {
        assert_eq!(drift_score(100, 300, false, true), 1.0);
    }

    #[test]
    fn a_v1_cost_of_zero_is_no_blind_spot() {
        assert_eq!(drift_score(0, 50, true, true), 0.6);
        assert_eq!(drift_score(0, 0, true, true), 0.0);
        assert_eq!(drift_score(0, 1, true, true), 0.6);
    }

    #[test]
    fn a_cost_drift_of_exactly_one_third_scores_exactly_the_default_threshold() {
        // 300 → 400 is a 1/3 change: 0.6 · 1/3 = 0.2 in exact arithmetic, so it must not exceed 0.2.
        let score = drift_score(300, 400, true, true);
        assert_eq!(score, 0.2);
        assert!(score <= 0.2);
        assert!(drift_score(300, 401, true, true) > 0.2);
    }

    #[test]
    fn band_edges_compare_on_the_unrounded_score() {
        // 0.6 · 25/300 = 0.05 exactly: still a match. 0.6 · 2501/30000 = 0.05002 is minor drift, where the older
        // system rounded it to 0.0500 first and called it a match.
        assert_eq!(Verdict::of(drift_score(300, 325, true, true)), Verdict::Match);
        assert_eq!(Verdict::of(drift_score(30_000, 32_501, true, true)), Verdict::MinorDrift);
        assert_eq!(Verdict::of(drift_score(100, 125, true, true)), Verdict::MinorDrift);
        assert_eq!(Verdict::of(drift_score(1000, 1251, true, true)), Verdict::MajorDrift);
        assert_eq!(Verdict::of(0.300_000_1), Verdict::Mismatch);
    }

    #[test]
    fn a_cheaper_v2_drifts_as_much_as_a_dearer_one() {
        assert_eq!(drift_score(100, 50, true, true), drift_score(100, 150, true, true));
    }

    #[test]
    fn the_score_stays_in_the_unit_interval_for_extreme_costs() {
        for (v1, v2) in [(i64::MAX, 0), (0, i64::MAX), (i64::MAX, i64::MAX), (1, i64::MAX), (-5, 10)] {
            for mismatch in [false, true] {
                let score = drift_score(v1, v2, true, !mismatch);
                assert!((0.0..=1.0).contains(&score), "{v1} → {v2}: {score}");
            }
        }
    }

    #[test]
    fn verdicts_have_lowercase_wire_names() {
        assert_eq!(serde_json::to_string(&Verdict::MinorDrift).unwrap(), r#""minor_drift""#);
        assert_eq!(Verdict::Mismatch.to_string(), "mismatch");
    }

    #[test]
    fn only_successful_v2_runs_carry_a_drift_score() {
        let ok = sample_result();
        assert_eq!(Observation::of(&ok), Observation::Drift(0.03));
        let schema = SimulationResult { v2_status: V2Status::SchemaError, ..sample_result() };
        assert_eq!(Observation::of(&schema), Observation::SchemaError);
        let timeout = SimulationResult { v2_status: V2Status::Timeout, ..sample_result() };
        assert_eq!(Observation::of(&timeout), Observation::NoScore);
        let error = SimulationResult { v2_status: V2Status::Error, ..sample_result() };
        assert_eq!(Observation::of(&error), Observation::NoScore);
    }
}
