use super::*;

fn env(pairs: &[(&str, &str)]) -> Result<BreakerConfig, ConfigError> {
    BreakerConfig::from_env(pairs.iter().copied())
}

#[test]
fn defaults_match_the_older_system_and_are_valid() {
    let config = BreakerConfig::default();
    assert_eq!(config.drift_threshold, 0.2);
    assert_eq!(config.disable_ttl_seconds, 86_400);
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(env(&[]), Ok(config));
}

#[test]
fn every_documented_variable_is_read() {
    let config = env(&[
        ("COSTSIM_DRIFT_THRESHOLD", "0.3"),
        ("COSTSIM_DRIFT_WARNING_THRESHOLD", "0.25"),
        ("COSTSIM_MIN_SAMPLES", "20"),
        ("COSTSIM_FAILURE_THRESHOLD", "2"),
        ("COSTSIM_SCHEMA_ERROR_THRESHOLD", "9"),
        ("COSTSIM_AUTO_RECOVER", "FALSE"),
        ("COSTSIM_DISABLE_TTL_SECONDS", "120"),
        ("COSTSIM_MAX_DISABLE_TTL_SECONDS", "3600"),
        ("COSTSIM_BUCKET_SECONDS", "5"),
        ("COSTSIM_WINDOW_SECONDS", "60"),
        ("COSTSIM_PROBATION_SECONDS", "30"),
        ("COSTSIM_RESULTS_TOPIC", "not ours, ignored"),
        ("PATH", "/usr/bin"),
    ])
    .unwrap();
    let expected = BreakerConfig {
        drift_threshold: 0.3,
        drift_warning_threshold: 0.25,
        min_samples: 20,
        failure_threshold: 2,
        schema_error_threshold: 9,
        auto_recover: false,
        disable_ttl_seconds: 120,
        max_disable_ttl_seconds: 3600,
        bucket_millis: 5000,
        window_seconds: 60,
        probation_seconds: 30,
    };
    assert_eq!(config, expected);
}

#[test]
fn the_older_systems_ttl_in_hours_is_accepted_and_zero_latches() {
    assert_eq!(env(&[("COSTSIM_DISABLE_TTL_HOURS", "2")]).unwrap().disable_ttl_seconds, 7200);
    assert_eq!(env(&[("COSTSIM_DISABLE_TTL_HOURS", "0")]).unwrap().disable_ttl_seconds, 0);
}

#[test]
fn ttl_in_seconds_and_hours_must_agree_when_both_are_set() {
    let both = [("COSTSIM_DISABLE_TTL_SECONDS", "7200"), ("COSTSIM_DISABLE_TTL_HOURS", "2")];
    assert_eq!(env(&both).unwrap().disable_ttl_seconds, 7200);
    let err = env(&[("COSTSIM_DISABLE_TTL_SECONDS", "60"), ("COSTSIM_DISABLE_TTL_HOURS", "2")]).unwrap_err();
    assert!(err.to_string().contains("COSTSIM_DISABLE_TTL_HOURS"), "{err}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let err = env(&[("COSTSIM_MIN_SAMPLES", "many")]).unwrap_err();
    assert_eq!(err.to_string(), "invalid value `many` for `COSTSIM_MIN_SAMPLES`: expected a whole number");
    let err = env(&[("COSTSIM_AUTO_RECOVER", "maybe")]).unwrap_err();
    assert!(err.to_string().contains("COSTSIM_AUTO_RECOVER"), "{err}");
}

#[test]
fn set_rejects_unknown_keys_and_lists_the_known_ones() {
    let err = BreakerConfig::default().set("drift_treshold", "0.1").unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { key } if key == "drift_treshold"));
    assert!(err.to_string().contains("drift_threshold"), "{err}");
}

#[test]
fn set_rejects_impossible_values_naming_the_key() {
    let mut config = BreakerConfig::default();
    for (key, value) in [
        ("drift_threshold", "1.5"),
        ("drift_threshold", "-0.1"),
        ("drift_threshold", "NaN"),
        ("min_samples", "0"),
        ("failure_threshold", "0"),
        ("failure_threshold", "99999999999"),
        ("bucket_seconds", "0"),
        ("bucket_seconds", "0.05"),
        ("bucket_seconds", "0.2505"),
        ("bucket_seconds", "-1"),
        ("bucket_seconds", "1e3"),
        ("bucket_seconds", ".5"),
        ("disable_ttl_seconds", "-5"),
        ("window_seconds", "1e3"),
        ("probation_seconds", "999999999999"),
    ] {
        let err = config.set(key, value).unwrap_err();
        assert!(err.to_string().contains(&format!("`{key}`")), "{key}={value}: {err}");
    }
    assert_eq!(config, BreakerConfig::default());
}

#[test]
fn overrides_apply_in_order_and_the_result_is_validated() {
    let config = BreakerConfig::default().with_overrides(["drift_threshold=0.15", "drift_warning_threshold=0.1"]);
    assert_eq!(config.unwrap().drift_threshold, 0.15);
    let err = BreakerConfig::default().with_overrides(["drift_threshold=0.15"]).unwrap_err();
    assert!(matches!(err, ConfigError::Conflict { key: "drift_warning_threshold", .. }), "{err}");
    let err = BreakerConfig::default().with_overrides(["drift_threshold"]).unwrap_err();
    assert!(err.to_string().contains("expected key=value"), "{err}");
}

#[test]
fn impossible_combinations_are_rejected() {
    for (overrides, key) in [
        (&["drift_warning_threshold=0.2"][..], "drift_warning_threshold"),
        (&["window_seconds=305"][..], "window_seconds"),
        (&["bucket_seconds=60", "window_seconds=300", "probation_seconds=30"][..], "probation_seconds"),
        (&["disable_ttl_seconds=700000"][..], "disable_ttl_seconds"),
    ] {
        let err = BreakerConfig::default().with_overrides(overrides.iter().copied()).unwrap_err();
        assert!(matches!(&err, ConfigError::Conflict { key: k, .. } if *k == key), "{overrides:?}: {err}");
    }
}

#[test]
fn buckets_may_be_shorter_than_a_second_to_the_millisecond() {
    let config = BreakerConfig::default().with_overrides(["bucket_seconds=0.25", "window_seconds=10"]).unwrap();
    assert_eq!(config.bucket_millis, 250);
    assert_eq!(config.window_spec().unwrap().bucket(), TimeDelta::milliseconds(250));
    assert!(config.describe().contains("bucket_seconds=0.25 "), "{}", config.describe());
    assert_eq!(serde_json::to_value(&config).unwrap()["bucket_seconds"], serde_json::json!(0.25));
    assert_eq!(serde_json::to_value(BreakerConfig::default()).unwrap()["bucket_seconds"], serde_json::json!(10));
    let err = BreakerConfig::default().with_overrides(["bucket_seconds=0.3", "window_seconds=10"]).unwrap_err();
    assert!(matches!(err, ConfigError::Conflict { key: "window_seconds", .. }), "{err}");
}

#[test]
fn describe_lists_every_setting() {
    let text = BreakerConfig::default().describe();
    assert!(text.starts_with("drift_threshold=0.2 drift_warning_threshold=0.15 min_samples=50"), "{text}");
    assert!(text.ends_with("window_seconds=300 probation_seconds=300"), "{text}");
}
