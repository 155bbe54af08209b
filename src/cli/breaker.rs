//! `breaker status|disable|enable`: look at the breakers and switch V2 off or on by hand.
//!
//! Disable and enable take the same transactional path as automatic decisions: lock the breaker row, decide with
//! the pure core (`manual_disable`, `manual_enable`), write the state with its incident, alert-queue and
//! state-event rows (`store::breaker::apply`), commit. Repeating the same disable and enabling a closed breaker
//! change nothing and say so.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::breaker::BreakerConfig;
use crate::event::{BreakerState, format_rfc3339_millis};
use crate::identity::IdentityArgs;
use crate::store::breaker::manual;
use crate::store::breaker::{self, BreakerRow};
use crate::store::{DatabaseConfig, outbox};

/// The breaker the processor feeds by default.
const DEFAULT_BREAKER: &str = "costsim_v2";

/// Arguments of `breaker`.
#[derive(Debug, clap::Args)]
pub struct BreakerArgs {
    #[command(subcommand)]
    command: BreakerCommand,
}

/// The `breaker` subcommands.
#[derive(Debug, clap::Subcommand)]
enum BreakerCommand {
    /// Show every breaker: state, version, since when, until when (or latched), why, by whom, the open incident,
    /// consecutive failures and the last evaluation.
    Status(StatusArgs),
    /// Switch V2 off (open the breaker) for a TTL or latched until an enable; opens a P2 incident and queues its
    /// alert. Repeating the same disable changes nothing.
    Disable(DisableArgs),
    /// Switch V2 back on (close the breaker); resolves the incident and queues the resolved alert. Enabling a
    /// closed breaker changes nothing.
    Enable(EnableArgs),
}

/// Arguments of `breaker status`.
#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Print a JSON array with one object per breaker.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Arguments of `breaker disable`.
#[derive(Debug, clap::Args)]
struct DisableArgs {
    /// Why V2 is switched off; repeating a disable with the same reason and TTL changes nothing.
    #[arg(long, value_parser = non_blank)]
    reason: String,
    /// How long until the breaker goes half-open by itself, e.g. 3600s, 30m, 2h, 1d
    /// [default: COSTSIM_DISABLE_TTL_SECONDS or COSTSIM_DISABLE_TTL_HOURS, 24h].
    #[arg(long, value_parser = parse_ttl, conflicts_with = "latched")]
    ttl: Option<u64>,
    /// Stay open until an operator enables it (no TTL).
    #[arg(long)]
    latched: bool,
    /// Who disables it, recorded on the breaker, the incident and the state event [default: $USER, else operator].
    #[arg(long, value_parser = non_blank)]
    actor: Option<String>,
    /// The breaker to disable.
    #[arg(long, default_value = DEFAULT_BREAKER)]
    name: String,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Arguments of `breaker enable`.
#[derive(Debug, clap::Args)]
struct EnableArgs {
    /// Why V2 is switched back on; becomes the incident's resolution notes.
    #[arg(long, value_parser = non_blank)]
    reason: String,
    /// Who enables it, recorded as the incident's `resolved_by` [default: $USER, else operator].
    #[arg(long, value_parser = non_blank)]
    actor: Option<String>,
    /// The breaker to enable.
    #[arg(long, default_value = DEFAULT_BREAKER)]
    name: String,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Runs a `breaker` subcommand; no-ops exit 0 like changes do.
pub async fn run(args: BreakerArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BreakerCommand::Status(args) => status(args).await,
        BreakerCommand::Disable(args) => disable(args).await,
        BreakerCommand::Enable(args) => enable(args).await,
    }
}

/// One breaker as `status --json` prints it.
#[derive(Debug, Serialize)]
struct StatusLine {
    name: String,
    state: BreakerState,
    version: i64,
    /// When the current state began; `None` for a breaker that never changed.
    since: Option<DateTime<Utc>>,
    disabled_until: Option<DateTime<Utc>>,
    latched: bool,
    reason: Option<String>,
    actor: Option<String>,
    incident_id: Option<String>,
    severity: Option<String>,
    ttl_seconds: u64,
    consecutive_failures: u32,
    last_failure_at: Option<DateTime<Utc>>,
    last_evaluated_at: Option<DateTime<Utc>>,
    warning_active: bool,
}

impl StatusLine {
    fn of(row: BreakerRow, since: Option<DateTime<Utc>>) -> Self {
        let open = row.record.state == BreakerState::Open;
        StatusLine {
            state: row.record.state,
            version: row.version,
            since,
            disabled_until: row.record.disabled_until,
            latched: open && row.record.disabled_until.is_none(),
            reason: row.disabled_reason,
            actor: row.disabled_by,
            incident_id: row.incident_id,
            severity: row.record.severity.map(|s| s.as_str().to_owned()),
            ttl_seconds: row.record.ttl_seconds,
            consecutive_failures: row.record.consecutive_failures,
            last_failure_at: row.last_failure_at,
            last_evaluated_at: row.last_evaluated_at,
            warning_active: row.warning_active,
            name: row.name,
        }
    }

    /// A few lines for people.
    fn describe(&self) -> String {
        let time = |at: Option<DateTime<Utc>>| at.map_or_else(|| "never".to_owned(), |t| format_rfc3339_millis(&t));
        let mut state = self.state.to_string();
        if self.latched {
            state += " (latched)";
        } else if let (BreakerState::Open, Some(until)) = (self.state, self.disabled_until) {
            state += &format!(" until {}", format_rfc3339_millis(&until));
        }
        let since = self.since.map_or_else(|| "creation".to_owned(), |t| format_rfc3339_millis(&t));
        let mut text = format!("{}: {state}, version {}, since {since}\n", self.name, self.version);
        if let Some(reason) = &self.reason {
            text += &format!("  reason: {reason} (by {})\n", self.actor.as_deref().unwrap_or("unknown"));
        }
        if let Some(incident) = &self.incident_id {
            text += &format!("  incident: {incident} ({})\n", self.severity.as_deref().unwrap_or("?"));
        }
        text += &format!(
            "  consecutive failures: {}, last failure: {}, last evaluation: {}{}",
            self.consecutive_failures,
            time(self.last_failure_at),
            time(self.last_evaluated_at),
            if self.warning_active { ", drift warning firing" } else { "" }
        );
        text
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = args.database.connect().await?;
    let mut tx = pool.begin().await?;
    let mut lines = Vec::new();
    for row in breaker::list(&mut tx).await.context("cannot read the breakers")? {
        let since = outbox::changed_at(&mut tx, &row.name, row.version).await?;
        lines.push(StatusLine::of(row, since));
    }
    tx.commit().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else if lines.is_empty() {
        println!("no breakers (run `costsim-breaker migrate` first)");
    } else {
        let text: Vec<String> = lines.iter().map(StatusLine::describe).collect();
        println!("{}", text.join("\n"));
    }
    Ok(ExitCode::SUCCESS)
}

async fn disable(args: DisableArgs) -> anyhow::Result<ExitCode> {
    let config = BreakerConfig::from_env(crate::config::layers().vars()).context("invalid breaker settings")?;
    let ttl = if args.latched { 0 } else { args.ttl.unwrap_or(config.disable_ttl_seconds) };
    let actor = actor(args.actor);
    let settings = args.identity.apply_settings(&config);
    let pool = args.database.connect().await?;
    let done = manual::disable(&pool, &args.name, &args.reason, ttl, &actor, &settings).await?;
    if !done.changed {
        println!("{} is already disabled for this reason and {}; nothing changed", done.before.name, mode(ttl));
        return Ok(ExitCode::SUCCESS);
    }
    let incident = done.after.incident_id.clone().unwrap_or_default();
    let until = match done.after.record.disabled_until {
        Some(until) => format!("until {}", format_rfc3339_millis(&until)),
        None => "latched until an enable".to_owned(),
    };
    println!(
        "{}: {} -> open ({until}), version {}, incident {incident}, by {actor}: {}",
        done.before.name, done.before.record.state, done.after.version, args.reason
    );
    Ok(ExitCode::SUCCESS)
}

async fn enable(args: EnableArgs) -> anyhow::Result<ExitCode> {
    let config = BreakerConfig::from_env(crate::config::layers().vars()).context("invalid breaker settings")?;
    let actor = actor(args.actor);
    let settings = args.identity.apply_settings(&config);
    let pool = args.database.connect().await?;
    let done = manual::enable(&pool, &args.name, &args.reason, &actor, &settings).await?;
    if !done.changed {
        println!("{} is already closed (V2 enabled); nothing changed", done.before.name);
        return Ok(ExitCode::SUCCESS);
    }
    let resolved = match &done.before.incident_id {
        Some(id) => format!("incident {id} resolved"),
        None => "no open incident".to_owned(),
    };
    println!(
        "{}: {} -> closed, version {}, {resolved}, by {actor}: {}",
        done.before.name, done.before.record.state, done.after.version, args.reason
    );
    Ok(ExitCode::SUCCESS)
}

fn mode(ttl_seconds: u64) -> String {
    match ttl_seconds {
        0 => "latched".to_owned(),
        ttl => format!("a TTL of {ttl} s"),
    }
}

/// The operator's name: the flag, else `$USER`, else `operator`.
/// The actor a command records: the flag, else `$USER`, else `operator`.
pub(super) fn actor(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("USER").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

fn non_blank(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("must not be blank".to_owned()),
        trimmed => Ok(trimmed.to_owned()),
    }
}

/// A TTL such as `90`, `3600s`, `30m`, `2h` or `1d`, in seconds; at least one second, at most ten years.
fn parse_ttl(s: &str) -> Result<u64, String> {
    match super::parse_seconds(s, "duration")? {
        0 => Err("a TTL of 0 would never end; use --latched".to_owned()),
        seconds => Ok(seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Breaker;
    use crate::store::breaker::manual::is_same_disable;

    #[test]
    fn ttls_read_with_their_units() {
        assert_eq!(parse_ttl("3600s"), Ok(3600));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("2h"), Ok(7200));
        assert_eq!(parse_ttl("1d"), Ok(86_400));
        assert_eq!(parse_ttl("90"), Ok(90));
    }

    #[test]
    fn zero_unknown_units_and_absurd_ttls_are_refused() {
        assert!(parse_ttl("0m").unwrap_err().contains("--latched"));
        assert!(parse_ttl("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("-5s").is_err());
        assert!(parse_ttl("99999999999999999999s").is_err());
        assert!(parse_ttl("4000d").unwrap_err().contains("ten years"));
    }

    fn open_row(reason: &str, ttl_seconds: u64) -> BreakerRow {
        let until = (ttl_seconds > 0).then(|| DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(ttl_seconds as i64));
        BreakerRow {
            name: DEFAULT_BREAKER.into(),
            record: Breaker { state: BreakerState::Open, disabled_until: until, ttl_seconds, ..Breaker::closed() },
            version: 1,
            incident_id: Some("i-1".into()),
            disabled_by: Some("alice".into()),
            disabled_reason: Some(reason.into()),
            last_failure_at: None,
            last_evaluated_at: None,
            warning_active: false,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_same_reason_and_mode_is_the_same_disable() {
        assert!(is_same_disable(&open_row("maintenance", 0), "maintenance", 0));
        assert!(is_same_disable(&open_row("maintenance", 3600), "maintenance", 3600));
    }

    #[test]
    fn another_reason_ttl_or_mode_is_a_new_disable() {
        assert!(!is_same_disable(&open_row("maintenance", 0), "deploy", 0));
        assert!(!is_same_disable(&open_row("maintenance", 0), "maintenance", 3600));
        assert!(!is_same_disable(&open_row("maintenance", 3600), "maintenance", 0));
        assert!(!is_same_disable(&open_row("maintenance", 3600), "maintenance", 7200));
        let half_open = BreakerRow {
            record: Breaker { state: BreakerState::HalfOpen, ..open_row("maintenance", 0).record },
            ..open_row("maintenance", 0)
        };
        assert!(!is_same_disable(&half_open, "maintenance", 0));
    }

    #[test]
    fn the_actor_defaults_to_a_name_never_blank() {
        assert_eq!(actor(Some("bob".into())), "bob");
        assert!(!actor(None).is_empty());
    }
}
