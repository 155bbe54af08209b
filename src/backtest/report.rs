//! How a replay is shown: one line per transition and a closing summary, as text for people or as JSON lines.

use super::{Summary, Transition};
use crate::event::format_rfc3339_millis;

/// One transition as a line of text: time, change, severity, p95 and samples, then the reason.
pub fn format_transition(t: &Transition) -> String {
    let severity = t.severity.map_or("-", |s| s.as_str());
    let p95 = t.p95_drift.map_or("-".to_string(), |p| format!("{p:.4}"));
    format!(
        "{}  {} -> {}  {severity}  p95={p95} samples={}  {}",
        format_rfc3339_millis(&t.at),
        t.from,
        t.to,
        t.sample_count,
        t.reason
    )
}

/// One transition as a JSON object on one line: `at`, `from`, `to`, `severity`, `reason`, `p95_drift`,
/// `sample_count`, `schema_errors`, `disabled_until`.
pub fn transition_json(t: &Transition) -> String {
    serde_json::to_string(t).expect("a transition always serializes")
}

/// The summary as a JSON object on one line, under the key `summary`.
pub fn summary_json(summary: &Summary) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        summary: &'a Summary,
    }
    serde_json::to_string(&Line { summary }).expect("a summary always serializes")
}

/// The summary as a few lines of text.
pub fn format_summary(s: &Summary) -> String {
    let rejected = if s.rejected_by_reason.is_empty() {
        String::new()
    } else {
        let reasons: Vec<_> = s.rejected_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        format!(" ({})", reasons.join(", "))
    };
    let span = match (s.first_event_at, s.last_event_at) {
        (Some(first), Some(last)) => {
            format!(", event time {} to {}", format_rfc3339_millis(&first), format_rfc3339_millis(&last))
        }
        _ => String::new(),
    };
    let severities: Vec<_> = s.trips_by_severity.iter().map(|(sev, n)| format!("{sev} {n}")).collect();
    let trips = if severities.is_empty() { String::new() } else { format!(" ({})", severities.join(", ")) };
    let p95 = match (s.min_p95_drift, s.max_p95_drift) {
        (Some(min), Some(max)) => format!("min {min:.4}, max {max:.4} (decisions with enough samples)"),
        _ => "none (no decision had enough samples)".to_string(),
    };
    [
        format!("events read: {}, rejected: {}{rejected}, too late: {}{span}", s.events_read, s.rejected, s.too_late),
        format!("decisions: {} (insufficient data {}, warnings {})", s.evaluations, s.insufficient_data, s.warnings),
        format!(
            "trips: {}{trips}, reopens: {}, recoveries: {}, final state: {}",
            s.trips, s.reopens, s.recoveries, s.final_state
        ),
        format!("time open: {}, half-open: {}", duration(s.open_seconds), duration(s.half_open_seconds)),
        format!("p95 drift: {p95}"),
        format!("settings: {}", s.config),
    ]
    .join("\n")
}

/// `1h 05m 00s`, `5m 00s`, `40s`.
fn duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(40), "40s");
        assert_eq!(duration(300), "5m 00s");
        assert_eq!(duration(3900), "1h 05m 00s");
    }
}
