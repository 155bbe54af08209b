//! The breaker's settings: documented defaults, `COSTSIM_*` environment variables, `key=value` overrides, and
//! the checks that reject impossible values and combinations.

use chrono::TimeDelta;
use serde::Serialize;

use crate::window::{WindowError, WindowSpec};

/// The shortest bucket: ten evaluations a second at most.
const MIN_BUCKET_MILLIS: u64 = 100;

/// The longest duration any setting accepts (ten years), so that event-time arithmetic cannot overflow.
const MAX_DURATION_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Everything the breaker's decisions depend on. Defaults follow the older system where it had a setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerConfig {
    /// p95 drift strictly above which an evaluation fails (`COSTSIM_DRIFT_THRESHOLD`, 0.2).
    pub drift_threshold: f64,
    /// p95 drift strictly above which an evaluation warns, P2, without tripping
    /// (`COSTSIM_DRIFT_WARNING_THRESHOLD`, 0.15).
    pub drift_warning_threshold: f64,
    /// Drift samples a window needs before its p95 counts (`COSTSIM_MIN_SAMPLES`, 50).
    pub min_samples: u64,
    /// Consecutive failing evaluations that trip the breaker, P1 (`COSTSIM_FAILURE_THRESHOLD`, 3).
    pub failure_threshold: u32,
    /// Schema errors in one window that trip the breaker at once, P3 (`COSTSIM_SCHEMA_ERROR_THRESHOLD`, 5).
    pub schema_error_threshold: u64,
    /// Whether an open breaker goes half-open by itself when its TTL ends (`COSTSIM_AUTO_RECOVER`, true).
    pub auto_recover: bool,
    /// How long a trip keeps the breaker open; 0 latches it until an operator enables it
    /// (`COSTSIM_DISABLE_TTL_SECONDS`, or `COSTSIM_DISABLE_TTL_HOURS` as in the older system; 24 h).
    pub disable_ttl_seconds: u64,
    /// Cap of the TTL, which doubles each time probation fails (`COSTSIM_MAX_DISABLE_TTL_SECONDS`, 7 days).
    pub max_disable_ttl_seconds: u64,
    /// Length of one tumbling bucket, in milliseconds; one evaluation per closed bucket (`COSTSIM_BUCKET_SECONDS`,
    /// 10; decimals down to 0.1 s, since a decision waits for its bucket to close).
    #[serde(rename = "bucket_seconds", serialize_with = "millis_as_seconds")]
    pub bucket_millis: u64,
    /// Length of the rolling window, a multiple of the bucket (`COSTSIM_WINDOW_SECONDS`, 300).
    pub window_seconds: u64,
    /// How long a half-open breaker is watched before it closes or reopens (`COSTSIM_PROBATION_SECONDS`, 300).
    pub probation_seconds: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            drift_threshold: 0.2,
            drift_warning_threshold: 0.15,
            min_samples: 50,
            failure_threshold: 3,
            schema_error_threshold: 5,
            auto_recover: true,
            disable_ttl_seconds: 24 * 3600,
            max_disable_ttl_seconds: 7 * 24 * 3600,
            bucket_millis: 10_000,
            window_seconds: 300,
            probation_seconds: 300,
        }
    }
}

/// Why a setting or a combination of settings is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// No setting has this name.
    #[error("unknown breaker setting `{key}`; known settings: {}", KEYS.join(", "))]
    UnknownKey {
        /// The name given.
        key: String,
    },
    /// The value does not parse, or is out of the setting's range.
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        /// The setting (or environment variable).
        key: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two settings that are each valid contradict each other.
    #[error("`{key}` = {value} conflicts with `{other}` = {other_value}: {reason}")]
    Conflict {
        /// The setting that is checked.
        key: &'static str,
        /// Its value.
        value: String,
        /// The setting it contradicts.
        other: &'static str,
        /// That setting's value.
        other_value: String,
        /// The rule broken.
        reason: &'static str,
    },
}

/// The names `set` accepts, in the order they are shown.
pub const KEYS: &[&str] = &[
    "drift_threshold",
    "drift_warning_threshold",
    "min_samples",
    "failure_threshold",
    "schema_error_threshold",
    "auto_recover",
    "disable_ttl_seconds",
    "disable_ttl_hours",
    "max_disable_ttl_seconds",
    "bucket_seconds",
    "window_seconds",
    "probation_seconds",
];

/// The environment variable prefix; `COSTSIM_DRIFT_THRESHOLD` sets `drift_threshold`.
const ENV_PREFIX: &str = "COSTSIM_";

impl BreakerConfig {
    /// Sets one setting from text, as `--set key=value` does; checks the value alone (see [`Self::validate`]
    /// for combinations). `disable_ttl_hours` is accepted and stored in seconds.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let v = value.trim();
        match key {
            "drift_threshold" => self.drift_threshold = fraction(key, v)?,
            "drift_warning_threshold" => self.drift_warning_threshold = fraction(key, v)?,
            "min_samples" => self.min_samples = count(key, v, 1)?,
            "failure_threshold" => {
                self.failure_threshold = u32::try_from(count(key, v, 1)?).map_err(|_| invalid(key, v, "too large"))?
            }
            "schema_error_threshold" => self.schema_error_threshold = count(key, v, 1)?,
            "auto_recover" => self.auto_recover = boolean(key, v)?,
            "disable_ttl_seconds" => self.disable_ttl_seconds = seconds(key, v, 0)?,
            "disable_ttl_hours" => {
                let hours = count(key, v, 0)?;
                self.disable_ttl_seconds = seconds(key, &hours.saturating_mul(3600).to_string(), 0)
                    .map_err(|_| invalid(key, v, "longer than ten years"))?;
            }
            "max_disable_ttl_seconds" => self.max_disable_ttl_seconds = seconds(key, v, 1)?,
            "bucket_seconds" => self.bucket_millis = millis(key, v, MIN_BUCKET_MILLIS)?,
            "window_seconds" => self.window_seconds = seconds(key, v, 1)?,
            "probation_seconds" => self.probation_seconds = seconds(key, v, 1)?,
            _ => return Err(ConfigError::UnknownKey { key: key.to_string() }),
        }
        Ok(())
    }

    /// Applies `key=value` overrides in order, then checks the result.
    pub fn with_overrides<'a>(mut self, overrides: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigError> {
        for pair in overrides {
            let (key, value) = pair.split_once('=').ok_or_else(|| ConfigError::InvalidValue {
                key: pair.to_string(),
                value: String::new(),
                reason: "expected key=value".into(),
            })?;
            self.set(key.trim(), value)?;
        }
        self.validate()?;
        Ok(self)
    }

    /// Reads the `COSTSIM_*` variables among `vars` over the defaults, then checks the result. Other variables,
    /// including `COSTSIM_*` ones that belong to other components, are ignored. Pure: pass `std::env::vars()`.
    pub fn from_env<K: AsRef<str>, V: AsRef<str>>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError> {
        let mut config = BreakerConfig::default();
        let mut ttl_seconds: Option<String> = None;
        let mut ttl_hours: Option<String> = None;
        for (name, value) in vars {
            let (name, value) = (name.as_ref(), value.as_ref());
            let Some(key) = name.strip_prefix(ENV_PREFIX).map(str::to_ascii_lowercase) else { continue };
            if !KEYS.contains(&key.as_str()) {
                continue;
            }
            config.set(&key, value).map_err(|e| e.for_env(name))?;
            // Both TTL forms may be set only if they agree (checked below).
            match key.as_str() {
                "disable_ttl_seconds" => ttl_seconds = Some(value.to_string()),
                "disable_ttl_hours" => ttl_hours = Some(value.to_string()),
                _ => {}
            }
        }
        if let (Some(seconds), Some(hours)) = (ttl_seconds, ttl_hours) {
            let mut from_hours = BreakerConfig::default();
            from_hours.set("disable_ttl_hours", &hours)?;
            let mut from_seconds = BreakerConfig::default();
            from_seconds.set("disable_ttl_seconds", &seconds)?;
            if from_hours.disable_ttl_seconds != from_seconds.disable_ttl_seconds {
                return Err(ConfigError::Conflict {
                    key: "COSTSIM_DISABLE_TTL_SECONDS",
                    value: seconds,
                    other: "COSTSIM_DISABLE_TTL_HOURS",
                    other_value: hours,
                    reason: "set only one of them",
                });
            }
            config.disable_ttl_seconds = from_seconds.disable_ttl_seconds;
        }
        config.validate()?;
        Ok(config)
    }

    /// Rejects impossible combinations: a warning level at or above the threshold, a window that is not a
    /// multiple of the bucket, a probation shorter than a bucket, a TTL above its cap.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let conflict = |key, value: String, other, other_value: String, reason| {
            Err(ConfigError::Conflict { key, value, other, other_value, reason })
        };
        if self.drift_warning_threshold >= self.drift_threshold {
            return conflict(
                "drift_warning_threshold",
                self.drift_warning_threshold.to_string(),
                "drift_threshold",
                self.drift_threshold.to_string(),
                "the warning level must be below the trip threshold",
            );
        }
        if (self.window_seconds * 1000) % self.bucket_millis != 0 {
            return conflict(
                "window_seconds",
                self.window_seconds.to_string(),
                "bucket_seconds",
                seconds_text(self.bucket_millis),
                "the window must be a whole number of buckets",
            );
        }
        if self.probation_seconds * 1000 < self.bucket_millis {
            return conflict(
                "probation_seconds",
                self.probation_seconds.to_string(),
                "bucket_seconds",
                seconds_text(self.bucket_millis),
                "probation must last at least one bucket",
            );
        }
        if self.disable_ttl_seconds > self.max_disable_ttl_seconds {
            return conflict(
                "disable_ttl_seconds",
                self.disable_ttl_seconds.to_string(),
                "max_disable_ttl_seconds",
                self.max_disable_ttl_seconds.to_string(),
                "the TTL must not exceed its cap",
            );
        }
        Ok(())
    }

    /// The window's shape. Call on a validated configuration.
    pub fn window_spec(&self) -> Result<WindowSpec, WindowError> {
        WindowSpec::new(TimeDelta::milliseconds(self.bucket_millis as i64), duration(self.window_seconds))
    }

    /// The length of the rolling window.
    pub fn window(&self) -> TimeDelta {
        duration(self.window_seconds)
    }

    /// The length of probation.
    pub fn probation(&self) -> TimeDelta {
        duration(self.probation_seconds)
    }

    /// Every setting as `key=value`, in [`KEYS`] order (without the hours alias), for reports.
    pub fn describe(&self) -> String {
        let values = [
            self.drift_threshold.to_string(),
            self.drift_warning_threshold.to_string(),
            self.min_samples.to_string(),
            self.failure_threshold.to_string(),
            self.schema_error_threshold.to_string(),
            self.auto_recover.to_string(),
            self.disable_ttl_seconds.to_string(),
            self.max_disable_ttl_seconds.to_string(),
            seconds_text(self.bucket_millis),
            self.window_seconds.to_string(),
            self.probation_seconds.to_string(),
        ];
        let keys = KEYS.iter().filter(|k| **k != "disable_ttl_hours");
        keys.zip(values).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

impl ConfigError {
    /// Names the environment variable instead of the setting.
    fn for_env(self, variable: &str) -> Self {
        match self {
            ConfigError::InvalidValue { value, reason, .. } => {
                ConfigError::InvalidValue { key: variable.to_string(), value, reason }
            }
            other => other,
        }
    }
}

/// A duration of a validated number of seconds.
pub(crate) fn duration(seconds: u64) -> TimeDelta {
    TimeDelta::seconds(seconds.min(MAX_DURATION_SECONDS) as i64)
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue { key: key.to_string(), value: value.to_string(), reason: reason.to_string() }
}

/// A drift level: a number in [0, 1) (the score never exceeds 1, so a level of 1 could never be exceeded).
fn fraction(key: &str, value: &str) -> Result<f64, ConfigError> {
    let parsed: f64 = value.parse().map_err(|_| invalid(key, value, "expected a number such as 0.2"))?;
    if !(0.0..1.0).contains(&parsed) {
        return Err(invalid(key, value, "must be at least 0 and below 1 (drift scores lie in [0, 1])"));
    }
    Ok(parsed)
}

fn count(key: &str, value: &str, min: u64) -> Result<u64, ConfigError> {
    let parsed: u64 = value.parse().map_err(|_| invalid(key, value, "expected a whole number"))?;
    if parsed < min {
        return Err(invalid(key, value, &format!("must be at least {min}")));
    }
    Ok(parsed)
}

fn seconds(key: &str, value: &str, min: u64) -> Result<u64, ConfigError> {
    let parsed = count(key, value, min)?;
    if parsed > MAX_DURATION_SECONDS {
        return Err(invalid(key, value, "longer than ten years"));
    }
    Ok(parsed)
}

/// A number of seconds with at most three decimals, in milliseconds, at least `min` ms and at most ten years.
fn millis(key: &str, value: &str, min: u64) -> Result<u64, ConfigError> {
    let malformed = || invalid(key, value, "expected a number of seconds with at most three decimals, such as 0.25");
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 3 {
        return Err(malformed());
    }
    let whole: u64 = whole.parse().map_err(|_| malformed())?;
    if whole > MAX_DURATION_SECONDS {
        return Err(invalid(key, value, "longer than ten years"));
    }
    let fraction: u64 = format!("{fraction:0<3}").parse().map_err(|_| malformed())?;
    let ms = whole * 1000 + fraction;
    if ms < min {
        return Err(invalid(key, value, &format!("must be at least {}", seconds_text(min))));
    }
    Ok(ms)
}

/// Milliseconds as seconds, without trailing zeros (`10`, `0.25`).
fn seconds_text(ms: u64) -> String {
    match ms % 1000 {
        0 => (ms / 1000).to_string(),
        rest => format!("{}.{}", ms / 1000, format!("{rest:03}").trim_end_matches('0')),
    }
}

/// Serializes milliseconds as whole seconds when they are, as the setting was written before decimals existed.
fn millis_as_seconds<S: serde::Serializer>(ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    if ms % 1000 == 0 { serializer.serialize_u64(ms / 1000) } else { serializer.serialize_f64(*ms as f64 / 1000.0) }
}

fn boolean(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

#[cfg(test)]
mod tests;
