//! The runtime role of the README's production set-up: `ops/postgres/runtime-role.sql` applied by psql as the
//! schema's owner, then `run --no-migrate` as a login of that role processes a stream and trips, while DDL is
//! refused to it.

use std::process::Stdio;

use costsim_breaker::kafka::TopicRole;
// The role name is made here, of hex digits only.
use sqlx::{AssertSqlSafe, PgPool};

use crate::helpers::{command, direct_url, fresh_kafka, sigterm};
use crate::pipeline::{produce, spike, wait_for};

#[sqlx::test]
async fn run_works_as_the_runtime_role_which_cannot_change_the_schema(pool: PgPool) {
    // `#[sqlx::test]` migrated the database as the owner; the grants come from the repository's file, via psql.
    let owner_url = direct_url(&pool);
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/postgres/runtime-role.sql");
    let out = std::process::Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-f", file])
        .arg(&owner_url)
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let login = format!("costsim_rt_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    sqlx::query(AssertSqlSafe(format!("CREATE ROLE {login} LOGIN IN ROLE costsim_runtime")))
        .execute(&pool)
        .await
        .unwrap();
    let mut url = url::Url::parse(&owner_url).unwrap();
    url.set_username(&login).unwrap();
    let url = url.to_string();

    let ddl = {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE costsim_not_allowed (id int)").execute(&mut conn).await
    };
    assert!(ddl.is_err_and(|e| e.to_string().contains("permission denied")), "the runtime role may not create");

    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    produce(&kafka, &spike(2000, 150.0, 11)).await;
    let mut cmd = command(&kafka);
    cmd.args(["run", "--no-migrate", "--no-create-topics", "--alerts", "off"]).env("DATABASE_URL", &url);
    cmd.env("COSTSIM_HTTP_ADDR", "127.0.0.1:0").env("RUST_LOG", "warn").env_remove("COSTSIM_LEADER_DATABASE_URL");
    for s in ["bucket_seconds=1", "window_seconds=10", "min_samples=20", "disable_ttl_seconds=3600"] {
        cmd.args(["--set", s]);
    }
    let mut run = cmd.stderr(Stdio::inherit()).spawn().unwrap();
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_provenance", 2000).await, 2000);
    assert_eq!(wait_for(&pool, "SELECT count(*) FROM costsim_cb_incidents", 1).await, 1, "it trips");
    let published = "SELECT count(*) FROM costsim_breaker_events WHERE published_at IS NOT NULL";
    assert_eq!(wait_for(&pool, published, 1).await, 1, "the relay, a leader job, publishes as the runtime role");
    assert!(sigterm(&mut run, std::time::Duration::from_secs(30)).await.success());

    sqlx::query(AssertSqlSafe(format!("DROP OWNED BY {login}"))).execute(&pool).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP ROLE {login}"))).execute(&pool).await.unwrap();
}
