//! Backfill records: our simulation-result JSON lines and the two record kinds of the older system
//! (docs/DOMAIN.md, *Backfill file formats*), each turned into one provenance row.
//!
//! * A key `input_json` means a **file-provenance record** written by the V2 adapter: `input_json` and
//!   `output_json` are JSON text, or gzip + standard Base64 of it when `compressed`. Its cost is the **V2** cost
//!   (`output.estimated_cost_cents`); the older backfill stored it as the V1 baseline, this one does not.
//! * A key `event_id` means one of our simulation results, kept as it is (its own `source`).
//! * Anything else is a **historical run** `{plan, cost_cents, duration_ms, tenant_id, run_id, input_hash?}`:
//!   a V1 baseline whose cost is the V1 cost.
//!
//! Older records get `source = backfill`; their event id is the record's `id` (file provenance) or
//! `legacy-run:` and the run id (historical runs; the hash of the record when it has no run id), so a rerun
//! finds them stored.

use std::io::Read as _;

use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{DecodeError, simulation_result_from_json};
use crate::store::provenance::ProvenanceRow;

/// Why a backfill record gave no row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The text is not JSON.
    #[error("bad JSON: {0}")]
    Json(String),
    /// The JSON is not an object.
    #[error("not a JSON object")]
    NotObject,
    /// A field is absent, of the wrong type, or out of range.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The object is none of the three kinds.
    #[error(
        "neither a simulation result, a provenance record nor a historical run (no `event_id`, `input_json`, \
         `plan` or `cost_cents`)"
    )]
    Unrecognized,
    /// A simulation result that does not decode or is invalid.
    #[error(transparent)]
    Result(#[from] DecodeError),
}

impl RecordError {
    fn field(field: &'static str, reason: impl Into<String>) -> Self {
        RecordError::Field { field, reason: reason.into() }
    }
}

/// The row of one JSON line of a backfill file.
pub fn backfill_row_from_json(line: &str) -> Result<ProvenanceRow, RecordError> {
    let value = backfill_json(line)?;
    match &value {
        Value::Object(map) if map.contains_key("event_id") && !map.contains_key("input_json") => {
            Ok(ProvenanceRow::of_result(&simulation_result_from_json(line)?, None))
        }
        _ => backfill_row(value),
    }
}

/// The row of one backfill record given as a JSON value.
pub fn backfill_row(value: Value) -> Result<ProvenanceRow, RecordError> {
    let Value::Object(map) = value else { return Err(RecordError::NotObject) };
    if map.contains_key("input_json") {
        file_provenance(&map)
    } else if map.contains_key("event_id") {
        let event = simulation_result_from_json(&Value::Object(map).to_string())?;
        Ok(ProvenanceRow::of_result(&event, None))
    } else {
        historical_run(&map)
    }
}

/// Parses the JSON text of a backfill line or document, refusing an object that names a key twice.
///
/// serde_json's `Value` would keep the last of the two silently, while a simulation result read as a line refuses
/// it (`duplicate field`); so the same record read from a `.json` document and from a `.jsonl` line gave a row in
/// one and an error in the other (found by the backfill fuzz target).
pub fn backfill_json(text: &str) -> Result<Value, RecordError> {
    serde_json::from_str::<UniqueKeys>(text).map(|v| v.0).map_err(|e| RecordError::Json(e.to_string()))
}

/// A JSON value whose objects name each key once.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // As serde_json's own `Value` does; JSON text has no NaN or infinity to lose.
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn file_provenance(map: &Map<String, Value>) -> Result<ProvenanceRow, RecordError> {
    let compressed = match map.get("compressed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(RecordError::field("compressed", "not a boolean")),
    };
    let input = payload(map, "input_json", compressed)?;
    let output = payload(map, "output_json", compressed)?;
    let event_id = text(map, "id")?.filter(|id| !id.is_empty()).ok_or(RecordError::field("id", "missing"))?;
    let status = text(map, "status")?;
    if let Some(status) = &status {
        if !["success", "error", "timeout", "schema_error"].contains(&status.as_str()) {
            return Err(RecordError::field("status", format!("unknown status `{status}`")));
        }
    }
    let (v2_cost, v2_feasible) = match &output {
        Some(Value::Object(out)) => (
            number(out, "estimated_cost_cents").map_err(|_| RecordError::field("output_json", "bad cost"))?,
            out.get("feasible").and_then(Value::as_bool),
        ),
        _ => (None, None),
    };
    let mut payload = Map::new();
    payload.insert("input".to_owned(), input.unwrap_or(Value::Null));
    payload.insert("output".to_owned(), output.unwrap_or(Value::Null));
    Ok(ProvenanceRow {
        event_id,
        occurred_at: timestamp(map, "timestamp")?,
        run_id: text(map, "run_id")?,
        tenant_id: text(map, "tenant_id")?,
        variant_slug: Some("v2".to_owned()),
        source: Some("backfill".to_owned()),
        model_version: text(map, "model_version")?,
        adapter_version: text(map, "adapter_version")?,
        commit_sha: text(map, "commit_sha")?,
        input_hash: text(map, "input_hash")?.or(text(map, "plan_hash")?),
        output_hash: text(map, "output_hash")?,
        v2_cost,
        v2_feasible,
        v2_status: status,
        payload: Some(Value::Object(payload)),
        runtime_ms: millis(map, "runtime_ms")?,
        ..ProvenanceRow::default()
    })
}

fn historical_run(map: &Map<String, Value>) -> Result<ProvenanceRow, RecordError> {
    let plan = map.get("plan").filter(|p| !p.is_null());
    let v1_cost = number(map, "cost_cents")?;
    if plan.is_none() && v1_cost.is_none() {
        return Err(RecordError::Unrecognized);
    }
    let run_id = text(map, "run_id")?;
    let event_id = match &run_id {
        Some(run_id) if !run_id.is_empty() => format!("legacy-run:{run_id}"),
        _ => format!("legacy-run:sha256:{}", &sha256_hex(&canonical_json(&Value::Object(map.clone())))[..32]),
    };
    let input_hash = match text(map, "input_hash")? {
        Some(hash) => Some(hash),
        None => plan.map(|p| sha256_hex(&canonical_json(p))[..16].to_owned()),
    };
    Ok(ProvenanceRow {
        event_id,
        run_id,
        tenant_id: text(map, "tenant_id")?,
        variant_slug: Some("v1".to_owned()),
        source: Some("backfill".to_owned()),
        input_hash,
        v1_cost,
        payload: plan.map(|p| serde_json::json!({ "plan": p })),
        runtime_ms: millis(map, "duration_ms")?,
        ..ProvenanceRow::default()
    })
}

/// A payload field: JSON text, gzip + Base64 of it when compressed, or an inline JSON value.
fn payload(map: &Map<String, Value>, field: &'static str, compressed: bool) -> Result<Option<Value>, RecordError> {
    let text = match map.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text,
        Some(value) if !compressed => return Ok(Some(value.clone())),
        Some(_) => return Err(RecordError::field(field, "compressed but not a string")),
    };
    let json = if compressed {
        let gz = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| RecordError::field(field, format!("bad Base64: {e}")))?;
        let mut json = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_string(&mut json)
            .map_err(|e| RecordError::field(field, format!("bad gzip: {e}")))?;
        json
    } else {
        text.clone()
    };
    serde_json::from_str(&json).map(Some).map_err(|e| RecordError::field(field, format!("bad JSON: {e}")))
}

fn text(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, RecordError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RecordError::field(field, "not a string")),
    }
}

fn number(map: &Map<String, Value>, field: &'static str) -> Result<Option<f64>, RecordError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_f64().filter(|c| c.is_finite()).map(Some).ok_or(RecordError::field(field, "not finite"))
        }
        // The older backfill took `float(x)`, so numbers written as text are accepted too.
        Some(Value::String(text)) => match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(RecordError::field(field, format!("`{text}` is not a number"))),
        },
        Some(_) => Err(RecordError::field(field, "not a number")),
    }
}

fn millis(map: &Map<String, Value>, field: &'static str) -> Result<Option<i32>, RecordError> {
    match number(map, field)? {
        None => Ok(None),
        Some(ms) if (0.0..=f64::from(i32::MAX)).contains(&ms) => Ok(Some(ms.round() as i32)),
        Some(ms) => Err(RecordError::field(field, format!("{ms} is out of range"))),
    }
}

/// RFC 3339, or Python's `isoformat()` without an offset (taken as UTC).
fn timestamp(map: &Map<String, Value>, field: &'static str) -> Result<Option<DateTime<Utc>>, RecordError> {
    let Some(text) = text(map, field)? else { return Ok(None) };
    if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|at| Some(at.and_utc()))
        .map_err(|e| RecordError::field(field, format!("`{text}` is not a time ({e})")))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The older system's canonical JSON: keys sorted, `,` and `:` with no spaces, non-ASCII as `\uXXXX` (floats
/// are written as Rust writes them, which differs from Python for exponents).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_ascii(&Value::String(key.clone()).to_string(), out);
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => write_ascii(&scalar.to_string(), out),
    }
}

fn write_ascii(json: &str, out: &mut String) {
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
