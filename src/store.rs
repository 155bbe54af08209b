//! PostgreSQL: the connection pool, the schema migrations in `migrations/`, and one module of repository
//! functions per table group. Repository functions take `&mut PgConnection` (the caller's transaction); the caller
//! owns the transaction boundary.

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
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// How to reach PostgreSQL.
#[derive(Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub url: String,
    /// Largest number of pooled connections.
    #[arg(long = "db-pool-size", env = "COSTSIM_DB_POOL_SIZE", default_value_t = 8)]
    pub pool_size: u32,
}

// The URL may carry a password, so Debug shows only where it points.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig").field("url", &redact(&self.url)).field("pool_size", &self.pool_size).finish()
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
        PgPoolOptions::new()
            .max_connections(self.pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&self.url)))
    }
}

/// Applies every migration not yet applied; returns how many were applied now.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<usize> {
    let before = applied(pool).await?;
    MIGRATOR.run(pool).await.context("cannot apply the schema migrations")?;
    Ok(applied(pool).await? - before)
}

async fn applied(pool: &PgPool) -> anyhow::Result<usize> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_the_debug_output() {
        let config = DatabaseConfig { url: "postgres://app:s3cret@db:5432/costsim".into(), pool_size: 1 };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/costsim"), "{shown}");
    }
}
