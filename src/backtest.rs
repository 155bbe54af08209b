//! Replays simulation results through the window and the breaker, with no side effects: what would the breaker
//! have decided on these events, with these settings?
//!
//! Event time is the only time. Each event first moves the watermark (the largest `occurred_at` seen), which
//! closes buckets; the breaker decides once per closed bucket, with `now` = that bucket's end; then the event is
//! added to its bucket (or counted as too late). So the same events in the same order always give the same
//! transitions, byte for byte. The bucket that holds the last event never closes and is not judged, as it
//! would not be yet in a live run.

mod report;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

pub use report::{format_summary, format_transition, summary_json, transition_json};

use crate::breaker::{Breaker, BreakerConfig, ConfigError, Outcome, decide};
use crate::drift::Observation;
use crate::event::{BreakerState, Severity, SimulationResult};
use crate::window::{Placement, Window};

/// One change of the breaker's state during a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Event time of the decision: the end of the bucket that closed.
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Severity of a trip or reopen.
    pub severity: Option<Severity>,
    /// Why, for humans.
    pub reason: String,
    /// p95 drift of the window the decision saw.
    pub p95_drift: Option<f64>,
    /// Drift samples in that window.
    pub sample_count: u64,
    /// Schema errors in that window.
    pub schema_errors: u64,
    /// When the breaker goes half-open by itself, after a trip or reopen (`None` when latched).
    #[serde(serialize_with = "rfc3339_opt")]
    pub disabled_until: Option<DateTime<Utc>>,
}

/// What a replay saw and decided, in total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Valid events replayed.
    pub events_read: u64,
    /// Inputs that gave no event.
    pub rejected: u64,
    /// Rejections by kind of error.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Events dropped because their bucket had already left the window.
    pub too_late: u64,
    /// Event time of the earliest event.
    #[serde(serialize_with = "rfc3339_opt")]
    pub first_event_at: Option<DateTime<Utc>>,
    /// Event time of the latest event.
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_event_at: Option<DateTime<Utc>>,
    /// Decisions made (one per closed bucket).
    pub evaluations: u64,
    /// Decisions that found too few samples.
    pub insufficient_data: u64,
    /// Decisions that warned.
    pub warnings: u64,
    /// Trips (closed → open).
    pub trips: u64,
    /// Trips by severity.
    pub trips_by_severity: BTreeMap<Severity, u64>,
    /// Failed probations (half-open → open).
    pub reopens: u64,
    /// Passed probations (half-open → closed).
    pub recoveries: u64,
    /// Event time spent open, in seconds (until the last decision for a breaker still open).
    pub open_seconds: i64,
    /// Event time spent half-open, in seconds.
    pub half_open_seconds: i64,
    /// Smallest p95 drift over decisions with at least `min_samples` samples.
    pub min_p95_drift: Option<f64>,
    /// Largest p95 drift over decisions with at least `min_samples` samples.
    pub max_p95_drift: Option<f64>,
    /// The breaker's state after the last decision.
    pub final_state: BreakerState,
    /// The settings used, as `key=value` pairs.
    pub config: String,
}

/// The replay engine: feed it events in input order, read transitions as they happen, then finish.
#[derive(Debug)]
pub struct Backtest {
    config: BreakerConfig,
    window: Window,
    breaker: Breaker,
    /// Transitions caused by the last `push`.
    transitions: Vec<Transition>,
    /// When the breaker entered its current state (for the time spent open).
    state_since: Option<DateTime<Utc>>,
    last_decision_at: Option<DateTime<Utc>>,
    summary: Summary,
}

impl Backtest {
    /// A replay with the given settings, which are validated first.
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let spec = config.window_spec().map_err(|e| ConfigError::InvalidValue {
            key: "window_seconds".into(),
            value: config.window_seconds.to_string(),
            reason: e.to_string(),
        })?;
        let summary = Summary {
            events_read: 0,
            rejected: 0,
            rejected_by_reason: BTreeMap::new(),
            too_late: 0,
            first_event_at: None,
            last_event_at: None,
            evaluations: 0,
            insufficient_data: 0,
            warnings: 0,
            trips: 0,
            trips_by_severity: BTreeMap::new(),
            reopens: 0,
            recoveries: 0,
            open_seconds: 0,
            half_open_seconds: 0,
            min_p95_drift: None,
            max_p95_drift: None,
            final_state: BreakerState::Closed,
            config: config.describe(),
        };
        Ok(Backtest {
            window: Window::new(spec),
            config,
            breaker: Breaker::closed(),
            transitions: Vec::new(),
            state_since: None,
            last_decision_at: None,
            summary,
        })
    }

    /// Replays one event; returns the transitions it caused (by closing buckets), oldest first.
    pub fn push(&mut self, event: &SimulationResult) -> &[Transition] {
        let at = event.occurred_at;
        let summary = &mut self.summary;
        summary.events_read += 1;
        summary.first_event_at = Some(summary.first_event_at.map_or(at, |first| first.min(at)));
        summary.last_event_at = Some(summary.last_event_at.map_or(at, |last| last.max(at)));
        self.transitions.clear();
        for end in self.window.advance(at) {
            self.decide_at(end);
        }
        if self.window.record(at, Observation::of(event)) == Placement::TooLate {
            self.summary.too_late += 1;
        }
        &self.transitions
    }

    /// Counts an input that gave no event, by kind (e.g. `bad_json`).
    pub fn reject(&mut self, reason: &str) {
        self.summary.rejected += 1;
        *self.summary.rejected_by_reason.entry(reason.to_string()).or_default() += 1;
    }

    /// The breaker's record now.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Ends the replay and returns the totals.
    pub fn finish(mut self) -> Summary {
        if let (Some(since), Some(last)) = (self.state_since, self.last_decision_at) {
            self.add_time_in_state(last - since);
        }
        self.summary.final_state = self.breaker.state;
        self.summary
    }

    fn decide_at(&mut self, now: DateTime<Utc>) {
        let (start, end) = self.breaker.window_bounds(&self.config, now);
        let window = self.window.summary_between(start, end);
        let decision = decide(&self.breaker, &window, &self.config, now);
        self.last_decision_at = Some(now);

        let summary = &mut self.summary;
        summary.evaluations += 1;
        if window.sample_count >= self.config.min_samples {
            if let Some(p95) = window.p95_drift {
                summary.min_p95_drift = Some(summary.min_p95_drift.map_or(p95, |m| m.min(p95)));
                summary.max_p95_drift = Some(summary.max_p95_drift.map_or(p95, |m| m.max(p95)));
            }
        }
        match &decision.outcome {
            Outcome::InsufficientData { .. } => summary.insufficient_data += 1,
            Outcome::Warn { .. } => summary.warnings += 1,
            Outcome::Trip { severity, .. } => {
                summary.trips += 1;
                *summary.trips_by_severity.entry(*severity).or_default() += 1;
            }
            Outcome::Reopen { .. } => summary.reopens += 1,
            Outcome::Close { .. } => summary.recoveries += 1,
            // Operators act on the live breaker only; a replay never produces these.
            Outcome::None | Outcome::HalfOpen { .. } | Outcome::Disable { .. } | Outcome::Enable { .. } => {}
        }

        if let Some((from, to)) = decision.transition(&self.breaker) {
            if let Some(since) = self.state_since {
                self.add_time_in_state(now - since);
            }
            self.state_since = Some(now);
            self.transitions.push(Transition {
                at: now,
                from,
                to,
                severity: decision.outcome.severity(),
                reason: decision.outcome.reason().unwrap_or_default().to_string(),
                p95_drift: window.p95_drift,
                sample_count: window.sample_count,
                schema_errors: window.schema_errors,
                disabled_until: decision.next.disabled_until.filter(|_| to == BreakerState::Open),
            });
        }
        self.breaker = decision.next;
    }

    /// Adds time spent in the current state to the open or half-open total.
    fn add_time_in_state(&mut self, spent: TimeDelta) {
        match self.breaker.state {
            BreakerState::Open => self.summary.open_seconds += spent.num_seconds(),
            BreakerState::HalfOpen => self.summary.half_open_seconds += spent.num_seconds(),
            BreakerState::Closed => {}
        }
    }
}

/// Everything a replay produced, for callers that want it at once rather than streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Every transition, oldest first.
    pub transitions: Vec<Transition>,
    /// The totals.
    pub summary: Summary,
}

/// Replays `inputs` (events, or per-input errors classified by `reason`) with `config`.
pub fn replay<E>(
    inputs: impl IntoIterator<Item = Result<SimulationResult, E>>,
    config: BreakerConfig,
    reason: impl Fn(&E) -> String,
) -> Result<Report, ConfigError> {
    let mut backtest = Backtest::new(config)?;
    let mut transitions = Vec::new();
    for input in inputs {
        match input {
            Ok(event) => transitions.extend_from_slice(backtest.push(&event)),
            Err(err) => backtest.reject(&reason(&err)),
        }
    }
    Ok(Report { transitions, summary: backtest.finish() })
}

fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::event::format_rfc3339_millis(at))
}

fn rfc3339_opt<S: serde::Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
