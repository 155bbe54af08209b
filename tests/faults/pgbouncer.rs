//! The processor behind PgBouncer in transaction-pooling mode (`scripts/pgbouncer up`, Debian's 1.18): the pool
//! goes through PgBouncer with sqlx's statement cache off, the leader locks and migrations connect directly.
//!
//! Long form only: CI's stack has no PgBouncer. `scripts/pgbouncer test` also runs the whole integration suite
//! through it.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use costsim_breaker::codec::encode_simulation_result;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::TopicRole;
use futures::StreamExt as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::time::Instant;

use crate::child::{
    RunSpec, committed_offsets, database_url, end_offsets, fresh_kafka, produce, stack_brokers, wait_for,
};

/// PgBouncer's address (`scripts/pgbouncer`: 127.0.0.1, COSTSIM_PGBOUNCER_PORT or 6432).
fn pgbouncer_port() -> u16 {
    std::env::var("COSTSIM_PGBOUNCER_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(6432)
}

/// The test database through PgBouncer, with sqlx's named statements off.
async fn pooled_url(pool: &PgPool) -> String {
    let mut url = url::Url::parse(&database_url(pool).await).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(pgbouncer_port())).unwrap();
    url.set_query(Some("statement-cache-capacity=0"));
    let answers = tokio::net::TcpStream::connect(("127.0.0.1", pgbouncer_port())).await.is_ok();
    assert!(answers, "no PgBouncer on 127.0.0.1:{}: run `scripts/pgbouncer up` first", pgbouncer_port());
    url.to_string()
}

#[sqlx::test]
#[ignore = "long form: needs `scripts/pgbouncer up`"]
async fn the_processor_through_pgbouncer_stores_every_event_once_and_its_leaders_run(pool: PgPool) {
    let kafka = fresh_kafka(&stack_brokers(), 3);
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let pooled = pooled_url(&pool).await;
    let run = RunSpec::new(&kafka, pooled)
        .env("COSTSIM_LEADER_DATABASE_URL", database_url(&pool).await)
        .args(&["--set", "bucket_seconds=1", "--set", "window_seconds=10", "--set", "min_samples=20"])
        .start();
    let count = 20_000u64;
    let span = TimeDelta::milliseconds((count as f64 / 400.0 * 1000.0) as i64);
    let events = Generator::new(GeneratorConfig {
        count,
        profile: DriftProfile::Spike,
        start: Utc::now() - span - TimeDelta::seconds(5),
        events_per_second: 400.0,
        seed: 21,
        tenants: 9,
    });
    let started = Instant::now();
    produce(
        &kafka,
        &kafka.results_topic,
        events.map(|e| (e.tenant_id.clone().into_bytes(), encode_simulation_result(&e))),
    )
    .await;
    let stored = wait_for(
        &pool,
        "SELECT count(DISTINCT event_id) FROM costsim_provenance",
        count as i64,
        Duration::from_secs(120),
    )
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
    let ends = end_offsets(&kafka, &kafka.results_topic);
    assert_eq!(committed_offsets(&pool, &kafka.results_topic, 3).await, ends);
    // The trip's state event reaches the state topic only through the relay, a leader job: the lock worked.
    let relayed = "SELECT count(*) FROM costsim_breaker_events WHERE published_at IS NOT NULL";
    let published = wait_for(&pool, relayed, 1, Duration::from_secs(30)).await;
    println!(
        "faults-row: scenario=pgbouncer-transaction-pool runs=1 events={count} lost={} duplicated={} total_s={:.1} relayed={published}",
        count as i64 - stored,
        rows - stored,
        started.elapsed().as_secs_f64()
    );
    assert_eq!((stored, rows), (count as i64, count as i64));
    assert!(published >= 1, "the relay (a leader job) published the trip");
    let stderr = run.stderr();
    assert!(!stderr.contains("prepared statement"), "no prepared-statement error:\n{stderr}");
}

/// sqlx with `statement-cache-capacity=0` still prepares: an unnamed statement (Parse, Describe, Sync), then Bind,
/// Execute, Sync. Outside a transaction PgBouncer may give the second half to another server connection. This
/// measures whether that happens when clients outnumber PgBouncer's servers.
#[sqlx::test]
#[ignore = "long form: needs `scripts/pgbouncer up`"]
async fn unnamed_statements_outside_transactions_under_contention(pool: PgPool) {
    let options: PgConnectOptions = pooled_url(&pool).await.parse().unwrap();
    let clients = 60u32;
    let bouncer = PgPoolOptions::new().max_connections(clients).connect_with(options).await.unwrap();
    let per_client = 300;
    let results: Vec<(u32, u32, Vec<String>)> = futures::stream::iter(0..clients)
        .map(|c| {
            let bouncer = bouncer.clone();
            async move {
                let (mut ok, mut wrong, mut errors) = (0, 0, Vec::new());
                for i in 0..per_client {
                    // Two statement shapes with different parameter types, so a Bind on a foreign statement shows.
                    let outcome = if (c + i) % 2 == 0 {
                        sqlx::query_scalar::<_, i64>("SELECT $1::bigint * 2")
                            .bind(i64::from(i))
                            .fetch_one(&bouncer)
                            .await
                            .map(|v| v == 2 * i64::from(i))
                    } else {
                        sqlx::query_scalar::<_, String>("SELECT $1::text || '-' || $2::text")
                            .bind(c.to_string())
                            .bind(i.to_string())
                            .fetch_one(&bouncer)
                            .await
                            .map(|v| v == format!("{c}-{i}"))
                    };
                    match outcome {
                        Ok(true) => ok += 1,
                        Ok(false) => wrong += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (ok, wrong, errors)
            }
        })
        .buffer_unordered(clients as usize)
        .collect()
        .await;
    let ok: u32 = results.iter().map(|r| r.0).sum();
    let wrong: u32 = results.iter().map(|r| r.1).sum();
    let errors: Vec<&String> = results.iter().flat_map(|r| &r.2).collect();
    println!(
        "pgbouncer-unnamed: clients={clients} queries={} ok={ok} wrong={wrong} errors={} first_error={:?}",
        clients * per_client,
        errors.len(),
        errors.first()
    );
    assert_eq!((wrong, errors.len()), (0, 0), "every query answered its own statement");
}
