//! The JSON Lines reader (`produce --input`, `backtest --input`) on an arbitrary file.
//!
//! Properties: no panic; line numbers grow; every error has a class and a message; an accepted event is valid and
//! encodes back to itself, as a JSON line and as an Avro record.
#![no_main]

use costsim_breaker::codec::{
    JsonLines, LineError, decode_simulation_result, encode_simulation_result, simulation_result_from_json,
    simulation_result_to_json,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    let mut last = 0;
    for (line_no, parsed) in JsonLines::new(file) {
        assert!(line_no > last, "line {line_no} after line {last}");
        last = line_no;
        match parsed {
            Ok(event) => {
                assert_eq!(event.validate(), Ok(()), "accepted an invalid event");
                assert_eq!(simulation_result_from_json(&simulation_result_to_json(&event)).as_ref(), Ok(&event));
                assert_eq!(decode_simulation_result(&encode_simulation_result(&event)).as_ref(), Ok(&event));
            }
            Err(LineError::Decode(err)) => assert!(!err.class().is_empty() && !err.to_string().is_empty()),
            Err(LineError::Io(message)) => assert!(!message.is_empty()),
        }
    }
});
