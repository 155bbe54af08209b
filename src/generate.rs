//! Synthetic simulation results with a chosen drift profile, for demos, tests and benchmarks.
//!
//! Deterministic: the same settings and seed give the same events. Event time is a parameter, never the clock.

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::event::{SimulationResult, Source, V2Status};

/// The shape of drift over a generated stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriftProfile {
    /// Drift well under the 0.2 threshold throughout (p95 about 0.09).
    Steady,
    /// Steady, with a stretch of high drift (p95 about 0.68, some feasibility mismatches) from 40 % to 60 % of
    /// the stream.
    Spike,
    /// Drift growing from none to about 0.5 at the end; p95 crosses 0.2 around 40 % of the stream.
    Ramp,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// How many events.
    pub count: u64,
    /// The drift profile.
    pub profile: DriftProfile,
    /// Event time of the first event.
    pub start: DateTime<Utc>,
    /// Event-time density: events per second of event time.
    pub events_per_second: f64,
    /// Seed of the pseudo-random stream.
    pub seed: u64,
    /// Number of distinct tenants (events are keyed by tenant).
    pub tenants: u32,
}

/// An iterator over generated events.
pub struct Generator {
    config: GeneratorConfig,
    rng: StdRng,
    next: u64,
}

impl Generator {
    /// Starts a stream; panics on a non-positive rate or zero tenants, which callers validate first.
    pub fn new(config: GeneratorConfig) -> Self {
        assert!(config.events_per_second > 0.0 && config.events_per_second.is_finite(), "positive event rate");
        assert!(config.tenants > 0, "at least one tenant");
        Generator { rng: StdRng::seed_from_u64(config.seed), config, next: 0 }
    }

    /// The drift this event aims for, and whether V2 disagrees with V1 on feasibility.
    fn target_drift(&mut self, position: f64) -> (f64, bool) {
        let u: f64 = self.rng.random();
        match self.config.profile {
            DriftProfile::Spike if (0.4..0.6).contains(&position) => (0.25 + 0.45 * u, self.rng.random_bool(0.15)),
            DriftProfile::Steady | DriftProfile::Spike => (0.1 * u * u, false),
            DriftProfile::Ramp => (0.5 * position * u.sqrt(), false),
        }
    }

    fn event(&mut self, index: u64) -> SimulationResult {
        let position = index as f64 / self.config.count.max(1) as f64;
        let offset_ms = (index as f64 * 1000.0 / self.config.events_per_second).round() as i64;
        let occurred_at = self.config.start + chrono::Duration::milliseconds(offset_ms);
        let tenant = self.rng.random_range(0..self.config.tenants);
        let v1_cost: i64 = self.rng.random_range(50..5000);
        let v1_feasible = self.rng.random_bool(0.9);
        let (drift, mismatch) = self.target_drift(position);
        // Invert the drift formula: drift = 0.6·min(|Δ|/v1, 1) + 0.4·mismatch.
        let cost_share = if mismatch { (drift - 0.4).max(0.0) } else { drift };
        let delta = (v1_cost as f64 * (cost_share / 0.6).min(1.0)).round() as i64;
        let v2_cost = if self.rng.random_bool(0.5) && delta <= v1_cost { v1_cost - delta } else { v1_cost + delta };
        let roll: f64 = self.rng.random();
        let v2_status = match roll {
            r if r < 0.005 => V2Status::Error,
            r if r < 0.007 => V2Status::Timeout,
            _ => V2Status::Success,
        };
        let succeeded = v2_status == V2Status::Success;
        let id: [u8; 16] = self.rng.random();
        let hash: [u8; 32] = self.rng.random();
        SimulationResult {
            event_id: uuid::Builder::from_random_bytes(id).into_uuid().to_string(),
            occurred_at,
            tenant_id: format!("tenant-{tenant:03}"),
            run_id: Some(format!("run-{:x}-{index}", self.config.seed)),
            input_hash: hash.iter().map(|b| format!("{b:02x}")).collect(),
            source: Source::Sandbox,
            v1_cost_cents: v1_cost,
            v1_feasible,
            v1_duration_ms: Some(self.rng.random_range(2..40)),
            v2_status,
            v2_cost_cents: succeeded.then_some(v2_cost),
            v2_feasible: succeeded.then_some(v1_feasible != mismatch),
            v2_duration_ms: Some(self.rng.random_range(5..120)),
            v2_confidence: succeeded.then(|| self.rng.random_range(0.5..1.0)),
            model_version: "2.0.0".into(),
            adapter_version: "2.0.0".into(),
            commit_sha: Some("synthetic000".into()),
        }
    }
}

impl Iterator for Generator {
    type Item = SimulationResult;

    fn next(&mut self) -> Option<SimulationResult> {
        (self.next < self.config.count).then(|| {
            let event = self.event(self.next);
            self.next += 1;
            event
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.config.count - self.next) as usize;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(profile: DriftProfile, count: u64) -> GeneratorConfig {
        GeneratorConfig {
            count,
            profile,
            start: DateTime::from_timestamp_millis(1_764_230_400_000).unwrap(),
            events_per_second: 10.0,
            seed: 7,
            tenants: 5,
        }
    }

    /// Drift as the formula defines it, for checking what the generator aimed at.
    fn drift(e: &SimulationResult) -> Option<f64> {
        let (v2, f2) = (e.v2_cost_cents?, e.v2_feasible?);
        let cost = ((v2 - e.v1_cost_cents).abs() as f64 / e.v1_cost_cents.max(1) as f64).min(1.0);
        Some(0.6 * cost + if f2 != e.v1_feasible { 0.4 } else { 0.0 })
    }

    fn p95(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[((values.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)]
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let a: Vec<_> = Generator::new(config(DriftProfile::Spike, 200)).collect();
        let b: Vec<_> = Generator::new(config(DriftProfile::Spike, 200)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn every_generated_event_is_valid_and_event_time_follows_the_rate() {
        let events: Vec<_> = Generator::new(config(DriftProfile::Ramp, 1000)).collect();
        assert!(events.iter().all(|e| e.validate().is_ok()));
        assert_eq!((events[10].occurred_at - events[0].occurred_at).num_milliseconds(), 1000);
    }

    #[test]
    fn a_steady_stream_stays_well_under_the_threshold() {
        let drifts: Vec<f64> = Generator::new(config(DriftProfile::Steady, 5000)).filter_map(|e| drift(&e)).collect();
        assert!(p95(drifts) < 0.12);
    }

    #[test]
    fn a_spike_breaches_only_in_the_middle() {
        let events: Vec<_> = Generator::new(config(DriftProfile::Spike, 5000)).collect();
        let middle: Vec<f64> = events[2000..3000].iter().filter_map(drift).collect();
        let edges: Vec<f64> = events[..2000].iter().chain(&events[3000..]).filter_map(drift).collect();
        assert!(p95(middle) > 0.5);
        assert!(p95(edges) < 0.12);
    }
}
