//! `backtest`: replays simulation results from a JSON Lines file or a range of a Kafka topic through the
//! breaker, with no side effects, and prints one line per state change and a summary.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::topic_range::{self as topic, Rejected};
use crate::backtest::{Backtest, format_summary, format_transition, summary_json, transition_json};
use crate::breaker::BreakerConfig;
use crate::codec::{JsonLines, LineError};
use crate::event::SimulationResult;
use crate::kafka::KafkaConfig;

/// Arguments of `backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// JSON Lines file of simulation results, in the order they were (or would be) consumed.
    #[arg(long, value_name = "FILE.jsonl", required_unless_present = "topic", conflicts_with = "topic")]
    input: Option<PathBuf>,
    /// Replay this Kafka topic (Avro records) instead of a file: every partition, merged in event-time order,
    /// without joining a consumer group.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Start of the topic range: an offset (in every partition) or an RFC 3339 time (Kafka record timestamp);
    /// default: the beginning.
    #[arg(long, value_name = "OFFSET|TIME", value_parser = topic::parse_position, requires = "topic")]
    from: Option<topic::Position>,
    /// End of the topic range, exclusive: an offset or an RFC 3339 time; default: the end when the run starts.
    #[arg(long, value_name = "OFFSET|TIME", value_parser = topic::parse_position, requires = "topic")]
    to: Option<topic::Position>,
    /// Override a breaker setting for this run, e.g. `--set drift_threshold=0.15` (repeatable). Settings start
    /// from their defaults and the COSTSIM_* environment variables; unknown keys are refused.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print one JSON object per line (each transition, then `{"summary": …}`) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    schemas: super::schema::SchemaArgs,
}

/// Runs `backtest`; rejected inputs go to stderr as `place: reason` (`file:line`, `topic/partition@offset`)
/// and do not stop the replay. Exits non-zero only when the input could not be read to its end.
pub async fn run(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let config = BreakerConfig::from_env(env)
        .context("invalid breaker settings in the environment")?
        .with_overrides(args.set.iter().map(String::as_str))
        .context("invalid --set")?;
    // Reading and replaying are blocking and CPU-bound: keep them off the async workers.
    let read_to_end = tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        let read_to_end = match (&args.input, &args.topic) {
            (Some(path), _) => {
                let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                let name = path.display().to_string();
                replay(json_lines(BufReader::new(file), &name), config, args.json, &mut out, &mut std::io::stderr())?
            }
            (None, Some(topic)) => {
                let range = topic::TopicRange::open(
                    &args.kafka,
                    (args.schemas.writers()?, args.schemas.registry()?),
                    topic,
                    None,
                    args.from,
                    args.to,
                )?;
                replay(
                    range.map(|r| r.map(|located| located.event)),
                    config,
                    args.json,
                    &mut out,
                    &mut std::io::stderr(),
                )?
            }
            (None, None) => anyhow::bail!("give --input FILE.jsonl or --topic TOPIC"),
        };
        out.flush().context("cannot write to stdout")?;
        Ok(read_to_end)
    })
    .await
    .context("the replay task failed")??;
    Ok(if read_to_end { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The events of a JSON Lines input, with bad lines as rejections placed at `name:line`.
fn json_lines<'a>(
    input: impl BufRead + 'a,
    name: &'a str,
) -> impl Iterator<Item = Result<SimulationResult, Rejected>> + 'a {
    JsonLines::new(input).map(move |(line, parsed)| {
        parsed.map_err(|error| Rejected {
            place: format!("{name}:{line}"),
            class: match &error {
                LineError::Decode(decode) => decode.class(),
                LineError::Io(_) => "read_error",
            },
            fatal: matches!(error, LineError::Io(_)),
            message: error.to_string(),
        })
    })
}

/// Replays `inputs`, writing transitions and the summary to `out` and rejections to `err`; returns whether
/// the input was read to its end.
fn replay(
    inputs: impl IntoIterator<Item = Result<SimulationResult, Rejected>>,
    config: BreakerConfig,
    json: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<bool> {
    let mut backtest = Backtest::new(config)?;
    let mut read_to_end = true;
    for input in inputs {
        match input {
            Ok(event) => {
                for transition in backtest.push(&event) {
                    let text = if json { transition_json(transition) } else { format_transition(transition) };
                    writeln!(out, "{text}")?;
                }
            }
            Err(rejected) => {
                writeln!(err, "{}: {}", rejected.place, rejected.message)?;
                read_to_end &= !rejected.fatal;
                backtest.reject(rejected.class);
            }
        }
    }
    let summary = backtest.finish();
    if json {
        writeln!(out, "{}", summary_json(&summary))?;
    } else {
        writeln!(out, "{}", format_summary(&summary))?;
    }
    Ok(read_to_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::simulation_result_to_json;
    use crate::event::tests::sample_result;

    fn run_on(input: &str, json: bool) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let config = BreakerConfig::default().with_overrides(["min_samples=1", "failure_threshold=1"]).unwrap();
        assert!(replay(json_lines(input.as_bytes(), "in.jsonl"), config, json, &mut out, &mut err).unwrap());
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    fn drifting_lines() -> String {
        (0..30)
            .map(|s| {
                let event = crate::event::SimulationResult {
                    occurred_at: sample_result().occurred_at + chrono::TimeDelta::seconds(s),
                    v2_cost_cents: Some(300),
                    ..sample_result()
                };
                simulation_result_to_json(&event) + "\n"
            })
            .collect()
    }

    #[test]
    fn bad_lines_are_reported_with_their_line_numbers_and_the_replay_finishes() {
        let good = simulation_result_to_json(&sample_result());
        let input = format!("{good}\n{{oops\n\n{}\n{good}\n", good.replace("\"evt-1\"", "\"\""));
        let (out, err) = run_on(&input, false);
        let lines: Vec<_> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(lines[0].starts_with("in.jsonl:2: bad JSON"), "{err}");
        assert_eq!(lines[1], "in.jsonl:4: invalid event: `event_id` is empty");
        assert!(out.contains("events read: 2, rejected: 2 (bad_json 1, invalid 1)"), "{out}");
    }

    #[test]
    fn text_output_has_one_line_per_transition_then_the_summary() {
        let (out, err) = run_on(&drifting_lines(), false);
        assert_eq!(err, "");
        let first = out.lines().next().unwrap();
        assert!(first.starts_with("2025-11-27T08:00:10.000Z  closed -> open  P1  p95=0.6000 samples=10  "), "{first}");
        assert!(out.contains("trips: 1 (P1 1)"), "{out}");
    }

    #[test]
    fn json_output_is_one_object_per_line_with_the_documented_fields() {
        let (out, _) = run_on(&drifting_lines(), true);
        let objects: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let trip = &objects[0];
        for field in ["at", "from", "to", "severity", "reason", "p95_drift", "sample_count"] {
            assert!(trip.get(field).is_some(), "{field} missing in {trip}");
        }
        assert_eq!((trip["from"].as_str(), trip["to"].as_str()), (Some("closed"), Some("open")));
        assert_eq!(objects.last().unwrap()["summary"]["trips"], 1);
    }

    #[test]
    fn two_runs_print_byte_identical_output() {
        assert_eq!(run_on(&drifting_lines(), true), run_on(&drifting_lines(), true));
        assert_eq!(run_on(&drifting_lines(), false), run_on(&drifting_lines(), false));
    }
}
