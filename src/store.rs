//! PostgreSQL: the connection pool, the schema migrations in `migrations/`, and one module of repository
//! functions per table group. Repository functions take `&mut PgConnection` (the caller's transaction); the caller
//! owns the transaction boundary.
//!
//! Whatever needs a session of its own (leader locks, the migrator's lock) connects to
//! [`DatabaseConfig::leader_url`], so the pool alone may go through a pooler (see the README on PgBouncer).
//!
//! So that the pool works through a transaction-mode pooler that tracks no prepared statements (PgBouncer before
//! 1.21, Debian 12's 1.18), every statement is unnamed (`.persistent(false)`: sqlx names a persistent statement
//! even with its cache off, and two clients' names collide on a shared server connection) and runs inside an
//! explicit transaction (an unnamed statement takes two round trips, and only a transaction keeps both on one
//! server connection). `tests/faults/pgbouncer.rs` checks both over `src/`; the cost on a direct connection is
//! measured in `docs/RELIABILITY.md`.

pub mod alerts;
pub mod backlog;
pub mod breaker;
pub mod buckets;
pub mod canary;
mod config;
pub mod divergence;
pub mod offsets;
pub mod outbox;
pub mod partitions;
pub mod provenance;
pub mod retention;
pub mod tls;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

pub(crate) use config::parse_url;
pub use config::{DatabaseConfig, redact};

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Applies every migration not yet applied; returns how many were applied now. The pool must reach PostgreSQL
/// directly (the migrator's lock is session-level); behind a pooler use [`DatabaseConfig::migrate_directly`].
pub async fn migrate(pool: &PgPool) -> anyhow::Result<usize> {
    migrate_on(&mut *pool.acquire().await?).await
}

/// [`migrate`] on one connection, which must reach PostgreSQL directly (the migrator's lock is session-level).
pub async fn migrate_on(conn: &mut PgConnection) -> anyhow::Result<usize> {
    let before = applied(conn).await?;
    MIGRATOR.run(&mut *conn).await.context("cannot apply the schema migrations")?;
    Ok(applied(conn).await? - before)
}

/// Checks, changing nothing, that every migration of this binary is applied (for `run --no-migrate`, whose role may
/// lack DDL rights); the error names the first missing migration and the deploy step that applies it.
pub async fn require_current_schema(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
    let applied: Vec<(i64, Vec<u8>)> = if exists {
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    for migration in MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()) {
        match applied.iter().find(|(version, _)| *version == migration.version) {
            None => anyhow::bail!(
                "the database schema is not current (--no-migrate): migration {} ({}) is not applied; run \
                 `costsim-breaker migrate` with a role that may change the schema, then start again",
                migration.version,
                migration.description
            ),
            Some((_, checksum)) if checksum.as_slice() != &*migration.checksum => anyhow::bail!(
                "migration {} ({}) was applied from a different file than this binary holds; the schema does not \
                 match this version of costsim-breaker",
                migration.version,
                migration.description
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

async fn applied(conn: &mut PgConnection) -> anyhow::Result<usize> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n as usize)
}
