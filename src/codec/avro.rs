//! Avro single-object encoding of `SimulationResult` and `BreakerStateChanged`.

use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use chrono::{DateTime, Utc};

mod body;
pub mod canonical;
pub mod resolve;
pub mod writers;

use super::DecodeError;
use crate::event::{BreakerState, BreakerStateChanged, Severity, SimulationResult, Source, V2Status};

/// The two bytes that open every single-object record.
const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Magic plus the 8-byte fingerprint.
const HEADER_LEN: usize = 10;

/// The fingerprint this processor wrote `SimulationResult` records with before it followed the specification:
/// apache-avro 0.22's, whose canonical form keeps `{"type":"long"}` for a logical type. Still read, and counted.
pub const LEGACY_SIMULATION_RESULT_FINGERPRINT: u64 = 0x9d14_d89d_2ff5_c443;
/// The same for `BreakerStateChanged`: state events on the compacted topic may carry it for ever.
pub const LEGACY_BREAKER_STATE_CHANGED_FINGERPRINT: u64 = 0xaeeb_b06b_ff3b_154c;

/// The schema of simulation results, parsed from `schemas/simulation_result.avsc`.
pub static SIMULATION_RESULT_SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse_str(include_str!("../../schemas/simulation_result.avsc"))
        .expect("schemas/simulation_result.avsc is a valid Avro schema")
});

/// The schema of breaker state changes, parsed from `schemas/breaker_state_changed.avsc`.
pub static BREAKER_STATE_CHANGED_SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse_str(include_str!("../../schemas/breaker_state_changed.avsc"))
        .expect("schemas/breaker_state_changed.avsc is a valid Avro schema")
});

/// Which of our schemas a record is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `costsim.events.SimulationResult`.
    SimulationResult,
    /// `costsim.events.BreakerStateChanged`.
    BreakerStateChanged,
}

impl SchemaKind {
    /// The parsed schema.
    pub fn schema(self) -> &'static Schema {
        match self {
            SchemaKind::SimulationResult => &SIMULATION_RESULT_SCHEMA,
            SchemaKind::BreakerStateChanged => &BREAKER_STATE_CHANGED_SCHEMA,
        }
    }

    /// The schema file's text.
    pub fn text(self) -> &'static str {
        match self {
            SchemaKind::SimulationResult => include_str!("../../schemas/simulation_result.avsc"),
            SchemaKind::BreakerStateChanged => include_str!("../../schemas/breaker_state_changed.avsc"),
        }
    }

    /// The CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, as the specification defines both.
    pub fn fingerprint(self) -> u64 {
        static FINGERPRINTS: LazyLock<[u64; 2]> = LazyLock::new(|| {
            [SchemaKind::SimulationResult, SchemaKind::BreakerStateChanged].map(|k| {
                canonical::ParsedSchema::parse(k.text()).expect("the repository's schemas parse").fingerprint()
            })
        });
        FINGERPRINTS[self as usize]
    }

    /// The fingerprint apache-avro 0.22 gave the schema, which records written before the transition carry.
    pub fn legacy_fingerprint(self) -> u64 {
        match self {
            SchemaKind::SimulationResult => LEGACY_SIMULATION_RESULT_FINGERPRINT,
            SchemaKind::BreakerStateChanged => LEGACY_BREAKER_STATE_CHANGED_FINGERPRINT,
        }
    }
}

impl std::fmt::Display for SchemaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SchemaKind::SimulationResult => "SimulationResult",
            SchemaKind::BreakerStateChanged => "BreakerStateChanged",
        })
    }
}

/// The fingerprint apache-avro 0.22 computes for a schema (its canonical form keeps logical types as objects).
fn legacy_fingerprint_of(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<apache_avro::rabin::Rabin>().bytes;
    u64::from_le_bytes(bytes.try_into().expect("a Rabin fingerprint has 8 bytes"))
}

/// The specification's CRC-64-AVRO fingerprint of a schema given as JSON text (a single-object header carries it
/// little-endian).
pub fn fingerprint_of(text: &str) -> Result<u64, canonical::SchemaError> {
    canonical::ParsedSchema::parse(text).map(|s| s.fingerprint())
}

/// Encodes a simulation result as a single-object record.
pub fn encode_simulation_result(event: &SimulationResult) -> Vec<u8> {
    let record = Value::Record(vec![
        field("event_id", string(&event.event_id)),
        field("occurred_at", Value::TimestampMillis(event.occurred_at.timestamp_millis())),
        field("tenant_id", string(&event.tenant_id)),
        field("run_id", optional(event.run_id.as_deref().map(string))),
        field("input_hash", string(&event.input_hash)),
        field("source", Value::Enum(event.source.index(), event.source.as_str().into())),
        field("v1_cost_cents", Value::Long(event.v1_cost_cents)),
        field("v1_feasible", Value::Boolean(event.v1_feasible)),
        field("v1_duration_ms", optional(event.v1_duration_ms.map(Value::Long))),
        field("v2_status", Value::Enum(event.v2_status.index(), event.v2_status.as_str().into())),
        field("v2_cost_cents", optional(event.v2_cost_cents.map(Value::Long))),
        field("v2_feasible", optional(event.v2_feasible.map(Value::Boolean))),
        field("v2_duration_ms", optional(event.v2_duration_ms.map(Value::Long))),
        field("v2_confidence", optional(event.v2_confidence.map(Value::Double))),
        field("model_version", string(&event.model_version)),
        field("adapter_version", string(&event.adapter_version)),
        field("commit_sha", optional(event.commit_sha.as_deref().map(string))),
    ]);
    encode(SchemaKind::SimulationResult, &record)
}

/// Encodes a breaker state change as a single-object record.
pub fn encode_breaker_state_changed(event: &BreakerStateChanged) -> Vec<u8> {
    let record = Value::Record(vec![
        field("event_id", string(&event.event_id)),
        field("breaker", string(&event.breaker)),
        field("version", Value::Long(event.version)),
        field("from_state", Value::Enum(event.from_state.index(), event.from_state.as_str().into())),
        field("to_state", Value::Enum(event.to_state.index(), event.to_state.as_str().into())),
        field("reason", string(&event.reason)),
        field("severity", optional(event.severity.map(|s| Value::Enum(s.index(), s.as_str().into())))),
        field("incident_id", optional(event.incident_id.as_deref().map(string))),
        field("p95_drift", optional(event.p95_drift.map(Value::Double))),
        field("sample_count", Value::Long(event.sample_count)),
        field("drift_threshold", Value::Double(event.drift_threshold)),
        field("disabled_until", optional(event.disabled_until.map(|t| Value::TimestampMillis(t.timestamp_millis())))),
        field("actor", string(&event.actor)),
        field("occurred_at", Value::TimestampMillis(event.occurred_at.timestamp_millis())),
    ]);
    encode(SchemaKind::BreakerStateChanged, &record)
}

/// Decodes and validates a single-object simulation result of the reader's own schema (under either fingerprint),
/// reading the body straight into the struct; [`writers::WriterSchemas::decode`] also reads evolved writers.
pub fn decode_simulation_result(bytes: &[u8]) -> Result<SimulationResult, DecodeError> {
    let body = header(SchemaKind::SimulationResult, bytes)?;
    let event = body::simulation_result(body, bytes.len())?;
    event.validate()?;
    Ok(event)
}

/// [`decode_simulation_result`] through apache-avro's generic reader and its `Value` tree: the reference the
/// direct reader is tested against, and the baseline of `cargo bench --bench engine -- decode`.
pub fn decode_simulation_result_generic(bytes: &[u8]) -> Result<SimulationResult, DecodeError> {
    let schema = SchemaKind::SimulationResult;
    let event = simulation_result_from_value(decode(schema, bytes)?)?;
    event.validate()?;
    Ok(event)
}

/// A simulation result from a record value of the reader's schema (not yet validated).
fn simulation_result_from_value(value: Value) -> Result<SimulationResult, DecodeError> {
    let mut f = Fields::new(SchemaKind::SimulationResult, value)?;
    Ok(SimulationResult {
        event_id: f.string("event_id")?,
        occurred_at: f.timestamp("occurred_at")?,
        tenant_id: f.string("tenant_id")?,
        run_id: f.optional("run_id", Fields::as_string)?,
        input_hash: f.string("input_hash")?,
        source: f.symbol("source", Source::from_symbol)?,
        v1_cost_cents: f.long("v1_cost_cents")?,
        v1_feasible: f.boolean("v1_feasible")?,
        v1_duration_ms: f.optional("v1_duration_ms", Fields::as_long)?,
        v2_status: f.symbol("v2_status", V2Status::from_symbol)?,
        v2_cost_cents: f.optional("v2_cost_cents", Fields::as_long)?,
        v2_feasible: f.optional("v2_feasible", Fields::as_boolean)?,
        v2_duration_ms: f.optional("v2_duration_ms", Fields::as_long)?,
        v2_confidence: f.optional("v2_confidence", Fields::as_double)?,
        model_version: f.string("model_version")?,
        adapter_version: f.string("adapter_version")?,
        commit_sha: f.optional("commit_sha", Fields::as_string)?,
    })
}

/// Decodes a single-object breaker state change.
pub fn decode_breaker_state_changed(bytes: &[u8]) -> Result<BreakerStateChanged, DecodeError> {
    let schema = SchemaKind::BreakerStateChanged;
    let value = if writers::confluent_id(bytes).is_some() {
        // Confluent-framed (`COSTSIM_STATE_FORMAT=confluent`): the state topic carries only this schema, so the body
        // is read with it without asking the registry what the id names.
        let reader = GenericDatumReader::builder(schema.schema()).build().expect("our schemas resolve");
        read_body(schema, &reader, &bytes[5..], bytes.len())?
    } else {
        decode(schema, bytes)?
    };
    let mut f = Fields::new(schema, value)?;
    Ok(BreakerStateChanged {
        event_id: f.string("event_id")?,
        breaker: f.string("breaker")?,
        version: f.long("version")?,
        from_state: f.symbol("from_state", BreakerState::from_symbol)?,
        to_state: f.symbol("to_state", BreakerState::from_symbol)?,
        reason: f.string("reason")?,
        severity: f.optional("severity", |s, n, v| s.as_symbol(n, v, Severity::from_symbol))?,
        incident_id: f.optional("incident_id", Fields::as_string)?,
        p95_drift: f.optional("p95_drift", Fields::as_double)?,
        sample_count: f.long("sample_count")?,
        drift_threshold: f.double("drift_threshold")?,
        disabled_until: f.optional("disabled_until", Fields::as_timestamp)?,
        actor: f.string("actor")?,
        occurred_at: f.timestamp("occurred_at")?,
    })
}

fn field(name: &str, value: Value) -> (String, Value) {
    (name.to_owned(), value)
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// A `["null", T]` union value.
fn optional(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

fn encode(kind: SchemaKind, record: &Value) -> Vec<u8> {
    let writer = GenericDatumWriter::builder(kind.schema()).build().expect("our schemas resolve");
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&kind.fingerprint().to_le_bytes());
    // A failure here means the record built above disagrees with the schema file: a bug, not bad input.
    writer.write_value_ref(&mut out, record).unwrap_or_else(|e| panic!("{kind} record matches its schema: {e}"));
    out
}

/// The writer fingerprint and the body of a single-object record of `kind`.
fn split_header(kind: SchemaKind, bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    if bytes.len() < MAGIC.len() || bytes[..2] != MAGIC {
        let found = bytes.iter().take(2).map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ");
        return Err(DecodeError::WrongMagic { found: if found.is_empty() { "nothing".into() } else { found } });
    }
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            schema: kind,
            len: bytes.len(),
            detail: format!("the header needs {HEADER_LEN} bytes"),
        });
    }
    let fingerprint = u64::from_le_bytes(bytes[2..HEADER_LEN].try_into().expect("8 bytes"));
    Ok((fingerprint, &bytes[HEADER_LEN..]))
}

/// The body after a checked single-object header of `kind`'s own schema, under either of its fingerprints.
fn header(kind: SchemaKind, bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let (fingerprint, body) = split_header(kind, bytes)?;
    if fingerprint != kind.fingerprint() && fingerprint != kind.legacy_fingerprint() {
        return Err(DecodeError::UnknownFingerprint {
            fingerprint,
            expected: kind,
            expected_fingerprint: kind.fingerprint(),
        });
    }
    Ok(body)
}

fn decode(kind: SchemaKind, bytes: &[u8]) -> Result<Value, DecodeError> {
    let body = header(kind, bytes)?;
    let reader = GenericDatumReader::builder(kind.schema()).build().expect("our schemas resolve");
    read_body(kind, &reader, body, bytes.len())
}

/// Reads one body with apache-avro's generic reader; `len` is the whole record's length, for errors.
fn read_body(kind: SchemaKind, reader: &GenericDatumReader<'_>, body: &[u8], len: usize) -> Result<Value, DecodeError> {
    let mut input = EofGuard { rest: body, hit_eof: false };
    let result = reader.read_value(&mut input);
    // A well-formed record never needs a byte past its end, so any attempt to read one means the record was cut,
    // whatever the decoder made of it (apache-avro turns an early end inside a string or union into `null`).
    if input.hit_eof {
        let detail = match &result {
            Ok(_) => "the body ends before its last field".to_owned(),
            Err(e) => e.to_string(),
        };
        return Err(DecodeError::Truncated { schema: kind, len, detail });
    }
    let value = result.map_err(|e| DecodeError::Malformed { schema: kind, detail: e.to_string() })?;
    if !input.rest.is_empty() {
        return Err(DecodeError::TrailingBytes { schema: kind, count: input.rest.len() });
    }
    Ok(value)
}

/// A byte-slice reader that remembers whether anyone asked to read past its end.
struct EofGuard<'a> {
    rest: &'a [u8],
    hit_eof: bool,
}

impl std::io::Read for EofGuard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.hit_eof = true;
        }
        self.rest.read(buf)
    }
}

/// The fields of a decoded record, taken out by name with a typed error when one is not what the schema says.
struct Fields {
    schema: SchemaKind,
    fields: Vec<(String, Value)>,
}

impl Fields {
    fn new(schema: SchemaKind, value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Record(fields) => Ok(Fields { schema, fields }),
            other => Err(DecodeError::Malformed { schema, detail: format!("expected a record, got {other:?}") }),
        }
    }

    fn take(&mut self, name: &'static str) -> Result<Value, DecodeError> {
        let at = self.fields.iter().position(|(n, _)| n == name).ok_or(DecodeError::MissingField { field: name })?;
        Ok(std::mem::replace(&mut self.fields[at].1, Value::Null))
    }

    fn wrong(&self, name: &str, value: &Value) -> DecodeError {
        DecodeError::Malformed { schema: self.schema, detail: format!("field `{name}` has unexpected value {value:?}") }
    }

    fn string(&mut self, name: &'static str) -> Result<String, DecodeError> {
        let v = self.take(name)?;
        self.as_string(name, v)
    }

    fn long(&mut self, name: &'static str) -> Result<i64, DecodeError> {
        let v = self.take(name)?;
        self.as_long(name, v)
    }

    fn double(&mut self, name: &'static str) -> Result<f64, DecodeError> {
        let v = self.take(name)?;
        self.as_double(name, v)
    }

    fn boolean(&mut self, name: &'static str) -> Result<bool, DecodeError> {
        let v = self.take(name)?;
        self.as_boolean(name, v)
    }

    fn timestamp(&mut self, name: &'static str) -> Result<DateTime<Utc>, DecodeError> {
        let v = self.take(name)?;
        self.as_timestamp(name, v)
    }

    fn symbol<T>(&mut self, name: &'static str, parse: fn(&str) -> Option<T>) -> Result<T, DecodeError> {
        let v = self.take(name)?;
        self.as_symbol(name, v, parse)
    }

    fn optional<T>(
        &mut self,
        name: &'static str,
        convert: impl FnOnce(&Self, &'static str, Value) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.take(name)? {
            Value::Union(_, inner) if *inner == Value::Null => Ok(None),
            Value::Union(_, inner) => convert(self, name, *inner).map(Some),
            other => Err(self.wrong(name, &other)),
        }
    }

    fn as_string(&self, name: &'static str, v: Value) -> Result<String, DecodeError> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(self.wrong(name, &other)),
        }
    }

    fn as_long(&self, name: &'static str, v: Value) -> Result<i64, DecodeError> {
        match v {
            Value::Long(n) => Ok(n),
            other => Err(self.wrong(name, &other)),
        }
    }

    fn as_double(&self, name: &'static str, v: Value) -> Result<f64, DecodeError> {
        match v {
            Value::Double(n) => Ok(n),
            other => Err(self.wrong(name, &other)),
        }
    }

    fn as_boolean(&self, name: &'static str, v: Value) -> Result<bool, DecodeError> {
        match v {
            Value::Boolean(b) => Ok(b),
            other => Err(self.wrong(name, &other)),
        }
    }

    fn as_timestamp(&self, name: &'static str, v: Value) -> Result<DateTime<Utc>, DecodeError> {
        match v {
            Value::TimestampMillis(ms) => DateTime::from_timestamp_millis(ms).ok_or_else(|| DecodeError::Malformed {
                schema: self.schema,
                detail: format!("`{name}` is out of range ({ms} ms)"),
            }),
            other => Err(self.wrong(name, &other)),
        }
    }

    fn as_symbol<T>(&self, name: &'static str, v: Value, parse: fn(&str) -> Option<T>) -> Result<T, DecodeError> {
        match v {
            Value::Enum(_, symbol) => parse(&symbol).ok_or_else(|| self.wrong(name, &Value::String(symbol))),
            other => Err(self.wrong(name, &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample_result;
    use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};

    fn sample_state_change() -> BreakerStateChanged {
        BreakerStateChanged {
            event_id: "chg-1".into(),
            breaker: "costsim_v2".into(),
            version: 3,
            from_state: BreakerState::Closed,
            to_state: BreakerState::Open,
            reason: "p95 drift 0.41 > 0.2".into(),
            severity: Some(Severity::P1),
            incident_id: Some("inc-1".into()),
            p95_drift: Some(0.41),
            sample_count: 120,
            drift_threshold: 0.2,
            disabled_until: DateTime::from_timestamp_millis(1_764_300_000_000),
            actor: "circuit_breaker".into(),
            occurred_at: DateTime::from_timestamp_millis(1_764_230_400_000).unwrap(),
        }
    }

    #[test]
    fn a_simulation_result_survives_the_round_trip() {
        let event = sample_result();
        assert_eq!(decode_simulation_result(&encode_simulation_result(&event)), Ok(event));
    }

    #[test]
    fn a_result_with_every_optional_field_empty_survives_the_round_trip() {
        let event = SimulationResult {
            run_id: None,
            v1_duration_ms: None,
            v2_status: V2Status::Error,
            v2_cost_cents: None,
            v2_feasible: None,
            v2_duration_ms: None,
            v2_confidence: None,
            commit_sha: None,
            ..sample_result()
        };
        assert_eq!(decode_simulation_result(&encode_simulation_result(&event)), Ok(event));
    }

    #[test]
    fn a_state_change_survives_the_round_trip() {
        let event = sample_state_change();
        assert_eq!(decode_breaker_state_changed(&encode_breaker_state_changed(&event)), Ok(event));
        let latched =
            BreakerStateChanged { severity: None, disabled_until: None, p95_drift: None, ..sample_state_change() };
        assert_eq!(decode_breaker_state_changed(&encode_breaker_state_changed(&latched)), Ok(latched));
    }

    #[test]
    fn the_header_carries_the_specifications_fingerprint() {
        for kind in [SchemaKind::SimulationResult, SchemaKind::BreakerStateChanged] {
            let bytes = match kind {
                SchemaKind::SimulationResult => encode_simulation_result(&sample_result()),
                SchemaKind::BreakerStateChanged => encode_breaker_state_changed(&sample_state_change()),
            };
            assert_eq!(bytes[..2], MAGIC);
            assert_eq!(bytes[2..HEADER_LEN], kind.fingerprint().to_le_bytes(), "{kind}");
        }
        // The value other implementations compute for SimulationResult (fastavro's is checked by the integration
        // tests).
        assert_eq!(SchemaKind::SimulationResult.fingerprint(), 0x3503_7b67_d6b8_f6fc);
        assert_ne!(SchemaKind::SimulationResult.fingerprint(), SchemaKind::BreakerStateChanged.fingerprint());
    }

    #[test]
    fn the_legacy_fingerprints_are_the_ones_apache_avro_computes() {
        for kind in [SchemaKind::SimulationResult, SchemaKind::BreakerStateChanged] {
            let expected = RabinFingerprintHeader::from_schema(kind.schema()).build_header();
            assert_eq!(expected[2..], kind.legacy_fingerprint().to_le_bytes(), "{kind}");
            assert_ne!(kind.legacy_fingerprint(), kind.fingerprint(), "{kind}");
        }
    }

    #[test]
    fn records_under_the_legacy_fingerprint_are_still_read() {
        let mut bytes = encode_simulation_result(&sample_result());
        bytes[2..HEADER_LEN].copy_from_slice(&LEGACY_SIMULATION_RESULT_FINGERPRINT.to_le_bytes());
        assert_eq!(decode_simulation_result(&bytes), Ok(sample_result()));
        let decoded = writers::WriterSchemas::builtin().decode(&bytes).unwrap();
        assert_eq!(decoded.writer, writers::WriterKind::LegacyFingerprint);
        let mut state = encode_breaker_state_changed(&sample_state_change());
        state[2..HEADER_LEN].copy_from_slice(&LEGACY_BREAKER_STATE_CHANGED_FINGERPRINT.to_le_bytes());
        assert_eq!(decode_breaker_state_changed(&state), Ok(sample_state_change()));
    }

    #[test]
    fn an_evolved_writer_is_also_known_by_its_legacy_fingerprint() {
        let writers = writers::WriterSchemas::builtin();
        let mut evolved: serde_json::Value = serde_json::from_str(SchemaKind::SimulationResult.text()).unwrap();
        let extra = serde_json::json!({"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null});
        evolved["fields"].as_array_mut().unwrap().push(extra);
        let text = evolved.to_string();
        let spec = writers.add("test", &text).unwrap().fingerprint;
        let legacy = legacy_fingerprint_of(&Schema::parse_str(&text).unwrap());
        assert_ne!(spec, legacy);
        let body = &encode_simulation_result(&sample_result())[HEADER_LEN..];
        for (fingerprint, kind) in
            [(spec, writers::WriterKind::Evolved), (legacy, writers::WriterKind::LegacyFingerprint)]
        {
            let bytes = [&MAGIC[..], &fingerprint.to_le_bytes(), body, &[0]].concat();
            let decoded = writers.decode(&bytes).unwrap();
            assert_eq!((decoded.event, decoded.writer), (sample_result(), kind));
        }
    }

    #[test]
    fn confluent_framed_records_are_read_through_the_ids_the_registry_gave() {
        let writers = writers::WriterSchemas::builtin();
        let body = &encode_simulation_result(&sample_result())[HEADER_LEN..];
        let framed = |id: u32| [&[0u8][..], &id.to_be_bytes(), body].concat();
        let err = writers.decode(&framed(7)).unwrap_err();
        assert_eq!((err.class(), err.to_string().contains("schema id 7")), ("unknown_schema_id", true));
        writers.add_registered(7, SchemaKind::SimulationResult.text()).unwrap();
        let decoded = writers.decode(&framed(7)).unwrap();
        assert_eq!((decoded.event, decoded.writer), (sample_result(), writers::WriterKind::Current));
        writers.reject_id(8, "a PROTOBUF schema, not Avro".into());
        let err = writers.decode(&framed(8)).unwrap_err();
        assert!(err.class() == "unknown_schema_id" && err.to_string().contains("PROTOBUF"), "{err}");
        assert!(writers.knows_id(8) && !writers.knows_id(9));
        // A lone 0 or a short record is not Confluent-framed.
        assert_eq!(writers.decode(&[0, 0, 0]).unwrap_err().class(), "wrong_magic");
    }

    #[test]
    fn wrong_magic_is_reported_with_the_bytes_found() {
        let err = decode_simulation_result(b"{\"event_id\":1}").unwrap_err();
        assert_eq!(err, DecodeError::WrongMagic { found: "7B 22".into() });
        assert_eq!(decode_simulation_result(&[]).unwrap_err().class(), "wrong_magic");
    }

    #[test]
    fn a_state_change_is_not_read_as_a_simulation_result() {
        let bytes = encode_breaker_state_changed(&sample_state_change());
        let err = decode_simulation_result(&bytes).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownFingerprint { fingerprint, .. }
            if fingerprint == SchemaKind::BreakerStateChanged.fingerprint()));
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let bytes = encode_simulation_result(&sample_result());
        for len in 2..bytes.len() {
            let err = decode_simulation_result(&bytes[..len]).unwrap_err();
            assert_eq!(err.class(), "truncated", "cut at {len}: {err}");
        }
    }

    #[test]
    fn trailing_bytes_are_reported_with_their_count() {
        let mut bytes = encode_simulation_result(&sample_result());
        bytes.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            decode_simulation_result(&bytes),
            Err(DecodeError::TrailingBytes { schema: SchemaKind::SimulationResult, count: 3 })
        );
    }

    #[test]
    fn a_well_formed_but_invalid_record_is_rejected_by_the_contract() {
        let event = SimulationResult { v1_cost_cents: -5, ..sample_result() };
        let err = decode_simulation_result(&encode_simulation_result(&event)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Invalid(crate::event::InvalidEvent::NegativeCost { field: "v1_cost_cents", value: -5 })
        );
    }

    #[test]
    fn a_corrupted_body_byte_gives_a_typed_error_or_a_valid_event_never_a_panic() {
        let mut bytes = encode_simulation_result(&sample_result());
        for i in HEADER_LEN..bytes.len() {
            let saved = bytes[i];
            bytes[i] = 0xFF;
            match decode_simulation_result(&bytes) {
                Ok(event) => assert_eq!(event.validate(), Ok(()), "byte {i}"),
                Err(e) => assert!(
                    ["malformed", "truncated", "trailing_bytes", "invalid"].contains(&e.class()),
                    "byte {i}: {e}"
                ),
            }
            bytes[i] = saved;
        }
    }

    #[test]
    fn a_nan_confidence_is_rejected() {
        let event = SimulationResult { v2_confidence: Some(f64::NAN), ..sample_result() };
        let err = decode_simulation_result(&encode_simulation_result(&event)).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(crate::event::InvalidEvent::NonFiniteConfidence { .. })), "{err}");
    }
}
