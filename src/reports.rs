//! Canary runs against PostgreSQL: one run (on demand from the API or the CLI, or scheduled), and the daily
//! schedule that the leader of lock 7001 keeps.
//!
//! # Guarantees
//! A run draws its sample, stores its report and records its signal on the breaker in ONE transaction, so a report
//! on record has always had its effect (the canary alert queued, `canary_failing` set) and a crash leaves neither.
//! Only the leader of [`LeaderLock::Canary`](crate::leader::LeaderLock::Canary) runs the schedule, so one report is
//! made per daily slot however many replicas run; a slot missed while no instance led is made up once at the next
//! start ([`canary::next_run`]). On-demand runs need no lock: each is its own report, and the signal is written
//! under the breaker row's lock.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::canary::{self, CanaryLimits, CanaryStatus};
use crate::metrics::Metrics;
use crate::store::canary::{self as stored, Report, RunInfo, Signal};

/// The canary's schedule and the limits runs are judged by.
#[derive(Debug, Clone, clap::Args)]
pub struct CanarySettings {
    /// Whether the leader runs the canary every day (on-demand runs work either way).
    #[arg(long = "canary-enabled", env = "COSTSIM_CANARY_ENABLED", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub enabled: bool,
    /// Time of day (UTC, HH:MM) of the daily run.
    #[arg(long = "canary-at", env = "COSTSIM_CANARY_AT", default_value = "03:00", value_parser = parse_time_of_day)]
    pub at: NaiveTime,
    /// Comparisons a run samples at most.
    #[arg(long = "canary-sample-count", env = "COSTSIM_CANARY_SAMPLE_COUNT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sample_count: u32,
    /// Hours of provenance (event time, up to now) a run samples from.
    #[arg(long = "canary-window-hours", env = "COSTSIM_CANARY_WINDOW_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u32).range(1..=2160))]
    pub window_hours: u32,
    /// A KL divergence above this fails a run.
    #[arg(long = "canary-kl-threshold", env = "COSTSIM_CANARY_KL_THRESHOLD", default_value_t = 0.2,
          value_parser = parse_non_negative)]
    pub kl_threshold: f64,
    /// A drift score above this makes a comparison an outlier.
    #[arg(long = "canary-outlier-threshold", env = "COSTSIM_CANARY_OUTLIER_THRESHOLD", default_value_t = 0.5,
          value_parser = parse_fraction)]
    pub outlier_threshold: f64,
    /// A share of outliers above this fails a run (0 to 1).
    #[arg(long = "canary-outlier-max-pct", env = "COSTSIM_CANARY_OUTLIER_MAX_PCT", default_value_t = 0.05,
          value_parser = parse_fraction)]
    pub outlier_max_pct: f64,
    /// A share of major-drift comparisons above this fails a run (0 to 1; the older system hard-coded 0.10).
    #[arg(long = "canary-major-max-pct", env = "COSTSIM_CANARY_MAJOR_MAX_PCT", default_value_t = 0.10,
          value_parser = parse_fraction)]
    pub major_max_pct: f64,
}

impl CanarySettings {
    /// The settings as the `COSTSIM_CANARY_*` variables give them, each unset one at its default.
    pub fn from_env() -> Result<CanarySettings, clap::Error> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: CanarySettings,
        }
        Only::try_parse_from(["costsim-breaker"]).map(|only| only.settings)
    }

    /// A run with these settings for `breaker`, asked by `trigger` (and `requested_by`); its alert carries
    /// `instance` and points to the canary runbook beside `breaker_runbook_url`.
    pub fn request(
        &self,
        breaker: &str,
        trigger: &'static str,
        requested_by: Option<String>,
        instance: &str,
        breaker_runbook_url: &str,
    ) -> CanaryRequest {
        CanaryRequest {
            breaker: breaker.to_owned(),
            trigger,
            requested_by,
            sample_count: self.sample_count,
            window_hours: self.window_hours,
            limits: self.limits(),
            instance: instance.to_owned(),
            runbook_url: canary_runbook_url(breaker_runbook_url),
        }
    }

    /// The limits runs are judged by.
    pub fn limits(&self) -> CanaryLimits {
        CanaryLimits {
            kl_threshold: self.kl_threshold,
            outlier_threshold: self.outlier_threshold,
            outlier_max_pct: self.outlier_max_pct,
            major_max_pct: self.major_max_pct,
        }
    }
}

/// The canary runbook next to a breaker runbook link (`…/costsim-circuit-breaker.md` → `…/costsim-canary.md`); a
/// link of another shape is kept as it is.
fn canary_runbook_url(breaker_runbook: &str) -> String {
    breaker_runbook.replace("costsim-circuit-breaker", "costsim-canary")
}

fn parse_time_of_day(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| format!("`{s}` is not a time of day as HH:MM (UTC)"))
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number ≥ 0")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match parse_non_negative(s) {
        Ok(v) if v <= 1.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number between 0 and 1")),
    }
}

/// One run to make: who asks, over what, judged how.
#[derive(Debug, Clone)]
pub struct CanaryRequest {
    /// The breaker the verdict is reported to.
    pub breaker: String,
    /// `schedule`, `api` or `cli`.
    pub trigger: &'static str,
    /// The API token's name or the CLI actor.
    pub requested_by: Option<String>,
    /// Comparisons to sample at most.
    pub sample_count: u32,
    /// Hours of provenance to sample from.
    pub window_hours: u32,
    /// The limits.
    pub limits: CanaryLimits,
    /// The `instance` label of the canary alert.
    pub instance: String,
    /// Where the canary alert points operators.
    pub runbook_url: String,
}

/// Makes one run at `now`: samples, judges, stores the report and records the signal in one transaction, then
/// counts it in `costsim_v2_canary_runs_total`.
pub async fn run_canary(
    pool: &PgPool,
    request: &CanaryRequest,
    metrics: Option<&Metrics>,
    now: DateTime<Utc>,
) -> Result<(Report, Signal), sqlx::Error> {
    let run_id: String = uuid::Uuid::new_v4().simple().to_string().chars().take(12).collect();
    let window = (now - TimeDelta::hours(i64::from(request.window_hours)), now);
    let mut tx = pool.begin().await?;
    let samples = stored::samples(&mut tx, window.0, window.1, i64::from(request.sample_count), &run_id).await?;
    let evaluation = canary::evaluate(&samples, &request.limits);
    let info = RunInfo {
        run_id: &run_id,
        breaker: &request.breaker,
        trigger: request.trigger,
        requested_by: request.requested_by.as_deref(),
        window,
        settings: json!({
            "sample_count": request.sample_count,
            "window_hours": request.window_hours,
            "limits": request.limits,
        }),
        at: now,
    };
    let report = stored::insert(&mut tx, &info, &evaluation).await?;
    let signal = stored::record_signal(&mut tx, &report, &request.instance, &request.runbook_url).await?;
    tx.commit().await?;
    if let Some(metrics) = metrics {
        metrics.v2_canary_runs_total.with_label_values(&[evaluation.status.as_str()]).inc();
    }
    let (kl, reasons) = (evaluation.kl_divergence, evaluation.failure_reasons.join("; "));
    match evaluation.status {
        CanaryStatus::Pass => tracing::info!(run_id, breaker = %request.breaker, trigger = request.trigger,
            samples = evaluation.total_samples, ?kl, "Canary passed."),
        _ => tracing::warn!(run_id, breaker = %request.breaker, trigger = request.trigger,
            status = evaluation.status.as_str(), samples = evaluation.total_samples, ?kl, %reasons, ?signal,
            "Canary did not pass."),
    }
    Ok((report, signal))
}

/// Time between two attempts after a failed scheduled run.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The daily schedule, run while this process leads lock 7001: waits for the next slot ([`canary::next_run`]),
/// makes the run, and retries a failed one after [`RETRY_AFTER`] until `cancel` fires.
pub async fn run_schedule(
    pool: PgPool,
    settings: CanarySettings,
    request: CanaryRequest,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    loop {
        let last = async {
            let mut tx = pool.begin().await?;
            let last = stored::last_scheduled(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(last)
        };
        let wait = match last.await {
            Ok(last) => {
                let now = Utc::now();
                let due = canary::next_run(settings.at, last, now);
                tracing::info!(due = %due.to_rfc3339(), "Next scheduled canary run.");
                (due - now).to_std().unwrap_or_default()
            }
            Err(err) => {
                tracing::warn!(error = %err, "Cannot read the last scheduled canary run; trying again.");
                if !pause(&cancel, RETRY_AFTER).await {
                    return;
                }
                continue;
            }
        };
        if !pause(&cancel, wait).await {
            return;
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = run_canary(&pool, &request, Some(&metrics), Utc::now()) => outcome,
        };
        if let Err(err) = outcome {
            tracing::error!(error = %err, "The scheduled canary run failed; trying again.");
            if !pause(&cancel, RETRY_AFTER).await {
                return;
            }
        }
    }
}

/// Waits `wait`; false when `cancel` fired first.
async fn pause(cancel: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
