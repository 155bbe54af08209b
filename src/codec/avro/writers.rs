//! The writer schemas a reader of simulation results knows, by fingerprint: the reader's own (read by the direct
//! decoder, under the specification's fingerprint and under the one apache-avro 0.22 used to write), and evolved
//! writers from the repository's `schemas/`, a directory of the operator's and a schema registry (by id), each
//! checked against the reader once, when it is added, and known under apache-avro 0.22's fingerprint of it too.
//! Records of an evolved writer are read with apache-avro and resolved to the reader.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;

use super::canonical::ParsedSchema;
use super::resolve::{Incompatibility, incompatibilities};
use super::{LEGACY_SIMULATION_RESULT_FINGERPRINT, SchemaKind};
use crate::codec::DecodeError;
use crate::event::SimulationResult;

/// The `.avsc` files of the repository's `schemas/` that are writers of simulation results, compiled in.
const BUILTIN_WRITERS: &[(&str, &str)] =
    &[("schemas/simulation_result.avsc", include_str!("../../../schemas/simulation_result.avsc"))];

/// Which writer a decoded record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterKind {
    /// The reader's own schema under the specification's fingerprint.
    Current,
    /// A known writer (the reader's own schema, or another) under the fingerprint apache-avro 0.22 computes, as
    /// this processor wrote before it followed the specification and as Apache Avro's Python package still
    /// computes (read, and counted).
    LegacyFingerprint,
    /// Another writer schema, resolved to the reader's.
    Evolved,
}

/// A simulation result and the writer it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The event, valid.
    pub event: SimulationResult,
    /// Which writer wrote it.
    pub writer: WriterKind,
}

/// What a writer schema added to the catalogue turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    /// Where it came from (a file, a registry id).
    pub origin: String,
    /// Its CRC-64-AVRO fingerprint.
    pub fingerprint: u64,
    /// Its incompatibilities with the reader (none, or only per-record ones, when it is usable).
    pub incompatibilities: Vec<Incompatibility>,
}

impl Added {
    /// Whether any record of it can be read.
    pub fn resolvable(&self) -> bool {
        self.incompatibilities.iter().all(|i| i.per_record)
    }
}

/// Why a writer schema could not be added at all.
#[derive(Debug, thiserror::Error)]
pub enum WriterSchemaError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not an Avro schema.
    #[error("{origin} is not an Avro schema: {detail}")]
    Invalid {
        /// Where it came from.
        origin: String,
        /// Why.
        detail: String,
    },
}

/// A known writer other than the reader's own schema.
enum Writer {
    /// Resolvable: records are read with it, then resolved to the reader.
    Evolved { origin: String, reader: GenericDatumReader<'static> },
    /// Not resolvable: every record of it is dead-lettered with the reason.
    Incompatible { origin: String, reason: String },
}

/// What a Confluent schema id stands for.
#[derive(Debug, Clone)]
enum Registered {
    /// The writer of this fingerprint.
    Fingerprint(u64),
    /// Nothing usable: why.
    Rejected(String),
}

/// The writer schemas of simulation results, by fingerprint (and by registry id for Confluent-framed records).
/// Cheap to share; adding takes a short write lock.
#[derive(Clone, Default)]
pub struct WriterSchemas {
    // A std lock: held only to look up or insert, never across an await.
    writers: Arc<RwLock<HashMap<u64, Arc<Writer>>>>,
    /// apache-avro 0.22's fingerprint of a known writer → the specification's.
    legacy: Arc<RwLock<HashMap<u64, u64>>>,
    ids: Arc<RwLock<HashMap<u32, Registered>>>,
}

impl std::fmt::Debug for WriterSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.writers.read().map(|w| w.len()).unwrap_or_default();
        f.debug_struct("WriterSchemas").field("evolved_or_incompatible", &count).finish()
    }
}

/// The schema id of a record in Confluent's wire format (byte 0, then the id, big-endian), if it is one.
pub fn confluent_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

impl WriterSchemas {
    /// The reader's own schema and the writers of the repository's `schemas/`.
    pub fn builtin() -> Self {
        let writers = WriterSchemas::default();
        for (origin, text) in BUILTIN_WRITERS {
            writers.add(origin, text).expect("the schemas of the repository parse");
        }
        writers
    }

    /// [`Self::builtin`] plus every `*.avsc` file of `dir` (if given), in name order.
    pub fn load(dir: Option<&Path>) -> Result<(Self, Vec<Added>), WriterSchemaError> {
        let writers = Self::builtin();
        let mut added = Vec::new();
        let Some(dir) = dir else { return Ok((writers, added)) };
        let io = |source| WriterSchemaError::Io { path: dir.to_owned(), source };
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
        files.retain(|p| p.extension().is_some_and(|e| e == "avsc"));
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| WriterSchemaError::Io { path: path.clone(), source })?;
            added.push(writers.add(&path.display().to_string(), &text)?);
        }
        Ok((writers, added))
    }

    /// Checks a writer schema against the reader and adds it under its fingerprint (the first of a fingerprint
    /// stays: equal fingerprints are equal schemas).
    pub fn add(&self, origin: &str, text: &str) -> Result<Added, WriterSchemaError> {
        let invalid = |detail: String| WriterSchemaError::Invalid { origin: origin.to_owned(), detail };
        let parsed = ParsedSchema::parse(text).map_err(|e| invalid(e.to_string()))?;
        let fingerprint = parsed.fingerprint();
        let found = incompatibilities(&parsed, reader_schema());
        let added = Added { origin: origin.to_owned(), fingerprint, incompatibilities: found };
        if fingerprint == SchemaKind::SimulationResult.fingerprint() || self.get(fingerprint).is_some() {
            return Ok(added);
        }
        if let Ok(schema) = Schema::parse_str(text) {
            let legacy = super::legacy_fingerprint_of(&schema);
            if legacy != fingerprint {
                self.legacy.write().expect("legacy lock").insert(legacy, fingerprint);
            }
        }
        let writer = if added.resolvable() {
            let schema = Schema::parse_str(text).map_err(|e| invalid(e.to_string()))?;
            // Leaked so the reader can borrow it for the life of the process: writer schemas are few, each added
            // once.
            let schema: &'static Schema = Box::leak(Box::new(schema));
            // Without a reader schema: resolution is a step of its own, so its failures are told from bad bytes.
            let reader = GenericDatumReader::builder(schema).build().map_err(|e| invalid(e.to_string()))?;
            Writer::Evolved { origin: origin.to_owned(), reader }
        } else {
            let reason = added.incompatibilities.iter().filter(|i| !i.per_record).map(ToString::to_string);
            Writer::Incompatible { origin: origin.to_owned(), reason: reason.collect::<Vec<_>>().join("; ") }
        };
        self.writers.write().expect("writer lock").insert(fingerprint, Arc::new(writer));
        Ok(added)
    }

    fn get(&self, fingerprint: u64) -> Option<Arc<Writer>> {
        self.writers.read().expect("writer lock").get(&fingerprint).cloned()
    }

    /// Adds the schema a registry serves under `id`.
    pub fn add_registered(&self, id: u32, text: &str) -> Result<Added, WriterSchemaError> {
        let added = self.add(&format!("schema registry id {id}"), text)?;
        self.ids.write().expect("id lock").insert(id, Registered::Fingerprint(added.fingerprint));
        Ok(added)
    }

    /// Remembers that the registry's schema of `id` is unusable, so its records are dead-lettered with why.
    pub fn reject_id(&self, id: u32, reason: String) {
        self.ids.write().expect("id lock").insert(id, Registered::Rejected(reason));
    }

    /// Whether a registry id has been looked up already.
    pub fn knows_id(&self, id: u32) -> bool {
        self.ids.read().expect("id lock").contains_key(&id)
    }

    /// Decodes and validates a simulation result written with any known writer, single-object encoded or in
    /// Confluent's wire format (whose id must have been fetched, see `Registry::fetch_missing`).
    pub fn decode(&self, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let kind = SchemaKind::SimulationResult;
        if let Some(id) = confluent_id(bytes) {
            let registered = self.ids.read().expect("id lock").get(&id).cloned();
            return match registered {
                Some(Registered::Fingerprint(fingerprint)) => self.decode_body(fingerprint, &bytes[5..], bytes.len()),
                Some(Registered::Rejected(reason)) => Err(DecodeError::UnknownSchemaId { id, reason }),
                None => Err(DecodeError::UnknownSchemaId {
                    id,
                    reason: "the schema registry has no schema with this id, or none is configured \
                             (COSTSIM_SCHEMA_REGISTRY_URL)"
                        .into(),
                }),
            };
        }
        let (fingerprint, body) = super::split_header(kind, bytes)?;
        self.decode_body(fingerprint, body, bytes.len())
    }

    /// Decodes the body of a record whose writer has `fingerprint`; `len` is the whole record's length.
    pub(crate) fn decode_body(&self, fingerprint: u64, body: &[u8], len: usize) -> Result<Decoded, DecodeError> {
        let kind = SchemaKind::SimulationResult;
        let direct = |writer| {
            let event = super::body::simulation_result(body, len)?;
            event.validate()?;
            Ok(Decoded { event, writer })
        };
        if fingerprint == kind.fingerprint() {
            return direct(WriterKind::Current);
        }
        if fingerprint == LEGACY_SIMULATION_RESULT_FINGERPRINT {
            return direct(WriterKind::LegacyFingerprint);
        }
        let (writer, kind_found) = match self.get(fingerprint) {
            Some(writer) => (writer, WriterKind::Evolved),
            None => {
                let spec = self.legacy.read().expect("legacy lock").get(&fingerprint).copied();
                match spec.and_then(|spec| self.get(spec)) {
                    Some(writer) => (writer, WriterKind::LegacyFingerprint),
                    None => {
                        return Err(DecodeError::UnknownFingerprint {
                            fingerprint,
                            expected: kind,
                            expected_fingerprint: kind.fingerprint(),
                        });
                    }
                }
            }
        };
        match writer.as_ref() {
            Writer::Evolved { origin, reader } => {
                let value = super::read_body(kind, reader, body, len)?;
                let value = value.resolve(kind.schema()).map_err(|e| DecodeError::IncompatibleSchema {
                    fingerprint,
                    origin: origin.clone(),
                    reason: e.to_string(),
                })?;
                let event = super::simulation_result_from_value(value)?;
                event.validate()?;
                Ok(Decoded { event, writer: kind_found })
            }
            Writer::Incompatible { origin, reason } => {
                Err(DecodeError::IncompatibleSchema { fingerprint, origin: origin.clone(), reason: reason.clone() })
            }
        }
    }
}

/// The reader schema, parsed by our own parser (for the resolution checks).
fn reader_schema() -> &'static ParsedSchema {
    static READER: std::sync::LazyLock<ParsedSchema> = std::sync::LazyLock::new(|| {
        ParsedSchema::parse(include_str!("../../../schemas/simulation_result.avsc")).expect("the reader schema parses")
    });
    &READER
}
