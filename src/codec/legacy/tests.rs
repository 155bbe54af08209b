use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backfill");

fn lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_compressed_file_provenance_record_is_a_v2_row_with_the_v2_cost_and_decoded_payload() {
    let row = backfill_row_from_json(&lines("provenance_2025-11-26.jsonl")[0]).unwrap();
    assert_eq!(row.event_id, "00000000-0000-4000-8000-260000000000");
    assert_eq!((row.variant_slug.as_deref(), row.source.as_deref()), (Some("v2"), Some("backfill")));
    assert_eq!((row.v1_cost, row.v2_cost), (None, Some(410.0)), "the V2 cost is not the V1 baseline");
    assert_eq!(row.v2_feasible, Some(true));
    assert_eq!(row.v2_status.as_deref(), Some("success"));
    assert_eq!(row.runtime_ms, Some(3));
    assert_eq!(row.occurred_at.unwrap().to_rfc3339(), "2025-11-26T08:00:00.123456+00:00");
    let payload = row.payload.unwrap();
    assert_eq!(payload["input"]["budget_cents"], 1000);
    assert_eq!(payload["output"]["estimated_cost_cents"], 410);
}

#[test]
fn an_uncompressed_record_decodes_the_same_way() {
    let row = backfill_row_from_json(&lines("provenance_2025-11-27.jsonl")[1]).unwrap();
    assert_eq!(row.v2_cost, Some(740.0));
    assert_eq!(row.v2_status.as_deref(), Some("timeout"));
    assert_eq!(row.payload.unwrap()["input"]["plan"][0]["skill"], "search");
}

#[test]
fn a_historical_run_is_a_v1_baseline_keyed_by_its_run_id() {
    let runs: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/historical_runs.json")).unwrap()).unwrap();
    let row = backfill_row(runs[0].clone()).unwrap();
    assert_eq!(row.event_id, "legacy-run:hist-1");
    assert_eq!((row.variant_slug.as_deref(), row.source.as_deref()), (Some("v1"), Some("backfill")));
    assert_eq!((row.v1_cost, row.v2_cost, row.runtime_ms), (Some(400.0), None, Some(95)));
    assert_eq!(row.input_hash.as_deref(), Some("2fd40d548301c2cd"), "16 hex of the plan, as Python hashed it");
    assert_eq!(backfill_row(runs[1].clone()).unwrap().input_hash.as_deref(), Some("0123456789abcdef"));
    assert_eq!(backfill_row(runs[2].clone()).unwrap().v1_cost, None);
    let as_text = serde_json::json!({"plan": [], "cost_cents": "12.5", "run_id": "r"});
    assert_eq!(backfill_row(as_text).unwrap().v1_cost, Some(12.5), "like the older backfill's float(x)");
    let err = backfill_row(serde_json::json!({"cost_cents": "lots"})).unwrap_err().to_string();
    assert_eq!(err, "field `cost_cents`: `lots` is not a number");
}

#[test]
fn canonical_json_sorts_keys_and_escapes_non_ascii_like_python() {
    let plan = serde_json::json!([{"skill": "summarize", "note": "café"}]);
    assert_eq!(canonical_json(&plan), r#"[{"note":"caf\u00e9","skill":"summarize"}]"#);
    assert_eq!(&sha256_hex(&canonical_json(&plan))[..16], "1a4ad26ad6040143");
}

#[test]
fn our_simulation_results_keep_their_source_and_both_costs() {
    let row = backfill_row_from_json(&lines("results.jsonl")[0]).unwrap();
    assert_eq!((row.variant_slug.as_deref(), row.source.as_deref()), (Some("v2"), Some("sandbox")));
    assert_eq!((row.v1_cost, row.v2_cost), (Some(3763.0), Some(3837.0)));
    assert!(row.drift_score.is_some());
}

#[test]
fn bad_records_say_what_is_wrong() {
    let bad = lines("malformed.jsonl");
    assert!(matches!(backfill_row_from_json(&bad[1]), Err(RecordError::Json(_))));
    let err = backfill_row_from_json(&bad[2]).unwrap_err().to_string();
    assert!(err.starts_with("field `input_json`: bad Base64"), "{err}");
    let err = backfill_row_from_json(&bad[3]).unwrap_err().to_string();
    assert!(err.starts_with("neither a simulation result"), "{err}");
    assert_eq!(backfill_row(Value::from(3)), Err(RecordError::NotObject));
    let status = r#"{"id": "a", "input_json": null, "status": "weird"}"#;
    assert!(backfill_row_from_json(status).unwrap_err().to_string().contains("unknown status"));
}

#[test]
fn a_key_named_twice_is_refused_alike_in_a_line_and_in_a_document() {
    // Found by the backfill fuzz target: the line was refused (`duplicate field`) while the same record in a
    // `.json` document gave a row with the second value.
    let result = lines("results.jsonl")[1].replacen('{', r#"{"v2_duration_ms":1,"#, 1);
    let run = r#"{"plan":[1],"cost_cents":400,"cost_cents":500,"run_id":"r-1"}"#;
    for record in [result.as_str(), run] {
        let line = backfill_row_from_json(record).unwrap_err();
        assert!(line.to_string().contains("duplicate key"), "{line}");
        let document = backfill_json(&format!("[{record}]")).unwrap_err();
        assert!(document.to_string().contains("duplicate key"), "{document}");
    }
    let nested = backfill_json(r#"{"input_json":{"a":1,"a":2},"id":"p-1"}"#).unwrap_err();
    assert!(matches!(&nested, RecordError::Json(m) if m.contains("duplicate key `a`")), "{nested}");
    assert!(backfill_json(&format!("[{}]", lines("results.jsonl")[1])).is_ok());
}
