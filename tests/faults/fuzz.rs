//! Fuzz targets for the three readers of untrusted input: the Avro single-object codec (Kafka records), the JSON
//! Lines reader (`produce --input`, `backtest --input`) and the backfill record reader (our results and the older
//! system's provenance records and historical runs, gzip + Base64 included).
//!
//! These proptest strategies are the form that runs on stable in CI; the same readers are also fuzzed with
//! coverage guidance by the cargo-fuzz targets in `fuzz/` (nightly, `scripts/fuzz`, run by the long form of
//! `scripts/faults`). Each target here mixes random bytes with mutations of valid inputs (bit flips, truncations,
//! splices, insertions), so most cases get past the first byte. The property: the reader never panics, every error has a class and a message, and whatever it
//! accepts is a valid event that encodes back to the same event.
//!
//! Short form: `FUZZ_CASES` cases per target. Long form (`--ignored`): each target runs for
//! `COSTSIM_FUZZ_SECONDS` (default 60) with fresh random seeds, printing the seed of a failing run.

use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{TimeZone as _, Utc};
use costsim_breaker::codec::{
    JsonLines, LineError, backfill_row_from_json, decode_breaker_state_changed, decode_simulation_result,
    encode_simulation_result, simulation_result_from_json, simulation_result_to_json,
};
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Cases per target in the short form.
const FUZZ_CASES: u32 = 2000;

/// Valid events to mutate.
fn seeds() -> Vec<costsim_breaker::event::SimulationResult> {
    Generator::new(GeneratorConfig {
        count: 64,
        profile: DriftProfile::Spike,
        start: Utc.with_ymd_and_hms(2025, 11, 27, 8, 0, 0).unwrap(),
        events_per_second: 10.0,
        seed: 5,
        tenants: 4,
    })
    .collect()
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Splice(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Edit::Flip(i, x)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => (any::<usize>(), 1..8usize).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Splice(a, b)),
    ];
    prop::collection::vec(edit, 1..6)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Edit::Flip(i, x) if !bytes.is_empty() => bytes[i % len] ^= x,
            Edit::Truncate(i) => bytes.truncate(i % len),
            Edit::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Remove(i, n) if !bytes.is_empty() => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            // Copies a stretch of the input over another place: lengths and varints meet foreign bytes.
            Edit::Splice(a, b) if !bytes.is_empty() => {
                let (from, to) = (a % len, b % len);
                let n = (bytes.len() - from).min(bytes.len() - to).min(8);
                let chunk = bytes[from..from + n].to_vec();
                bytes[to..to + n].copy_from_slice(&chunk);
            }
            _ => {}
        }
    }
    bytes
}

/// Avro records: random bytes, random bodies behind a valid header, and edited valid records.
fn avro_inputs() -> impl Strategy<Value = Vec<u8>> {
    let valid: Vec<Vec<u8>> = seeds().iter().map(encode_simulation_result).collect();
    let header = valid[0][..10].to_vec();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(move |body| [header.clone(), body].concat()),
        (prop::sample::select(valid), edits()).prop_map(|(v, e)| apply(v, &e)),
    ]
}

fn check_avro(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    match decode_simulation_result(&bytes) {
        Ok(event) => {
            prop_assert!(event.validate().is_ok(), "accepted an invalid event: {event:?}");
            let again = decode_simulation_result(&encode_simulation_result(&event));
            prop_assert_eq!(again.as_ref(), Ok(&event), "an accepted event re-encodes to itself");
        }
        Err(err) => prop_assert!(!err.class().is_empty() && !err.to_string().is_empty()),
    }
    // The state-change reader sees the same garbage on a misconfigured topic.
    if let Err(err) = decode_breaker_state_changed(&bytes) {
        prop_assert!(!err.to_string().is_empty());
    }
    Ok(())
}

/// JSON lines: random text, edited valid lines, and lines with fields of the wrong type, joined into a file.
fn json_line() -> impl Strategy<Value = String> {
    let valid: Vec<String> = seeds().iter().map(simulation_result_to_json).collect();
    let fields = [
        "event_id",
        "occurred_at",
        "tenant_id",
        "input_hash",
        "source",
        "v1_cost_cents",
        "v1_feasible",
        "v2_status",
        "v2_cost_cents",
        "v2_feasible",
        "v2_confidence",
        "run_id",
        "bogus",
    ];
    let odd_values =
        ["null", "-1", "1e400", "\"\"", "[]", "{}", "true", "\"2025-13-45T99:99:99Z\"", "9223372036854775808"];
    prop_oneof![
        "\\PC{0,200}",
        (prop::sample::select(valid.clone()), edits()).prop_map(|(v, e)| String::from_utf8_lossy(&apply(
            v.into_bytes(),
            &e
        ))
        .into_owned()),
        (prop::sample::select(valid), prop::sample::select(fields.to_vec()), prop::sample::select(odd_values.to_vec()))
            .prop_map(|(line, field, value)| {
                let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line).unwrap();
                object.insert(field.to_owned(), serde_json::from_str(value).unwrap_or(serde_json::Value::Null));
                serde_json::Value::Object(object).to_string()
            }),
    ]
}

fn json_file() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(json_line(), 0..8), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(lines, junk)| {
        let mut file = lines.join("\n").into_bytes();
        // Raw bytes too: invalid UTF-8 must end the file with a read error, not a panic.
        file.extend(junk);
        file
    })
}

fn check_json(file: Vec<u8>) -> Result<(), TestCaseError> {
    let mut last = 0;
    for (line_no, parsed) in JsonLines::new(std::io::Cursor::new(&file)) {
        prop_assert!(line_no > last, "line numbers grow");
        last = line_no;
        match parsed {
            Ok(event) => {
                prop_assert!(event.validate().is_ok());
                let again = simulation_result_from_json(&simulation_result_to_json(&event));
                prop_assert_eq!(again.as_ref(), Ok(&event));
            }
            Err(LineError::Decode(err)) => prop_assert!(!err.class().is_empty() && !err.to_string().is_empty()),
            Err(LineError::Io(msg)) => prop_assert!(!msg.is_empty()),
        }
    }
    Ok(())
}

/// Backfill records: the older system's provenance records (plain and gzip + Base64) and historical runs, with
/// fields dropped, retyped or corrupted; and the JSON-line inputs above.
fn backfill_line() -> impl Strategy<Value = String> {
    let provenance = |compressed: bool, cost: serde_json::Value, garble: Vec<u8>| {
        let input = r#"{"plan":{"steps":[1,2]},"tenant_id":"t-1"}"#;
        let output = serde_json::json!({"estimated_cost_cents": cost, "feasible": true}).to_string();
        let encode = |text: &str| {
            if !compressed {
                return text.to_owned();
            }
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).unwrap();
            let zipped = gz.finish().unwrap();
            // Some gzip streams are cut or corrupted; a few stay valid.
            let zipped = match garble.first() {
                None => zipped,
                Some(&at) => apply(zipped, &[Edit::Insert(usize::from(at), garble.clone()), Edit::Truncate(at.into())]),
            };
            base64::engine::general_purpose::STANDARD.encode(zipped)
        };
        serde_json::json!({
            "id": "prov-1", "input_json": encode(input), "output_json": encode(&output), "compressed": compressed,
            "created_at": "2025-11-27T08:00:00Z", "model_version": "2.0.0"
        })
        .to_string()
    };
    let number = prop_oneof![
        Just(serde_json::json!(150)),
        Just(serde_json::json!(-3)),
        Just(serde_json::json!("12")),
        Just(serde_json::Value::Null),
        any::<f64>().prop_map(|x| serde_json::json!(x)),
    ];
    let run = (number.clone(), number.clone(), prop::option::of("[a-z0-9-]{0,12}")).prop_map(|(cost, ms, run_id)| {
        serde_json::json!({"plan": {"a": 1}, "cost_cents": cost, "duration_ms": ms, "tenant_id": "t", "run_id": run_id})
            .to_string()
    });
    prop_oneof![
        json_line(),
        (any::<bool>(), number, prop::collection::vec(any::<u8>(), 0..6))
            .prop_map(move |(c, n, g)| provenance(c, n, g)),
        run,
        (json_line(), edits()).prop_map(|(l, e)| String::from_utf8_lossy(&apply(l.into_bytes(), &e)).into_owned()),
    ]
}

fn check_backfill(line: String) -> Result<(), TestCaseError> {
    match backfill_row_from_json(&line) {
        Ok(row) => prop_assert!(!row.event_id.is_empty(), "a stored row has an event id"),
        Err(err) => prop_assert!(!err.to_string().is_empty()),
    }
    Ok(())
}

/// How long or how many cases a target runs.
enum Budget {
    Cases(u32),
    Time(Duration),
}

/// Runs one target; returns how many cases ran. A failure panics with the shrunk input and the seed.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: fn(S::Value) -> Result<(), TestCaseError>, budget: Budget) -> u64
where
    S::Value: std::fmt::Debug,
{
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        let seed: [u8; 32] = rand::random();
        let per_run = match budget {
            Budget::Cases(n) => n,
            Budget::Time(_) => 5000,
        };
        let config = Config { cases: per_run, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        if let Err(failure) = runner.run(&strategy, check) {
            panic!("fuzz target {name} failed (seed {seed:02x?}): {failure}");
        }
        cases += u64::from(per_run);
        match budget {
            Budget::Time(limit) if started.elapsed() < limit => continue,
            _ => break,
        }
    }
    println!("fuzz-target: {name} cases={cases} seconds={:.1}", started.elapsed().as_secs_f64());
    cases
}

fn long_budget() -> Budget {
    let seconds = std::env::var("COSTSIM_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Budget::Time(Duration::from_secs(seconds))
}

#[test]
fn the_avro_codec_survives_malformed_records() {
    fuzz("avro", avro_inputs(), check_avro, Budget::Cases(FUZZ_CASES));
}

#[test]
fn the_json_lines_reader_survives_malformed_files() {
    fuzz("json_lines", json_file(), check_json, Budget::Cases(FUZZ_CASES));
}

#[test]
fn the_backfill_reader_survives_malformed_records() {
    fuzz("backfill", backfill_line(), check_backfill, Budget::Cases(FUZZ_CASES));
}

#[test]
#[ignore = "long form: COSTSIM_FUZZ_SECONDS per target"]
fn fuzz_the_avro_codec_for_a_fixed_time() {
    fuzz("avro", avro_inputs(), check_avro, long_budget());
}

#[test]
#[ignore = "long form: COSTSIM_FUZZ_SECONDS per target"]
fn fuzz_the_json_lines_reader_for_a_fixed_time() {
    fuzz("json_lines", json_file(), check_json, long_budget());
}

#[test]
#[ignore = "long form: COSTSIM_FUZZ_SECONDS per target"]
fn fuzz_the_backfill_reader_for_a_fixed_time() {
    fuzz("backfill", backfill_line(), check_backfill, long_budget());
}
