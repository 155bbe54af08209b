//! Prometheus metrics: the older system's names (docs/DOMAIN.md, *Metric names*) and the pipeline's own.
//!
//! Labels come from bounded sets only (breaker names, severities, verdicts, error classes, partitions), never an
//! id. Gauges that describe shared state (breaker state, queue depths) are refreshed from PostgreSQL, so every
//! replica reports the same truth ([`refresh`]).

pub mod refresh;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric of the process, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Trips and disables, by reason (`drift`, `schema`, `manual`) and severity.
    pub cb_disabled_total: IntCounterVec,
    /// Incidents opened (`resolved="false"`) and resolved (`resolved="true"`), by severity.
    pub cb_incidents_total: IntCounterVec,
    /// Alert-queue rows waiting for delivery (the real pending count).
    pub cb_alert_queue_depth: IntGauge,
    /// Failed alert deliveries, by alert type and error type.
    pub cb_alert_send_failures_total: IntCounterVec,
    /// Time from an alert-queue row's creation (in its decision's transaction) to its delivery to Alertmanager.
    pub cb_alert_delivery_seconds: Histogram,
    /// Closes, by reason (`manual`, `auto_recovery`).
    pub cb_enabled_total: IntCounterVec,
    /// Closes after a passed probation.
    pub cb_auto_recovery_total: IntCounter,
    /// Failing evaluations in a row, by breaker.
    pub cb_consecutive_failures: IntGaugeVec,
    /// Drift score of each scored event.
    pub v2_drift_score: Histogram,
    /// Events by verdict band.
    pub v2_comparison_verdict_total: IntCounterVec,
    /// Events by V2 status (`success`, `error`, `timeout`, `schema_error`).
    pub v2_simulations_total: IntCounterVec,
    /// V2's run time of each event that reports one, in milliseconds.
    pub v2_simulation_duration_ms: Histogram,
    /// |V2 − V1| cost of each event with both costs, in cents.
    pub v2_cost_delta_cents: Histogram,
    /// Canary runs made by this process, by status (`pass`, `fail`, `error`); each status starts at 0.
    pub v2_canary_runs_total: IntCounterVec,
    /// KL divergence of the newest canary run with one, by breaker (refreshed from PostgreSQL).
    pub v2_kl_divergence: GaugeVec,
    /// Whether the newest judging canary run failed, by breaker: 1 failing, 0 passing (refreshed).
    pub v2_canary_failing: IntGaugeVec,
    /// Unix time of the newest canary run, or of the breaker's creation before the first (refreshed).
    pub v2_canary_last_run_timestamp_seconds: GaugeVec,
    /// Breaker state by breaker: 0 closed, 1 open, 2 half-open.
    pub v2_circuit_breaker_state: IntGaugeVec,
    /// Consumed records by what became of them: `inserted`, `duplicate`, `too_late`, `dead_letter`.
    pub events_total: IntCounterVec,
    /// Records sent to the dead-letter topic, by error class.
    pub dlq_records_total: IntCounterVec,
    /// Records read under the fingerprint apache-avro 0.22 gave our schema (written before the processor followed
    /// the specification); the transition is over when it stops growing.
    pub legacy_fingerprint_records_total: IntCounter,
    /// Records per committed batch.
    pub batch_size: Histogram,
    /// Time from a batch's first record to its committed transaction.
    pub batch_commit_seconds: Histogram,
    /// Records behind the partition's high watermark, by partition.
    pub consumer_lag_records: IntGaugeVec,
    /// State events written but not yet published.
    pub outbox_pending_events: IntGauge,
    /// Age of the oldest unpublished state event.
    pub outbox_lag_seconds: prometheus::Gauge,
    /// Transient failures (database or broker unreachable) that made a batch wait and retry.
    pub transient_failures_total: IntCounterVec,
    /// Records of the results topic the broker deleted before they were applied (each range is a row of
    /// `costsim_lost_records`).
    pub records_lost_to_retention_total: IntCounter,
    /// Offsets skipped because they hold no readable record (transaction markers, aborted or compacted records).
    pub offsets_skipped_total: IntCounter,
    /// Unix time of the last successful refresh of the gauges read from PostgreSQL.
    pub gauges_refreshed_timestamp_seconds: prometheus::Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let float_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let cb_alert_queue_depth =
            IntGauge::new("costsim_cb_alert_queue_depth", "Alert-queue rows waiting for delivery.").expect("valid");
        registry.register(Box::new(cb_alert_queue_depth.clone())).expect("unique metric");
        let outbox_pending_events =
            IntGauge::new("costsim_outbox_pending_events", "State events not yet published.").expect("valid");
        registry.register(Box::new(outbox_pending_events.clone())).expect("unique metric");
        let outbox_lag_seconds =
            prometheus::Gauge::new("costsim_outbox_lag_seconds", "Age of the oldest unpublished state event.")
                .expect("valid");
        registry.register(Box::new(outbox_lag_seconds.clone())).expect("unique metric");
        let counter = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let gauges_refreshed_timestamp_seconds = prometheus::Gauge::new(
            "costsim_gauges_refreshed_timestamp_seconds",
            "Unix time of the last refresh of the gauges read from PostgreSQL.",
        )
        .expect("valid");
        registry.register(Box::new(gauges_refreshed_timestamp_seconds.clone())).expect("unique metric");
        Metrics {
            cb_disabled_total: counter_vec(
                "costsim_cb_disabled_total",
                "Breaker trips and manual disables.",
                &["reason", "severity"],
            ),
            cb_incidents_total: counter_vec(
                "costsim_cb_incidents_total",
                "Incidents opened and resolved.",
                &["severity", "resolved"],
            ),
            cb_alert_queue_depth,
            cb_alert_send_failures_total: counter_vec(
                "costsim_cb_alert_send_failures_total",
                "Failed Alertmanager deliveries.",
                &["alert_type", "error_type"],
            ),
            cb_alert_delivery_seconds: histogram(
                "costsim_cb_alert_delivery_seconds",
                "Time from an alert's queueing to its delivery to Alertmanager.",
                vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
            ),
            cb_enabled_total: counter_vec("costsim_cb_enabled_total", "Breaker closes.", &["reason"]),
            cb_auto_recovery_total: counter("costsim_cb_auto_recovery_total", "Closes after a passed probation."),
            cb_consecutive_failures: gauge_vec(
                "costsim_cb_consecutive_failures",
                "Failing evaluations in a row.",
                &["breaker"],
            ),
            v2_drift_score: histogram(
                "costsim_v2_drift_score",
                "Drift score of each scored event.",
                vec![0.01, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0],
            ),
            v2_comparison_verdict_total: counter_vec(
                "costsim_v2_comparison_verdict_total",
                "Events by verdict band.",
                &["verdict"],
            ),
            v2_simulations_total: counter_vec("costsim_v2_simulations_total", "Events by V2 status.", &["status"]),
            v2_simulation_duration_ms: histogram(
                "costsim_v2_simulation_duration_ms",
                "V2 run time of each event, in milliseconds.",
                vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
            ),
            v2_cost_delta_cents: histogram(
                "costsim_v2_cost_delta_cents",
                "Absolute V2 - V1 cost of each event with both costs, in cents.",
                vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
            ),
            v2_canary_runs_total: {
                let m = counter_vec("costsim_v2_canary_runs_total", "Canary runs by status.", &["status"]);
                // Present from the start, so increase() sees a process's first run and a rule can tell "none".
                for status in ["pass", "fail", "error"] {
                    m.with_label_values(&[status]);
                }
                m
            },
            v2_kl_divergence: float_gauge_vec(
                "costsim_v2_kl_divergence",
                "KL divergence of the newest canary run.",
                &["breaker"],
            ),
            v2_canary_failing: gauge_vec(
                "costsim_v2_canary_failing",
                "Whether the newest judging canary run failed: 1 failing, 0 passing.",
                &["breaker"],
            ),
            v2_canary_last_run_timestamp_seconds: float_gauge_vec(
                "costsim_v2_canary_last_run_timestamp_seconds",
                "Unix time of the newest canary run (of the breaker's creation before the first).",
                &["breaker"],
            ),
            v2_circuit_breaker_state: gauge_vec(
                "costsim_v2_circuit_breaker_state",
                "Breaker state: 0 closed, 1 open, 2 half-open.",
                &["breaker"],
            ),
            events_total: counter_vec("costsim_events_total", "Consumed records by outcome.", &["outcome"]),
            dlq_records_total: counter_vec(
                "costsim_dlq_records_total",
                "Records sent to the dead-letter topic.",
                &["error_class"],
            ),
            legacy_fingerprint_records_total: counter(
                "costsim_legacy_fingerprint_records_total",
                "Records read under the pre-specification (apache-avro 0.22) fingerprint of their schema.",
            ),
            batch_size: histogram(
                "costsim_batch_size_records",
                "Records per committed batch.",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
            ),
            batch_commit_seconds: histogram(
                "costsim_batch_commit_seconds",
                "Time from a batch's first record to its commit.",
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            consumer_lag_records: gauge_vec(
                "costsim_consumer_lag_records",
                "Records behind the high watermark.",
                &["partition"],
            ),
            outbox_pending_events,
            outbox_lag_seconds,
            transient_failures_total: counter_vec(
                "costsim_transient_failures_total",
                "Batches that waited for an unreachable dependency.",
                &["dependency"],
            ),
            records_lost_to_retention_total: counter(
                "costsim_records_lost_to_retention_total",
                "Records the broker deleted before they were applied.",
            ),
            offsets_skipped_total: counter(
                "costsim_offsets_skipped_total",
                "Offsets skipped that hold no readable record (transaction markers, aborted or compacted records).",
            ),
            gauges_refreshed_timestamp_seconds,
            registry,
        }
    }

    /// The text exposition of every metric, as `/metrics` serves it.
    pub fn render(&self) -> String {
        self.try_render().expect("our metrics always encode")
    }

    /// The text exposition of every metric, or why the encoder refused it (for callers that must not panic).
    pub fn try_render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(format!("the text exposition is not UTF-8: {e}")))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_systems_metric_names_are_exported() {
        let metrics = Metrics::new();
        metrics.cb_disabled_total.with_label_values(&["drift", "P1"]).inc();
        metrics.v2_drift_score.observe(0.3);
        metrics.v2_circuit_breaker_state.with_label_values(&["costsim_v2"]).set(1);
        let text = metrics.render();
        for name in ["costsim_cb_disabled_total", "costsim_v2_drift_score_bucket", "costsim_v2_circuit_breaker_state"] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
