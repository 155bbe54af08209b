//! How to reach PostgreSQL: the pool's URL and the leader's, each from its variable or from the file its `_FILE`
//! variable names, with libpq's TLS settings in the URL (see [`super::tls`]); never shown with a password.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};

use super::migrate_on;
use super::tls::TlsSettings;

/// How to reach PostgreSQL. Each URL comes from its variable or from the file its `_FILE` variable names (one of
/// the two); TLS is set in the URL as for libpq (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`: see [`super::tls`]).
#[derive(Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL; TLS as in libpq: sslmode, sslrootcert, sslcert, sslkey (see the README).
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    url: Option<String>,
    /// File holding the PostgreSQL connection URL (read at start; a trailing newline is ignored), instead of
    /// DATABASE_URL.
    #[arg(long = "database-url-file", env = "DATABASE_URL_FILE", value_name = "PATH",
        value_parser = UrlFile::database_url)]
    url_file: Option<UrlFile>,
    /// Largest number of pooled connections [default: for `run`, one per partition of the results topic plus one
    /// per job (see the README); for other commands, 8]. Connections open only when needed.
    #[arg(long = "db-pool-size", env = "COSTSIM_DB_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: Option<u32>,
    /// Milliseconds a statement of a pooled session may run before PostgreSQL cancels it (`statement_timeout`;
    /// 0 leaves the server's setting). A cancelled batch is retried.
    #[arg(long = "db-statement-timeout-ms", env = "COSTSIM_DB_STATEMENT_TIMEOUT_MS", default_value_t = 60_000)]
    pub statement_timeout_ms: u64,
    /// Milliseconds a pooled session waits for a lock before its statement fails (`lock_timeout`; 0 leaves the
    /// server's setting), so a stuck holder or a queued DROP cannot hold up batches for ever.
    #[arg(long = "db-lock-timeout-ms", env = "COSTSIM_DB_LOCK_TIMEOUT_MS", default_value_t = 10_000)]
    pub lock_timeout_ms: u64,
    /// Milliseconds a pooled session may sit idle inside a transaction before PostgreSQL ends it
    /// (`idle_in_transaction_session_timeout`; 0 leaves the server's setting), releasing its locks.
    #[arg(
        long = "db-idle-in-transaction-timeout-ms",
        env = "COSTSIM_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub idle_in_transaction_timeout_ms: u64,
    /// Direct PostgreSQL URL for leader locks and migrations, which hold session-level advisory locks; set it when
    /// DATABASE_URL points at a pooler in transaction mode (PgBouncer). Default: DATABASE_URL.
    #[arg(long = "leader-database-url", env = "COSTSIM_LEADER_DATABASE_URL", hide_env_values = true)]
    leader_url: Option<String>,
    /// File holding the leader's PostgreSQL URL (read at start; a trailing newline is ignored), instead of
    /// COSTSIM_LEADER_DATABASE_URL.
    #[arg(long = "leader-database-url-file", env = "COSTSIM_LEADER_DATABASE_URL_FILE", value_name = "PATH",
        value_parser = UrlFile::leader_url)]
    leader_url_file: Option<UrlFile>,
}

// The URL may carry a password, so Debug shows only where it points.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("url_file", &self.url_file)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("idle_in_transaction_timeout_ms", &self.idle_in_transaction_timeout_ms)
            .field("leader_url", &self.leader_url.as_deref().map(redact))
            .field("leader_url_file", &self.leader_url_file)
            .finish()
    }
}

/// The pool size of commands other than `run`.
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// Connections `run` needs beside its batches (at most one per partition at a time): the judging pass and a
/// partition registration, the relay, the alert drainer, the canary, storage maintenance, the timers and the
/// metrics refresher (one each), and two for the HTTP handlers and the health probe.
pub const RUN_JOB_CONNECTIONS: u32 = 10;

/// A URL setting, by its environment variable and flag.
#[derive(Clone, Copy)]
struct Setting {
    env: &'static str,
    flag: &'static str,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (--{})", self.env, self.flag)
    }
}

const DATABASE_URL: Setting = Setting { env: "DATABASE_URL", flag: "database-url" };
const DATABASE_URL_FILE: Setting = Setting { env: "DATABASE_URL_FILE", flag: "database-url-file" };
const LEADER_URL: Setting = Setting { env: "COSTSIM_LEADER_DATABASE_URL", flag: "leader-database-url" };
const LEADER_URL_FILE: Setting = Setting { env: "COSTSIM_LEADER_DATABASE_URL_FILE", flag: "leader-database-url-file" };

/// A URL read from a file when the command line was parsed, with the file's path for errors.
#[derive(Clone)]
struct UrlFile {
    path: PathBuf,
    url: String,
}

// The path is no secret, the URL may be.
impl std::fmt::Debug for UrlFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlFile").field("path", &self.path).field("url", &redact(&self.url)).finish()
    }
}

impl UrlFile {
    fn database_url(path: &str) -> Result<UrlFile, String> {
        UrlFile::read(path, DATABASE_URL_FILE)
    }

    fn leader_url(path: &str) -> Result<UrlFile, String> {
        UrlFile::read(path, LEADER_URL_FILE)
    }

    /// Reads the file's one line; the error names the setting and the path, never the content.
    fn read(path: &str, setting: Setting) -> Result<UrlFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {} {path}: {e}", setting.env))?;
        let url = text.trim_end();
        if url.is_empty() {
            return Err(format!("{} {path} is empty", setting.env));
        }
        if url.contains('\n') {
            return Err(format!("{} {path} holds more than one line; it must hold the URL alone", setting.env));
        }
        Ok(UrlFile { path: path.into(), url: url.to_owned() })
    }
}

/// The URL of a setting pair (the variable or its file, not both) and how errors name where it came from.
fn one_of(
    value: Option<&String>,
    file: Option<&UrlFile>,
    value_setting: Setting,
    file_setting: Setting,
) -> anyhow::Result<Option<(String, String)>> {
    match (value, file) {
        (Some(_), Some(_)) => anyhow::bail!("{value_setting} and {file_setting} are both set: set one of them"),
        (Some(url), None) => Ok(Some((url.clone(), value_setting.to_string()))),
        (None, Some(file)) => {
            Ok(Some((file.url.clone(), format!("the URL in {file_setting} {}", file.path.display()))))
        }
        (None, None) => Ok(None),
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // sqlx also reads a password from the query.
            if parsed.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" { "***".to_owned() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable database URL>".to_owned(),
    }
}

impl DatabaseConfig {
    /// The pool's URL and the setting it came from.
    fn pool_source(&self) -> anyhow::Result<(String, String)> {
        one_of(self.url.as_ref(), self.url_file.as_ref(), DATABASE_URL, DATABASE_URL_FILE)?
            .with_context(|| format!("{DATABASE_URL} or {DATABASE_URL_FILE} is required"))
    }

    /// The leader's URL (the pool's by default) and the setting it came from.
    fn leader_source(&self) -> anyhow::Result<(String, String)> {
        match one_of(self.leader_url.as_ref(), self.leader_url_file.as_ref(), LEADER_URL, LEADER_URL_FILE)? {
            Some(source) => Ok(source),
            None => self.pool_source(),
        }
    }

    /// The pool's URL, from DATABASE_URL or the file DATABASE_URL_FILE names; show it with [`redact`].
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(self.pool_source()?.0)
    }

    /// Opens a pool of [`Self::pool_size`] connections (8 unless set), failing fast when the database cannot be
    /// reached.
    pub async fn connect(&self) -> anyhow::Result<PgPool> {
        self.connect_sized(self.pool_size.unwrap_or(DEFAULT_POOL_SIZE)).await
    }

    /// Opens `run`'s pool: [`Self::pool_size`] if set, else room for a batch of each of `partitions` at once
    /// beside every job (see [`RUN_JOB_CONNECTIONS`]). A size set below that is used, with a warning.
    pub async fn connect_for_partitions(&self, partitions: usize) -> anyhow::Result<PgPool> {
        let needed = u32::try_from(partitions).unwrap_or(u32::MAX).saturating_add(RUN_JOB_CONNECTIONS);
        let size = match self.pool_size {
            Some(size) if size < needed => {
                tracing::warn!(
                    pool_size = size,
                    partitions,
                    needed,
                    "COSTSIM_DB_POOL_SIZE is below one connection per partition plus one per job: batches and jobs \
                     will wait for connections."
                );
                size
            }
            Some(size) => size,
            None => needed,
        };
        tracing::info!(pool_size = size, partitions, "Opening the PostgreSQL pool.");
        self.connect_sized(size).await
    }

    /// The session settings every pooled connection starts with, as PostgreSQL parameters (0: not sent).
    pub fn session_settings(&self) -> Vec<(&'static str, String)> {
        [
            ("statement_timeout", self.statement_timeout_ms),
            ("lock_timeout", self.lock_timeout_ms),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout_ms),
        ]
        .into_iter()
        .filter(|(_, ms)| *ms > 0)
        .map(|(name, ms)| (name, format!("{ms}ms")))
        .collect()
    }

    async fn connect_sized(&self, size: u32) -> anyhow::Result<PgPool> {
        let (url, setting) = self.pool_source()?;
        let (options, tls) = parse_url(&url, &setting)?;
        // Named so that operators find the pool's sessions in pg_stat_activity (and pg_stat_ssl), unless the URL
        // names them itself.
        let options = match options.get_application_name() {
            Some(_) => options,
            None => options.application_name("costsim-breaker"),
        };
        // Startup parameters rather than SET, so they hold from the first statement and survive no RESET.
        let options = options.options(self.session_settings());
        PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| connect_error(e, &tls))
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&url)))
    }

    /// The URL of dedicated connections that hold session state (advisory locks): the leader URL, else the pool's.
    pub fn leader_url(&self) -> anyhow::Result<String> {
        Ok(self.leader_source()?.0)
    }

    /// The options of dedicated (leader, migration) connections, or why the URL is refused, naming its setting.
    pub fn leader_options(&self) -> anyhow::Result<PgConnectOptions> {
        let (url, setting) = self.leader_source()?;
        Ok(parse_url(&url, &setting)?.0)
    }

    /// Applies the migrations over a dedicated connection to [`Self::leader_url`]: the migrator holds a
    /// session-level advisory lock, which a transaction-mode pooler would hand to another client.
    pub async fn migrate_directly(&self) -> anyhow::Result<usize> {
        let (url, setting) = self.leader_source()?;
        let (options, tls) = parse_url(&url, &setting)?;
        let mut conn = options
            .connect()
            .await
            .map_err(|e| connect_error(e, &tls))
            .with_context(|| format!("cannot connect to PostgreSQL at {} to migrate", redact(&url)))?;
        let applied = migrate_on(&mut conn).await;
        let _ = conn.close().await;
        applied
    }
}

/// Parses a PostgreSQL URL and its TLS settings (libpq's, see [`super::tls`]); the error names `setting` and never
/// shows the password.
pub(crate) fn parse_url(url: &str, setting: &str) -> anyhow::Result<(PgConnectOptions, TlsSettings)> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("{setting} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        anyhow::bail!("{setting} must be a postgres:// or postgresql:// URL, not {}://", parsed.scheme());
    }
    // Before sqlx parses it: sqlx logs the parameters it does not know, with their values.
    let tls =
        TlsSettings::read(&parsed, &|name| std::env::var(name).ok()).map_err(|e| anyhow::anyhow!("{setting}: {e}"))?;
    let options: PgConnectOptions =
        url.parse().with_context(|| format!("{setting} is not a valid PostgreSQL URL: {}", redact(url)))?;
    Ok((tls.apply(options), tls))
}

/// A failed connection's error, with what TLS was asked for when TLS is what failed.
fn connect_error(err: sqlx::Error, tls: &TlsSettings) -> anyhow::Error {
    match tls.failure(&err) {
        Some(failure) => anyhow::Error::new(err).context(failure),
        None => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: Option<&str>, leader: Option<&str>) -> DatabaseConfig {
        DatabaseConfig {
            url: url.map(Into::into),
            url_file: None,
            pool_size: Some(1),
            statement_timeout_ms: 60_000,
            lock_timeout_ms: 0,
            idle_in_transaction_timeout_ms: 1,
            leader_url: leader.map(Into::into),
            leader_url_file: None,
        }
    }

    fn file_of(url: &str) -> UrlFile {
        UrlFile { path: "/run/secrets/db".into(), url: url.into() }
    }

    #[test]
    fn session_settings_are_sent_in_milliseconds_and_zero_leaves_the_server_setting() {
        let settings = config(Some("postgres://localhost/db"), None).session_settings();
        assert_eq!(
            settings,
            [("statement_timeout", "60000ms".to_owned()), ("idle_in_transaction_session_timeout", "1ms".to_owned())]
        );
    }

    #[test]
    fn a_bad_database_url_is_refused_naming_its_setting_and_not_its_password() {
        let err = config(Some("not a url"), None).leader_options().unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        let err = config(Some("postgres://db/x"), Some("mysql://app:s3cret@db/x")).leader_options().unwrap_err();
        let err = err.to_string();
        assert!(err.contains("COSTSIM_LEADER_DATABASE_URL") && !err.contains("s3cret"), "{err}");
        let err = config(Some("postgres://db/x?sslmode=sometimes"), None).leader_options().unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("DATABASE_URL (--database-url): sslmode=sometimes is unknown"), "{err}");
        let err = config(Some("postgres://app:s3cret@db/x?sslmode=allow"), None).leader_options().unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("DATABASE_URL (--database-url): sslmode=allow is not supported"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(config(Some("postgres://db/x"), None).leader_options().is_ok());
    }

    #[test]
    fn a_password_never_reaches_the_debug_output() {
        let mut config = config(
            Some("postgres://app:s3cret@pgbouncer:6432/costsim"),
            Some("postgres://app:t0psecret@db:5432/costsim"),
        );
        config.url_file = Some(file_of("postgres://app:f1lesecret@db/costsim"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("t0psecret") && !shown.contains("f1lesecret"), "{shown}");
        assert!(shown.contains("postgres://app:***@pgbouncer:6432/costsim"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/costsim"), "{shown}");
        assert!(shown.contains("/run/secrets/db"), "{shown}");
    }

    #[test]
    fn a_password_in_the_query_is_redacted_too() {
        let shown = redact("postgres://app@db/x?sslmode=require&password=s3cret");
        assert_eq!(shown, "postgres://app@db/x?sslmode=require&password=***");
    }

    #[test]
    fn the_url_comes_from_its_variable_or_its_file_never_both() {
        let mut from_file = config(None, None);
        from_file.url_file = Some(file_of("postgres://db/from-file"));
        assert_eq!(from_file.url().unwrap(), "postgres://db/from-file");
        assert_eq!(from_file.leader_url().unwrap(), "postgres://db/from-file", "the leader defaults to the pool's");
        assert!(from_file.leader_options().is_ok());

        let mut both = config(Some("postgres://db/x"), None);
        both.url_file = Some(file_of("postgres://db/y"));
        let err = both.url().unwrap_err().to_string();
        assert_eq!(
            err,
            "DATABASE_URL (--database-url) and DATABASE_URL_FILE (--database-url-file) are both set: set one of them"
        );
        let mut both = config(Some("postgres://db/x"), Some("postgres://db/l"));
        both.leader_url_file = Some(file_of("postgres://db/l2"));
        let err = both.leader_url().unwrap_err().to_string();
        assert!(err.contains("COSTSIM_LEADER_DATABASE_URL (--leader-database-url) and"), "{err}");
        assert!(err.contains("COSTSIM_LEADER_DATABASE_URL_FILE (--leader-database-url-file) are both set"), "{err}");

        let err = config(None, None).url().unwrap_err().to_string();
        assert_eq!(err, "DATABASE_URL (--database-url) or DATABASE_URL_FILE (--database-url-file) is required");
    }

    #[test]
    fn a_bad_url_in_a_file_is_refused_naming_the_file_not_its_content() {
        let mut config = config(None, None);
        config.url_file = Some(file_of("mysql://app:s3cret@db/x"));
        let err = format!("{:#}", config.leader_options().unwrap_err());
        assert!(err.contains("the URL in DATABASE_URL_FILE (--database-url-file) /run/secrets/db"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn a_url_file_is_read_as_its_one_line() {
        let path = std::env::temp_dir().join(format!("costsim-url-{}", uuid::Uuid::new_v4()));
        let path_str = path.to_str().unwrap().to_owned();
        std::fs::write(&path, "postgres://app:s3cret@db/x\n").unwrap();
        assert_eq!(UrlFile::database_url(&path_str).unwrap().url, "postgres://app:s3cret@db/x");
        std::fs::write(&path, "postgres://app:s3cret@db/x\npostgres://other\n").unwrap();
        let err = UrlFile::leader_url(&path_str).unwrap_err();
        assert!(err.starts_with(&format!("COSTSIM_LEADER_DATABASE_URL_FILE {path_str} holds more than one")), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(UrlFile::database_url(&path_str).unwrap_err(), format!("DATABASE_URL_FILE {path_str} is empty"));
        std::fs::remove_file(&path).unwrap();
        let err = UrlFile::database_url(&path_str).unwrap_err();
        assert!(err.starts_with(&format!("cannot read DATABASE_URL_FILE {path_str}: ")), "{err}");
    }
}
