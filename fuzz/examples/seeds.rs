//! Writes the seed corpora of the fuzz targets into `fuzz/seeds/<target>/` from the repository's fixtures
//! (`tests/fixtures/backfill`) and a few generated events, so each target starts from valid inputs rather than
//! from nothing. The seeds are checked in; run this again when the fixtures or the schemas change:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{TimeZone as _, Utc};
use costsim_breaker::codec::{
    encode_breaker_state_changed, encode_simulation_result, simulation_result_from_json, simulation_result_to_json,
};
use costsim_breaker::event::{BreakerState, BreakerStateChanged, Severity, V2Status};
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/ is inside the repository").to_owned();
    let fixtures = root.join("tests/fixtures/backfill");
    let seeds = root.join("fuzz/seeds");
    let dir = |target: &str| -> std::io::Result<PathBuf> {
        let dir = seeds.join(target);
        // Rewritten from scratch, so a seed whose fixture is gone does not linger.
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    };
    let (avro, json_lines, backfill) = (dir("avro")?, dir("json_lines")?, dir("backfill")?);

    let mut fixture_files: Vec<PathBuf> =
        fs::read_dir(&fixtures)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    fixture_files.sort();
    let mut results = Vec::new();
    for path in &fixture_files {
        let name = path.file_name().and_then(|n| n.to_str()).expect("fixture names are UTF-8");
        let text = fs::read_to_string(path)?;
        // Whole files: the backfill reader reads `.json` as one document and `.jsonl` line by line.
        fs::write(backfill.join(name), &text)?;
        if name.ends_with(".jsonl") {
            fs::write(json_lines.join(name), &text)?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                fs::write(backfill.join(format!("{name}.{}", i + 1)), line)?;
                results.extend(simulation_result_from_json(line).ok());
            }
        }
    }

    // Generated events add the shapes the fixtures lack: every status, absent optional fields.
    let start = Utc.with_ymd_and_hms(2025, 11, 27, 8, 0, 0).unwrap();
    let config =
        GeneratorConfig { count: 8, profile: DriftProfile::Spike, start, events_per_second: 10.0, seed: 5, tenants: 3 };
    let mut generated: Vec<_> = Generator::new(config).collect();
    for (event, status) in generated.iter_mut().zip(V2Status::ALL) {
        if *status != V2Status::Success {
            event.v2_status = *status;
            (event.v2_cost_cents, event.v2_feasible, event.v2_confidence) = (None, None, None);
            (event.run_id, event.v1_duration_ms, event.v2_duration_ms, event.commit_sha) = (None, None, None, None);
        }
    }
    let lines: Vec<String> = generated.iter().map(simulation_result_to_json).collect();
    fs::write(json_lines.join("generated.jsonl"), lines.join("\n") + "\n")?;
    results.extend(generated);
    for (i, event) in results.iter().enumerate() {
        fs::write(avro.join(format!("simulation_result_{i}.avro")), encode_simulation_result(event))?;
    }

    let change = BreakerStateChanged {
        event_id: "seed-1".to_owned(),
        breaker: "costsim-v2".to_owned(),
        version: 7,
        from_state: BreakerState::Closed,
        to_state: BreakerState::Open,
        reason: "p95 drift above threshold".to_owned(),
        severity: Some(Severity::P1),
        incident_id: Some("inc-1".to_owned()),
        p95_drift: Some(0.42),
        sample_count: 500,
        drift_threshold: 0.2,
        disabled_until: Some(start),
        actor: "processor".to_owned(),
        occurred_at: start,
    };
    fs::write(avro.join("breaker_state_changed.avro"), encode_breaker_state_changed(&change))?;
    println!("seeds written to {}", seeds.display());
    Ok(())
}
