//! Alertmanager payloads (API v2): one alert identity per breaker incident, fired on a trip, re-sent while the
//! breaker stays open and resolved, with the same labels, on recovery; and the incident-less drift warning of the
//! warning band. Pure: times are parameters.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::breaker::Evidence;
use crate::event::{Severity, format_rfc3339_millis};

/// Name of the alert a breaker incident fires.
pub const DISABLED_ALERT: &str = "CostSimV2Disabled";
/// Name of the alert the warning band fires (P2, no incident).
pub const DRIFT_WARNING_ALERT: &str = "CostSimV2DriftWarning";
/// Name of the alert a failed canary raises on its breaker (P2, no incident), until a later canary passes.
pub const CANARY_ALERT: &str = "CostSimV2CanaryFailing";

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

/// The firing alert of an incident: the JSON array Alertmanager's `POST /api/v2/alerts` takes. It has no `endsAt`
/// (Alertmanager keeps it for its `resolve_timeout`); re-sends ([`refreshed`]) carry one.
pub fn firing(identity: &AlertIdentity, text: &AlertText<'_>, starts_at: DateTime<Utc>) -> Value {
    json!([{
        "labels": identity.labels(),
        "annotations": annotations(identity, text),
        "startsAt": format_rfc3339_millis(&starts_at),
    }])
}

/// The annotations of an incident's alert: summary, description (reason, window evidence, disabled until) and
/// runbook.
fn annotations(identity: &AlertIdentity, text: &AlertText<'_>) -> Value {
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
    json!({
        "summary": format!("CostSim V2 circuit breaker {} tripped ({})", identity.breaker, identity.severity),
        "description": description,
        "runbook_url": text.runbook_url,
    })
}

/// An update of an incident's firing alert after its text changed (a reopen, a new manual disable): the labels and
/// start of `previous` (so it stays the same alert), the annotations of `current`, and no end.
pub fn reannotated(previous: &Value, current: &Value) -> Value {
    let mut payload = previous.clone();
    if let (Some(alerts), Some(annotations)) = (payload.as_array_mut(), current[0].get("annotations")) {
        for alert in alerts {
            alert["annotations"] = annotations.clone();
            if let Some(fields) = alert.as_object_mut() {
                fields.remove("endsAt");
            }
        }
    }
    payload
}

/// The label set of a breaker's drift warning: like an incident's, with its own alert name, severity `p2` and no
/// `incident_id` (the warning band opens no incident).
pub fn warning_labels(breaker: &str, instance: &str) -> Value {
    breaker_p2_labels(DRIFT_WARNING_ALERT, breaker, instance)
}

/// The labels of a P2 alert about a breaker that opens no incident: one alert per name and breaker.
fn breaker_p2_labels(alertname: &str, breaker: &str, instance: &str) -> Value {
    json!({
        "alertname": alertname,
        "severity": "p2",
        "component": "costsim",
        "circuit_breaker": breaker,
        "instance": instance,
    })
}

/// The firing drift warning: the window's p95 is above the warning level while the breaker is closed.
pub fn warning(
    breaker: &str,
    instance: &str,
    evidence: &Evidence,
    runbook_url: &str,
    starts_at: DateTime<Utc>,
) -> Value {
    let p95 = evidence.p95_drift.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.4}"));
    let description = format!(
        "p95 drift: {p95} above the warning level {} (trip threshold {})\nSample count: {} (minimum {})\n\
         Failing evaluations in a row: {} of {} before a trip\nWindow: {} to {}",
        evidence.drift_warning_threshold,
        evidence.drift_threshold,
        evidence.sample_count,
        evidence.min_samples,
        evidence.consecutive_failures,
        evidence.failure_threshold,
        format_rfc3339_millis(&evidence.window_start),
        format_rfc3339_millis(&evidence.window_end),
    );
    json!([{
        "labels": warning_labels(breaker, instance),
        "annotations": {
            "summary": format!("CostSim V2 drift above the warning level on {breaker} (P2)"),
            "description": description,
            "runbook_url": runbook_url,
        },
        "startsAt": format_rfc3339_millis(&starts_at),
    }])
}

/// The label set of a breaker's failing-canary alert: one alert per breaker, whichever run raised it.
pub fn canary_labels(breaker: &str, instance: &str) -> Value {
    breaker_p2_labels(CANARY_ALERT, breaker, instance)
}

/// What a failed canary says, for people.
#[derive(Debug, Clone)]
pub struct CanaryText<'a> {
    /// The run that failed.
    pub run_id: &'a str,
    /// Why it failed.
    pub reasons: &'a [String],
    /// Its KL divergence.
    pub kl_divergence: Option<f64>,
    /// Samples it judged.
    pub total_samples: u64,
    /// Where the runbook is.
    pub runbook_url: &'a str,
}

/// The firing alert of a failed canary. Its `endsAt` is explicit (`ends_at`, past the next daily run): the next
/// run either fails and sends it again, or passes and resolves it, so nothing has to re-send it in between.
pub fn canary_failing(
    breaker: &str,
    instance: &str,
    text: &CanaryText<'_>,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
) -> Value {
    let kl = text.kl_divergence.map_or_else(|| "n/a".to_owned(), |kl| format!("{kl:.4}"));
    let description = format!(
        "Canary run {} failed over {} samples (KL divergence {kl}):\n- {}",
        text.run_id,
        text.total_samples,
        text.reasons.join("\n- ")
    );
    json!([{
        "labels": canary_labels(breaker, instance),
        "annotations": {
            "summary": format!("CostSim V2 canary failing on {breaker} (P2)"),
            "description": description,
            "runbook_url": text.runbook_url,
        },
        "startsAt": format_rfc3339_millis(&starts_at),
        "endsAt": format_rfc3339_millis(&ends_at),
    }])
}

/// The same alert, resolved at `at`: a firing payload with `endsAt` set, so Alertmanager closes that very alert.
pub fn resolved(firing_payload: &Value, at: DateTime<Utc>) -> Value {
    with_end(firing_payload, at)
}

/// A re-send of a firing alert while its cause lasts: the same labels, annotations and start, with `endsAt` a few
/// re-send intervals ahead, so Alertmanager neither forgets it between re-sends nor keeps it long after they stop.
pub fn refreshed(firing_payload: &Value, ends_at: DateTime<Utc>) -> Value {
    with_end(firing_payload, ends_at)
}

/// The label set of a payload's (first) alert: what Alertmanager identifies the alert by.
pub fn labels_of(payload: &Value) -> Option<&Value> {
    payload.get(0)?.get("labels")
}

fn with_end(payload: &Value, at: DateTime<Utc>) -> Value {
    let mut payload = payload.clone();
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
    fn a_failing_canary_alert_names_the_run_and_its_reasons_and_ends_by_itself() {
        let reasons = vec!["KL divergence 1.6094 > 0.2".to_owned()];
        let text = CanaryText {
            run_id: "abc123def456",
            reasons: &reasons,
            kl_divergence: Some(1.6094),
            total_samples: 5,
            runbook_url: "ops/runbooks/costsim-canary.md",
        };
        let end = DateTime::UNIX_EPOCH + chrono::TimeDelta::hours(26);
        let payload = canary_failing("costsim_v2", "prod-eu", &text, DateTime::UNIX_EPOCH, end);
        assert_eq!(payload[0]["labels"], canary_labels("costsim_v2", "prod-eu"));
        assert_eq!(payload[0]["endsAt"], "1970-01-02T02:00:00.000Z");
        let description = payload[0]["annotations"]["description"].as_str().unwrap();
        assert!(description.contains("abc123def456") && description.contains("- KL divergence 1.6094 > 0.2"));
    }

    #[test]
    fn the_resolved_alert_has_the_same_labels_and_an_end() {
        let text = AlertText { reason: "r", evidence: None, disabled_until: None, runbook_url: "rb" };
        let fire = firing(&identity(), &text, DateTime::UNIX_EPOCH);
        let resolve = resolved(&fire, DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(60));
        assert_eq!(resolve[0]["labels"], fire[0]["labels"]);
        assert_eq!(resolve[0]["endsAt"], "1970-01-01T00:01:00.000Z");
    }

    fn evidence() -> Evidence {
        Evidence {
            p95_drift: Some(0.1734),
            sample_count: 120,
            schema_errors: 0,
            consecutive_failures: 0,
            drift_threshold: 0.2,
            drift_warning_threshold: 0.15,
            min_samples: 50,
            failure_threshold: 3,
            schema_error_threshold: 5,
            window_start: DateTime::UNIX_EPOCH,
            window_end: DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(300),
            partitions_behind: Vec::new(),
        }
    }

    #[test]
    fn a_refreshed_alert_keeps_labels_annotations_and_start_and_ends_later() {
        let text = AlertText { reason: "r", evidence: None, disabled_until: None, runbook_url: "rb" };
        let fire = firing(&identity(), &text, DateTime::UNIX_EPOCH);
        let again = refreshed(&fire, DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(240));
        assert_eq!(again[0]["labels"], fire[0]["labels"]);
        assert_eq!(again[0]["annotations"], fire[0]["annotations"]);
        assert_eq!(again[0]["startsAt"], fire[0]["startsAt"]);
        assert_eq!(again[0]["endsAt"], "1970-01-01T00:04:00.000Z");
    }

    #[test]
    fn a_reannotated_alert_keeps_the_old_labels_and_start_and_takes_the_new_text() {
        let before = AlertText { reason: "first", evidence: None, disabled_until: None, runbook_url: "rb" };
        let old = refreshed(&firing(&identity(), &before, DateTime::UNIX_EPOCH), DateTime::UNIX_EPOCH);
        let other_instance = AlertIdentity { instance: "elsewhere".into(), ..identity() };
        let after = AlertText { reason: "reopened", evidence: None, disabled_until: None, runbook_url: "rb" };
        let new = firing(&other_instance, &after, DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(60));
        let update = reannotated(&old, &new);
        assert_eq!(update[0]["labels"], old[0]["labels"], "the alert keeps its identity");
        assert_eq!(update[0]["startsAt"], old[0]["startsAt"]);
        assert!(update[0]["annotations"]["description"].as_str().unwrap().starts_with("Reason: reopened"));
        assert!(update[0].get("endsAt").is_none(), "an update fires again");
    }

    #[test]
    fn the_drift_warning_has_its_own_name_p2_and_no_incident() {
        let payload = warning("costsim_v2", "prod-eu", &evidence(), "rb", DateTime::UNIX_EPOCH);
        let labels = labels_of(&payload).unwrap();
        assert_eq!(labels["alertname"], DRIFT_WARNING_ALERT);
        assert_eq!(labels["severity"], "p2");
        assert_eq!(labels["circuit_breaker"], "costsim_v2");
        assert_eq!(labels["instance"], "prod-eu");
        assert!(labels.get("incident_id").is_none());
        let description = payload[0]["annotations"]["description"].as_str().unwrap();
        assert!(description.contains("0.1734") && description.contains("0.15") && description.contains("120"));
        assert_eq!(payload[0]["annotations"]["runbook_url"], "rb");
    }

    #[test]
    fn the_incident_description_names_p95_samples_thresholds_and_the_end() {
        let e = evidence();
        let until = DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(3600);
        let text = AlertText { reason: "r", evidence: Some(&e), disabled_until: Some(until), runbook_url: "rb" };
        let payload = firing(&identity(), &text, DateTime::UNIX_EPOCH);
        let description = payload[0]["annotations"]["description"].as_str().unwrap();
        for part in ["p95 drift: 0.1734", "threshold 0.2", "Sample count: 120", "Disabled until: 1970-01-01T01:00"] {
            assert!(description.contains(part), "{part} missing from {description}");
        }
    }
}
