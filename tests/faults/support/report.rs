//! One result row per scenario run, as `docs/RELIABILITY.md` tabulates them: printed to stderr and appended as a
//! JSON line to `COSTSIM_FAULTS_REPORT` when set (`scripts/faults` sets it and prints the table at the end).

use std::io::Write as _;
use std::time::Duration;

use serde_json::json;

/// What one scenario measured.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario, as the table names it.
    pub scenario: String,
    /// How many faults were injected (kills, restarts, joins and leaves, leader kills).
    pub runs: u64,
    /// Events produced.
    pub events: i64,
    /// Events with no effect.
    pub lost: i64,
    /// Effects beyond one per event.
    pub duplicated: i64,
    /// Decisions (incidents, state events, alert rows, the final breaker row) that differ from those of a run of
    /// the same events without faults; 0 when the scenario has no such run.
    pub decision_mismatches: usize,
    /// The recovery times measured, one per fault.
    pub recoveries: Vec<Duration>,
    /// What the recovery time measures.
    pub recovery_measures: &'static str,
    /// The test that produced the row.
    pub test: &'static str,
    /// Anything else worth reading (kill points, decisions compared, ...).
    pub notes: String,
}

impl Row {
    /// Writes the row where it belongs, then fails the test if anything was lost, duplicated or decided otherwise.
    pub fn submit(self) {
        let mut sorted = self.recoveries.clone();
        sorted.sort_unstable();
        let secs = |d: Option<&Duration>| d.map(|d| (d.as_secs_f64() * 100.0).round() / 100.0);
        let line = json!({
            "scenario": self.scenario,
            "runs": self.runs,
            "events": self.events,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "decision_mismatches": self.decision_mismatches,
            "recovery_median_s": secs(sorted.get(sorted.len() / 2)),
            "recovery_max_s": secs(sorted.last()),
            "recovery_measures": self.recovery_measures,
            "test": self.test,
            "notes": self.notes,
        });
        eprintln!("FAULTS-RESULT {line}");
        if let Some(path) = std::env::var_os("COSTSIM_FAULTS_REPORT") {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
            writeln!(file, "{line}").unwrap();
        }
        let counts = (self.lost, self.duplicated, self.decision_mismatches);
        assert_eq!(counts, (0, 0, 0), "{}: lost, duplicated and mismatched decisions must be 0: {line}", self.scenario);
    }
}
