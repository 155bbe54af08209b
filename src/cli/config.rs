//! `config show`: every effective setting of `run`, its value with secrets masked, and where it came from.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _};
use serde::Serialize;

use crate::breaker::BreakerConfig;
use crate::breaker::KEYS;
use crate::config::{self, Source, masked};
use crate::kafka::KafkaConfig;

/// Arguments of `config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print each effective setting of `run` and each Kafka property: value (secrets masked) and source
    /// (default, file, env, flag). Flags of `run` after `--` are taken into account.
    Show(ShowArgs),
}

/// Arguments of `config show`.
#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Flags of `run` to apply, after `--` (e.g. `config show -- --http-addr 0.0.0.0:9464`).
    #[arg(last = true, value_name = "RUN FLAGS")]
    run_flags: Vec<OsString>,
}

/// One effective setting.
#[derive(Debug, Serialize)]
struct Setting {
    /// Its environment variable, or its flag when it has none.
    name: String,
    /// Its key in the configuration file, if it has one.
    file_key: Option<String>,
    /// Its flag.
    flag: Option<String>,
    /// The value, secrets masked; `None` when unset.
    value: Option<String>,
    /// Where the value came from.
    source: Source,
}

/// Everything `config show` prints.
#[derive(Debug, Serialize)]
struct Shown {
    /// The configuration file, if any.
    file: Option<String>,
    /// The settings of `run`, then the breaker engine's, then those read from the environment only.
    settings: Vec<Setting>,
    /// The librdkafka properties, in order of precedence.
    kafka_properties: Vec<Setting>,
}

/// Runs `config`.
pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Show(show) = args.command;
    let shown = effective(&show.run_flags)?;
    if show.json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print_table(&shown);
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings `run` would start with, given `run_flags`.
fn effective(run_flags: &[OsString]) -> anyhow::Result<Shown> {
    let command = config::prepare(super::Cli::command());
    let run = command.find_subcommand("run").context("`run` is a subcommand")?.clone();
    // Missing required settings (DATABASE_URL) are shown as unset rather than refused.
    let run = run.mut_args(|arg| arg.required(false));
    let argv = std::iter::once(OsString::from("run")).chain(run_flags.iter().cloned());
    let matches = run.clone().try_get_matches_from(argv)?;
    let layers = config::layers();

    let mut settings = Vec::new();
    for arg in run.get_arguments() {
        let id = arg.get_id().as_str();
        // `--set` and `-X` are shown below, each key with its own source.
        if matches!(id, "help" | "version" | "set" | "options") {
            continue;
        }
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        let flag = arg.get_long().map(|l| format!("--{l}"));
        let name = env.clone().or_else(|| flag.clone()).unwrap_or_else(|| id.to_owned());
        let value = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","))
            .map(|v| masked(&name, &v));
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ if env.as_deref().is_some_and(|e| layers.file_value(e).is_some()) => Source::File,
            _ => Source::Default,
        };
        let file_key = env.as_deref().and_then(config::file_key);
        settings.push(Setting { name, file_key, flag, value, source });
    }

    for (variable, value) in [
        (config::CONFIG_ENV, layers.file_path.as_ref().map(|p| p.display().to_string())),
        ("COSTSIM_LOG_FORMAT", Some(layers.value("COSTSIM_LOG_FORMAT").unwrap_or("text").to_owned())),
    ] {
        let source = match variable {
            config::CONFIG_ENV if layers.get(variable).is_none() && value.is_some() => Source::Flag,
            _ => layers.get(variable).map_or(Source::Default, |(_, s)| s),
        };
        settings.push(Setting {
            name: variable.to_owned(),
            file_key: config::file_key(variable),
            flag: None,
            value,
            source,
        });
    }

    let sets: Vec<String> = matches.get_many::<String>("set").into_iter().flatten().cloned().collect();
    let engine = BreakerConfig::from_env(layers.vars())
        .and_then(|c| c.with_overrides(sets.iter().map(String::as_str)))
        .context("invalid breaker settings")?;
    let engine_json = serde_json::to_value(&engine)?;
    for key in KEYS.iter().filter(|k| **k != "disable_ttl_hours") {
        let variable = format!("COSTSIM_{}", key.to_ascii_uppercase());
        let by_flag = sets.iter().any(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == *key));
        let mut source = layers.get(&variable).map_or(Source::Default, |(_, s)| s);
        if *key == "disable_ttl_seconds" && source == Source::Default {
            source = layers.get("COSTSIM_DISABLE_TTL_HOURS").map_or(Source::Default, |(_, s)| s);
        }
        settings.push(Setting {
            file_key: config::file_key(&variable),
            name: variable,
            flag: Some(format!("--set {key}=")),
            value: engine_json.get(*key).map(|v| v.to_string()),
            source: if by_flag { Source::Flag } else { source },
        });
    }
    for (variable, default) in config::env_only_settings() {
        let found = layers.get(variable);
        settings.push(Setting {
            name: (*variable).to_owned(),
            file_key: config::file_key(variable),
            flag: None,
            value: found.map(|(v, _)| masked(variable, v)).or(default.map(str::to_owned)),
            source: found.map_or(Source::Default, |(_, s)| s),
        });
    }

    let kafka = KafkaConfig::from_arg_matches(&matches)?;
    let kafka_properties = kafka
        .properties()
        .into_iter()
        .map(|(key, value, source)| Setting {
            value: Some(masked(&key, &value)),
            name: key,
            file_key: None,
            flag: None,
            source,
        })
        .collect();
    Ok(Shown { file: layers.file_path.as_ref().map(|p| p.display().to_string()), settings, kafka_properties })
}

fn print_table(shown: &Shown) {
    println!("configuration file: {}", shown.file.as_deref().unwrap_or("none (--config, COSTSIM_CONFIG)"));
    let width = shown.settings.iter().chain(&shown.kafka_properties).map(|s| s.name.len()).max().unwrap_or(0);
    let line = |s: &Setting| {
        println!("{:width$}  {:7}  {}", s.name, s.source.to_string(), s.value.as_deref().unwrap_or("(not set)"))
    };
    println!("\n{:width$}  {:7}  VALUE", "SETTING", "SOURCE");
    shown.settings.iter().for_each(line);
    println!("\nKafka properties (file < COSTSIM_KAFKA_* < -X):");
    if shown.kafka_properties.is_empty() {
        println!("  none beyond bootstrap.servers");
    }
    shown.kafka_properties.iter().for_each(line);
}
