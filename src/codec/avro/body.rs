//! A direct reader of the `SimulationResult` Avro body: the fields in schema order straight into the struct, with
//! no `Value` tree, no per-record schema walk and one allocation per string. It reads exactly the writer schema the
//! fingerprint names (`schemas/simulation_result.avsc`), so it needs no resolution; the tests check it against
//! apache-avro's generic reader on every kind of record and on corrupted bytes.

use chrono::DateTime;

use super::SchemaKind;
use crate::codec::DecodeError;
use crate::event::{SimulationResult, Source, V2Status};

/// apache-avro's default allocation limit, above which it calls a length malformed rather than truncated.
const MAX_LEN: usize = 512 * 1024 * 1024;

/// Why the body could not be read, before it becomes a [`DecodeError`] that knows the record's length.
enum Fault {
    /// A read needed bytes past the end.
    Eof(&'static str),
    /// The bytes are not what the schema says.
    Bad(String),
}

/// The rest of the body, read front to back.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// An Avro `long`: zig-zag varint of at most 10 bytes (bits past the 64th are dropped, as apache-avro does).
    fn long(&mut self, field: &'static str) -> Result<i64, Fault> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or(Fault::Eof(field))?;
            self.rest = rest;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(Fault::Bad(format!("`{field}`: varint longer than 10 bytes")))
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Fault> {
        if self.rest.len() < n {
            return Err(Fault::Eof(field));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn string(&mut self, field: &'static str) -> Result<String, Fault> {
        let len = self.long(field)?;
        let len = usize::try_from(len).map_err(|_| Fault::Bad(format!("`{field}`: negative length {len}")))?;
        if len > MAX_LEN {
            return Err(Fault::Bad(format!("`{field}`: length {len} is above apache-avro's allocation limit")));
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Fault::Bad(format!("`{field}`: {e}")))
    }

    fn boolean(&mut self, field: &'static str) -> Result<bool, Fault> {
        match self.take(1, field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Fault::Bad(format!("`{field}`: {other} is not a boolean"))),
        }
    }

    fn double(&mut self, field: &'static str) -> Result<f64, Fault> {
        let bytes = self.take(8, field)?;
        Ok(f64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn symbol<T: Copy>(&mut self, field: &'static str, all: &[T]) -> Result<T, Fault> {
        let index = self.long(field)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| all.get(i).copied())
            .ok_or_else(|| Fault::Bad(format!("`{field}`: enum index {index} is out of range")))
    }

    /// A `["null", T]` union.
    fn optional<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self, &'static str) -> Result<T, Fault>,
    ) -> Result<Option<T>, Fault> {
        match self.long(field)? {
            0 => Ok(None),
            1 => read(self, field).map(Some),
            other => Err(Fault::Bad(format!("`{field}`: union index {other} is out of range"))),
        }
    }
}

/// Reads a simulation result's body (after the single-object header) of a record `len` bytes long.
pub fn simulation_result(body: &[u8], len: usize) -> Result<SimulationResult, DecodeError> {
    let schema = SchemaKind::SimulationResult;
    let mut c = Cursor { rest: body };
    let (mut event, occurred_ms) = read(&mut c).map_err(|fault| match fault {
        Fault::Eof(field) => DecodeError::Truncated { schema, len, detail: format!("the body ends inside `{field}`") },
        Fault::Bad(detail) => DecodeError::Malformed { schema, detail },
    })?;
    if !c.rest.is_empty() {
        return Err(DecodeError::TrailingBytes { schema, count: c.rest.len() });
    }
    // Checked after the body is whole, so a record both cut and out of range is reported as cut, as before.
    event.occurred_at = DateTime::from_timestamp_millis(occurred_ms).ok_or_else(|| DecodeError::Malformed {
        schema,
        detail: format!("`occurred_at` is out of range ({occurred_ms} ms)"),
    })?;
    Ok(event)
}

/// The event (its `occurred_at` still unset) and its `occurred_at` in milliseconds.
fn read(c: &mut Cursor<'_>) -> Result<(SimulationResult, i64), Fault> {
    let event_id = c.string("event_id")?;
    let occurred_ms = c.long("occurred_at")?;
    let event = SimulationResult {
        event_id,
        occurred_at: DateTime::UNIX_EPOCH,
        tenant_id: c.string("tenant_id")?,
        run_id: c.optional("run_id", Cursor::string)?,
        input_hash: c.string("input_hash")?,
        source: c.symbol("source", Source::ALL)?,
        v1_cost_cents: c.long("v1_cost_cents")?,
        v1_feasible: c.boolean("v1_feasible")?,
        v1_duration_ms: c.optional("v1_duration_ms", Cursor::long)?,
        v2_status: c.symbol("v2_status", V2Status::ALL)?,
        v2_cost_cents: c.optional("v2_cost_cents", Cursor::long)?,
        v2_feasible: c.optional("v2_feasible", Cursor::boolean)?,
        v2_duration_ms: c.optional("v2_duration_ms", Cursor::long)?,
        v2_confidence: c.optional("v2_confidence", Cursor::double)?,
        model_version: c.string("model_version")?,
        adapter_version: c.string("adapter_version")?,
        commit_sha: c.optional("commit_sha", Cursor::string)?,
    };
    Ok((event, occurred_ms))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{decode_simulation_result, decode_simulation_result_generic, encode_simulation_result};
    use crate::event::tests::sample_result;
    use crate::event::{SimulationResult, Source, V2Status};

    fn text() -> impl Strategy<Value = String> {
        // Multi-byte characters too, so lengths are counted in bytes.
        "[a-z0-9é€ -]{0,40}"
    }

    prop_compose! {
        fn any_result()(
            event_id in text(), ms in -10_000_000_000_000i64..10_000_000_000_000, tenant_id in text(),
            run_id in proptest::option::of(text()), input_hash in text(), source in 0..4usize,
            v1_cost_cents in -5..i64::MAX, v1_feasible in any::<bool>(),
            v1_duration_ms in proptest::option::of(-5..i64::MAX), v2_status in 0..4usize,
            v2_cost_cents in proptest::option::of(-5..i64::MAX), v2_feasible in proptest::option::of(any::<bool>()),
            v2_duration_ms in proptest::option::of(-5..i64::MAX), v2_confidence in proptest::option::of(any::<f64>()),
            model_version in text(), adapter_version in text(), commit_sha in proptest::option::of(text()),
        ) -> SimulationResult {
            SimulationResult {
                event_id, occurred_at: chrono::DateTime::from_timestamp_millis(ms).unwrap(), tenant_id, run_id,
                input_hash, source: Source::ALL[source], v1_cost_cents, v1_feasible, v1_duration_ms,
                v2_status: V2Status::ALL[v2_status], v2_cost_cents, v2_feasible, v2_duration_ms, v2_confidence,
                model_version, adapter_version, commit_sha,
            }
        }
    }

    /// The two readers agree: the same event, or errors of the same class.
    fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        let (direct, generic) = (decode_simulation_result(bytes), decode_simulation_result_generic(bytes));
        match (&direct, &generic) {
            // A NaN confidence is invalid, so equal events compare equal.
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.class(), b.class(), "{} / {}", a, b),
            _ => prop_assert!(false, "direct {:?}, apache-avro {:?}", direct, generic),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn the_direct_reader_reads_what_apache_avro_reads(event in any_result()) {
            agree(&encode_simulation_result(&event))?;
        }

        #[test]
        fn on_corrupted_bytes_the_direct_reader_fails_as_apache_avro_does(
            event in any_result(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode_simulation_result(&event);
            let i = 10 + at.index(bytes.len() - 10);
            bytes[i] = byte;
            agree(&bytes)?;
            agree(&bytes[..10 + cut.index(bytes.len() - 10)])?;
        }
    }

    #[test]
    fn every_byte_value_at_every_position_of_a_sample_is_read_alike() {
        let mut bytes = encode_simulation_result(&sample_result());
        for i in 10..bytes.len() {
            let saved = bytes[i];
            for b in 0..=255u8 {
                bytes[i] = b;
                agree(&bytes).unwrap();
            }
            bytes[i] = saved;
        }
    }
}
