use super::*;
use proptest::prelude::*;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::seconds(1_764_230_400 + seconds)
}

/// A window ending at `end` with the given p95, samples and schema errors.
fn window(end: DateTime<Utc>, p95: Option<f64>, samples: u64, schema_errors: u64) -> WindowSummary {
    WindowSummary {
        start: end - TimeDelta::minutes(5),
        end,
        p95_drift: p95,
        max_drift: p95,
        sample_count: samples,
        schema_errors,
        unscored: 0,
    }
}

fn config() -> BreakerConfig {
    BreakerConfig::default()
}

/// Runs decisions at 10 s steps from `t0`, one per window, returning the outcomes and the final record.
fn run(mut breaker: Breaker, windows: &[(Option<f64>, u64, u64)], t0: i64) -> (Vec<Outcome>, Breaker) {
    let mut outcomes = Vec::new();
    for (i, (p95, samples, schema)) in windows.iter().enumerate() {
        let now = at(t0 + 10 * i as i64);
        let decision = decide(&breaker, &window(now, *p95, *samples, *schema), &config(), now);
        outcomes.push(decision.outcome);
        breaker = decision.next;
    }
    (outcomes, breaker)
}

fn tripped_at(now: DateTime<Utc>) -> Breaker {
    let decision = decide(
        &Breaker { consecutive_failures: 2, ..Breaker::closed() },
        &window(now, Some(0.5), 100, 0),
        &config(),
        now,
    );
    assert!(matches!(decision.outcome, Outcome::Trip { severity: Severity::P1, .. }));
    decision.next
}

#[test]
fn three_consecutive_failing_evaluations_trip_p1_and_two_do_not() {
    let (outcomes, breaker) = run(Breaker::closed(), &[(Some(0.3), 100, 0), (Some(0.3), 100, 0)], 0);
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Warn { .. })), "{outcomes:?}");
    assert_eq!((breaker.state, breaker.consecutive_failures), (BreakerState::Closed, 2));

    let (outcomes, breaker) = run(breaker, &[(Some(0.3), 100, 0)], 20);
    let Outcome::Trip { severity, reason, evidence } = &outcomes[0] else { panic!("{outcomes:?}") };
    assert_eq!(*severity, Severity::P1);
    assert_eq!(reason, "p95 drift 0.3000 > 0.2 for 3 consecutive evaluations (100 samples, window 07:55:20–08:00:20)");
    assert_eq!((evidence.p95_drift, evidence.sample_count, evidence.consecutive_failures), (Some(0.3), 100, 3));
    assert_eq!(breaker.state, BreakerState::Open);
    assert_eq!(breaker.disabled_until, Some(at(20) + TimeDelta::hours(24)));
    assert_eq!(breaker.opened_at, Some(at(20)));
}

#[test]
fn a_p95_equal_to_the_threshold_is_not_a_failure() {
    let (outcomes, breaker) = run(Breaker::closed(), &[(Some(0.2), 100, 0); 5], 0);
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Warn { .. })), "{outcomes:?}");
    assert_eq!(breaker.consecutive_failures, 0);
}

#[test]
fn a_good_evaluation_breaks_a_run_of_failures() {
    let windows = [(Some(0.3), 100, 0), (Some(0.3), 100, 0), (Some(0.1), 100, 0), (Some(0.3), 100, 0)];
    let (outcomes, breaker) = run(Breaker::closed(), &windows, 0);
    assert_eq!(outcomes[2], Outcome::None);
    assert_eq!((breaker.state, breaker.consecutive_failures), (BreakerState::Closed, 1));
}

#[test]
fn too_few_samples_is_insufficient_data_and_breaks_a_run_of_failures() {
    let windows = [(Some(0.3), 100, 0), (Some(0.3), 100, 0), (Some(0.9), 49, 0)];
    let (outcomes, breaker) = run(Breaker::closed(), &windows, 0);
    assert_eq!(outcomes[2], Outcome::InsufficientData { sample_count: 49, min_samples: 50 });
    assert_eq!((breaker.state, breaker.consecutive_failures), (BreakerState::Closed, 0));
    let (outcomes, _) = run(Breaker::closed(), &[(None, 0, 0)], 0);
    assert_eq!(outcomes[0], Outcome::InsufficientData { sample_count: 0, min_samples: 50 });
}

#[test]
fn the_warning_band_warns_without_counting_failures() {
    let (outcomes, breaker) = run(Breaker::closed(), &[(Some(0.16), 100, 0); 4], 0);
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Warn { .. })));
    assert_eq!(breaker, Breaker::closed());
    let (outcomes, _) = run(Breaker::closed(), &[(Some(0.15), 100, 0)], 0);
    assert_eq!(outcomes[0], Outcome::None);
}

#[test]
fn schema_errors_trip_p3_at_once_even_without_drift_samples() {
    let (outcomes, breaker) = run(Breaker::closed(), &[(None, 0, 4), (None, 0, 5)], 0);
    assert_eq!(outcomes[0], Outcome::InsufficientData { sample_count: 0, min_samples: 50 });
    let Outcome::Trip { severity, reason, .. } = &outcomes[1] else { panic!("{outcomes:?}") };
    assert_eq!(*severity, Severity::P3);
    assert!(reason.starts_with("5 schema errors >= 5 in window"), "{reason}");
    assert_eq!(breaker.severity, Some(Severity::P3));
}

#[test]
fn a_drift_trip_outranks_a_schema_trip_in_the_same_evaluation() {
    let breaker = Breaker { consecutive_failures: 2, ..Breaker::closed() };
    let decision = decide(&breaker, &window(at(0), Some(0.5), 100, 9), &config(), at(0));
    assert_eq!(decision.outcome.severity(), Some(Severity::P1));
}

#[test]
fn an_open_breaker_ignores_drift_and_schema_errors_and_never_trips_again() {
    let open = tripped_at(at(0));
    let (outcomes, breaker) = run(open.clone(), &[(Some(1.0), 1000, 100); 10], 10);
    assert!(outcomes.iter().all(|o| *o == Outcome::None), "{outcomes:?}");
    assert_eq!(breaker, open);
}

#[test]
fn an_open_breaker_goes_half_open_once_its_ttl_has_passed() {
    let open = tripped_at(at(0));
    let until = open.disabled_until.unwrap();
    let before = decide(&open, &window(until, None, 0, 0), &config(), until - TimeDelta::seconds(10));
    assert_eq!(before.outcome, Outcome::None);
    let due = decide(&open, &window(until, None, 0, 0), &config(), until);
    assert!(matches!(&due.outcome, Outcome::HalfOpen { reason } if reason.contains("probation for 300 s")));
    assert_eq!((due.next.state, due.next.half_open_since), (BreakerState::HalfOpen, Some(until)));
}

#[test]
fn a_latched_or_non_recovering_breaker_stays_open() {
    let latched = Breaker { disabled_until: None, ttl_seconds: 0, ..tripped_at(at(0)) };
    let late = at(0) + TimeDelta::days(365);
    assert_eq!(decide(&latched, &window(late, None, 0, 0), &config(), late).next, latched);
    let no_recovery = BreakerConfig { auto_recover: false, ..config() };
    let timed = tripped_at(at(0));
    assert_eq!(decide(&timed, &window(late, None, 0, 0), &no_recovery, late).next, timed);
}

#[test]
fn a_zero_ttl_latches_a_trip() {
    let latching = BreakerConfig { disable_ttl_seconds: 0, ..config() };
    let breaker = Breaker { consecutive_failures: 2, ..Breaker::closed() };
    let next = decide(&breaker, &window(at(0), Some(0.5), 100, 0), &latching, at(0)).next;
    assert_eq!((next.state, next.disabled_until), (BreakerState::Open, None));
}

fn half_open_at(now: DateTime<Utc>) -> Breaker {
    let open = tripped_at(now - TimeDelta::hours(24));
    decide(&open, &window(now, None, 0, 0), &config(), now).next
}

#[test]
fn probation_waits_for_its_full_length() {
    let half = half_open_at(at(0));
    let (outcomes, breaker) = run(half.clone(), &[(Some(0.01), 500, 0); 30], 0);
    assert!(outcomes.iter().all(|o| *o == Outcome::None), "{outcomes:?}");
    assert_eq!(breaker, half);
}

#[test]
fn a_passed_probation_closes_the_breaker_and_forgets_the_incident() {
    let half = half_open_at(at(0));
    let decision = decide(&half, &window(at(300), Some(0.2), 60, 0), &config(), at(300));
    let Outcome::Close { reason, .. } = &decision.outcome else { panic!("{:?}", decision.outcome) };
    assert!(reason.starts_with("probation passed: p95 drift 0.2000 <= 0.2 over 60 samples"), "{reason}");
    assert_eq!(decision.next, Breaker::closed());
}

#[test]
fn a_failed_probation_reopens_with_a_doubled_ttl_and_the_same_severity() {
    let half = half_open_at(at(0));
    let decision = decide(&half, &window(at(300), Some(0.25), 60, 0), &config(), at(300));
    let Outcome::Reopen { severity, reason, .. } = &decision.outcome else { panic!("{:?}", decision.outcome) };
    assert_eq!(*severity, Severity::P1);
    assert!(reason.contains("p95 drift 0.2500 > 0.2") && reason.contains("TTL 172800 s"), "{reason}");
    assert_eq!(decision.next.disabled_until, Some(at(300) + TimeDelta::hours(48)));
    assert_eq!(decision.next.opened_at, half.opened_at);
}

#[test]
fn too_few_samples_during_probation_reopen_the_breaker() {
    let half = half_open_at(at(0));
    let decision = decide(&half, &window(at(300), Some(0.0), 49, 0), &config(), at(300));
    assert!(matches!(&decision.outcome, Outcome::Reopen { reason, .. } if reason.contains("49 samples < 50")));
}

#[test]
fn schema_errors_during_probation_reopen_at_once() {
    let half = half_open_at(at(0));
    let decision = decide(&half, &window(at(10), None, 0, 5), &config(), at(10));
    assert!(matches!(decision.outcome, Outcome::Reopen { .. }), "{:?}", decision.outcome);
}

#[test]
fn the_ttl_doubles_on_each_failed_probation_up_to_its_cap() {
    let mut breaker = tripped_at(at(0));
    let mut ttls = vec![breaker.ttl_seconds];
    for _ in 0..5 {
        let until = breaker.disabled_until.unwrap();
        breaker = decide(&breaker, &window(until, None, 0, 0), &config(), until).next;
        let end = until + TimeDelta::minutes(5);
        breaker = decide(&breaker, &window(end, None, 0, 0), &config(), end).next;
        ttls.push(breaker.ttl_seconds);
    }
    let day = 86_400;
    assert_eq!(ttls, vec![day, 2 * day, 4 * day, 7 * day, 7 * day, 7 * day]);
}

#[test]
fn a_half_open_breaker_judges_only_the_window_since_probation_began() {
    let half = half_open_at(at(0));
    assert_eq!(half.window_bounds(&config(), at(120)), (at(0), at(120)));
    assert_eq!(half.window_bounds(&config(), at(600)), (at(300), at(600)));
    assert_eq!(Breaker::closed().window_bounds(&config(), at(120)), (at(-180), at(120)));
}

#[test]
fn a_breaker_record_round_trips_through_json() {
    let breaker = tripped_at(at(0));
    let json = serde_json::to_string(&breaker).unwrap();
    assert_eq!(serde_json::from_str::<Breaker>(&json).unwrap(), breaker);
}

/// One step of a random history: seconds to advance and the window at that time.
fn step() -> impl Strategy<Value = (i64, Option<f64>, u64, u64)> {
    (
        prop_oneof![4 => Just(10i64), 1 => 10i64..100_000],
        prop::option::weighted(0.9, 0.0..0.6f64),
        prop_oneof![Just(0u64), 0u64..200],
        prop_oneof![8 => Just(0u64), 1 => 0u64..8],
    )
}

fn any_config() -> impl Strategy<Value = BreakerConfig> {
    (1u32..5, prop_oneof![Just(0u64), 10u64..5000], 1u64..100, any::<bool>()).prop_map(
        |(failure_threshold, ttl, min_samples, auto_recover)| BreakerConfig {
            failure_threshold,
            disable_ttl_seconds: ttl,
            min_samples,
            auto_recover,
            probation_seconds: 60,
            ..BreakerConfig::default()
        },
    )
}

fn history(config: &BreakerConfig, steps: &[(i64, Option<f64>, u64, u64)]) -> Vec<(Breaker, Decision)> {
    let mut breaker = Breaker::closed();
    let mut now = at(0);
    let mut out = Vec::new();
    for (advance, p95, samples, schema_errors) in steps {
        now += TimeDelta::seconds(*advance);
        let (start, end) = breaker.window_bounds(config, now);
        let summary = WindowSummary { start, ..window(end, p95.filter(|_| *samples > 0), *samples, *schema_errors) };
        let decision = decide(&breaker, &summary, config, now);
        breaker = decision.next.clone();
        out.push((decision.next.clone(), decision));
    }
    out
}

proptest! {
    #[test]
    fn no_transition_skips_a_state(config in any_config(), steps in prop::collection::vec(step(), 1..200)) {
        let mut before = Breaker::closed();
        for (after, decision) in history(&config, &steps) {
            if let Some(change) = decision.transition(&before) {
                use BreakerState::*;
                let allowed = [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed), (HalfOpen, Open)];
                prop_assert!(allowed.contains(&change), "{change:?}");
                let expected = match change {
                    (Closed, Open) => matches!(decision.outcome, Outcome::Trip { .. }),
                    (Open, HalfOpen) => matches!(decision.outcome, Outcome::HalfOpen { .. }),
                    (HalfOpen, Closed) => matches!(decision.outcome, Outcome::Close { .. }),
                    _ => matches!(decision.outcome, Outcome::Reopen { .. }),
                };
                prop_assert!(expected, "{change:?} reported as {:?}", decision.outcome);
            } else {
                prop_assert!(decision.outcome.reason().is_none(), "{:?}", decision.outcome);
            }
            before = after;
        }
    }

    #[test]
    fn an_open_breaker_never_trips(
        config in any_config(),
        steps in prop::collection::vec(step(), 1..200),
        p95 in prop::option::of(0.0..1.0f64),
        samples in 0u64..10_000,
        schema_errors in 0u64..100,
        later in 0i64..1_000_000,
    ) {
        for (breaker, _) in history(&config, &steps).into_iter().filter(|(b, _)| b.state == BreakerState::Open) {
            let now = breaker.opened_at.unwrap() + TimeDelta::seconds(later);
            let decision = decide(&breaker, &window(now, p95, samples, schema_errors), &config, now);
            prop_assert!(!matches!(decision.outcome, Outcome::Trip { .. }), "{:?}", decision.outcome);
            prop_assert!(decision.next.state != BreakerState::Closed, "{:?}", decision.next);
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_decisions(config in any_config(), steps in prop::collection::vec(step(), 1..200)) {
        prop_assert_eq!(history(&config, &steps), history(&config, &steps));
    }
}

mod manual {
    use super::super::*;
    use chrono::{DateTime, TimeDelta, Utc};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    #[test]
    fn a_latched_manual_disable_opens_with_p2_and_no_deadline() {
        let decision = manual_disable(&Breaker::closed(), "maintenance", 0, at(100));
        assert_eq!(decision.next.state, BreakerState::Open);
        assert_eq!(decision.next.disabled_until, None);
        assert_eq!(decision.next.severity, Some(Severity::P2));
        assert_eq!(decision.next.opened_at, Some(at(100)));
        assert_eq!(decision.outcome, Outcome::Disable { reason: "maintenance".into() });
    }

    #[test]
    fn disabling_a_tripped_breaker_keeps_its_incident_severity_and_start() {
        let tripped = manual_disable(&Breaker::closed(), "x", 60, at(0)).next;
        let tripped = Breaker { severity: Some(Severity::P1), ..tripped };
        let again = manual_disable(&tripped, "hold it", 120, at(30)).next;
        assert_eq!(
            (again.severity, again.opened_at, again.disabled_until),
            (Some(Severity::P1), Some(at(0)), Some(at(150)))
        );
    }

    #[test]
    fn an_enable_closes_an_open_breaker_and_leaves_a_closed_one_as_it_is() {
        let open = manual_disable(&Breaker::closed(), "x", 0, at(0)).next;
        assert_eq!(manual_enable(&open, "done").next, Breaker::closed());
        let closed = Breaker { consecutive_failures: 2, ..Breaker::closed() };
        assert_eq!(manual_enable(&closed, "noop").next, closed);
    }
}
