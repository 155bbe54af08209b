//! Alertmanager payloads (API v2): one alert identity per breaker incident, fired on a trip and resolved, with the
//! same labels, on recovery. Pure: times are parameters.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::breaker::Evidence;
use crate::event::{Severity, format_rfc3339_millis};

/// Name of the alert a breaker incident fires.
pub const DISABLED_ALERT: &str = "CostSimV2Disabled";

/// What names one incident's alert; every payload for the incident carries exactly these labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertIdentity {
    /// The breaker's name.
    pub breaker: String,
    /// The incident's severity.
    pub severity: Severity,
    /// The incident's id.
    pub incident_id: String,
    /// The `instance` label: which deployment of costsim-breaker raised it.
    pub instance: String,
}

impl AlertIdentity {
    /// The label set, as Alertmanager matches it.
    pub fn labels(&self) -> Value {
        json!({
            "alertname": DISABLED_ALERT,
            "severity": self.severity.as_str().to_lowercase(),
            "component": "costsim",
            "circuit_breaker": self.breaker,
            "instance": self.instance,
            "incident_id": self.incident_id,
        })
    }
}

/// What the alert says about the trip, for people.
#[derive(Debug, Clone)]
pub struct AlertText<'a> {
    /// Why the breaker opened.
    pub reason: &'a str,
    /// The window behind an automatic trip; `None` for a manual disable.
    pub evidence: Option<&'a Evidence>,
    /// When the breaker goes half-open by itself; `None` means latched.
    pub disabled_until: Option<DateTime<Utc>>,
    /// Where the runbook is.
    pub runbook_url: &'a str,
}

/// The firing alert of an incident: the JSON array Alertmanager's `POST /api/v2/alerts` takes.
pub fn firing(identity: &AlertIdentity, text: &AlertText<'_>, starts_at: DateTime<Utc>) -> Value {
    let mut description = format!("Reason: {}\n", text.reason);
    if let Some(e) = text.evidence {
        let p95 = e.p95_drift.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.4}"));
        description += &format!(
            "p95 drift: {p95} (threshold {}, warning {})\nSample count: {} (minimum {})\nSchema errors: {} \
             (threshold {})\nWindow: {} to {}\n",
            e.drift_threshold,
            e.drift_warning_threshold,
            e.sample_count,
            e.min_samples,
            e.schema_errors,
            e.schema_error_threshold,
            format_rfc3339_millis(&e.window_start),
            format_rfc3339_millis(&e.window_end),
        );
    }
    description += &match text.disabled_until {
        Some(until) => format!("Disabled until: {}", format_rfc3339_millis(&until)),
        None => "Disabled until: manual reset required".to_owned(),
    };
    json!([{
        "labels": identity.labels(),
        "annotations": {
            "summary": format!("CostSim V2 circuit breaker {} tripped ({})", identity.breaker, identity.severity),
            "description": description,
            "runbook_url": text.runbook_url,
        },
        "startsAt": format_rfc3339_millis(&starts_at),
    }])
}

/// The same alert, resolved at `at`: a firing payload with `endsAt` set, so Alertmanager closes that very alert.
pub fn resolved(firing_payload: &Value, at: DateTime<Utc>) -> Value {
    let mut payload = firing_payload.clone();
    if let Some(alerts) = payload.as_array_mut() {
        for alert in alerts {
            alert["endsAt"] = json!(format_rfc3339_millis(&at));
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> AlertIdentity {
        AlertIdentity {
            breaker: "costsim_v2".into(),
            severity: Severity::P1,
            incident_id: "inc-1".into(),
            instance: "prod-eu".into(),
        }
    }

    #[test]
    fn a_firing_alert_carries_the_incident_labels_and_no_end() {
        let text = AlertText { reason: "p95 drift 0.3 > 0.2", evidence: None, disabled_until: None, runbook_url: "rb" };
        let payload = firing(&identity(), &text, DateTime::UNIX_EPOCH);
        let alert = &payload[0];
        assert_eq!(alert["labels"]["severity"], "p1");
        assert_eq!(alert["labels"]["incident_id"], "inc-1");
        assert_eq!(alert["startsAt"], "1970-01-01T00:00:00.000Z");
        assert!(alert.get("endsAt").is_none());
        assert!(alert["annotations"]["description"].as_str().unwrap().ends_with("manual reset required"));
    }

    #[test]
    fn the_resolved_alert_has_the_same_labels_and_an_end() {
        let text = AlertText { reason: "r", evidence: None, disabled_until: None, runbook_url: "rb" };
        let fire = firing(&identity(), &text, DateTime::UNIX_EPOCH);
        let resolve = resolved(&fire, DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(60));
        assert_eq!(resolve[0]["labels"], fire[0]["labels"]);
        assert_eq!(resolve[0]["endsAt"], "1970-01-01T00:01:00.000Z");
    }
}
