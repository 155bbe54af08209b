//! Consumed offsets per group and partition: the source of truth for where consumption resumes, and each
//! partition's event-time watermark.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Where a partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The next offset to process.
    pub next_offset: i64,
    /// The largest event time processed from the partition.
    pub watermark: Option<DateTime<Utc>>,
}

/// Locks a partition's row for this transaction, creating it at `first_offset` when the partition was never
/// consumed by this group (so the first batch ever seen defines where it starts).
pub async fn lock(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partition: i32,
    first_offset: i64,
) -> Result<Position, sqlx::Error> {
    sqlx::query(
        "INSERT INTO costsim_consumed_offsets (consumer_group, topic, \"partition\", next_offset) \
         VALUES ($1, $2, $3, $4) ON CONFLICT ON CONSTRAINT pk_costsim_consumed_offsets DO NOTHING",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(first_offset)
    .execute(&mut *conn)
    .await?;
    let (next_offset, watermark) = sqlx::query_as(
        "SELECT next_offset, watermark FROM costsim_consumed_offsets \
         WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 FOR UPDATE",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .fetch_one(conn)
    .await?;
    Ok(Position { next_offset, watermark })
}

/// Reads where a partition stands, without locking; `None` when it was never consumed.
pub async fn get(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<Position>, sqlx::Error> {
    let row: Option<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT next_offset, watermark FROM costsim_consumed_offsets \
         WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(next_offset, watermark)| Position { next_offset, watermark }))
}

/// Records the new position of a locked partition; a watermark never moves back.
pub async fn save(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partition: i32,
    position: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE costsim_consumed_offsets SET next_offset = $4, \
         watermark = GREATEST(watermark, $5), updated_at = now() \
         WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(position.next_offset)
    .bind(position.watermark)
    .execute(conn)
    .await?;
    Ok(())
}

/// The merged stream's watermark: the minimum over the group's partitions that moved within `active_seconds`
/// (a partition that has been quiet longer is idle and must not hold every bucket open).
pub async fn merged_watermark(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    active_seconds: f64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(watermark) FROM costsim_consumed_offsets WHERE consumer_group = $1 AND topic = $2 \
         AND watermark IS NOT NULL AND updated_at >= now() - make_interval(secs => $3)",
    )
    .bind(group)
    .bind(topic)
    .bind(active_seconds)
    .fetch_one(conn)
    .await
}
