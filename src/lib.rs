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
