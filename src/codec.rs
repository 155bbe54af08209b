//! Bytes and JSON lines to domain events and back, with one typed error for every kind of bad input.
//!
//! On Kafka, records use Avro single-object encoding (`C3 01`, the little-endian CRC-64-AVRO fingerprint of the
//! writer schema's Parsing Canonical Form, both as the specification defines them, then the Avro body), so a reader
//! knows which schema wrote a record without a registry; writers other than the reader's own are resolved by the
//! specification's rules ([`WriterSchemas`]). Files and the CLI use
//! JSON Lines with the same field names and plain values. Backfill files may also hold the older system's
//! provenance records, which become provenance rows directly.

mod avro;
mod json;
mod legacy;

pub use avro::canonical::{ParsedSchema, SchemaError, crc64_avro};
pub use avro::resolve::{Incompatibility, incompatibilities};
pub use avro::writers::{Added, Decoded, WriterKind, WriterSchemaError, WriterSchemas, confluent_id};
pub use avro::{
    BREAKER_STATE_CHANGED_SCHEMA, LEGACY_BREAKER_STATE_CHANGED_FINGERPRINT, LEGACY_SIMULATION_RESULT_FINGERPRINT,
    SIMULATION_RESULT_SCHEMA, SchemaKind, decode_breaker_state_changed, decode_simulation_result,
    decode_simulation_result_generic, encode_breaker_state_changed, encode_simulation_result, fingerprint_of,
};
pub use json::{
    JsonLines, LineError, breaker_state_changed_from_json, breaker_state_changed_to_json, simulation_result_from_json,
    simulation_result_to_json,
};
pub use legacy::{RecordError, backfill_json, backfill_row, backfill_row_from_json, canonical_json};

use crate::event::InvalidEvent;

/// Why some bytes or a JSON line could not become a valid event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The record does not start with the single-object marker `C3 01`.
    #[error("not an Avro single-object record: expected magic bytes C3 01, found {found}")]
    WrongMagic {
        /// The first bytes found, in hex.
        found: String,
    },
    /// The fingerprint names no schema this reader knows.
    #[error(
        "unknown writer schema fingerprint {fingerprint:016x}; this reader expects {expected} ({expected_fingerprint:016x})"
    )]
    UnknownFingerprint {
        /// The fingerprint in the record.
        fingerprint: u64,
        /// The schema the reader expected.
        expected: SchemaKind,
        /// That schema's fingerprint.
        expected_fingerprint: u64,
    },
    /// The writer schema is known but cannot be resolved against the reader's, or this record's data cannot.
    #[error("writer schema {fingerprint:016x} ({origin}) cannot be read as the reader's: {reason}")]
    IncompatibleSchema {
        /// The writer's fingerprint.
        fingerprint: u64,
        /// Where the writer schema came from.
        origin: String,
        /// Each incompatibility, or the resolution error of this record.
        reason: String,
    },
    /// A record in Confluent's wire format whose schema id gave no usable schema.
    #[error("Confluent-framed record with schema id {id}: {reason}")]
    UnknownSchemaId {
        /// The schema id.
        id: u32,
        /// Why there is no schema.
        reason: String,
    },
    /// The record ends before the header or the body is complete.
    #[error("truncated {schema} record ({len} bytes): {detail}")]
    Truncated {
        /// The schema being read.
        schema: SchemaKind,
        /// The record's length in bytes.
        len: usize,
        /// What was missing.
        detail: String,
    },
    /// Bytes remain after a complete body.
    #[error("{count} trailing bytes after a complete {schema} record")]
    TrailingBytes {
        /// The schema being read.
        schema: SchemaKind,
        /// How many bytes remain.
        count: usize,
    },
    /// The body does not decode as the schema says.
    #[error("malformed {schema} record: {detail}")]
    Malformed {
        /// The schema being read.
        schema: SchemaKind,
        /// The decoder's explanation.
        detail: String,
    },
    /// The line is not JSON, or a field has the wrong type, or a field is unknown.
    #[error("bad JSON: {detail}")]
    Json {
        /// The parser's explanation, with the column.
        detail: String,
    },
    /// A required field is absent or null.
    #[error("required field `{field}` is missing or null")]
    MissingField {
        /// The missing field.
        field: &'static str,
    },
    /// The record decodes but breaks a rule of the contract.
    #[error("invalid event: {0}")]
    Invalid(#[from] InvalidEvent),
}

impl DecodeError {
    /// A short, stable name for the kind of error, for dead-letter headers and metric labels.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::WrongMagic { .. } => "wrong_magic",
            DecodeError::UnknownFingerprint { .. } => "unknown_fingerprint",
            DecodeError::IncompatibleSchema { .. } => "incompatible_schema",
            DecodeError::UnknownSchemaId { .. } => "unknown_schema_id",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::Json { .. } => "bad_json",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}
