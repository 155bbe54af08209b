//! The Avro single-object codec on arbitrary bytes, as a Kafka record value arrives.
//!
//! Properties: no panic; the direct reader (`src/codec/avro/body.rs`) and apache-avro's generic reader agree on
//! every input (the same event, or errors of the same class); every error has a class and a message; an accepted
//! event is valid and encodes back to itself. The breaker-state reader gets the same bytes, as it would on a
//! misconfigured topic.
#![no_main]

use costsim_breaker::codec::{
    decode_breaker_state_changed, decode_simulation_result, decode_simulation_result_generic,
    encode_breaker_state_changed, encode_simulation_result,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let direct = decode_simulation_result(bytes);
    let generic = decode_simulation_result_generic(bytes);
    match (&direct, &generic) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the direct and the generic reader read different events"),
        (Err(a), Err(b)) => assert_eq!(a.class(), b.class(), "direct: {a}; apache-avro: {b}"),
        _ => panic!("the readers disagree: direct {direct:?}, apache-avro {generic:?}"),
    }
    match direct {
        Ok(event) => {
            assert_eq!(event.validate(), Ok(()), "accepted an invalid event");
            assert_eq!(decode_simulation_result(&encode_simulation_result(&event)).as_ref(), Ok(&event));
        }
        Err(err) => assert!(!err.class().is_empty() && !err.to_string().is_empty()),
    }
    match decode_breaker_state_changed(bytes) {
        // Compared as bytes: a NaN drift is not equal to itself, but encodes the same.
        Ok(change) => {
            let encoded = encode_breaker_state_changed(&change);
            let again = decode_breaker_state_changed(&encoded).expect("an encoded state change decodes");
            assert_eq!(encode_breaker_state_changed(&again), encoded);
        }
        Err(err) => assert!(!err.class().is_empty() && !err.to_string().is_empty()),
    }
});
