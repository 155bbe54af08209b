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
pub mod divergence;
pub mod offsets;
pub mod outbox;
pub mod provenance;

use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, PgPool};

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// How to reach PostgreSQL.
#[derive(Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub url: String,
    /// Largest number of pooled connections.
    #[arg(long = "db-pool-size", env = "COSTSIM_DB_POOL_SIZE", default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: u32,
    /// Direct PostgreSQL URL for leader locks and migrations, which hold session-level advisory locks; set it when
    /// DATABASE_URL points at a pooler in transaction mode (PgBouncer). Default: DATABASE_URL.
    #[arg(long = "leader-database-url", env = "COSTSIM_LEADER_DATABASE_URL", hide_env_values = true)]
    pub leader_url: Option<String>,
}

// The URL may carry a password, so Debug shows only where it points.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("leader_url", &self.leader_url.as_deref().map(redact))
            .finish()
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable database URL>".to_owned(),
    }
}

impl DatabaseConfig {
    /// Opens a pool, failing fast when the database cannot be reached.
    pub async fn connect(&self) -> anyhow::Result<PgPool> {
        let options = parse_url(&self.url, "DATABASE_URL (--database-url)")?;
        PgPoolOptions::new()
            .max_connections(self.pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&self.url)))
    }

    /// The URL of dedicated connections that hold session state (advisory locks): the leader URL, else the pool's.
    pub fn leader_url(&self) -> &str {
        self.leader_url.as_deref().unwrap_or(&self.url)
    }

    /// The options of dedicated (leader, migration) connections, or why the URL is refused, naming its setting.
    pub fn leader_options(&self) -> anyhow::Result<PgConnectOptions> {
        match &self.leader_url {
            Some(url) => parse_url(url, "COSTSIM_LEADER_DATABASE_URL (--leader-database-url)"),
            None => parse_url(&self.url, "DATABASE_URL (--database-url)"),
        }
    }

    /// Applies the migrations over a dedicated connection to [`Self::leader_url`]: the migrator holds a
    /// session-level advisory lock, which a transaction-mode pooler would hand to another client.
    pub async fn migrate_directly(&self) -> anyhow::Result<usize> {
        let url = self.leader_url();
        let mut conn = self
            .leader_options()?
            .connect()
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {} to migrate", redact(url)))?;
        let applied = migrate_on(&mut conn).await;
        let _ = conn.close().await;
        applied
    }
}

/// Parses a PostgreSQL URL; the error names `setting` and never shows the password.
fn parse_url(url: &str, setting: &str) -> anyhow::Result<PgConnectOptions> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("{setting} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        anyhow::bail!("{setting} must be a postgres:// or postgresql:// URL, not {}://", parsed.scheme());
    }
    url.parse().with_context(|| format!("{setting} is not a valid PostgreSQL URL: {}", redact(url)))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_database_url_is_refused_naming_its_setting_and_not_its_password() {
        let config = |url: &str, leader: Option<&str>| DatabaseConfig {
            url: url.into(),
            pool_size: 1,
            leader_url: leader.map(Into::into),
        };
        let err = config("not a url", None).leader_options().unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        let err = config("postgres://db/x", Some("mysql://app:s3cret@db/x")).leader_options().unwrap_err().to_string();
        assert!(err.contains("COSTSIM_LEADER_DATABASE_URL") && !err.contains("s3cret"), "{err}");
        let err = config("postgres://db/x?sslmode=sometimes", None).leader_options().unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("DATABASE_URL") && err.contains("sslmode"), "{err}");
        assert!(config("postgres://db/x", None).leader_options().is_ok());
    }

    #[test]
    fn a_password_never_reaches_the_debug_output() {
        let config = DatabaseConfig {
            url: "postgres://app:s3cret@pgbouncer:6432/costsim".into(),
            pool_size: 1,
            leader_url: Some("postgres://app:t0psecret@db:5432/costsim".into()),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("t0psecret"), "{shown}");
        assert!(shown.contains("postgres://app:***@pgbouncer:6432/costsim"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/costsim"), "{shown}");
    }
}
