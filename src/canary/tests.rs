use super::*;

fn sample(v1: f64, v2: f64, drift: f64) -> Sample {
    Sample { v1_cost: v1, v2_cost: v2, drift_score: drift }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn identical_costs_pass_with_zero_divergence() {
    let samples = vec![sample(100.0, 100.0, 0.0); 20];
    let e = evaluate(&samples, &CanaryLimits::default());
    assert_eq!(e.status, CanaryStatus::Pass);
    assert!(e.passed && e.failure_reasons.is_empty());
    assert_eq!((e.total_samples, e.matching_samples, e.kl_divergence), (20, 20, Some(0.0)));
    assert_eq!((e.median_cost_diff, e.p90_cost_diff, e.outlier_count), (Some(0.0), Some(0.0), Some(0)));
}

#[test]
fn the_ln5_vector_fails_on_kl_with_the_older_wording() {
    let samples: Vec<Sample> = [50.0, 150.0, 75.0, 125.0, 100.0]
        .iter()
        .map(|&v2| sample(100.0, v2, crate::drift::drift_score(100, v2 as i64, true, true)))
        .collect();
    let e = evaluate(&samples, &CanaryLimits::default());
    assert_eq!(e.kl_divergence, Some(1.6094));
    assert_eq!(e.status, CanaryStatus::Fail);
    assert_eq!(e.failure_reasons[0], "KL divergence 1.6094 > 0.2");
    // |Δ| sorted: 0, 25, 25, 50, 50 → median index 2, p90 index 4.
    assert_eq!((e.median_cost_diff, e.p90_cost_diff), (Some(25.0), Some(50.0)));
    // Drift 0.3 for ±50 (major), 0.15 for ±25 (minor), 0 for equal.
    assert_eq!((e.matching_samples, e.minor_drift_samples, e.major_drift_samples), (1, 2, 2));
    assert_eq!(e.failure_reasons[1], "Major drift samples 40.00% > 10%");
}

#[test]
fn outliers_and_major_drift_fail_in_order_with_a_configurable_major_limit() {
    let mut samples = vec![sample(100.0, 100.0, 0.0); 90];
    samples.extend(vec![sample(100.0, 100.0, 0.6); 10]);
    let e = evaluate(&samples, &CanaryLimits::default());
    assert_eq!(e.outlier_count, Some(10));
    assert_eq!(e.failure_reasons, vec!["Outlier percentage 10.00% > 5.00%"], "10 % major is not above 10 %");
    let strict = CanaryLimits { major_max_pct: 0.05, outlier_max_pct: 0.2, ..CanaryLimits::default() };
    assert_eq!(evaluate(&samples, &strict).failure_reasons, vec!["Major drift samples 10.00% > 5%"]);
}

#[test]
fn no_sample_is_an_error_not_a_pass() {
    let e = evaluate(&[], &CanaryLimits::default());
    assert_eq!((e.status, e.passed), (CanaryStatus::Error, false));
    assert_eq!(e.failure_reasons, vec!["No samples available"]);
    assert_eq!(e.kl_divergence, None);
}

#[test]
fn statuses_round_trip_their_stored_names() {
    for s in [CanaryStatus::Pass, CanaryStatus::Fail, CanaryStatus::Error, CanaryStatus::Skipped] {
        assert_eq!(CanaryStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(CanaryStatus::parse("passed"), None);
}

#[test]
fn the_first_scheduled_run_waits_for_the_next_slot() {
    let three = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
    assert_eq!(next_run(three, None, at("2026-11-27T10:00:00Z")), at("2026-11-28T03:00:00Z"));
    assert_eq!(next_run(three, None, at("2026-11-27T02:59:59Z")), at("2026-11-27T03:00:00Z"));
}

#[test]
fn a_run_done_for_the_latest_slot_waits_for_the_next_one() {
    let three = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
    let last = Some(at("2026-11-27T03:00:02Z"));
    assert_eq!(next_run(three, last, at("2026-11-27T10:00:00Z")), at("2026-11-28T03:00:00Z"));
    assert_eq!(next_run(three, last, at("2026-11-28T02:00:00Z")), at("2026-11-28T03:00:00Z"));
}

#[test]
fn a_missed_slot_is_made_up_at_once_and_only_once() {
    let three = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
    let now = at("2026-11-30T09:00:00Z");
    assert_eq!(next_run(three, Some(at("2026-11-27T03:00:01Z")), now), now);
    assert_eq!(next_run(three, Some(now), now), at("2026-12-01T03:00:00Z"));
}
