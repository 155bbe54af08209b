//! Disabling and enabling a breaker by hand, as `breaker disable|enable` and the HTTP API do it: lock the row,
//! decide with the pure core ([`manual_disable`], [`manual_enable`]), write the decision with [`apply`], commit.
//! Repeating the same disable and enabling a closed breaker change nothing and say so.

use chrono::Utc;
use sqlx::{PgConnection, PgPool};

use super::{ApplySettings, BreakerRow, apply, get, list, lock};
use crate::breaker::{manual_disable, manual_enable};
use crate::event::BreakerState;

/// What a manual disable or enable did.
#[derive(Debug, Clone)]
pub struct Manual {
    /// The row as it was locked, before the decision.
    pub before: BreakerRow,
    /// The row after the decision (the same as `before` when nothing changed).
    pub after: BreakerRow,
    /// Whether anything was written.
    pub changed: bool,
}

/// Why a manual disable or enable failed.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// No breaker has this name.
    #[error("no breaker named `{name}`; known breakers: {}", known.join(", "))]
    NoBreaker {
        /// The name asked for.
        name: String,
        /// The breakers that exist.
        known: Vec<String>,
    },
    /// A query failed.
    #[error("cannot {action} {name}: {source}")]
    Database {
        /// `disable` or `enable`.
        action: &'static str,
        /// The breaker.
        name: String,
        /// The failure.
        source: sqlx::Error,
    },
}

/// Opens the breaker for `ttl_seconds` (0: latched until an enable), recording `actor`; the same disable as the
/// one in force (open, same reason, same mode and TTL) changes nothing.
pub async fn disable(
    pool: &PgPool,
    name: &str,
    reason: &str,
    ttl_seconds: u64,
    actor: &str,
    settings: &ApplySettings,
) -> Result<Manual, ManualError> {
    let db = |source| ManualError::Database { action: "disable", name: name.to_owned(), source };
    let mut tx = pool.begin().await.map_err(db)?;
    let before = locked(&mut tx, name).await.map_err(|e| e.or(db))?;
    if is_same_disable(&before, reason, ttl_seconds) {
        return Ok(Manual { after: before.clone(), before, changed: false });
    }
    let now = Utc::now();
    let decision = manual_disable(&before.record, reason, ttl_seconds, now);
    apply(&mut tx, &before, &decision, actor, settings, now, None).await.map_err(db)?;
    let after = get(&mut tx, name).await.map_err(db)?.unwrap_or_else(|| before.clone());
    tx.commit().await.map_err(db)?;
    Ok(Manual { before, after, changed: true })
}

/// Closes the breaker, resolving its incident with `reason` as the notes and `actor` as `resolved_by`; a closed
/// breaker changes nothing.
pub async fn enable(
    pool: &PgPool,
    name: &str,
    reason: &str,
    actor: &str,
    settings: &ApplySettings,
) -> Result<Manual, ManualError> {
    let db = |source| ManualError::Database { action: "enable", name: name.to_owned(), source };
    let mut tx = pool.begin().await.map_err(db)?;
    let before = locked(&mut tx, name).await.map_err(|e| e.or(db))?;
    if before.record.state == BreakerState::Closed {
        return Ok(Manual { after: before.clone(), before, changed: false });
    }
    let now = Utc::now();
    let decision = manual_enable(&before.record, reason);
    apply(&mut tx, &before, &decision, actor, settings, now, None).await.map_err(db)?;
    let after = get(&mut tx, name).await.map_err(db)?.unwrap_or_else(|| before.clone());
    tx.commit().await.map_err(db)?;
    Ok(Manual { before, after, changed: true })
}

/// A lookup failure: either the breaker is missing or a query failed.
enum Locked {
    Missing(ManualError),
    Query(sqlx::Error),
}

impl Locked {
    fn or(self, db: impl FnOnce(sqlx::Error) -> ManualError) -> ManualError {
        match self {
            Locked::Missing(err) => err,
            Locked::Query(err) => db(err),
        }
    }
}

/// The breaker row, locked for this transaction, or an error naming the breakers that exist.
async fn locked(tx: &mut PgConnection, name: &str) -> Result<BreakerRow, Locked> {
    if let Some(row) = lock(tx, name).await.map_err(Locked::Query)? {
        return Ok(row);
    }
    let known = list(tx).await.map_err(Locked::Query)?.into_iter().map(|row| row.name).collect();
    Err(Locked::Missing(ManualError::NoBreaker { name: name.to_owned(), known }))
}

/// Whether a disable would repeat what is in force: open, for the same reason, latched or with the same TTL.
pub fn is_same_disable(row: &BreakerRow, reason: &str, ttl_seconds: u64) -> bool {
    row.record.state == BreakerState::Open
        && row.disabled_reason.as_deref() == Some(reason)
        && row.record.ttl_seconds == ttl_seconds
        && row.record.disabled_until.is_none() == (ttl_seconds == 0)
}
