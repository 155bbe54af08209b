use super::*;

/// A file that is removed when dropped.
pub(crate) struct TempFile(PathBuf);

impl TempFile {
    /// A new file with this suffix and text.
    pub(crate) fn with(suffix: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("costsim-config-{}.{suffix}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn known() -> BTreeSet<String> {
    use clap::CommandFactory as _;
    known_settings(&crate::cli::Cli::command())
}

fn parse(text: &str) -> Result<FileSettings, ConfigError> {
    parse_file(Path::new("costsim.toml"), text, &known())
}

#[test]
fn file_keys_name_settings_by_their_variable_without_the_prefix() {
    let (settings, kafka) = parse(
        r#"
        database_url = "postgres://db/costsim"
        kafka_brokers = "kafka-1:9093,kafka-2:9093"
        drift_threshold = 0.25
        batch_max_records = 500
        canary_enabled = false
        alertmanager_url = ["http://am-1:9093", "http://am-2:9093"]

        [kafka]
        security.protocol = "SASL_SSL"
        "sasl.mechanisms" = "SCRAM-SHA-512"
        "#,
    )
    .unwrap();
    let get = |k: &str| settings.get(k).map(String::as_str);
    assert_eq!(get("DATABASE_URL"), Some("postgres://db/costsim"));
    assert_eq!(get("KAFKA_BROKERS"), Some("kafka-1:9093,kafka-2:9093"));
    assert_eq!(get("COSTSIM_DRIFT_THRESHOLD"), Some("0.25"));
    assert_eq!(get("COSTSIM_BATCH_MAX_RECORDS"), Some("500"));
    assert_eq!(get("COSTSIM_CANARY_ENABLED"), Some("false"));
    assert_eq!(get("ALERTMANAGER_URL"), Some("http://am-1:9093,http://am-2:9093"));
    assert_eq!(
        kafka,
        [("sasl.mechanisms", "SCRAM-SHA-512"), ("security.protocol", "SASL_SSL")].map(|(k, v)| (k.into(), v.into()))
    );
}

#[test]
fn an_unknown_file_key_is_refused_by_name_with_a_suggestion() {
    let err = parse("drift_treshold = 0.3\n").unwrap_err().to_string();
    assert!(err.contains("`drift_treshold`") && err.contains("costsim.toml"), "{err}");
    assert!(err.contains("did you mean `drift_threshold`"), "{err}");
}

#[test]
fn a_table_other_than_kafka_is_refused() {
    let err = parse("[breaker]\ndrift_threshold = 0.3\n").unwrap_err().to_string();
    assert!(err.contains("breaker"), "{err}");
}

#[test]
fn a_toml_syntax_error_names_the_file() {
    let err = parse("drift_threshold = \n").unwrap_err().to_string();
    assert!(err.contains("costsim.toml") && err.contains("not valid TOML"), "{err}");
}

#[test]
fn an_unknown_costsim_variable_is_refused_and_script_variables_are_not() {
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let err = check_environment(&env(&[("COSTSIM_DRIFT_THRESHOL", "0.3")]), &known()).unwrap_err().to_string();
    assert!(err.contains("`COSTSIM_DRIFT_THRESHOL`") && err.contains("COSTSIM_DRIFT_THRESHOLD"), "{err}");
    let fine = env(&[
        ("COSTSIM_DRIFT_THRESHOLD", "0.3"),
        ("COSTSIM_KAFKA_SASL_PASSWORD", "x"),
        ("COSTSIM_STACK_DIR", "/tmp/stack"),
        ("COSTSIM_TEST_POOLER_ADDR", "127.0.0.1:6432"),
        ("COSTSIM_API_TOKENS", "a:read:b"),
        ("HOME", "/root"),
    ]);
    check_environment(&fine, &known()).unwrap();
}

#[test]
fn kafka_variables_map_to_properties_and_the_file_variable_is_not_one() {
    let layers = Layers {
        env: [("COSTSIM_KAFKA_SASL_PASSWORD", "pw"), ("COSTSIM_KAFKA_CONFIG", "/etc/k.properties"), ("OTHER", "x")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        ..Layers::default()
    };
    assert_eq!(layers.env_kafka(), [("sasl.password".to_owned(), "pw".to_owned())]);
}

#[test]
fn the_environment_wins_over_the_file() {
    let layers = Layers {
        file: [("COSTSIM_MIN_SAMPLES", "10"), ("COSTSIM_WINDOW_SECONDS", "60")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        env: [("COSTSIM_MIN_SAMPLES", "20")].map(|(k, v)| (k.to_owned(), v.to_owned())).into(),
        ..Layers::default()
    };
    assert_eq!(layers.get("COSTSIM_MIN_SAMPLES"), Some(("20", Source::Env)));
    assert_eq!(layers.get("COSTSIM_WINDOW_SECONDS"), Some(("60", Source::File)));
    let engine = crate::breaker::BreakerConfig::from_env(layers.vars()).unwrap();
    assert_eq!((engine.min_samples, engine.window_seconds), (20, 60));
}

#[test]
fn file_values_become_flag_defaults_that_the_environment_and_flags_override() {
    use clap::CommandFactory as _;
    let file: BTreeMap<String, String> =
        [("COSTSIM_HTTP_ADDR", "0.0.0.0:9999"), ("DATABASE_URL", "postgres://file/db"), ("COSTSIM_BREAKER_NAME", "b")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
    let command = with_file_defaults(crate::cli::Cli::command(), &file);
    let run = command.find_subcommand("run").unwrap().clone();
    // DATABASE_URL is required: the file's value satisfies it (the test's own environment may hold one too).
    let matches = run.clone().try_get_matches_from(["run"]).expect("a required flag the file sets");
    if std::env::var_os("COSTSIM_BREAKER_NAME").is_none() {
        assert_eq!(matches.get_one::<String>("breaker").map(String::as_str), Some("b"));
    }
    let matches = run.try_get_matches_from(["run", "--http-addr", "127.0.0.1:1"]).unwrap();
    let addr: &std::net::SocketAddr = matches.get_one("addr").unwrap();
    assert_eq!(addr.to_string(), "127.0.0.1:1");
}

#[test]
fn the_config_flag_is_found_before_the_command_line_is_parsed() {
    let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
    assert_eq!(config_flag(&args(&["cb", "run", "--config", "a.toml"])), Some("a.toml".into()));
    assert_eq!(config_flag(&args(&["cb", "--config=b.toml", "run"])), Some("b.toml".into()));
    assert_eq!(config_flag(&args(&["cb", "config", "show", "--", "--config", "c.toml"])), None);
}

#[test]
fn secrets_are_masked_and_urls_lose_only_their_password() {
    assert_eq!(masked("sasl.password", "pw"), "***");
    assert_eq!(masked("COSTSIM_API_TOKENS", "a:read:b"), "***");
    assert_eq!(masked("COSTSIM_API_TOKENS_FILE", "/etc/tokens"), "/etc/tokens");
    assert_eq!(masked("ssl.key.location", "/etc/k.pem"), "/etc/k.pem");
    assert_eq!(masked("ssl.key.password", "pw"), "***");
    assert_eq!(masked("DATABASE_URL", "postgres://app:s3cret@db/x"), "postgres://app:***@db/x");
    assert_eq!(
        masked("ALERTMANAGER_URL", "http://a:b@am-1:9093,http://am-2:9093"),
        "http://a:***@am-1:9093,http://am-2:9093"
    );
}
