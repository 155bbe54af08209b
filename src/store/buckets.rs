//! Drift buckets per breaker and source partition: each partition's owner merges its events into its own rows,
//! and a decision merges the rows of all partitions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::window::{Bucket, DriftSketch};

/// Where a partition's bucket rows belong.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The breaker.
    pub breaker: &'a str,
    /// The topic the events came from.
    pub topic: &'a str,
    /// The partition they came from.
    pub partition: i32,
}

/// A stored bucket row: start, sketch bytes, schema errors, unscored events.
type BucketRow = (DateTime<Utc>, Option<Vec<u8>>, i64, i64);

fn to_bucket(sketch: Option<Vec<u8>>, schema_errors: i64, unscored: i64) -> Result<Bucket, sqlx::Error> {
    let drift = DriftSketch::try_from(sketch).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Bucket { drift, schema_errors: schema_errors as u64, unscored: unscored as u64 })
}

/// Adds a batch's contributions to the partition's stored buckets (the caller holds the partition's lock).
pub async fn merge(
    conn: &mut PgConnection,
    source: Source<'_>,
    contributions: &BTreeMap<DateTime<Utc>, Bucket>,
) -> Result<(), sqlx::Error> {
    if contributions.is_empty() {
        return Ok(());
    }
    let starts: Vec<DateTime<Utc>> = contributions.keys().copied().collect();
    let stored: Vec<BucketRow> = sqlx::query_as(
        "SELECT bucket_start, sketch, schema_error_count, unscored_count FROM costsim_drift_buckets \
         WHERE breaker = $1 AND topic = $2 AND \"partition\" = $3 AND bucket_start = ANY($4)",
    )
    .persistent(false)
    .bind(source.breaker)
    .bind(source.topic)
    .bind(source.partition)
    .bind(&starts)
    .fetch_all(&mut *conn)
    .await?;
    let mut merged = contributions.clone();
    for (start, sketch, schema_errors, unscored) in stored {
        let bucket = to_bucket(sketch, schema_errors, unscored)?;
        merged.entry(start).or_default().merge(&bucket);
    }
    let mut sketches = Vec::with_capacity(merged.len());
    let (mut samples, mut schema_errors, mut unscored) = (vec![], vec![], vec![]);
    for bucket in merged.values() {
        sketches.push(bucket.drift.to_bytes());
        samples.push(bucket.samples() as i64);
        schema_errors.push(bucket.schema_errors as i64);
        unscored.push(bucket.unscored as i64);
    }
    let starts: Vec<DateTime<Utc>> = merged.keys().copied().collect();
    sqlx::query(
        "INSERT INTO costsim_drift_buckets (breaker, topic, \"partition\", bucket_start, sketch, sample_count, \
         schema_error_count, unscored_count) \
         SELECT $1, $2, $3, * FROM UNNEST($4::timestamptz[], $5::bytea[], $6::bigint[], $7::bigint[], $8::bigint[]) \
         ON CONFLICT ON CONSTRAINT pk_costsim_drift_buckets DO UPDATE SET sketch = EXCLUDED.sketch, \
         sample_count = EXCLUDED.sample_count, schema_error_count = EXCLUDED.schema_error_count, \
         unscored_count = EXCLUDED.unscored_count, updated_at = now()",
    )
    .persistent(false)
    .bind(source.breaker)
    .bind(source.topic)
    .bind(source.partition)
    .bind(&starts)
    .bind(&sketches)
    .bind(&samples)
    .bind(&schema_errors)
    .bind(&unscored)
    .execute(conn)
    .await?;
    Ok(())
}

/// The buckets of a breaker starting in `[from, to)`, merged across every partition.
pub async fn load(
    conn: &mut PgConnection,
    breaker: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<DateTime<Utc>, Bucket>, sqlx::Error> {
    let rows: Vec<BucketRow> = sqlx::query_as(
        "SELECT bucket_start, sketch, schema_error_count, unscored_count FROM costsim_drift_buckets \
         WHERE breaker = $1 AND bucket_start >= $2 AND bucket_start < $3",
    )
    .persistent(false)
    .bind(breaker)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?;
    let mut buckets: BTreeMap<DateTime<Utc>, Bucket> = BTreeMap::new();
    for (start, sketch, schema_errors, unscored) in rows {
        buckets.entry(start).or_default().merge(&to_bucket(sketch, schema_errors, unscored)?);
    }
    Ok(buckets)
}

/// The start of a breaker's oldest stored bucket.
pub async fn oldest(conn: &mut PgConnection, breaker: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(bucket_start) FROM costsim_drift_buckets WHERE breaker = $1")
        .persistent(false)
        .bind(breaker)
        .fetch_one(conn)
        .await
}

/// Deletes buckets that started before `before`, which no decision can see any more; returns how many.
pub async fn prune(conn: &mut PgConnection, breaker: &str, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM costsim_drift_buckets WHERE breaker = $1 AND bucket_start < $2")
        .persistent(false)
        .bind(breaker)
        .bind(before)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
