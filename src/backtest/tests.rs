use super::*;
use crate::codec::{JsonLines, LineError};
use crate::event::V2Status;
use crate::event::tests::sample_result;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-11-27T08:00:00Z").unwrap().with_timezone(&Utc)
}

/// One event per second from `from` to `to` (seconds after t0), with V2 off by `drift_pct` percent.
fn events(from: i64, to: i64, drift_pct: i64) -> impl Iterator<Item = SimulationResult> {
    (from..to).map(move |s| SimulationResult {
        event_id: format!("evt-{s}"),
        occurred_at: t0() + TimeDelta::seconds(s),
        v1_cost_cents: 1000,
        v2_cost_cents: Some(1000 + 10 * drift_pct),
        ..sample_result()
    })
}

fn short_ttl() -> BreakerConfig {
    BreakerConfig::default().with_overrides(["disable_ttl_seconds=300"]).unwrap()
}

fn replay_events(events: impl IntoIterator<Item = SimulationResult>, config: BreakerConfig) -> Report {
    replay(events.into_iter().map(Ok::<_, String>), config, |e| e.clone()).unwrap()
}

fn changes(report: &Report) -> Vec<(i64, BreakerState, BreakerState)> {
    report.transitions.iter().map(|t| ((t.at - t0()).num_seconds(), t.from, t.to)).collect()
}

#[test]
fn a_spike_trips_the_breaker_and_a_calm_probation_closes_it() {
    // 20 min calm, 10 min at 50 % drift (score 0.3), 30 min calm; one event per second.
    let stream = events(0, 1200, 2).chain(events(1200, 1800, 50)).chain(events(1800, 3600, 2));
    let report = replay_events(stream, short_ttl());
    use BreakerState::*;
    // The window's p95 passes 0.2 once more than 5 % of its 300 events drift: 16 spike events, so the bucket
    // ending at 1220 s is the first failing one, and the third failing decision (1240 s) trips. The TTL (300 s)
    // ends at 1540 s, still in the spike, so probation fails at 1840 s (its window [1540, 1840) is mostly
    // spike); the doubled TTL ends at 2440 s and the calm probation closes the breaker at 2740 s.
    assert_eq!(
        changes(&report),
        vec![
            (1240, Closed, Open),
            (1540, Open, HalfOpen),
            (1840, HalfOpen, Open),
            (2440, Open, HalfOpen),
            (2740, HalfOpen, Closed)
        ]
    );
    let trip = &report.transitions[0];
    assert_eq!(trip.severity, Some(Severity::P1));
    assert_eq!(trip.disabled_until, Some(t0() + TimeDelta::seconds(1540)));
    assert_eq!(report.transitions[2].disabled_until, Some(t0() + TimeDelta::seconds(2440)));
    let s = &report.summary;
    assert_eq!((s.events_read, s.trips, s.reopens, s.recoveries, s.final_state), (3600, 1, 1, 1, Closed));
    assert_eq!((s.open_seconds, s.half_open_seconds), (300 + 600, 300 + 300));
    assert_eq!(s.evaluations, 359);
    assert!(s.max_p95_drift.unwrap() > 0.29 && s.min_p95_drift.unwrap() < 0.03, "{s:?}");
}

#[test]
fn the_same_events_give_byte_identical_output() {
    let render = || {
        let stream = events(0, 1200, 2).chain(events(1200, 1800, 50)).chain(events(1800, 3600, 2));
        let report = replay_events(stream, short_ttl());
        let mut out: Vec<String> = report.transitions.iter().map(transition_json).collect();
        out.extend(report.transitions.iter().map(format_transition));
        out.push(format_summary(&report.summary));
        out.push(summary_json(&report.summary));
        out.join("\n")
    };
    assert_eq!(render(), render());
}

#[test]
fn without_a_short_ttl_the_breaker_stays_open_to_the_end() {
    let stream = events(0, 1200, 2).chain(events(1200, 1800, 50)).chain(events(1800, 3600, 2));
    let report = replay_events(stream, BreakerConfig::default());
    assert_eq!(report.transitions.len(), 1);
    assert_eq!(report.summary.final_state, BreakerState::Open);
    // Open from 1240 s until the last decision at 3590 s.
    assert_eq!(report.summary.open_seconds, 3590 - 1240);
}

#[test]
fn a_lower_threshold_answers_what_if_questions() {
    // A steady 12 % drift (score 0.072) never trips the default breaker but trips one set at 0.05.
    let report = replay_events(events(0, 900, 12), BreakerConfig::default());
    assert_eq!(report.summary.trips, 0);
    let strict =
        BreakerConfig::default().with_overrides(["drift_threshold=0.05", "drift_warning_threshold=0.04"]).unwrap();
    assert_eq!(replay_events(events(0, 900, 12), strict).summary.trips, 1);
}

#[test]
fn schema_errors_trip_p3() {
    let broken = (0..5).map(|i| SimulationResult {
        v2_status: V2Status::SchemaError,
        v2_cost_cents: None,
        v2_feasible: None,
        occurred_at: t0() + TimeDelta::seconds(100 + i),
        ..sample_result()
    });
    let report = replay_events(events(0, 100, 2).chain(broken).chain(events(105, 200, 2)), short_ttl());
    assert_eq!(report.transitions[0].severity, Some(Severity::P3));
    assert_eq!(report.transitions[0].at, t0() + TimeDelta::seconds(110));
    assert_eq!(report.summary.trips_by_severity.get(&Severity::P3), Some(&1));
}

#[test]
fn events_too_late_for_the_window_are_counted_and_ignored() {
    let mut stream: Vec<_> = events(0, 600, 2).collect();
    stream.extend(events(0, 10, 90));
    let report = replay_events(stream, BreakerConfig::default());
    assert_eq!(report.summary.too_late, 10);
    assert!(report.summary.max_p95_drift.unwrap() < 0.013, "{:?}", report.summary);
}

#[test]
fn bad_lines_are_counted_by_reason_and_the_replay_goes_on() {
    let good = crate::codec::simulation_result_to_json(&sample_result());
    let input = format!("{good}\nnot json\n{}\n{good}\n", good.replace("\"tenant-a\"", "\"\""));
    let report =
        replay(JsonLines::new(input.as_bytes()).map(|(_, r)| r), BreakerConfig::default(), |e: &LineError| match e {
            LineError::Decode(d) => d.class().to_string(),
            LineError::Io(_) => "io".to_string(),
        })
        .unwrap();
    assert_eq!(report.summary.events_read, 2);
    assert_eq!(report.summary.rejected, 2);
    let reasons: Vec<_> = report.summary.rejected_by_reason.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    assert_eq!(reasons, vec![("bad_json", 1), ("invalid", 1)]);
}

#[test]
fn an_empty_input_decides_nothing() {
    let report = replay_events([], BreakerConfig::default());
    assert!(report.transitions.is_empty());
    assert_eq!((report.summary.evaluations, report.summary.final_state), (0, BreakerState::Closed));
    assert!(format_summary(&report.summary).contains("no decision had enough samples"));
}

#[test]
fn the_shipped_example_trips_and_recovers_with_a_short_ttl() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/drift-spike.jsonl");
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let lines = JsonLines::new(file).map(|(_, r)| r);
    let report = replay(lines, short_ttl(), |e: &LineError| e.to_string()).unwrap();
    use BreakerState::*;
    let kinds: Vec<_> = report.transitions.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(kinds.first(), Some(&(Closed, Open)));
    assert_eq!(kinds.last(), Some(&(HalfOpen, Closed)));
    assert!(kinds.contains(&(HalfOpen, Open)), "{kinds:?}");
    assert_eq!(report.summary.rejected, 0);
    assert_eq!(report.summary.final_state, Closed);
}
