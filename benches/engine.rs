//! Events per second of the engine alone (drift score, window, sketch, decisions; no decoding, no I/O), on one
//! core: `cargo bench --bench engine`. The goal is at least 1M events/s.
//!
//! `cargo bench --bench engine -- decode` compares the Avro decoding of simulation results: the direct reader the
//! processor uses against apache-avro's generic reader.
//!
//! Input: the `spike` profile of `costsim_breaker::generate`, so the run includes a trip, probations and a
//! recovery, at two event-time densities; the sparser one makes a decision every 1,000 events, the denser one
//! every 10,000.

use std::hint::black_box;

use chrono::DateTime;
use costsim_breaker::backtest::Backtest;
use costsim_breaker::breaker::BreakerConfig;
use costsim_breaker::codec::{decode_simulation_result, decode_simulation_result_generic, encode_simulation_result};
use costsim_breaker::event::SimulationResult;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 200_000;

fn events(events_per_second: f64) -> Vec<SimulationResult> {
    Generator::new(GeneratorConfig {
        count: EVENTS,
        profile: DriftProfile::Spike,
        start: DateTime::from_timestamp_millis(1_764_230_400_000).expect("valid start"),
        events_per_second,
        seed: 42,
        tenants: 50,
    })
    .collect()
}

fn replay(events: &[SimulationResult], config: &BreakerConfig) -> usize {
    let mut backtest = Backtest::new(config.clone()).expect("valid settings");
    let mut transitions = 0;
    for event in events {
        transitions += backtest.push(event).len();
    }
    black_box(backtest.finish());
    transitions
}

fn engine(c: &mut Criterion) {
    let config = BreakerConfig::default().with_overrides(["disable_ttl_seconds=60"]).expect("valid settings");
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(20).measurement_time(std::time::Duration::from_secs(8));
    for events_per_second in [100.0, 1000.0] {
        let input = events(events_per_second);
        assert!(replay(&input, &config) >= 2, "the spike should trip and recover");
        group.bench_with_input(
            BenchmarkId::new("events_per_second_of_event_time", events_per_second),
            &input,
            |b, input| b.iter(|| replay(black_box(input), &config)),
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let records: Vec<Vec<u8>> = events(100.0).iter().take(10_000).map(encode_simulation_result).collect();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(20);
    group.bench_function("direct", |b| {
        b.iter(|| records.iter().filter(|r| decode_simulation_result(black_box(r)).is_ok()).count())
    });
    group.bench_function("apache_avro_value", |b| {
        b.iter(|| records.iter().filter(|r| decode_simulation_result_generic(black_box(r)).is_ok()).count())
    });
    // An evolved writer (one more optional field, last and null): read with apache-avro and resolved to the reader.
    let mut evolved: serde_json::Value =
        serde_json::from_str(costsim_breaker::codec::SchemaKind::SimulationResult.text()).unwrap();
    evolved["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "region", "type": ["null", "string"], "default": null}));
    let writers = costsim_breaker::codec::WriterSchemas::builtin();
    let fingerprint = writers.add("bench", &evolved.to_string()).unwrap().fingerprint;
    let evolved_records: Vec<Vec<u8>> =
        records.iter().map(|r| [&[0xC3, 0x01][..], &fingerprint.to_le_bytes(), &r[10..], &[0]].concat()).collect();
    assert!(evolved_records.iter().all(|r| writers.decode(r).is_ok()));
    group.bench_function("resolved_writer", |b| {
        b.iter(|| evolved_records.iter().filter(|r| writers.decode(black_box(r)).is_ok()).count())
    });
    group.finish();
}

criterion_group!(benches, engine, decode);
criterion_main!(benches);
