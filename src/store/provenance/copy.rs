//! A batch of provenance rows in PostgreSQL's binary COPY format: a header, then per row a field count and each
//! field as a big-endian length (-1 for NULL) and its binary value; a trailer of -1. PostgreSQL itself checks it
//! (every provenance integration test writes through it).

use super::ProvenanceRow;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z), the origin of `timestamptz`.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Fields per row, in the order of the staging table's COPY column list.
const FIELDS: i16 = 23;

/// The rows as one COPY stream.
pub(super) fn encode(rows: &[&ProvenanceRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + rows.len() * 320);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // no header extension
    for r in rows {
        out.extend_from_slice(&FIELDS.to_be_bytes());
        text(&mut out, Some(&r.event_id));
        fixed(&mut out, r.occurred_at.map(|t| (t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes()));
        for value in [&r.run_id, &r.tenant_id, &r.variant_slug, &r.source, &r.model_version, &r.adapter_version] {
            text(&mut out, value.as_deref());
        }
        for value in [&r.commit_sha, &r.input_hash, &r.output_hash] {
            text(&mut out, value.as_deref());
        }
        fixed(&mut out, r.v1_cost.map(f64::to_be_bytes));
        fixed(&mut out, r.v2_cost.map(f64::to_be_bytes));
        fixed(&mut out, r.v1_feasible.map(|b| [u8::from(b)]));
        fixed(&mut out, r.v2_feasible.map(|b| [u8::from(b)]));
        text(&mut out, r.v2_status.as_deref());
        fixed(&mut out, r.drift_score.map(f64::to_be_bytes));
        text(&mut out, r.verdict);
        // jsonb's binary form: the format version (1), then the JSON text.
        match &r.payload {
            Some(payload) => {
                let json = payload.to_string();
                length(&mut out, json.len() + 1);
                out.push(1);
                out.extend_from_slice(json.as_bytes());
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        fixed(&mut out, r.runtime_ms.map(i32::to_be_bytes));
        text(&mut out, r.kafka_topic.as_deref());
        fixed(&mut out, r.kafka_partition.map(i32::to_be_bytes));
        fixed(&mut out, r.kafka_offset.map(i64::to_be_bytes));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

fn length(out: &mut Vec<u8>, len: usize) {
    // A field longer than 1 GB is refused by PostgreSQL anyway; saturating keeps the stream well-formed until then.
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
}

fn text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) => {
            length(out, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn fixed<const N: usize>(out: &mut Vec<u8>, value: Option<[u8; N]>) {
    match value {
        Some(bytes) => {
            length(out, N);
            out.extend_from_slice(&bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;

    #[test]
    fn a_row_is_a_field_count_then_length_prefixed_fields_between_header_and_trailer() {
        let row = ProvenanceRow {
            event_id: "e".to_owned(),
            occurred_at: Some(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap()),
            ..ProvenanceRow::default()
        };
        let bytes = encode(&[&row]);
        assert_eq!(&bytes[..11], b"PGCOPY\n\xff\r\n\0");
        let body = &bytes[19..];
        assert_eq!(&body[..2], &23i16.to_be_bytes());
        assert_eq!(&body[2..7], &[0, 0, 0, 1, b'e']);
        // One second after PostgreSQL's epoch, in microseconds.
        assert_eq!(&body[7..11], &8i32.to_be_bytes());
        assert_eq!(&body[11..19], &1_000_000i64.to_be_bytes());
        // The 21 other fields are NULL, then the trailer.
        assert_eq!(body.len(), 19 + 21 * 4 + 2);
        assert!(body[19..19 + 21 * 4].chunks(4).all(|c| c == (-1i32).to_be_bytes()));
        assert_eq!(&body[body.len() - 2..], &(-1i16).to_be_bytes());
    }
}
