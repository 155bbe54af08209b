//! costsim-breaker: the kill switch for the V2 cost model, driven by the drift between V1 and V2.
//!
//! Modules, from the domain outwards:

/// Alertmanager payloads: one alert identity per incident, fired and resolved.
pub mod alert;
/// Replays of events through the window and the breaker, with no side effects: transitions and a summary.
pub mod backtest;
/// The breaker state machine: settings, the breaker's record, and `decide`, pure and clock-free.
pub mod breaker;
/// The command line: one subcommand per job.
pub mod cli;
/// Avro single-object and JSON Lines encodings of the events, with typed decode errors.
pub mod codec;
/// The drift score of one V1/V2 comparison, its verdict band, and what an event adds to a window.
pub mod drift;
/// The event contracts: simulation results, breaker state changes, and their validity rules.
pub mod event;
/// Synthetic simulation results with steady, spike and ramp drift profiles.
pub mod generate;
/// Kafka: connection settings, topic administration, confirmed-delivery producer.
pub mod kafka;
/// Prometheus metrics: the older system's names plus the pipeline's own.
pub mod metrics;
/// The processor: per partition and batch, one transaction for provenance, window, offsets and decisions.
pub mod pipeline;
/// PostgreSQL: connection pool and schema migrations.
pub mod store;
/// Logging setup.
pub mod telemetry;
/// The rolling event-time window: tumbling buckets of drift sketches and counts, mergeable across partitions.
pub mod window;
