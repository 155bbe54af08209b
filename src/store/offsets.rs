//! Consumed offsets per group and partition: the source of truth for where consumption resumes, and each
//! partition's event-time watermark.
//!
//! # The merged watermark
//! A bucket may be judged once every partition's events for it were applied, so the merged watermark is the
//! minimum of the partitions' watermarks, and a partition registered but never consumed holds it entirely. A
//! partition that has not moved for `idle_seconds` (wall clock: no records, or nobody consuming it) stops holding
//! it back, as stream processors treat idle sources, or one quiet partition would stop every decision. When every
//! partition is idle, the newest event time counts. Registering partitions when a processor starts or is assigned
//! them marks them as moving, so a backlog left while no processor ran holds the watermark back again. Events that
//! arrive after their bucket was judged still land in it while it is inside the window.

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

/// What the merged watermark needs to know of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Mark {
    /// The partition.
    pub partition: i32,
    /// Its largest event time applied.
    pub watermark: Option<DateTime<Utc>>,
    /// Whether it moved (or was registered) within the idle timeout.
    pub active: bool,
}

/// The merged watermark of the partitions' marks (see the module documentation); `None` means "judge nothing yet".
pub fn merged_watermark(marks: &[Mark]) -> Option<DateTime<Utc>> {
    let active: Vec<&Mark> = marks.iter().filter(|m| m.active).collect();
    if active.is_empty() {
        return marks.iter().filter_map(|m| m.watermark).max();
    }
    // An active partition never consumed has an unknown watermark: wait for it.
    active.iter().map(|m| m.watermark).collect::<Option<Vec<_>>>()?.into_iter().min()
}

/// The partitions whose events had not reached `end` (idle ones the merged watermark passed over, or never
/// consumed): a decision for the bucket ending at `end` is taken without them.
pub fn behind(marks: &[Mark], end: DateTime<Utc>) -> Vec<i32> {
    marks.iter().filter(|m| m.watermark.is_none_or(|w| w < end)).map(|m| m.partition).collect()
}

/// Registers partitions as a processor starts or is assigned them: creates their rows (never consumed yet) and
/// marks existing ones as moving now. A row locked by a transaction (a batch committing, whose commit marks it
/// moving anyway) is skipped rather than waited for, so one stuck partition never holds up the registration of
/// the others, and with it every batch.
pub async fn register(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH free AS ( \
             SELECT \"partition\" FROM costsim_consumed_offsets \
             WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = ANY($3) FOR UPDATE SKIP LOCKED), \
         touched AS ( \
             UPDATE costsim_consumed_offsets o SET updated_at = now() FROM free \
             WHERE o.consumer_group = $1 AND o.topic = $2 AND o.\"partition\" = free.\"partition\") \
         INSERT INTO costsim_consumed_offsets (consumer_group, topic, \"partition\") \
         SELECT $1, $2, p FROM UNNEST($3::int4[]) AS p \
         ON CONFLICT ON CONSTRAINT pk_costsim_consumed_offsets DO NOTHING",
    )
    .persistent(false)
    .bind(group)
    .bind(topic)
    .bind(partitions)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks a partition's row for this transaction. A partition never consumed by this group starts at
/// `first_offset`, the first record its first batch holds.
pub async fn lock(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partition: i32,
    first_offset: i64,
) -> Result<Position, sqlx::Error> {
    // The upsert takes the row lock whether it inserts or not.
    let (next_offset, watermark) = sqlx::query_as(
        "INSERT INTO costsim_consumed_offsets AS o (consumer_group, topic, \"partition\", next_offset) \
         VALUES ($1, $2, $3, $4) ON CONFLICT ON CONSTRAINT pk_costsim_consumed_offsets \
         DO UPDATE SET next_offset = COALESCE(o.next_offset, EXCLUDED.next_offset) \
         RETURNING next_offset, watermark",
    )
    .persistent(false)
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(first_offset)
    .fetch_one(conn)
    .await?;
    Ok(Position { next_offset, watermark })
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
        "UPDATE costsim_consumed_offsets SET next_offset = $4, watermark = GREATEST(watermark, $5), \
         updated_at = now() WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3",
    )
    .persistent(false)
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(position.next_offset)
    .bind(position.watermark)
    .execute(conn)
    .await?;
    Ok(())
}

/// The marks of every partition of the group's topic; a partition is active when it moved within `idle_seconds`.
pub async fn marks(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    idle_seconds: f64,
) -> Result<Vec<Mark>, sqlx::Error> {
    sqlx::query_as(
        "SELECT \"partition\", watermark, updated_at >= now() - make_interval(secs => $3) AS active \
         FROM costsim_consumed_offsets WHERE consumer_group = $1 AND topic = $2 ORDER BY \"partition\"",
    )
    .persistent(false)
    .bind(group)
    .bind(topic)
    .bind(idle_seconds)
    .fetch_all(conn)
    .await
}

/// Records offsets of a locked partition whose records the broker deleted before they were applied.
pub async fn record_lost(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partition: i32,
    lost: std::ops::Range<i64>,
    log_start: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO costsim_lost_records \
         (consumer_group, topic, \"partition\", first_offset, end_offset, log_start_offset) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .persistent(false)
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(lost.start)
    .bind(lost.end)
    .bind(log_start)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(s: i64) -> Option<DateTime<Utc>> {
        Some(DateTime::UNIX_EPOCH + TimeDelta::seconds(s))
    }

    fn mark(partition: i32, watermark: Option<DateTime<Utc>>, active: bool) -> Mark {
        Mark { partition, watermark, active }
    }

    #[test]
    fn active_partitions_hold_the_watermark_at_the_slowest() {
        let marks = [mark(0, at(50), true), mark(1, at(30), true), mark(2, at(90), true)];
        assert_eq!(merged_watermark(&marks), at(30));
    }

    #[test]
    fn an_active_partition_never_consumed_holds_everything() {
        assert_eq!(merged_watermark(&[mark(0, at(50), true), mark(1, None, true)]), None);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back() {
        assert_eq!(merged_watermark(&[mark(0, at(50), true), mark(1, at(10), false), mark(2, None, false)]), at(50));
    }

    #[test]
    fn when_every_partition_is_idle_the_newest_event_time_counts() {
        assert_eq!(merged_watermark(&[mark(0, at(50), false), mark(1, at(70), false)]), at(70));
    }

    #[test]
    fn the_partitions_behind_a_bucket_end_are_the_idle_ones_short_of_it() {
        let marks = [mark(0, at(50), true), mark(1, at(10), false), mark(2, None, false), mark(3, at(40), false)];
        assert_eq!(behind(&marks, at(40).unwrap()), [1, 2], "a partition at the end itself is not behind");
        assert!(behind(&marks[..1], at(50).unwrap()).is_empty());
    }

    #[test]
    fn no_partition_means_no_watermark() {
        assert_eq!(merged_watermark(&[]), None);
    }
}
