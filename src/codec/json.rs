//! The JSON Lines form of the events: the schema's field names with plain values (`null` or the value).
//!
//! `occurred_at` and `disabled_until` accept RFC 3339 text or epoch milliseconds and are written as RFC 3339 UTC
//! with milliseconds. Unknown fields are rejected, so a misspelt optional field is an error rather than a silent
//! `null`.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::DecodeError;
use crate::event::{BreakerState, BreakerStateChanged, Severity, SimulationResult, Source, V2Status};

/// Parses and validates one JSON line as a simulation result.
pub fn simulation_result_from_json(line: &str) -> Result<SimulationResult, DecodeError> {
    let raw: RawSimulationResult = parse(line)?;
    let event = SimulationResult {
        event_id: required("event_id", raw.event_id)?,
        occurred_at: required("occurred_at", raw.occurred_at)?.0,
        tenant_id: required("tenant_id", raw.tenant_id)?,
        run_id: raw.run_id,
        input_hash: required("input_hash", raw.input_hash)?,
        source: required("source", raw.source)?,
        v1_cost_cents: required("v1_cost_cents", raw.v1_cost_cents)?,
        v1_feasible: required("v1_feasible", raw.v1_feasible)?,
        v1_duration_ms: raw.v1_duration_ms,
        v2_status: required("v2_status", raw.v2_status)?,
        v2_cost_cents: raw.v2_cost_cents,
        v2_feasible: raw.v2_feasible,
        v2_duration_ms: raw.v2_duration_ms,
        v2_confidence: raw.v2_confidence,
        model_version: required("model_version", raw.model_version)?,
        adapter_version: required("adapter_version", raw.adapter_version)?,
        commit_sha: raw.commit_sha,
    };
    event.validate()?;
    Ok(event)
}

/// Writes a simulation result as one JSON line (without the newline).
pub fn simulation_result_to_json(event: &SimulationResult) -> String {
    serde_json::to_string(event).expect("a SimulationResult always serializes")
}

/// Parses one JSON line as a breaker state change.
pub fn breaker_state_changed_from_json(line: &str) -> Result<BreakerStateChanged, DecodeError> {
    let raw: RawBreakerStateChanged = parse(line)?;
    Ok(BreakerStateChanged {
        event_id: required("event_id", raw.event_id)?,
        breaker: required("breaker", raw.breaker)?,
        version: required("version", raw.version)?,
        from_state: required("from_state", raw.from_state)?,
        to_state: required("to_state", raw.to_state)?,
        reason: required("reason", raw.reason)?,
        severity: raw.severity,
        incident_id: raw.incident_id,
        p95_drift: raw.p95_drift,
        sample_count: required("sample_count", raw.sample_count)?,
        drift_threshold: required("drift_threshold", raw.drift_threshold)?,
        disabled_until: raw.disabled_until.map(|t| t.0),
        actor: required("actor", raw.actor)?,
        occurred_at: required("occurred_at", raw.occurred_at)?.0,
    })
}

/// Writes a breaker state change as one JSON line (without the newline).
pub fn breaker_state_changed_to_json(event: &BreakerStateChanged) -> String {
    serde_json::to_string(event).expect("a BreakerStateChanged always serializes")
}

/// Reads simulation results from JSON Lines, one per non-blank line, each with its 1-based line number.
///
/// A bad line yields its error and reading goes on; an I/O error ends the iteration after being yielded.
pub struct JsonLines<R> {
    reader: R,
    line_no: usize,
    buf: String,
    failed: bool,
}

impl<R: BufRead> JsonLines<R> {
    /// Wraps a buffered reader.
    pub fn new(reader: R) -> Self {
        JsonLines { reader, line_no: 0, buf: String::new(), failed: false }
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    /// The line number and what the line held.
    type Item = (usize, Result<SimulationResult, LineError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            self.line_no += 1;
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) if self.buf.trim().is_empty() => continue,
                Ok(_) => {
                    let parsed = simulation_result_from_json(self.buf.trim_end()).map_err(LineError::Decode);
                    return Some((self.line_no, parsed));
                }
                Err(e) => {
                    self.failed = true;
                    return Some((self.line_no, Err(LineError::Io(e.to_string()))));
                }
            }
        }
    }
}

/// Why one line of a JSON Lines input gave no event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    /// The line was read but is not a valid event.
    #[error(transparent)]
    Decode(DecodeError),
    /// The input could not be read (the rest of the input is not read either).
    #[error("read error: {0}")]
    Io(String),
}

fn parse<'a, T: Deserialize<'a>>(line: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(line).map_err(|e| DecodeError::Json { detail: e.to_string() })
}

fn required<T>(field: &'static str, value: Option<T>) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingField { field })
}

/// A timestamp given as RFC 3339 text or as epoch milliseconds; sub-millisecond digits are dropped, as Avro's
/// `timestamp-millis` would.
struct Timestamp(DateTime<Utc>);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Millis(i64),
            Text(String),
        }
        let at = match Form::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected RFC 3339 text or epoch milliseconds"))?
        {
            Form::Millis(ms) => DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| serde::de::Error::custom(format!("epoch milliseconds {ms} are out of range")))?,
            Form::Text(text) => DateTime::parse_from_rfc3339(&text)
                .map_err(|e| serde::de::Error::custom(format!("`{text}` is not RFC 3339 ({e})")))?
                .with_timezone(&Utc),
        };
        let ms = at.timestamp_millis();
        Ok(Timestamp(DateTime::from_timestamp_millis(ms).expect("a valid timestamp truncated to ms is valid")))
    }
}

// Every field is optional here so that a missing required field becomes `MissingField` with its name, checked
// after parsing, instead of serde's message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulationResult {
    event_id: Option<String>,
    occurred_at: Option<Timestamp>,
    tenant_id: Option<String>,
    run_id: Option<String>,
    input_hash: Option<String>,
    source: Option<Source>,
    v1_cost_cents: Option<i64>,
    v1_feasible: Option<bool>,
    v1_duration_ms: Option<i64>,
    v2_status: Option<V2Status>,
    v2_cost_cents: Option<i64>,
    v2_feasible: Option<bool>,
    v2_duration_ms: Option<i64>,
    v2_confidence: Option<f64>,
    model_version: Option<String>,
    adapter_version: Option<String>,
    commit_sha: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreakerStateChanged {
    event_id: Option<String>,
    breaker: Option<String>,
    version: Option<i64>,
    from_state: Option<BreakerState>,
    to_state: Option<BreakerState>,
    reason: Option<String>,
    severity: Option<Severity>,
    incident_id: Option<String>,
    p95_drift: Option<f64>,
    sample_count: Option<i64>,
    drift_threshold: Option<f64>,
    disabled_until: Option<Timestamp>,
    actor: Option<String>,
    occurred_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::InvalidEvent;
    use crate::event::tests::sample_result;

    fn with(field: &str, value: serde_json::Value) -> String {
        let mut v: serde_json::Value = serde_json::from_str(&simulation_result_to_json(&sample_result())).unwrap();
        v[field] = value;
        v.to_string()
    }

    fn without(field: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(&simulation_result_to_json(&sample_result())).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    #[test]
    fn a_simulation_result_survives_the_json_round_trip() {
        let line = simulation_result_to_json(&sample_result());
        assert!(line.contains(r#""occurred_at":"2025-11-27T08:00:00.123Z""#), "{line}");
        assert_eq!(simulation_result_from_json(&line), Ok(sample_result()));
    }

    #[test]
    fn occurred_at_accepts_epoch_milliseconds_and_offsets() {
        let expected = sample_result();
        assert_eq!(
            simulation_result_from_json(&with("occurred_at", 1_764_230_400_123i64.into())),
            Ok(expected.clone())
        );
        let offset = with("occurred_at", "2025-11-27T09:00:00.123456+01:00".into());
        assert_eq!(simulation_result_from_json(&offset), Ok(expected));
    }

    #[test]
    fn a_bad_timestamp_says_what_forms_are_accepted() {
        let err = simulation_result_from_json(&with("occurred_at", "yesterday".into())).unwrap_err();
        assert!(err.to_string().contains("not RFC 3339"), "{err}");
        let err = simulation_result_from_json(&with("occurred_at", true.into())).unwrap_err();
        assert!(err.to_string().contains("RFC 3339 text or epoch milliseconds"), "{err}");
    }

    #[test]
    fn a_missing_or_null_required_field_is_named() {
        assert_eq!(
            simulation_result_from_json(&without("tenant_id")),
            Err(DecodeError::MissingField { field: "tenant_id" })
        );
        assert_eq!(
            simulation_result_from_json(&with("v1_cost_cents", serde_json::Value::Null)),
            Err(DecodeError::MissingField { field: "v1_cost_cents" })
        );
    }

    #[test]
    fn an_unknown_field_is_rejected() {
        let err = simulation_result_from_json(&with("v2_cost", 5.into())).unwrap_err();
        assert!(matches!(&err, DecodeError::Json { detail } if detail.contains("unknown field `v2_cost`")), "{err}");
    }

    #[test]
    fn contract_violations_are_reported() {
        let cases = [
            (with("v1_cost_cents", (-3).into()), InvalidEvent::NegativeCost { field: "v1_cost_cents", value: -3 }),
            (with("event_id", "".into()), InvalidEvent::EmptyField { field: "event_id" }),
            (with("tenant_id", " ".into()), InvalidEvent::EmptyField { field: "tenant_id" }),
            (with("v2_cost_cents", serde_json::Value::Null), InvalidEvent::SuccessWithout { field: "v2_cost_cents" }),
        ];
        for (line, expected) in cases {
            assert_eq!(simulation_result_from_json(&line), Err(DecodeError::Invalid(expected)));
        }
    }

    #[test]
    fn an_out_of_range_confidence_is_rejected() {
        // JSON has no NaN; a value beyond f64 range is the way an infinity arrives.
        let line = with("v2_confidence", serde_json::Value::Null)
            .replace(r#""v2_confidence":null"#, r#""v2_confidence":1e400"#);
        let err = simulation_result_from_json(&line).unwrap_err();
        assert!(matches!(&err, DecodeError::Json { detail } if detail.contains("out of range")), "{err}");
    }

    #[test]
    fn a_confidence_survives_the_json_round_trip_to_the_last_bit() {
        // Found by the json_lines fuzz target: 0.9408272326572419 is written as the shortest text that reads back
        // as itself, but serde_json's default float parser read that text as the next double up.
        let mut event = sample_result();
        event.v2_confidence = Some(0.9408272326572419);
        assert_eq!(simulation_result_from_json(&simulation_result_to_json(&event)), Ok(event));
    }

    #[test]
    fn json_lines_reports_line_numbers_skips_blank_lines_and_goes_on_after_a_bad_line() {
        let good = simulation_result_to_json(&sample_result());
        let input = format!("{good}\n\nnot json\n{good}\n");
        let lines: Vec<_> = JsonLines::new(input.as_bytes()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].0, 1);
        assert!(lines[0].1.is_ok());
        assert_eq!(lines[1].0, 3);
        assert!(matches!(lines[1].1, Err(LineError::Decode(DecodeError::Json { .. }))));
        assert_eq!(lines[2].0, 4);
        assert!(lines[2].1.is_ok());
    }
}
