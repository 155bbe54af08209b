//! Who this deployment is, as its alerts say: the `instance` label and the runbook link, and the
//! [`ApplySettings`] every decision is written with.

use crate::breaker::BreakerConfig;
use crate::store::breaker::ApplySettings;

/// The `instance` label when neither `INSTANCE_ID` nor `HOSTNAME` is set.
pub const DEFAULT_INSTANCE: &str = "costsim-breaker";
/// The runbook alerts link to by default.
pub const DEFAULT_RUNBOOK_URL: &str = "ops/runbooks/costsim-circuit-breaker.md";

/// The flags and variables that name this deployment in alerts.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// The `instance` label of the alerts this process raises [default: $HOSTNAME, else costsim-breaker].
    #[arg(long = "instance", env = "INSTANCE_ID", value_name = "NAME")]
    pub instance: Option<String>,
    /// Where alerts point operators.
    #[arg(long, env = "COSTSIM_RUNBOOK_URL", value_name = "URL", default_value = DEFAULT_RUNBOOK_URL)]
    pub runbook_url: String,
}

impl IdentityArgs {
    /// The `instance` label: `--instance`/`INSTANCE_ID`, then `HOSTNAME`, else [`DEFAULT_INSTANCE`].
    pub fn instance(&self) -> String {
        resolve_instance(self.instance.as_deref(), std::env::var("HOSTNAME").ok().as_deref())
    }

    /// The instance name when one was given (`--instance`/`INSTANCE_ID`, not blank), not derived from the host.
    pub fn explicit_instance(&self) -> Option<String> {
        self.instance.as_deref().map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned)
    }

    /// What decisions write besides the state, for the breaker engine configured by `config`.
    pub fn apply_settings(&self, config: &BreakerConfig) -> ApplySettings {
        ApplySettings {
            instance: self.instance(),
            runbook_url: self.runbook_url.clone(),
            drift_threshold: config.drift_threshold,
        }
    }
}

/// The first non-blank of the explicit name and the host name, else [`DEFAULT_INSTANCE`].
pub fn resolve_instance(explicit: Option<&str>, hostname: Option<&str>) -> String {
    [explicit, hostname]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|name| !name.is_empty())
        .unwrap_or(DEFAULT_INSTANCE)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_instance_id_wins_over_the_host_name() {
        assert_eq!(resolve_instance(Some("prod-eu-1"), Some("pod-7")), "prod-eu-1");
    }

    #[test]
    fn the_host_name_is_used_when_no_instance_id_is_given() {
        assert_eq!(resolve_instance(None, Some("pod-7")), "pod-7");
        assert_eq!(resolve_instance(Some("  "), Some("pod-7")), "pod-7");
    }

    #[test]
    fn without_either_the_default_name_is_used() {
        assert_eq!(resolve_instance(None, None), DEFAULT_INSTANCE);
        assert_eq!(resolve_instance(Some(""), Some(" ")), DEFAULT_INSTANCE);
    }

    #[test]
    fn apply_settings_carry_the_engines_drift_threshold() {
        let args = IdentityArgs { instance: Some("i-1".into()), runbook_url: DEFAULT_RUNBOOK_URL.into() };
        let config = BreakerConfig { drift_threshold: 0.3, ..BreakerConfig::default() };
        let settings = args.apply_settings(&config);
        assert_eq!((settings.instance.as_str(), settings.drift_threshold), ("i-1", 0.3));
        assert_eq!(settings.runbook_url, DEFAULT_RUNBOOK_URL);
    }
}
