//! The backfill record readers on an arbitrary file: our simulation results, the older system's provenance records
//! (plain or gzip + Base64) and historical runs, read as `backfill --input` reads them, as JSON lines (`.jsonl`) and
//! as one JSON document (an object or an array of them).
//!
//! Properties: no panic; every error has a message; a row has an event id; a record gives the same row, or fails
//! alike, whether it is a line of a `.jsonl` file or a value of a `.json` document.
#![no_main]

use costsim_breaker::codec::{RecordError, backfill_json, backfill_row, backfill_row_from_json};
use costsim_breaker::store::provenance::ProvenanceRow;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    // Both readers read text: invalid UTF-8 stops them with a read error before any of our code runs.
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    // A `.json` file: one document, read as `backfill` reads it.
    if let Ok(document) = backfill_json(text) {
        let items = match document {
            Value::Array(items) => items,
            item => vec![item],
        };
        for item in items {
            check(backfill_row(item));
        }
    }
    for line in text.split('\n').map(str::trim_end).filter(|l| !l.trim().is_empty()) {
        let row = backfill_row_from_json(line);
        check(row.clone());
        if let Ok(value) = backfill_json(line) {
            let from_document = backfill_row(value);
            assert_eq!(row.is_ok(), from_document.is_ok(), "line: {row:?}; document: {from_document:?}");
            if let (Ok(a), Ok(b)) = (&row, &from_document) {
                assert_eq!(a, b, "the same record gives another row from a .json document");
            }
        }
    }
});

fn check(row: Result<ProvenanceRow, RecordError>) {
    match row {
        Ok(row) => assert!(!row.event_id.is_empty(), "a row has an event id"),
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}
