//! One configuration for every command, in layers: built-in defaults < the `--config` TOML file < the
//! environment < flags.
//!
//! Every setting is known by its environment variable. The file names it in lower case without the `COSTSIM_`
//! prefix (`drift_threshold` sets what `COSTSIM_DRIFT_THRESHOLD` sets, `database_url` what `DATABASE_URL` sets),
//! and its `[kafka]` table holds librdkafka properties. An unknown key in the file, or an unknown `COSTSIM_*`
//! variable, stops start-up with its name: a misspelt setting must never be silently ignored.
//!
//! The layers are loaded once, by [`load`], before the command line is parsed: file values become the flags'
//! defaults, so clap's own precedence (flag over environment over default) gives the order above.

pub mod kafka_properties;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable that names the configuration file, like `--config`.
pub const CONFIG_ENV: &str = "COSTSIM_CONFIG";
/// Environment variables whose name starts with this set librdkafka properties (`COSTSIM_KAFKA_SASL_PASSWORD`
/// sets `sasl.password`).
pub const KAFKA_ENV_PREFIX: &str = "COSTSIM_KAFKA_";

/// Settings read by the library itself rather than by a flag, with their defaults: the HTTP API's tokens and
/// the versions its status reports.
const ENV_ONLY_SETTINGS: &[(&str, Option<&str>)] = &[
    ("COSTSIM_API_TOKENS", None),
    ("COSTSIM_API_TOKENS_FILE", None),
    ("COSTSIM_MODEL_VERSION", Some("2.0.0")),
    ("COSTSIM_ADAPTER_VERSION", Some("2.0.0")),
];

/// `COSTSIM_*` variables that belong to the repository's scripts and test harness, not to the binary; they are
/// let through so the binary can run under those scripts.
const SCRIPT_VARIABLES: &[&str] = &[
    "COSTSIM_ALERTMANAGER_BIN",
    "COSTSIM_CACHE_DIR",
    "COSTSIM_DATABASE_POOLER",
    "COSTSIM_DIRECT_DATABASE_URL",
    "COSTSIM_MALFORMED_RECORDS",
    "COSTSIM_PGBOUNCER_PORT",
    "COSTSIM_PG_BINDIR",
    "COSTSIM_TANSU_BIN",
];
/// Name prefixes of the scripts' and test harness's own `COSTSIM_*` variables (see [`SCRIPT_VARIABLES`]).
const SCRIPT_PREFIXES: &[&str] =
    &["COSTSIM_STACK_", "COSTSIM_FAULTS_", "COSTSIM_FUZZ_", "COSTSIM_TEST_", "COSTSIM_BENCH_"];

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The built-in default.
    Default,
    /// The `--config` file (or, for Kafka properties, the `--kafka-config` file).
    File,
    /// An environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
        })
    }
}

/// Why the configuration is refused at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not TOML.
    #[error("the configuration file {path} is not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line.
        reason: String,
    },
    /// A key of the file names no setting.
    #[error("unknown key `{key}` in the configuration file {path}{hint}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// A "did you mean" suggestion, or nothing.
        hint: String,
    },
    /// A key of the file holds a value of a shape no setting takes.
    #[error("key `{key}` in the configuration file {path}: {reason}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting in a place it must not be set.
    #[error("{0}")]
    Refused(String),
    /// A `COSTSIM_*` variable names no setting.
    #[error(
        "unknown environment variable `{name}`{hint}; every COSTSIM_* variable must name a setting (see `costsim-breaker config show`)"
    )]
    UnknownVariable {
        /// The variable.
        name: String,
        /// A "did you mean" suggestion, or nothing.
        hint: String,
    },
}

/// The settings of the file and the environment, as loaded at start.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// The configuration file, when one was given.
    pub file_path: Option<PathBuf>,
    /// File settings by environment variable name.
    file: BTreeMap<String, String>,
    /// The file's `[kafka]` table: librdkafka properties, in file order.
    file_kafka: Vec<(String, String)>,
    /// The process environment at start.
    env: BTreeMap<String, String>,
}

static LAYERS: OnceLock<Layers> = OnceLock::new();

/// The layers [`load`] installed; before that (library use, unit tests), the process environment alone.
pub fn layers() -> &'static Layers {
    LAYERS.get_or_init(|| Layers { env: std::env::vars().collect(), ..Layers::default() })
}

impl Layers {
    /// The value of a setting, by its environment variable, from the environment or else the file.
    pub fn get(&self, name: &str) -> Option<(&str, Source)> {
        if let Some(v) = self.env.get(name) {
            return Some((v, Source::Env));
        }
        self.file.get(name).map(|v| (v.as_str(), Source::File))
    }

    /// [`Self::get`]'s value, blank counted as unset.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(|(v, _)| v).filter(|v| !v.trim().is_empty())
    }

    /// Every setting of the file and the environment as (variable, value), the environment's winning: what
    /// [`BreakerConfig::from_env`](crate::breaker::BreakerConfig::from_env) reads.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut merged = self.file.clone();
        merged.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged.into_iter().collect()
    }

    /// The file's value of a setting, if it has one.
    pub fn file_value(&self, name: &str) -> Option<&str> {
        self.file.get(name).map(String::as_str)
    }

    /// The librdkafka properties of the file's `[kafka]` table, in file order.
    pub fn file_kafka(&self) -> &[(String, String)] {
        &self.file_kafka
    }

    /// The librdkafka properties set by `COSTSIM_KAFKA_*` variables (upper case, dots as underscores).
    pub fn env_kafka(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|(name, _)| name.as_str() != KAFKA_CONFIG_ENV)
            .filter_map(|(name, value)| {
                let property = name.strip_prefix(KAFKA_ENV_PREFIX)?;
                (!property.is_empty()).then(|| (property.to_ascii_lowercase().replace('_', "."), value.clone()))
            })
            .collect()
    }
}

/// The variable of `--kafka-config`; it names a file, so it is no property.
pub const KAFKA_CONFIG_ENV: &str = "COSTSIM_KAFKA_CONFIG";

/// Loads the configuration file (the `--config` flag in `args`, else `COSTSIM_CONFIG`) and the environment,
/// refuses unknown names, installs the layers for [`layers`], and returns `command` with the file's values as
/// defaults.
pub fn load(command: clap::Command, args: &[std::ffi::OsString]) -> Result<clap::Command, ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let known = known_settings(&command);
    check_environment(&env, &known)?;
    if env.contains_key("COSTSIM_KAFKA_BOOTSTRAP_SERVERS") {
        return Err(ConfigError::Refused(kafka_properties::bootstrap_refused("COSTSIM_KAFKA_BOOTSTRAP_SERVERS")));
    }
    let path = config_flag(args).or_else(|| env.get(CONFIG_ENV).filter(|p| !p.is_empty()).map(PathBuf::from));
    let mut layers = Layers { env, ..Layers::default() };
    if let Some(path) = path {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Read { path: path.clone(), reason: e.to_string() })?;
        let (file, file_kafka) = parse_file(&path, &text, &known)?;
        if file_kafka.iter().any(|(k, _)| k == "bootstrap.servers") {
            let place = format!("[kafka] of {}", path.display());
            return Err(bad(&path, "kafka.bootstrap.servers", &kafka_properties::bootstrap_refused(&place)));
        }
        layers.file = file;
        layers.file_kafka = file_kafka;
        layers.file_path = Some(path);
    }
    let command = with_file_defaults(command, &layers.file);
    // A second load (tests) keeps the first layers: the values are the same process's.
    let _ = LAYERS.set(layers);
    Ok(command)
}

/// The value of `--config FILE` or `--config=FILE` among the arguments, before a `--` that ends the flags.
fn config_flag(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = it.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return it.next().map(|p| PathBuf::from(p.as_ref()));
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// Every setting's environment variable: the flags' (of every subcommand), the breaker engine's and the
/// library's own.
pub fn known_settings(command: &clap::Command) -> BTreeSet<String> {
    fn walk(command: &clap::Command, names: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, names);
        }
    }
    let mut names = BTreeSet::new();
    walk(command, &mut names);
    names.extend(crate::breaker::KEYS.iter().map(|k| format!("COSTSIM_{}", k.to_ascii_uppercase())));
    names.extend(ENV_ONLY_SETTINGS.iter().map(|(n, _)| (*n).to_owned()));
    names.insert(CONFIG_ENV.to_owned());
    names
}

/// The settings read by the library (not by a flag) and their defaults, for `config show`.
pub(crate) fn env_only_settings() -> &'static [(&'static str, Option<&'static str>)] {
    ENV_ONLY_SETTINGS
}

/// Refuses a `COSTSIM_*` variable that names no setting, no Kafka property and nothing of the scripts'.
fn check_environment(env: &BTreeMap<String, String>, known: &BTreeSet<String>) -> Result<(), ConfigError> {
    for name in env.keys().filter(|n| n.starts_with("COSTSIM_")) {
        let ours = known.contains(name)
            || name.starts_with(KAFKA_ENV_PREFIX)
            || SCRIPT_VARIABLES.contains(&name.as_str())
            || SCRIPT_PREFIXES.iter().any(|p| name.starts_with(p));
        if !ours {
            return Err(ConfigError::UnknownVariable { name: name.clone(), hint: suggest(name, known.iter()) });
        }
    }
    Ok(())
}

/// ", did you mean `X`?" for the closest known name, when one is close.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.9)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// The environment variable a file key stands for: `COSTSIM_` + the key in upper case, or the key in upper case
/// for the settings without the prefix (`database_url`, `kafka_brokers`, `alertmanager_url`, `instance_id`).
fn variable_of(key: &str, known: &BTreeSet<String>) -> Option<String> {
    let upper = key.to_ascii_uppercase();
    let prefixed = format!("COSTSIM_{upper}");
    if known.contains(&prefixed) && prefixed != CONFIG_ENV {
        Some(prefixed)
    } else if known.contains(&upper) && !upper.starts_with("COSTSIM_") {
        Some(upper)
    } else {
        None
    }
}

type FileSettings = (BTreeMap<String, String>, Vec<(String, String)>);

/// Parses the TOML file into settings by variable and the `[kafka]` properties.
fn parse_file(path: &Path, text: &str, known: &BTreeSet<String>) -> Result<FileSettings, ConfigError> {
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax { path: path.into(), reason: e.to_string() })?;
    let mut settings = BTreeMap::new();
    let mut kafka = Vec::new();
    for (key, value) in table {
        if key == "kafka" {
            let toml::Value::Table(properties) = value else {
                return Err(bad(path, &key, "must be a table of librdkafka properties ([kafka])"));
            };
            flatten_properties(path, "", properties, &mut kafka)?;
            continue;
        }
        let Some(variable) = variable_of(&key, known) else {
            let keys: Vec<String> = known.iter().filter_map(|n| file_key(n)).collect();
            return Err(ConfigError::UnknownKey {
                path: path.into(),
                key: key.clone(),
                hint: suggest(&key, keys.iter()),
            });
        };
        settings.insert(variable, scalar(path, &key, value)?);
    }
    Ok((settings, kafka))
}

/// The file key of a setting's variable (the inverse of [`variable_of`]).
pub(crate) fn file_key(variable: &str) -> Option<String> {
    if variable == CONFIG_ENV {
        return None;
    }
    Some(variable.strip_prefix("COSTSIM_").unwrap_or(variable).to_ascii_lowercase())
}

/// `[kafka]` keys may be quoted (`"sasl.username" = …`) or dotted (`sasl.username = …`, which TOML nests).
fn flatten_properties(
    path: &Path,
    prefix: &str,
    table: toml::Table,
    out: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten_properties(path, &name, inner, out)?,
            value => {
                let text = scalar(path, &format!("kafka.{name}"), value)?;
                out.push((name, text));
            }
        }
    }
    Ok(())
}

/// A setting's text from a TOML value: strings as they are, numbers and booleans as written, a list joined with
/// commas.
fn scalar(path: &Path, key: &str, value: toml::Value) -> Result<String, ConfigError> {
    Ok(match value {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => {
            let parts: Result<Vec<String>, ConfigError> = items
                .into_iter()
                .map(|item| match item {
                    toml::Value::Array(_) | toml::Value::Table(_) => {
                        Err(bad(path, key, "a list may hold only plain values"))
                    }
                    item => scalar(path, key, item),
                })
                .collect();
            parts?.join(",")
        }
        toml::Value::Table(_) => return Err(bad(path, key, "is a table; only [kafka] holds a table")),
    })
}

fn bad(path: &Path, key: &str, reason: &str) -> ConfigError {
    ConfigError::BadValue { path: path.into(), key: key.to_owned(), reason: reason.to_owned() }
}

/// `command` with the installed file's values as its flags' defaults (what [`load`] returned).
pub fn prepare(command: clap::Command) -> clap::Command {
    with_file_defaults(command, &layers().file)
}

/// `command` with every flag whose variable the file sets defaulting to the file's value, in every subcommand.
fn with_file_defaults(mut command: clap::Command, file: &BTreeMap<String, String>) -> clap::Command {
    if file.is_empty() {
        return command;
    }
    let ids: Vec<(clap::Id, &'static str, bool)> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy();
            let value = file.get(env.as_ref())?;
            // `--help` shows defaults: never a secret's, nor a URL's that carries a password.
            let hide = arg.is_hide_env_values_set() || is_secret_name(&env) || masked(&env, value) != *value;
            // Leaked once per setting at start: clap keeps defaults as 'static strings.
            Some((arg.get_id().clone(), &*Box::leak(value.clone().into_boxed_str()), hide))
        })
        .collect();
    for (id, value, hide) in ids {
        command = command.mut_arg(id, |arg| arg.default_value(value).required(false).hide_default_value(hide));
    }
    let subs: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for sub in subs {
        command = command.mut_subcommand(sub, |c| with_file_defaults(c, file));
    }
    command
}

/// Whether a setting holds a secret, by its name: its value is never shown.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token", "sasl.jaas", "sasl.oauthbearer.config", "ssl.key", "key.pem", "user_info"]
        .iter()
        .any(|s| name.contains(s))
        && !name.ends_with("_file")
        && !name.ends_with(".location")
}

/// A value as `config show` and errors may show it: secrets masked, passwords taken out of URLs.
pub fn masked(name: &str, value: &str) -> String {
    if is_secret_name(name) {
        return "***".to_owned();
    }
    // A list of URLs (ALERTMANAGER_URL) is masked item by item.
    value
        .split(',')
        .map(|item| match url::Url::parse(item.trim()) {
            // Only the password is replaced, so the rest reads exactly as written.
            Ok(url) if url.password().is_some() => match (item.find("://"), item.rfind('@')) {
                (Some(scheme_end), Some(at)) => {
                    let userinfo = &item[scheme_end + 3..at];
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{}{user}:***{}", &item[..scheme_end + 3], &item[at..])
                }
                _ => "***".to_owned(),
            },
            _ => item.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
