//! Security of a full `run`: the operator routes refuse a missing token (401) and a token of too low a role (403),
//! HTTP limits hold (body over 16 KiB: 413; a bad or over-long query: 4xx), and no secret — the database
//! password, the API tokens, an Alertmanager password — appears in the logs at debug level or in any HTTP answer.
//! And a source check: every SQL text in `src/` is a compile-time string, so values can only be bound.

use std::time::Duration;

use costsim_breaker::kafka::TopicRole;
use futures::FutureExt as _;
use reqwest::{Method, StatusCode};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::time::Instant;

use crate::child::{RunSpec, database_url, fresh_kafka, wait_for};

/// A role with a password on the shared PostgreSQL, owning the test's database; dropped at the end.
struct Role {
    name: String,
    password: String,
}

impl Role {
    async fn create(pool: &PgPool) -> Role {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let role = Role { name: format!("costsim_sec_{}", &id[..10]), password: format!("pw-{id}-Zq9") };
        // DDL takes no bind parameters; both names are made here from a UUID, nothing comes from outside.
        let create = format!("CREATE ROLE {} LOGIN PASSWORD '{}'", role.name, role.password);
        sqlx::query(AssertSqlSafe(create)).execute(pool).await.unwrap();
        let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
        // Owning the database gives CREATE on `public` (the migrator's `CREATE TABLE IF NOT EXISTS`); the tables
        // `#[sqlx::test]` migrated stay the admin's, so the role gets rights on them.
        for sql in [
            format!("ALTER DATABASE \"{db}\" OWNER TO {}", role.name),
            format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}", role.name),
            format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}", role.name),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
        }
        role
    }

    async fn remove(self, pool: &PgPool) {
        let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
        for sql in [
            format!("ALTER DATABASE \"{db}\" OWNER TO CURRENT_USER"),
            format!("REASSIGN OWNED BY {} TO CURRENT_USER", self.name),
            format!("DROP OWNED BY {}", self.name),
            format!("DROP ROLE {}", self.name),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
        }
    }
}

/// Waits for the listener's address in the log (`addr=…` on the "Serving" line).
async fn listener_addr(run: &mut crate::child::Run) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        run.assert_alive();
        let log = run.stderr();
        // Text logs color their field names: strip the escape sequences before looking for `addr=`.
        let plain = strip_ansi(&log);
        if let Some(line) = plain.lines().find(|l| l.contains("Serving /metrics and /health")) {
            let at = line.find("addr=").expect("the serving line names its address") + 5;
            return line[at..].split_whitespace().next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "run did not start listening:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[sqlx::test]
async fn a_full_run_refuses_bad_tokens_holds_limits_and_never_shows_a_secret(pool: PgPool) {
    let role = Role::create(&pool).await;
    // The role is server-wide: remove it whether the checks pass or not, then report their outcome.
    let outcome = std::panic::AssertUnwindSafe(full_run(&pool, &role)).catch_unwind().await;
    role.remove(&pool).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn full_run(pool: &PgPool, role: &Role) {
    let pool = pool.clone();
    let mut url = url::Url::parse(&database_url(&pool).await).unwrap();
    url.set_username(&role.name).unwrap();
    url.set_password(Some(&role.password)).unwrap();
    let (admin, reader) = (format!("adm-{}", uuid::Uuid::new_v4()), format!("rd-{}", uuid::Uuid::new_v4()));
    let am_password = format!("am-{}", uuid::Uuid::new_v4());
    // A private broker: the shared one serves every other test at the same time.
    let broker = crate::support::private_broker().await;
    let kafka = fresh_kafka(&broker.brokers(), 1);
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();

    let mut run = RunSpec::new(&kafka, url.to_string())
        .env("RUST_LOG", "debug")
        .env("COSTSIM_API_TOKENS", format!("ops:admin:{admin},viewer:read:{reader}"))
        // Nothing listens on port 1: every delivery fails, and the failure (with its URL) is logged.
        .env("ALERTMANAGER_URL", format!("http://alerts:{am_password}@127.0.0.1:1/"))
        .env("ALERTMANAGER_TIMEOUT", "2")
        .alerts_on()
        .start();
    let base = format!("http://{}", listener_addr(&mut run).await);
    let client = reqwest::Client::new();
    let mut bodies = String::new();
    let mut call = async |method: Method, path: &str, token: Option<&str>, body: Option<String>| {
        let mut request = client.request(method, format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        let (status, auth) = (response.status(), response.headers().get("www-authenticate").cloned());
        let text = response.text().await.unwrap();
        bodies.push_str(&text);
        (status, auth, text)
    };

    let (status, auth, _) = call(Method::GET, "/costsim/v2/status", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token");
    assert!(auth.is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")), "401 names the Bearer scheme");
    let (status, ..) = call(Method::GET, "/costsim/v2/status", Some("not-a-token"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "unknown token");
    let (status, ..) = call(Method::GET, "/costsim/v2/status", Some(&format!("{admin}x")), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a token with a suffix is another token");
    let disable = Some(r#"{"reason": "security test", "ttl_seconds": 60}"#.to_owned());
    let (status, ..) = call(Method::POST, "/costsim/v2/disable", Some(&reader), disable.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a read token cannot disable");
    let (status, ..) = call(Method::POST, "/costsim/v2/reset?reason=x", Some(&reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a read token cannot reset");
    let (status, ..) = call(Method::GET, "/costsim/v2/status", Some(&reader), None).await;
    assert_eq!(status, StatusCode::OK, "a read token reads");

    let oversized = format!(r#"{{"reason": "{}"}}"#, "x".repeat(17 * 1024));
    let (status, ..) = call(Method::POST, "/costsim/v2/disable", Some(&admin), Some(oversized)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "a body over 16 KiB");
    let (status, ..) = call(Method::POST, "/costsim/v2/disable", Some(&admin), Some("{not json".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a body that is not JSON");
    let (status, ..) = call(Method::GET, "/costsim/v2/incidents?limit=100000", Some(&reader), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a limit out of range");
    let long = "y".repeat(32 * 1024);
    let (status, ..) =
        call(Method::GET, &format!("/costsim/v2/incidents?include_resolved={long}"), Some(&reader), None).await;
    assert!(status.is_client_error(), "a 32 KiB query value: {status}");
    println!("security: a 32 KiB query value answers {status}");
    let (status, ..) = call(Method::GET, &format!("/costsim/v2/status?{long}=1"), Some(&reader), None).await;
    assert!(status.is_client_error() || status == StatusCode::OK, "a 32 KiB unknown query key: {status}");
    println!("security: a 32 KiB unknown query key answers {status}");

    // A real disable queues an alert; the drainer's failed deliveries are logged with their error.
    let (status, ..) = call(Method::POST, "/costsim/v2/disable", Some(&admin), disable).await;
    assert_eq!(status, StatusCode::OK, "an admin token disables");
    let attempts = "SELECT coalesce(max(attempts), 0)::bigint FROM costsim_alert_queue WHERE last_error IS NOT NULL";
    assert!(wait_for(&pool, attempts, 2, Duration::from_secs(30)).await >= 1, "the drainer tried and failed");
    let (status, _, metrics) = call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("costsim_cb_alert_send_failures_total"));
    let _ = call(Method::GET, "/health", None, None).await;
    assert!(run.stop().await.success(), "run stops cleanly");

    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(log.lines().count() > 20 && log.contains("DEBUG"), "the log is at debug level:\n{log}");
    for (what, secret) in [
        ("database password", &role.password),
        ("admin token", &admin),
        ("read token", &reader),
        ("Alertmanager password", &am_password),
    ] {
        assert!(!log.contains(secret.as_str()), "the {what} is in the log");
        assert!(!bodies.contains(secret.as_str()), "the {what} is in an HTTP answer");
    }
    println!(
        "security: {} log lines at RUST_LOG=debug, no secret in them or in {} bytes of answers",
        log.lines().count(),
        bodies.len()
    );
}

/// sqlx 0.9 takes SQL only as `&'static str` unless wrapped in `AssertSqlSafe`; with no wrapper, no `raw_sql` and
/// no `QueryBuilder` anywhere in `src/`, every value reaches PostgreSQL as a bound parameter. The exceptions are
/// the two files of partition DDL and table statistics: PostgreSQL takes no parameter for a table name or a
/// partition bound, and the only text they interpolate is our own table names and bounds computed from dates.
#[test]
fn no_sql_text_in_src_is_built_at_run_time() {
    const AUDITED_DDL: &[&str] = &["src/store/partitions.rs", "src/store/retention.rs"];
    let mut offenders = Vec::new();
    for (path, text) in crate::support::rust_sources() {
        if AUDITED_DDL.iter().any(|audited| path.ends_with(audited)) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if ["AssertSqlSafe", "raw_sql", "QueryBuilder", "SqlStr"].iter().any(|w| line.contains(w)) {
                offenders.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "SQL built at run time:\n{}", offenders.join("\n"));
}
