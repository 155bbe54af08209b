//! The events a scenario sends: several drift spikes back to back, deterministic from a seed, produced keyed by
//! tenant with every delivery confirmed.

use chrono::{DateTime, TimeDelta, Utc};
use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::event::SimulationResult;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{ConfirmedSender, KafkaConfig};

use super::processor::Launch;

/// Engine settings of the scenarios: 1 s buckets in a 10 s window, so a spike of a few seconds trips, and a 5 s
/// TTL and probation, so each spike also goes half-open, is judged and recovers (in event time).
pub const ENGINE: &[&str] =
    &["bucket_seconds=1", "window_seconds=10", "probation_seconds=5", "min_samples=20", "disable_ttl_seconds=5"];

/// Pipeline environment of a stream whose event time lies in the future (see [`Stream::future`]): allow the skew,
/// and give a partition two minutes before it counts as idle, so a processor that is down for a while (killed,
/// waiting for its session to expire) never makes the others close buckets without it.
pub const FUTURE_PIPELINE: &[(&str, &str)] =
    &[("COSTSIM_MAX_FUTURE_SKEW_SECONDS", "604800"), ("COSTSIM_IDLE_PARTITION_SECONDS", "120")];

/// A processor of the scenario engine over a [`Stream::future`] stream.
pub fn future_launch(kafka: &KafkaConfig, database_url: &str) -> Launch {
    FUTURE_PIPELINE.iter().fold(Launch::new(kafka, database_url, ENGINE), |l, (k, v)| l.env(k, v))
}

/// A stream of `segments` spike profiles of `per_segment` events each, at `events_per_second` of event time.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    /// Events per segment; each segment has its drift spike from 40 % to 60 % of it.
    pub per_segment: u64,
    /// Number of segments.
    pub segments: u64,
    /// Event-time density.
    pub events_per_second: f64,
    /// Event time of the first event.
    pub start: DateTime<Utc>,
    /// Seed of the first segment (the next ones use the following seeds).
    pub seed: u64,
}

impl Stream {
    /// About `events` events in segments of at most 100 000 (at least two), starting a day from now: the
    /// wall-clock timers then never find a deadline passed, and every transition is decided by the pipeline in
    /// event time, the same in every run over these events.
    pub fn future(events: u64, seed: u64) -> Stream {
        let segments = events.div_ceil(100_000).max(2);
        let start = DateTime::from_timestamp(Utc::now().timestamp() + 86_400, 0).unwrap();
        Stream { per_segment: events / segments, segments, events_per_second: 1000.0, start, seed }
    }

    /// About `events` events whose event time ends now, at `events_per_second`: for scenarios whose alerts reach
    /// an Alertmanager, which must see them start and end in the present.
    pub fn ending_now(events: u64, events_per_second: f64, seed: u64) -> Stream {
        let span = TimeDelta::milliseconds((events as f64 / events_per_second * 1000.0) as i64);
        Stream { per_segment: events, segments: 1, events_per_second, start: Utc::now() - span, seed }
    }

    /// The number of events.
    pub fn len(&self) -> u64 {
        self.per_segment * self.segments
    }

    /// The events, generated lazily (a million of them never sit in memory at once).
    pub fn events(&self) -> impl Iterator<Item = SimulationResult> + use<> {
        let s = *self;
        let span = TimeDelta::milliseconds((s.per_segment as f64 / s.events_per_second * 1000.0) as i64);
        (0..s.segments).flat_map(move |i| {
            Generator::new(GeneratorConfig {
                count: s.per_segment,
                profile: DriftProfile::Spike,
                start: s.start + span * i as i32,
                events_per_second: s.events_per_second,
                seed: s.seed + i,
                tenants: 9,
            })
        })
    }
}

/// Sends events to the results topic keyed by tenant and waits for every delivery; returns how many.
pub async fn produce(kafka: &KafkaConfig, events: impl IntoIterator<Item = SimulationResult>) -> u64 {
    let producer = kafka.producer().unwrap();
    let mut sender = ConfirmedSender::new(&producer);
    let mut sent = 0;
    for e in events {
        sender.send(&kafka.results_topic, e.tenant_id.as_bytes(), &encode_simulation_result(&e)).await.unwrap();
        sent += 1;
    }
    let (counts, err) = sender.finish().await;
    assert_eq!((counts.failed, err), (0, None), "every event delivered");
    sent
}
