//! The breaker state machine: `closed`, `open` (timed, or latched without a TTL) and `half_open`, decided by
//! [`decide`] from the breaker's record, a window summary, the settings and the decision time.
//!
//! ```text
//!            trip (P1 drift for failure_threshold evaluations, P3 schema errors at once)
//!   closed ───────────────────────────────────────────────────────────────► open
//!     ▲                                                                    │  ▲
//!     │ close: probation over, ≥ min_samples, p95 ≤ threshold   half_open: │  │ reopen: otherwise,
//!     │                                                   TTL passed and   │  │ TTL doubled (capped)
//!     └──────────────────────────── half_open ◄────────── auto_recover ────┘  │
//!                                       └─────────────────────────────────────┘
//! ```
//!
//! Rules that differ from the older system (docs/DOMAIN.md, *Defects fixed*): an open breaker never trips again; the
//! window's p95 is compared, never a single event; too few samples is an outcome of its own (and breaks a run of
//! consecutive failures); a failed probation doubles the TTL. `now` is a parameter: replaying the same summaries at the
//! same times gives the same decisions.

mod config;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

pub use config::{BreakerConfig, ConfigError, KEYS};

use crate::event::{BreakerState, Severity};
use crate::window::WindowSummary;

/// The breaker's record: its state and what the state machine needs to remember between decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// Closed, open or half-open.
    pub state: BreakerState,
    /// Failing evaluations in a row while closed.
    pub consecutive_failures: u32,
    /// When the current incident began (the trip), until the breaker closes.
    pub opened_at: Option<DateTime<Utc>>,
    /// When an open breaker goes half-open; `None` while open means latched.
    pub disabled_until: Option<DateTime<Utc>>,
    /// The TTL of the current open period in seconds, doubled by each failed probation; 0 when latched.
    pub ttl_seconds: u64,
    /// When probation began, while half-open.
    pub half_open_since: Option<DateTime<Utc>>,
    /// The severity of the current incident, from trip to close (kept by reopens, so alerts keep one identity).
    pub severity: Option<Severity>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::closed()
    }
}

impl Breaker {
    /// A closed breaker with no history.
    pub fn closed() -> Self {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            disabled_until: None,
            ttl_seconds: 0,
            half_open_since: None,
            severity: None,
        }
    }

    /// The window a decision at `now` must see, `[start, now)`: the rolling window, and while half-open only
    /// the part since probation began.
    pub fn window_bounds(&self, config: &BreakerConfig, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = now - config.window();
        match (self.state, self.half_open_since) {
            (BreakerState::HalfOpen, Some(since)) => (start.max(since).min(now), now),
            _ => (start, now),
        }
    }

    fn open(&self, now: DateTime<Utc>, ttl_seconds: u64, severity: Severity) -> Breaker {
        Breaker {
            state: BreakerState::Open,
            consecutive_failures: 0,
            opened_at: self.opened_at.or(Some(now)),
            disabled_until: (ttl_seconds > 0).then(|| now + config::duration(ttl_seconds)),
            ttl_seconds,
            half_open_since: None,
            severity: Some(severity),
        }
    }
}

/// The facts behind a decision: what the window showed and the limits it was held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The window's p95 drift, when it had samples.
    pub p95_drift: Option<f64>,
    /// Drift samples in the window.
    pub sample_count: u64,
    /// Schema errors in the window.
    pub schema_errors: u64,
    /// Failing evaluations in a row, this one included.
    pub consecutive_failures: u32,
    /// The trip threshold in force.
    pub drift_threshold: f64,
    /// The warning level in force.
    pub drift_warning_threshold: f64,
    /// The sample minimum in force.
    pub min_samples: u64,
    /// The consecutive-failure count that trips.
    pub failure_threshold: u32,
    /// The schema-error count that trips.
    pub schema_error_threshold: u64,
    /// Start of the window (inclusive).
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive).
    pub window_end: DateTime<Utc>,
    /// Partitions of the results topic whose events had not reached the window's end when it was judged (idle
    /// ones, passed over after `COSTSIM_IDLE_PARTITION_SECONDS`): the decision was taken without them. Their events
    /// still land in their buckets later, inside the window, for the decisions after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions_behind: Vec<i32>,
}

/// What a decision concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to report.
    None,
    /// Closed, and the window has fewer samples than `min_samples`: no verdict (and no silent pass).
    InsufficientData {
        /// Samples in the window.
        sample_count: u64,
        /// Samples needed.
        min_samples: u64,
    },
    /// Closed, and the p95 is above the warning level: a P2 warning, no trip (yet).
    Warn {
        /// What the window showed.
        evidence: Evidence,
    },
    /// Closed → open.
    Trip {
        /// P1 for drift, P3 for schema errors.
        severity: Severity,
        /// Why, for humans.
        reason: String,
        /// What the window showed.
        evidence: Evidence,
    },
    /// Open → half-open: the TTL passed and auto-recovery is on; probation begins.
    HalfOpen {
        /// Why, for humans.
        reason: String,
    },
    /// Half-open → closed: probation passed.
    Close {
        /// Why, for humans.
        reason: String,
        /// What the probation window showed.
        evidence: Evidence,
    },
    /// An operator switched V2 off (P2), latched or for a TTL; from any state, to open.
    Disable {
        /// The operator's reason.
        reason: String,
    },
    /// An operator switched V2 back on; from open or half-open, to closed.
    Enable {
        /// The operator's reason.
        reason: String,
    },
    /// Half-open → open: probation failed; the TTL doubles up to its cap.
    Reopen {
        /// The incident's severity, unchanged.
        severity: Severity,
        /// Why, for humans.
        reason: String,
        /// What the probation window showed.
        evidence: Evidence,
    },
}

impl Outcome {
    /// The severity of a trip or reopen.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            Outcome::Trip { severity, .. } | Outcome::Reopen { severity, .. } => Some(*severity),
            _ => None,
        }
    }

    /// The evidence of an outcome that has one, to complete it with what only the caller knows.
    pub fn evidence_mut(&mut self) -> Option<&mut Evidence> {
        match self {
            Outcome::Warn { evidence }
            | Outcome::Trip { evidence, .. }
            | Outcome::Close { evidence, .. }
            | Outcome::Reopen { evidence, .. } => Some(evidence),
            _ => None,
        }
    }

    /// The reason of a transition.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Trip { reason, .. }
            | Outcome::HalfOpen { reason }
            | Outcome::Close { reason, .. }
            | Outcome::Disable { reason }
            | Outcome::Enable { reason }
            | Outcome::Reopen { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// The outcome of one decision and the breaker's record after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What was concluded.
    pub outcome: Outcome,
    /// The record to store.
    pub next: Breaker,
}

impl Decision {
    /// `(from, to)` when the state changed.
    pub fn transition(&self, before: &Breaker) -> Option<(BreakerState, BreakerState)> {
        (before.state != self.next.state).then_some((before.state, self.next.state))
    }
}

/// Decides what the breaker does at event time `now`, given the window that ends at `now` (see
/// [`Breaker::window_bounds`] for the part of it a half-open breaker judges). Pure: no clock, no I/O.
pub fn decide(breaker: &Breaker, window: &WindowSummary, config: &BreakerConfig, now: DateTime<Utc>) -> Decision {
    match breaker.state {
        BreakerState::Closed => decide_closed(breaker, window, config, now),
        BreakerState::Open => decide_open(breaker, config, now),
        BreakerState::HalfOpen => decide_half_open(breaker, window, config, now),
    }
}

/// An operator's disable at `now`: open for `ttl_seconds` (0 latches it until an enable), severity P2 unless an
/// incident is already open. Disabling an open breaker replaces its TTL and keeps its incident.
pub fn manual_disable(breaker: &Breaker, reason: &str, ttl_seconds: u64, now: DateTime<Utc>) -> Decision {
    let severity = breaker.severity.unwrap_or(Severity::P2);
    Decision { outcome: Outcome::Disable { reason: reason.to_owned() }, next: breaker.open(now, ttl_seconds, severity) }
}

/// An operator's enable: closed, with no history. Enabling a closed breaker changes nothing (the caller says so).
pub fn manual_enable(breaker: &Breaker, reason: &str) -> Decision {
    let next = if breaker.state == BreakerState::Closed { breaker.clone() } else { Breaker::closed() };
    Decision { outcome: Outcome::Enable { reason: reason.to_owned() }, next }
}

fn decide_closed(breaker: &Breaker, window: &WindowSummary, config: &BreakerConfig, now: DateTime<Utc>) -> Decision {
    let enough = window.sample_count >= config.min_samples;
    let p95 = window.p95_drift.filter(|_| enough);
    let failing = p95.is_some_and(|p| p > config.drift_threshold);
    let failures = if failing { breaker.consecutive_failures.saturating_add(1) } else { 0 };
    let evidence = evidence(window, config, failures);
    let stay = |outcome| Decision { outcome, next: Breaker { consecutive_failures: failures, ..breaker.clone() } };

    if failing && failures >= config.failure_threshold {
        let reason = format!(
            "p95 drift {:.4} > {} for {failures} consecutive evaluations ({} samples, window {})",
            p95.unwrap_or_default(),
            config.drift_threshold,
            window.sample_count,
            bounds(window),
        );
        let next = breaker.open(now, config.disable_ttl_seconds, Severity::P1);
        return Decision { outcome: Outcome::Trip { severity: Severity::P1, reason, evidence }, next };
    }
    if window.schema_errors >= config.schema_error_threshold {
        let reason = format!(
            "{} schema errors >= {} in window {}",
            window.schema_errors,
            config.schema_error_threshold,
            bounds(window)
        );
        let next = breaker.open(now, config.disable_ttl_seconds, Severity::P3);
        return Decision { outcome: Outcome::Trip { severity: Severity::P3, reason, evidence }, next };
    }
    match p95 {
        None => stay(Outcome::InsufficientData { sample_count: window.sample_count, min_samples: config.min_samples }),
        Some(p) if p > config.drift_warning_threshold => stay(Outcome::Warn { evidence }),
        Some(_) => stay(Outcome::None),
    }
}

fn decide_open(breaker: &Breaker, config: &BreakerConfig, now: DateTime<Utc>) -> Decision {
    match breaker.disabled_until {
        Some(until) if config.auto_recover && now >= until => {
            let reason = format!(
                "disabled until {} passed; probation for {} s",
                until.format("%Y-%m-%dT%H:%M:%SZ"),
                config.probation_seconds
            );
            let next = Breaker { state: BreakerState::HalfOpen, half_open_since: Some(now), ..breaker.clone() };
            Decision { outcome: Outcome::HalfOpen { reason }, next }
        }
        // Timed but not yet due, latched, or auto-recovery off: stay open, and never trip again.
        _ => Decision { outcome: Outcome::None, next: breaker.clone() },
    }
}

fn decide_half_open(breaker: &Breaker, window: &WindowSummary, config: &BreakerConfig, now: DateTime<Utc>) -> Decision {
    let since = breaker.half_open_since.unwrap_or(now);
    let severity = breaker.severity.unwrap_or(Severity::P1);
    let evidence = evidence(window, config, 0);
    let reopen = |why: String| {
        let ttl = match breaker.ttl_seconds {
            0 => 0,
            ttl => ttl.saturating_mul(2).min(config.max_disable_ttl_seconds),
        };
        let next = breaker.open(now, ttl, severity);
        let until = match next.disabled_until {
            Some(until) => format!("disabled until {} (TTL {ttl} s)", until.format("%Y-%m-%dT%H:%M:%SZ")),
            None => "latched".to_string(),
        };
        let reason = format!("probation failed: {why}; reopened, {until}");
        Decision { outcome: Outcome::Reopen { severity, reason, evidence: evidence.clone() }, next }
    };

    if window.schema_errors >= config.schema_error_threshold {
        return reopen(format!("{} schema errors >= {}", window.schema_errors, config.schema_error_threshold));
    }
    if now - since < config.probation() {
        let next = Breaker { half_open_since: Some(since), ..breaker.clone() };
        return Decision { outcome: Outcome::None, next };
    }
    match window.p95_drift.filter(|_| window.sample_count >= config.min_samples) {
        Some(p95) if p95 <= config.drift_threshold => {
            let reason = format!(
                "probation passed: p95 drift {p95:.4} <= {} over {} samples in {}",
                config.drift_threshold,
                window.sample_count,
                bounds(window)
            );
            Decision { outcome: Outcome::Close { reason, evidence }, next: Breaker::closed() }
        }
        Some(p95) => reopen(format!("p95 drift {p95:.4} > {} in {}", config.drift_threshold, bounds(window))),
        None => reopen(format!("{} samples < {} in {}", window.sample_count, config.min_samples, bounds(window))),
    }
}

fn evidence(window: &WindowSummary, config: &BreakerConfig, consecutive_failures: u32) -> Evidence {
    Evidence {
        p95_drift: window.p95_drift,
        sample_count: window.sample_count,
        schema_errors: window.schema_errors,
        consecutive_failures,
        drift_threshold: config.drift_threshold,
        drift_warning_threshold: config.drift_warning_threshold,
        min_samples: config.min_samples,
        failure_threshold: config.failure_threshold,
        schema_error_threshold: config.schema_error_threshold,
        window_start: window.start,
        window_end: window.end,
        partitions_behind: Vec::new(),
    }
}

/// `08:00:00–08:05:00`, or with dates when the window spans midnight.
fn bounds(window: &WindowSummary) -> String {
    let same_day = window.start.date_naive() == (window.end - TimeDelta::milliseconds(1)).date_naive();
    let format = if same_day { "%H:%M:%S" } else { "%Y-%m-%dT%H:%M:%SZ" };
    format!("{}–{}", window.start.format(format), window.end.format(format))
}

#[cfg(test)]
mod tests;
