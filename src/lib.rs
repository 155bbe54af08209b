//! costsim-breaker: the kill switch for the V2 cost model, driven by the drift between V1 and V2.
//!
//! One module per concept:

/// Alertmanager payloads: one alert identity per incident, fired, re-sent and resolved; the drift warning.
pub mod alert;
/// Alertmanager delivery: the outbox drainer (leader job), re-sends of firing alerts, backoff and dead letters.
pub mod alertmanager;
/// Replays of events through the window and the breaker, with no side effects: transitions and a summary.
pub mod backtest;
/// The breaker state machine: settings, the breaker's record, and `decide`, pure and clock-free.
pub mod breaker;
/// The canary's verdict on V2 over a sample of comparisons, and its daily schedule; pure.
pub mod canary;
/// The command line: one subcommand per job.
pub mod cli;
/// Avro single-object and JSON Lines encodings of the events, with typed decode errors.
pub mod codec;
/// The configuration's layers (defaults < `--config` file < environment < flags), unknown names refused.
pub mod config;
/// KL divergence of V1 and V2 cost histograms and nearest-rank percentiles, shared by the canary and the report.
pub mod divergence;
/// The drift score of one V1/V2 comparison, its verdict band, and what an event adds to a window.
pub mod drift;
/// The event contracts: simulation results, breaker state changes, and their validity rules.
pub mod event;
/// Synthetic simulation results with steady, spike and ramp drift profiles.
pub mod generate;
/// HTTP: the metrics and health listener (`/metrics`, `/health`, `/health/live`), its readiness probes and flags.
pub mod http;
/// Who this deployment is in alerts: the instance label and runbook link decisions are written with.
pub mod identity;
/// Kafka: connection settings, topic administration, confirmed-delivery producer.
pub mod kafka;
/// Leader election for singleton jobs: advisory locks on dedicated connections, lock ids in one place.
pub mod leader;
/// Prometheus metrics: the older system's names plus the pipeline's own.
pub mod metrics;
/// The processor: per partition and batch, one transaction for provenance, window, offsets and decisions.
pub mod pipeline;
/// A Confluent-compatible Schema Registry: writer schemas of Confluent-framed records, fetched by id and cached.
pub mod registry;
/// The state-event relay: the outbox to the compacted state topic, at least once, in version order.
pub mod relay;
/// Canary runs against PostgreSQL (on demand and the daily leader job), with their metrics and signal.
pub mod reports;
/// Bounded storage: the maintenance pass (provenance partitions ahead and expired, outbox retention) and its job.
pub mod storage;
/// PostgreSQL: where it is (URLs or their files, libpq's TLS settings), the pool, the schema migrations, repositories.
pub mod store;
/// Logging setup.
pub mod telemetry;
/// Wall-clock breaker transitions (open → half-open, probation decisions) under the breaker row's lock.
pub mod timers;
/// The fail-open answer for callers: a breaker view that follows the state topic and answers from memory.
pub mod view;
/// The rolling event-time window: tumbling buckets of drift sketches and counts, mergeable across partitions.
pub mod window;

/// The pure core (drift, window, breaker, backtest) imports only itself and the event contracts: no adapter, no I/O
/// crate, no clock. Checked over the sources, so a new import that breaks the layering fails here.
#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    /// The core's modules and the only `crate::` paths they may name.
    const CORE: [&str; 4] = ["drift", "window", "breaker", "backtest"];
    const ALLOWED: [&str; 5] = ["drift", "window", "breaker", "backtest", "event"];
    /// Crates that do I/O or read the clock.
    const ADAPTER_CRATES: [&str; 8] = ["sqlx", "rdkafka", "tokio", "reqwest", "axum", "hyper", "prometheus", "tracing"];

    fn sources(module: &str) -> Vec<PathBuf> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.join(format!("{module}.rs"))];
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for path in entries.map(|e| e.unwrap().path()) {
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && path.file_name() != Some("tests.rs".as_ref()) {
                    files.push(path);
                }
            }
        }
        files
    }

    #[test]
    fn the_core_imports_no_adapter_and_reads_no_clock() {
        let mut offenders = Vec::new();
        for module in CORE {
            for file in sources(module) {
                let text = std::fs::read_to_string(&file).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or_default();
                    let named = code.match_indices("crate::").map(|(at, _)| {
                        code[at + 7..].split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap_or("")
                    });
                    let bad_path = named.filter(|m| !m.is_empty() && !ALLOWED.contains(m)).count() > 0;
                    let bad_crate = ADAPTER_CRATES.iter().any(|c| code.contains(&format!("{c}::")));
                    let clock =
                        code.contains("Utc::now") || code.contains("Instant::now") || code.contains("SystemTime");
                    if bad_path || bad_crate || clock {
                        offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "the core reaches outside itself:\n{}", offenders.join("\n"));
    }
}
