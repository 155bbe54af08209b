//! The event contracts: a simulation result, a breaker state change, and what makes one valid.
//!
//! These types are the domain's view of the records in `schemas/`; `codec` turns them into bytes and JSON lines
//! and back. Nothing here does I/O or reads the clock.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Declares a closed set of wire symbols: the Rust enum, its Avro/JSON symbol, and its position in the schema.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $symbol:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $symbol)] $variant),+
        }

        impl $name {
            /// Every value, in the order of the schema's symbols (the Avro enum index is the position here).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The symbol used on the wire, in Avro and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $symbol),+ }
            }

            /// The value a wire symbol names, if any.
            pub fn from_symbol(symbol: &str) -> Option<Self> {
                match symbol { $($symbol => Some($name::$variant),)+ _ => None }
            }

            /// The position of this value among the schema's symbols.
            pub fn index(self) -> u32 {
                Self::ALL.iter().position(|v| *v == self).expect("every variant is in ALL") as u32
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Where a simulation ran.
    Source { Sandbox = "sandbox", Canary = "canary", Manual = "manual", Backfill = "backfill" }
}

wire_enum! {
    /// How the V2 (shadow) model's run ended.
    V2Status { Success = "success", Error = "error", Timeout = "timeout", SchemaError = "schema_error" }
}

wire_enum! {
    /// The state of a circuit breaker as other services see it.
    BreakerState {
        /// V2 runs in shadow; drift is watched.
        Closed = "closed",
        /// V2 is switched off, until `disabled_until` or until an operator enables it.
        Open = "open",
        /// V2 runs on probation after an open period; the next window decides.
        HalfOpen = "half_open",
    }
}

wire_enum! {
    /// Incident severity: P1 drift trip, P2 manual disable or warning, P3 schema-error trip.
    Severity { P1 = "P1", P2 = "P2", P3 = "P3" }
}

/// One V1/V2 cost comparison for one request, as published by the cost simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationResult {
    /// Unique id of this event; provenance is idempotent on it.
    pub event_id: String,
    /// Event time (millisecond precision); windows are in event time.
    #[serde(serialize_with = "rfc3339_millis")]
    pub occurred_at: DateTime<Utc>,
    /// The tenant whose request was simulated.
    pub tenant_id: String,
    /// The caller's run id, when there is one.
    pub run_id: Option<String>,
    /// Hash of the canonical simulation input.
    pub input_hash: String,
    /// Where the simulation ran.
    pub source: Source,
    /// V1 (production) cost in cents.
    pub v1_cost_cents: i64,
    /// Whether V1 found the plan feasible.
    pub v1_feasible: bool,
    /// V1 run time in milliseconds.
    pub v1_duration_ms: Option<i64>,
    /// How the V2 run ended.
    pub v2_status: V2Status,
    /// V2 cost in cents; present whenever `v2_status` is success.
    pub v2_cost_cents: Option<i64>,
    /// Whether V2 found the plan feasible; present whenever `v2_status` is success.
    pub v2_feasible: Option<bool>,
    /// V2 run time in milliseconds.
    pub v2_duration_ms: Option<i64>,
    /// V2's own confidence in its estimate.
    pub v2_confidence: Option<f64>,
    /// Version of the V2 model.
    pub model_version: String,
    /// Version of the V2 adapter.
    pub adapter_version: String,
    /// Git commit of the simulator that produced the event.
    pub commit_sha: Option<String>,
}

/// One change of a circuit breaker's state, as published on the compacted state topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerStateChanged {
    /// Unique id of this change.
    pub event_id: String,
    /// The breaker's name, e.g. `costsim_v2`; also the record key.
    pub breaker: String,
    /// +1 per change of this breaker, so subscribers can drop duplicates and stale records.
    pub version: i64,
    /// State before the change.
    pub from_state: BreakerState,
    /// State after the change.
    pub to_state: BreakerState,
    /// Why the state changed, for humans.
    pub reason: String,
    /// Severity of the incident a trip opened.
    pub severity: Option<Severity>,
    /// The incident this change opened or resolved.
    pub incident_id: Option<String>,
    /// The window's p95 drift at the decision, when there was one.
    pub p95_drift: Option<f64>,
    /// Events in the window at the decision.
    pub sample_count: i64,
    /// The drift threshold in force at the decision.
    pub drift_threshold: f64,
    /// When an open breaker goes half-open by itself; `None` while open means latched.
    #[serde(serialize_with = "rfc3339_millis_opt")]
    pub disabled_until: Option<DateTime<Utc>>,
    /// Who changed the state: `circuit_breaker` for automatic decisions, otherwise the operator.
    pub actor: String,
    /// When the change was decided.
    #[serde(serialize_with = "rfc3339_millis")]
    pub occurred_at: DateTime<Utc>,
}

/// Why a well-formed event is still not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidEvent {
    /// A required text field is empty or blank.
    #[error("`{field}` is empty")]
    EmptyField {
        /// The empty field.
        field: &'static str,
    },
    /// A cost is below zero.
    #[error("`{field}` is negative ({value})")]
    NegativeCost {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A duration is below zero.
    #[error("`{field}` is negative ({value})")]
    NegativeDuration {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// The V2 confidence is NaN or infinite.
    #[error("`v2_confidence` is not a finite number ({value})")]
    NonFiniteConfidence {
        /// Its value.
        value: f64,
    },
    /// `v2_status` says success, but a V2 outcome field is missing.
    #[error("`v2_status` is success but `{field}` is missing")]
    SuccessWithout {
        /// The missing field.
        field: &'static str,
    },
}

impl SimulationResult {
    /// Checks the rules a decoded event must satisfy before it may influence a breaker.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        for (field, value) in [("event_id", &self.event_id), ("tenant_id", &self.tenant_id)] {
            if value.trim().is_empty() {
                return Err(InvalidEvent::EmptyField { field });
            }
        }
        let costs = [("v1_cost_cents", Some(self.v1_cost_cents)), ("v2_cost_cents", self.v2_cost_cents)];
        if let Some((field, Some(value))) = costs.into_iter().find(|(_, v)| v.is_some_and(|v| v < 0)) {
            return Err(InvalidEvent::NegativeCost { field, value });
        }
        let durations = [("v1_duration_ms", self.v1_duration_ms), ("v2_duration_ms", self.v2_duration_ms)];
        if let Some((field, Some(value))) = durations.into_iter().find(|(_, v)| v.is_some_and(|v| v < 0)) {
            return Err(InvalidEvent::NegativeDuration { field, value });
        }
        if let Some(value) = self.v2_confidence.filter(|c| !c.is_finite()) {
            return Err(InvalidEvent::NonFiniteConfidence { value });
        }
        if self.v2_status == V2Status::Success {
            if self.v2_cost_cents.is_none() {
                return Err(InvalidEvent::SuccessWithout { field: "v2_cost_cents" });
            }
            if self.v2_feasible.is_none() {
                return Err(InvalidEvent::SuccessWithout { field: "v2_feasible" });
            }
        }
        Ok(())
    }
}

/// Formats a timestamp as RFC 3339 in UTC with milliseconds, the JSON form of `timestamp-millis`.
pub fn format_rfc3339_millis(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn rfc3339_millis<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339_millis(at))
}

fn rfc3339_millis_opt<S: serde::Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339_millis(at, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A valid event to derive test cases from.
    pub(crate) fn sample_result() -> SimulationResult {
        SimulationResult {
            event_id: "evt-1".into(),
            occurred_at: Utc.timestamp_millis_opt(1_764_230_400_123).unwrap(),
            tenant_id: "tenant-a".into(),
            run_id: Some("run-7".into()),
            input_hash: "ab".repeat(32),
            source: Source::Sandbox,
            v1_cost_cents: 100,
            v1_feasible: true,
            v1_duration_ms: Some(12),
            v2_status: V2Status::Success,
            v2_cost_cents: Some(105),
            v2_feasible: Some(true),
            v2_duration_ms: Some(30),
            v2_confidence: Some(0.92),
            model_version: "2.0.0".into(),
            adapter_version: "2.0.0".into(),
            commit_sha: Some("0123456789ab".into()),
        }
    }

    #[test]
    fn a_complete_event_is_valid() {
        assert_eq!(sample_result().validate(), Ok(()));
    }

    #[test]
    fn a_blank_event_id_is_rejected() {
        let event = SimulationResult { event_id: "  ".into(), ..sample_result() };
        assert_eq!(event.validate(), Err(InvalidEvent::EmptyField { field: "event_id" }));
    }

    #[test]
    fn a_negative_v2_cost_is_rejected() {
        let event = SimulationResult { v2_cost_cents: Some(-1), ..sample_result() };
        assert_eq!(event.validate(), Err(InvalidEvent::NegativeCost { field: "v2_cost_cents", value: -1 }));
    }

    #[test]
    fn a_failed_v2_run_needs_no_v2_cost() {
        let event = SimulationResult {
            v2_status: V2Status::Timeout,
            v2_cost_cents: None,
            v2_feasible: None,
            ..sample_result()
        };
        assert_eq!(event.validate(), Ok(()));
    }

    #[test]
    fn wire_symbols_round_trip_and_keep_schema_order() {
        for (i, status) in V2Status::ALL.iter().enumerate() {
            assert_eq!(V2Status::from_symbol(status.as_str()), Some(*status));
            assert_eq!(status.index() as usize, i);
        }
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
    }
}
