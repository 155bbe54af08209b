//! Logging of dead letters, aggregated per class and interval: the first of a class in an interval is logged in
//! full, the rest are counted and summed up in one line when the interval ends. A flood of a million bad records
//! writes two lines per class and interval, not a million; the metric `costsim_dlq_records_total` counts each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The header a dead letter's class is in.
pub const CLASS_HEADER: &str = "costsim.error.class";
/// The header with the time a record was dead-lettered (RFC 3339, UTC).
pub const DEAD_LETTERED_AT_HEADER: &str = "costsim.dead_lettered_at";
/// The header a replayed record carries: the dead letter it came from, `topic/partition@offset`.
pub const REPLAYED_FROM_HEADER: &str = "costsim.replayed.from";

/// How long one class's dead letters are summed up before the next is logged in full.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What the log shows for dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// One dead letter in full: the first of its class in an interval.
    First {
        /// The dead-letter class.
        class: &'static str,
        /// `topic/partition@offset` of the record.
        place: String,
        /// Why it was set aside.
        reason: String,
    },
    /// The dead letters of a class an interval counted without logging.
    Summary {
        /// The dead-letter class.
        class: &'static str,
        /// How many.
        more: u64,
        /// The last one's `topic/partition@offset`.
        last: String,
    },
}

struct Window {
    started: Instant,
    more: u64,
    last: String,
}

/// The aggregation, free of I/O: it says which lines to write.
#[derive(Default)]
pub struct Aggregator {
    windows: HashMap<&'static str, Window>,
}

impl Aggregator {
    /// Notes a dead letter at `now`; returns the lines to log.
    pub fn note(&mut self, now: Instant, class: &'static str, place: String, reason: &str) -> Vec<Line> {
        let mut lines = Vec::new();
        if let Some(window) = self.windows.get_mut(class) {
            if now.duration_since(window.started) < INTERVAL {
                window.more += 1;
                window.last = place;
                return lines;
            }
            lines.extend(summary(class, window));
        }
        lines.push(Line::First { class, place: place.clone(), reason: reason.to_owned() });
        self.windows.insert(class, Window { started: now, more: 0, last: place });
        lines
    }

    /// The summaries of the intervals that ended by `now`.
    pub fn flush(&mut self, now: Instant) -> Vec<Line> {
        let mut lines = Vec::new();
        self.windows.retain(|class, window| {
            if now.duration_since(window.started) < INTERVAL {
                return true;
            }
            lines.extend(summary(class, window));
            false
        });
        lines
    }
}

fn summary(class: &'static str, window: &Window) -> Option<Line> {
    (window.more > 0).then(|| Line::Summary { class, more: window.more, last: window.last.clone() })
}

/// The processor's dead-letter log, shared by its batches.
#[derive(Default)]
pub struct DeadLetterLog {
    aggregator: Mutex<Aggregator>,
}

impl DeadLetterLog {
    /// Logs (or counts) one dead letter.
    pub fn record(&self, class: &'static str, topic: &str, partition: i32, offset: i64, reason: &str) {
        let lines = self.lock().note(Instant::now(), class, format!("{topic}/{partition}@{offset}"), reason);
        emit(lines);
    }

    /// Logs the summaries of intervals that ended; the processing loop calls it as it goes.
    pub fn flush(&self) {
        let lines = self.lock().flush(Instant::now());
        emit(lines);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Aggregator> {
        self.aggregator.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn emit(lines: Vec<Line>) {
    for line in lines {
        match line {
            Line::First { class, place, reason } => tracing::warn!(class, record = %place, error = %reason,
                "Sending a record to the dead-letter topic (more of this class within {} s are summed up).",
                INTERVAL.as_secs()),
            Line::Summary { class, more, last } => tracing::warn!(class, more, last = %last,
                "More records of this class were sent to the dead-letter topic."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_a_million_writes_a_bounded_number_of_lines() {
        let mut log = Aggregator::default();
        let start = Instant::now();
        let mut lines = 0;
        // A million dead letters of two classes over 50 s.
        for i in 0..1_000_000u64 {
            let now = start + Duration::from_micros(i * 50);
            let class = if i % 2 == 0 { "malformed" } else { "past_event" };
            lines += log.note(now, class, format!("t/0@{i}"), "bad").len();
        }
        lines += log.flush(start + Duration::from_secs(3600)).len();
        // Five intervals of 10 s, two classes, at most two lines each.
        assert!(lines <= 5 * 2 * 2, "{lines} lines");
        assert!(lines >= 2 * 2, "each class is logged at least once and summed up: {lines}");
    }

    #[test]
    fn the_summary_counts_what_was_not_logged_and_names_the_last() {
        let mut log = Aggregator::default();
        let t0 = Instant::now();
        assert_eq!(log.note(t0, "malformed", "t/0@1".into(), "bad").len(), 1);
        assert!(log.note(t0 + Duration::from_secs(1), "malformed", "t/0@2".into(), "bad").is_empty());
        assert!(log.note(t0 + Duration::from_secs(2), "malformed", "t/0@3".into(), "bad").is_empty());
        assert!(log.flush(t0 + Duration::from_secs(5)).is_empty(), "the interval has not ended");
        assert_eq!(log.flush(t0 + INTERVAL), [Line::Summary { class: "malformed", more: 2, last: "t/0@3".into() }]);
        assert!(log.flush(t0 + INTERVAL * 3).is_empty(), "nothing left to sum up");
        let next = log.note(t0 + INTERVAL * 3, "malformed", "t/0@9".into(), "bad");
        assert!(matches!(&next[..], [Line::First { place, .. }] if place == "t/0@9"));
    }
}
