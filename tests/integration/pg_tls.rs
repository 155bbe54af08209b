//! PostgreSQL over TLS with libpq's settings, against private clusters (see [`cluster`]) with certificates the
//! `openssl` command line made: what each `sslmode` connects to and refuses, with which error, client
//! certificates, and the URL read from DATABASE_URL_FILE. What a user checks, the tests check: the commands'
//! exit status and messages, and `pg_stat_ssl` for the sessions of a running processor.

mod cluster;

use std::process::Output;
use std::time::Duration;

use clap::Parser as _;
use costsim_breaker::store::DatabaseConfig;
use sqlx::PgPool;

use crate::helpers::{DEADLINE, TempPath, command, fresh_kafka};
use cluster::{CERT_USER, Cluster, Pki, Ssl};

/// The `costsim-breaker` binary with no database or TLS setting of the caller's environment.
fn costsim() -> tokio::process::Command {
    let mut cmd = command(&fresh_kafka());
    for var in [
        "DATABASE_URL",
        "DATABASE_URL_FILE",
        "COSTSIM_LEADER_DATABASE_URL_FILE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGAPPNAME",
        // rustls' system CAs: a test that wants them sets them.
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `costsim-breaker migrate` against `url`.
async fn migrate(url: &str) -> Output {
    costsim().arg("migrate").env("DATABASE_URL", url).output().await.unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", stderr(out));
}

/// The command failed, with an error that says each of `expected`.
#[track_caller]
fn assert_refused(out: &Output, what: &str, expected: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    for part in expected {
        assert!(err.contains(part), "{what}: the error does not say {part:?}: {err}");
    }
}

/// A pool of the library's own configuration (as every command makes it) for `url`.
async fn connect(url: &str) -> PgPool {
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        database: DatabaseConfig,
    }
    let args = Args::try_parse_from(["test", "--database-url", url, "--db-pool-size", "1"]).unwrap();
    args.database.connect().await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Whether the pool's session is encrypted, as `pg_stat_ssl` shows it.
async fn encrypted(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(pool).await.unwrap()
}

/// One client session of a cluster, as an operator would list them.
#[derive(Debug, sqlx::FromRow)]
struct Session {
    application_name: String,
    ssl: bool,
    version: Option<String>,
}

/// Every client session but the caller's: who, and whether TLS protects it.
async fn sessions(admin: &PgPool) -> Vec<Session> {
    sqlx::query_as(
        "SELECT a.application_name, s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn with_verify_full_and_the_test_ca_the_commands_work_and_every_session_of_run_is_encrypted() {
    let pki = Pki::new();
    let cluster = Cluster::start(&pki, Ssl::On);
    let ca = pki.ca_cert();
    let url = cluster.url("localhost", "postgres", &[("sslmode", "verify-full"), ("sslrootcert", &ca)]);

    let out = migrate(&url).await;
    assert_ok(&out, "migrate");
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = costsim().args(["breaker", "status", "--json"]).env("DATABASE_URL", &url).output().await.unwrap();
    assert_ok(&out, "breaker status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(status[0]["name"], "costsim_v2", "{status}");

    // The processor reads both URLs from files; the leader's names the server by its IP address (in the
    // certificate too).
    let (url_file, leader_file) = (TempPath::new(".url"), TempPath::new(".url"));
    std::fs::write(&url_file.0, format!("{url}\n")).unwrap();
    let leader = cluster.url("127.0.0.1", "postgres", &[("sslmode", "verify-full"), ("sslrootcert", &ca)]);
    std::fs::write(&leader_file.0, format!("{leader}\n")).unwrap();
    let mut run = costsim()
        .args(["run", "--alerts", "off"])
        .env("DATABASE_URL_FILE", &url_file.0)
        .env("COSTSIM_LEADER_DATABASE_URL_FILE", &leader_file.0)
        .env("COSTSIM_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();

    // What an operator checks: every session the processor holds, the pool's and each leader job's, is TLS.
    let admin = cluster.admin().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let seen = loop {
        let seen = sessions(&admin).await;
        let pool = seen.iter().any(|s| s.application_name == "costsim-breaker");
        let leaders = seen.iter().any(|s| s.application_name.starts_with("costsim-breaker leader "));
        if pool && leaders {
            break seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "the processor's sessions within {DEADLINE:?}: {seen:?}");
        assert!(run.try_wait().unwrap().is_none(), "run exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seen.iter().all(|s| s.ssl && s.version.as_deref() == Some("TLSv1.3")), "{seen:?}");
    let locks_encrypted: Option<bool> = sqlx::query_scalar(
        "SELECT bool_and(s.ssl) FROM pg_locks l JOIN pg_stat_ssl s USING (pid) \
         WHERE l.locktype = 'advisory' AND l.granted",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(locks_encrypted, Some(true), "the leader locks are held on encrypted sessions");

    let status = crate::helpers::sigterm(&mut run, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_server_certificate_the_client_cannot_verify_is_refused_naming_the_problem() {
    let pki = Pki::new();
    let cluster = Cluster::start(&pki, Ssl::On);
    let (ca, other) = (pki.ca_cert(), pki.other_ca_cert());

    // A root certificate that did not sign the server's.
    let url = cluster.url("localhost", "postgres", &[("sslmode", "verify-full"), ("sslrootcert", &other)]);
    let expected = [
        &*format!("TLS failed (sslmode=verify-full, trusting the CAs in sslrootcert {other} and the system's)"),
        "the server's certificate is not signed by a CA this client trusts",
        "invalid peer certificate: UnknownIssuer",
    ];
    assert_refused(&migrate(&url).await, "verify-full with another CA", &expected);
    // require with a root certificate verifies it, as verify-ca (libpq's rule).
    let url = cluster.url("localhost", "postgres", &[("sslmode", "require"), ("sslrootcert", &other)]);
    assert_refused(&migrate(&url).await, "require with another CA", &["sslmode=verify-ca", "UnknownIssuer"]);

    // A host name the certificate does not name: verify-ca does not look, verify-full refuses.
    let url = cluster.url("127.0.0.2", "postgres", &[("sslmode", "verify-ca"), ("sslrootcert", &ca)]);
    assert_ok(&migrate(&url).await, "verify-ca at 127.0.0.2");
    let url = cluster.url("127.0.0.2", "postgres", &[("sslmode", "verify-full"), ("sslrootcert", &ca)]);
    let expected = ["sslmode=verify-full", "the server's certificate does not name the host of the URL", "127.0.0.2"];
    assert_refused(&migrate(&url).await, "verify-full at 127.0.0.2", &expected);

    // sslrootcert=system: the system's CAs (rustls reads SSL_CERT_FILE for them), verify-full by default.
    let url = cluster.url("localhost", "postgres", &[("sslrootcert", "system")]);
    let trusted = costsim().arg("migrate").env("DATABASE_URL", &url).env("SSL_CERT_FILE", &ca).output().await.unwrap();
    assert_ok(&trusted, "sslrootcert=system with the test CA as the system's");
    let untrusted = costsim().arg("migrate").env("DATABASE_URL", &url).env("SSL_CERT_FILE", &other).output();
    let expected = ["sslmode=verify-full, trusting the system's CAs", "UnknownIssuer"];
    assert_refused(&untrusted.await.unwrap(), "sslrootcert=system with another CA as the system's", &expected);
}

#[tokio::test]
async fn require_refuses_a_server_without_tls_and_prefer_encrypts_only_where_the_server_offers_tls() {
    let pki = Pki::new();
    let plain = Cluster::start(&pki, Ssl::Off);
    let url = plain.url("localhost", "postgres", &[("sslmode", "require")]);
    let expected = ["cannot connect to PostgreSQL", "TLS failed (sslmode=require)", "server does not support TLS"];
    assert_refused(&migrate(&url).await, "require against ssl=off", &expected);
    let url = plain.url("localhost", "postgres", &[("sslmode", "prefer")]);
    assert_ok(&migrate(&url).await, "prefer against ssl=off");
    assert!(!encrypted(&connect(&url).await).await, "prefer against ssl=off is plaintext");
    // On a Unix socket the mode does not apply, as in libpq (the server never offers TLS there).
    let url = plain.socket_url(&[("sslmode", "require")]);
    assert_ok(&migrate(&url).await, "require on the Unix socket");

    let tls = Cluster::start(&pki, Ssl::On);
    for params in [&[("sslmode", "prefer")][..], &[]] {
        let url = tls.url("localhost", "postgres", params);
        assert_ok(&migrate(&url).await, &format!("{params:?} against ssl=on"));
        assert!(encrypted(&connect(&url).await).await, "{params:?} against ssl=on is encrypted");
    }
}

#[tokio::test]
async fn prefer_fails_on_a_failed_handshake_after_the_server_accepted_tls_instead_of_retrying_in_plaintext() {
    // A "server" that accepts TLS, then answers the handshake with bytes that are not TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("postgres://postgres@{}/postgres?sslmode=prefer", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut socket, _) = tokio::time::timeout(DEADLINE, listener.accept()).await.expect("a connection").unwrap();
        let mut request = [0u8; 8];
        socket.read_exact(&mut request).await.unwrap();
        assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "the client asks for TLS first");
        socket.write_all(b"S").await.unwrap();
        let mut hello = [0u8; 1];
        socket.read_exact(&mut hello).await.unwrap();
        assert_eq!(hello[0], 0x16, "a TLS handshake record");
        socket.write_all(b"not a TLS server hello\n").await.unwrap();
        // Until the client hangs up, so that it reads the answer rather than a reset.
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
        listener
    });
    let out = migrate(&url).await;
    assert_refused(&out, "prefer with a broken handshake", &["TLS failed (sslmode=prefer)"]);
    // The client has exited: had it retried in plaintext, that connection would wait in the listen queue.
    let listener = server.await.unwrap().into_std().unwrap();
    let retry = listener.accept();
    assert!(matches!(&retry, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "a second connection: {retry:?}");
}

#[tokio::test]
async fn a_client_certificate_authenticates_a_user_whose_pg_hba_line_demands_one() {
    let pki = Pki::new();
    let cluster = Cluster::start(&pki, Ssl::On);
    let admin = cluster.admin().await;
    // A constant name, no input.
    let create = format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER");
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&admin).await.unwrap();
    let (ca, cert, key) = (pki.ca_cert(), pki.path("client.crt"), pki.path("client.key"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let verify = [("sslmode", "verify-full"), ("sslrootcert", &ca)];

    let url = cluster.url("localhost", CERT_USER, &[&verify[..], &[("sslcert", cert), ("sslkey", key)]].concat());
    assert_ok(&migrate(&url).await, "migrate with a client certificate");
    let pool = connect(&url).await;
    let (user, dn): (String, Option<String>) =
        sqlx::query_as("SELECT current_user::text, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((user.as_str(), dn.as_deref()), (CERT_USER, Some(&*format!("/CN={CERT_USER}"))));

    let url = cluster.url("localhost", CERT_USER, &verify);
    let expected = ["cannot connect to PostgreSQL", "certificate"];
    assert_refused(&migrate(&url).await, "migrate without a client certificate", &expected);
    let url = cluster.url("localhost", CERT_USER, &[&verify[..], &[("sslcert", cert)]].concat());
    let expected = ["DATABASE_URL (--database-url): sslcert is set without its pair: sslcert and sslkey go together"];
    assert_refused(&migrate(&url).await, "sslcert without sslkey", &expected);
}

/// `migrate` with DATABASE_URL at a port nothing listens on and one more variable naming a file.
async fn migrate_with_unreachable_url(variable: &str, file: &std::path::Path) -> std::process::Output {
    let mut cmd = costsim();
    cmd.arg("migrate").env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x").env(variable, file);
    cmd.output().await.unwrap()
}

#[tokio::test]
async fn a_url_file_that_cannot_be_read_is_named_by_its_path_and_a_url_with_its_file_is_refused() {
    let missing = TempPath::new(".url");
    let path = missing.0.display().to_string();
    let out = costsim().arg("migrate").env("DATABASE_URL_FILE", &missing.0).output().await.unwrap();
    assert_refused(&out, "a missing DATABASE_URL_FILE", &[&format!("cannot read DATABASE_URL_FILE {path}")]);
    let out = migrate_with_unreachable_url("COSTSIM_LEADER_DATABASE_URL_FILE", &missing.0).await;
    let expected = [&*format!("cannot read COSTSIM_LEADER_DATABASE_URL_FILE {path}")];
    assert_refused(&out, "a missing COSTSIM_LEADER_DATABASE_URL_FILE", &expected);

    // A file whose URL is refused: the file is named, the password it holds is not shown.
    let file = TempPath::new(".url");
    std::fs::write(&file.0, "postgres://app:s3cret@127.0.0.1:1/x?sslmode=allow\n").unwrap();
    let out = costsim().arg("migrate").env("DATABASE_URL_FILE", &file.0).output().await.unwrap();
    let expected = [&*format!("the URL in DATABASE_URL_FILE (--database-url-file) {}", file.0.display()), "allow"];
    assert_refused(&out, "sslmode=allow in the file", &expected);
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    let out = migrate_with_unreachable_url("DATABASE_URL_FILE", &file.0).await;
    let expected = ["DATABASE_URL (--database-url) and DATABASE_URL_FILE (--database-url-file) are both set"];
    assert_refused(&out, "DATABASE_URL with DATABASE_URL_FILE", &expected);
}
