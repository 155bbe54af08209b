//! `backtest` over files, run as a user runs it: the example trips and recovers, output is reproducible, bad lines
//! are reported by number without stopping the run.

use crate::helpers::{TempPath, command, fresh_kafka};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/drift-spike.jsonl");

async fn backtest(args: &[&str]) -> std::process::Output {
    command(&fresh_kafka()).arg("backtest").args(args).output().await.unwrap()
}

#[tokio::test]
async fn the_example_trips_fails_probation_and_recovers_the_same_way_every_time() {
    let args = ["--input", EXAMPLE, "--set", "disable_ttl_seconds=300", "--json"];
    let first = backtest(&args).await;
    let second = backtest(&args).await;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(first.stdout, second.stdout, "two runs print byte-identical output");

    let lines: Vec<serde_json::Value> =
        String::from_utf8(first.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let transitions: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l.get("from").is_some())
        .map(|l| (l["from"].as_str().unwrap().to_owned(), l["to"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ];
    assert_eq!(transitions, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    let trip = &lines[0];
    assert_eq!(trip["severity"], "P1");
    assert!(trip["p95_drift"].as_f64().unwrap() > 0.2);
    assert!(trip["sample_count"].as_u64().unwrap() >= 50);
    assert!(trip["at"].as_str().unwrap().starts_with("2025-11-27T08:20:50"));
    assert!(lines.last().unwrap().get("summary").is_some(), "a summary closes the output");
}

#[tokio::test]
async fn bad_lines_are_reported_with_their_numbers_and_the_run_finishes() {
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let mut lines: Vec<&str> = example.lines().take(200).collect();
    lines.insert(9, "{not json");
    lines.insert(19, r#"{"event_id": "x"}"#);
    let file = TempPath::new(".jsonl");
    std::fs::write(&file.0, lines.join("\n")).unwrap();

    let out = backtest(&["--input", file.0.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    let path = file.0.display();
    assert!(stderr.contains(&format!("{path}:10: bad JSON")), "{stderr}");
    assert!(stderr.contains(&format!("{path}:20: required field `occurred_at` is missing")), "{stderr}");
    assert!(stdout.contains("events read: 200, rejected: 2"), "{stdout}");
}

#[tokio::test]
async fn an_unknown_setting_is_refused_with_its_name() {
    let out = backtest(&["--input", EXAMPLE, "--set", "drift_treshold=0.1"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("drift_treshold"), "{stderr}");
}
