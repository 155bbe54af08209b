//! The partitions of `costsim_provenance` (range by `occurred_at`): which exist, which a pass should create or
//! drop (pure: [`plan_creations`], [`expired`]), and the DDL that does it.
//!
//! Partitions are named `costsim_provenance_<from>_<to>` (UTC, `yyyymmddhh`), but only their bounds, read from
//! the catalog, count: a partition a person created by hand with other bounds is respected, never overlapped.
//! The DEFAULT partition takes what no partition covers (rows without an event time, beyond the partitions
//! created ahead, older than the oldest); creating a partition moves the DEFAULT partition's rows of its range
//! into it, because PostgreSQL refuses a partition whose rows the DEFAULT partition already holds.

use chrono::{DateTime, Datelike as _, Duration, DurationRound as _, TimeDelta, Utc};
use sqlx::{AssertSqlSafe, PgConnection};

/// The partitioned table.
pub const TABLE: &str = "costsim_provenance";
/// The name the DEFAULT partition is created with when it is missing.
pub const DEFAULT_PARTITION: &str = "costsim_provenance_default";

/// How much event time one partition covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One partition per UTC hour.
    Hourly,
    /// One partition per UTC day.
    Daily,
    /// One partition per ISO week (Monday 00:00 UTC).
    Weekly,
}

impl Granularity {
    /// The start of the slot that holds `at`.
    pub fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let hour = at.duration_trunc(TimeDelta::hours(1)).expect("an hour divides any timestamp");
        let day = at.duration_trunc(TimeDelta::days(1)).expect("a day divides any timestamp");
        match self {
            Granularity::Hourly => hour,
            Granularity::Daily => day,
            Granularity::Weekly => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
        }
    }

    /// The length of one slot.
    pub fn step(self) -> TimeDelta {
        match self {
            Granularity::Hourly => TimeDelta::hours(1),
            Granularity::Daily => TimeDelta::days(1),
            Granularity::Weekly => TimeDelta::weeks(1),
        }
    }

    /// The slots from the one holding `from` up to the one holding `to`, each as `[start, end)`.
    pub fn slots(self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Bounds> {
        let mut slots = Vec::new();
        let mut start = self.floor(from);
        while start <= to {
            slots.push(Bounds { from: start, to: start + self.step() });
            start += self.step();
        }
        slots
    }
}

/// A half-open range of event time `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Bounds {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
}

impl Bounds {
    /// The name a partition of these bounds gets.
    pub fn partition_name(&self) -> String {
        format!("{TABLE}_{}_{}", self.from.format("%Y%m%d%H"), self.to.format("%Y%m%d%H"))
    }
}

/// A range partition's bounds as the catalog gives them: `None` on a side is unbounded (MINVALUE, MAXVALUE).
pub type RangeBound = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A partition as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its table name.
    pub name: String,
    /// Its range; `None` for the DEFAULT partition. An unbounded side (MINVALUE, MAXVALUE) is the far past or
    /// future.
    pub bounds: Option<RangeBound>,
}

impl Partition {
    /// Whether this is the DEFAULT partition.
    pub fn is_default(&self) -> bool {
        self.bounds.is_none()
    }
}

/// The parts of `wanted` that no existing partition covers, in order: what a pass creates. A slot that existing
/// partitions cover in part yields only the uncovered pieces, so partitions of another granularity (after the
/// setting changed) are never overlapped and never leave a gap.
pub fn plan_creations(existing: &[Partition], wanted: &[Bounds]) -> Vec<Bounds> {
    let mut covered: Vec<(DateTime<Utc>, DateTime<Utc>)> = existing
        .iter()
        .filter_map(|p| p.bounds)
        .map(|(from, to)| (from.unwrap_or(DateTime::<Utc>::MIN_UTC), to.unwrap_or(DateTime::<Utc>::MAX_UTC)))
        .collect();
    covered.sort();
    let mut wanted = wanted.to_vec();
    wanted.sort();
    wanted.dedup();
    let mut out: Vec<Bounds> = Vec::new();
    for slot in wanted {
        let mut start = slot.from;
        for &(from, to) in &covered {
            if to <= start || from >= slot.to {
                continue;
            }
            if from > start {
                out.push(Bounds { from: start, to: from });
            }
            start = start.max(to);
            if start >= slot.to {
                break;
            }
        }
        if start < slot.to {
            out.push(Bounds { from: start, to: slot.to });
        }
    }
    // Pieces already planned (wanted slots that overlap each other) are not created twice.
    let mut planned: Vec<Bounds> = Vec::with_capacity(out.len());
    for piece in out {
        let start = planned.last().map_or(piece.from, |last| piece.from.max(last.to));
        if start < piece.to {
            planned.push(Bounds { from: start, to: piece.to });
        }
    }
    planned
}

/// The bounded partitions whose whole range ends at or before `cutoff`: what retention drops.
pub fn expired(existing: &[Partition], cutoff: DateTime<Utc>) -> Vec<Partition> {
    existing.iter().filter(|p| matches!(p.bounds, Some((_, Some(to))) if to <= cutoff)).cloned().collect()
}

/// The partitions of provenance, in bound order (the DEFAULT partition last). Sets the transaction's time zone
/// and date style so that the bounds the catalog prints read back exactly.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Partition>, sqlx::Error> {
    sqlx::query("SET LOCAL TimeZone = 'UTC'").persistent(false).execute(&mut *conn).await?;
    sqlx::query("SET LOCAL DateStyle = 'ISO'").persistent(false).execute(&mut *conn).await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'costsim_provenance'::regclass",
    )
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    let mut partitions: Vec<Partition> = rows
        .into_iter()
        .map(|(name, bound)| parse_bound(&bound).map(|bounds| Partition { bounds, name }))
        .collect::<Result<_, _>>()
        .map_err(sqlx::Error::Protocol)?;
    partitions.sort_by_key(|p| (p.is_default(), p.bounds));
    Ok(partitions)
}

/// `FOR VALUES FROM ('…') TO ('…')` or `DEFAULT`, as `pg_get_expr` prints a partition bound under UTC/ISO.
fn parse_bound(text: &str) -> Result<Option<RangeBound>, String> {
    if text == "DEFAULT" {
        return Ok(None);
    }
    let side = |part: &str| -> Result<Option<DateTime<Utc>>, String> {
        let value = part.trim().trim_start_matches('(').trim_end_matches(')');
        if value == "MINVALUE" || value == "MAXVALUE" {
            return Ok(None);
        }
        let value = value.trim_matches('\'');
        DateTime::parse_from_str(&format!("{value}00"), "%Y-%m-%d %H:%M:%S%.f%z")
            .or_else(|_| DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%:z"))
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| format!("unreadable partition bound `{text}`: {e}"))
    };
    let rest = text.strip_prefix("FOR VALUES FROM ").ok_or_else(|| format!("not a range bound: `{text}`"))?;
    let (from, to) = rest.split_once(" TO ").ok_or_else(|| format!("not a range bound: `{text}`"))?;
    Ok(Some((side(from)?, side(to)?)))
}

/// DDL names partitions, which no bind parameter can: the names are constants or read from the catalog (and
/// quoted), the bounds are timestamps this module formats.
fn audited(sql: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql)
}

/// `name` as an SQL identifier, quoted.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the DEFAULT partition when it is missing (someone dropped it); `true` when it did.
pub async fn ensure_default(conn: &mut PgConnection, existing: &[Partition]) -> Result<bool, sqlx::Error> {
    if existing.iter().any(Partition::is_default) {
        return Ok(false);
    }
    sqlx::query(audited(format!("CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT")))
        .persistent(false)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Creates the partition of `bounds`, moving into it the rows of its range that `default` (the DEFAULT
/// partition's name) holds; returns how many it moved.
pub async fn create(conn: &mut PgConnection, bounds: Bounds, default: Option<&str>) -> Result<u64, sqlx::Error> {
    let name = bounds.partition_name();
    let range = format!("FROM ('{}') TO ('{}')", bounds.from.to_rfc3339(), bounds.to.to_rfc3339());
    let held = match default {
        Some(default) => sqlx::query_scalar::<_, bool>(audited(format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE occurred_at >= $1 AND occurred_at < $2)",
            quoted(default)
        )))
        .persistent(false)
        .bind(bounds.from)
        .bind(bounds.to)
        .fetch_one(&mut *conn)
        .await?
        .then_some(default),
        None => None,
    };
    let Some(default) = held else {
        sqlx::query(audited(format!("CREATE TABLE {} PARTITION OF {TABLE} FOR VALUES {range}", quoted(&name))))
            .persistent(false)
            .execute(&mut *conn)
            .await?;
        return Ok(0);
    };
    // Filled as a table of its own, then attached: the rows leave the DEFAULT partition in the same transaction.
    sqlx::query(audited(format!(
        "CREATE TABLE {} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        quoted(&name)
    )))
    .persistent(false)
    .execute(&mut *conn)
    .await?;
    let moved = sqlx::query(audited(format!(
        "WITH moved AS (DELETE FROM {} WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *) \
         INSERT INTO {} SELECT * FROM moved",
        quoted(default),
        quoted(&name)
    )))
    .persistent(false)
    .bind(bounds.from)
    .bind(bounds.to)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query(audited(format!("ALTER TABLE {TABLE} ATTACH PARTITION {} FOR VALUES {range}", quoted(&name))))
        .persistent(false)
        .execute(&mut *conn)
        .await?;
    Ok(moved)
}

/// Drops a partition with its rows: retention never deletes provenance row by row.
pub async fn drop(conn: &mut PgConnection, partition: &Partition) -> Result<(), sqlx::Error> {
    sqlx::query(audited(format!("DROP TABLE {}", quoted(&partition.name)))).persistent(false).execute(conn).await?;
    Ok(())
}

/// The event times (slot starts at `granularity`) of rows the DEFAULT partition holds at or after `since`: the
/// partitions those rows wait for.
pub async fn default_slots(
    conn: &mut PgConnection,
    default: &str,
    granularity: Granularity,
    since: DateTime<Utc>,
) -> Result<Vec<Bounds>, sqlx::Error> {
    let unit = match granularity {
        Granularity::Hourly => "hour",
        Granularity::Daily => "day",
        Granularity::Weekly => "week",
    };
    let starts: Vec<DateTime<Utc>> = sqlx::query_scalar(audited(format!(
        "SELECT DISTINCT date_trunc('{unit}', occurred_at, 'UTC') FROM {} WHERE occurred_at >= $1",
        quoted(default)
    )))
    .persistent(false)
    .bind(since)
    .fetch_all(conn)
    .await?;
    Ok(starts.into_iter().map(|from| Bounds { from, to: from + granularity.step() }).collect())
}

/// Deletes the DEFAULT partition's rows older than `cutoff` (events that arrived after their retention had
/// already ended, so no partition was there for them); returns the count.
pub async fn expire_default(conn: &mut PgConnection, default: &str, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(audited(format!("DELETE FROM {} WHERE occurred_at < $1", quoted(default))))
        .persistent(false)
        .bind(cutoff)
        .execute(conn)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests;
