//! The processor behind PgBouncer in transaction-pooling mode (`scripts/pgbouncer up`, Debian's 1.18): the pool
//! goes through PgBouncer, the leader locks and migrations connect directly.
//!
//! PgBouncer 1.18 tracks no prepared statements, so what makes it work is in our code: every statement unnamed and
//! inside a transaction (`src/store.rs`). The short form checks that rule over `src/`; the scenarios with
//! PgBouncer are the long form (CI's stack has none). `scripts/pgbouncer test` also runs the whole integration
//! suite through it.

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

/// The test database through PgBouncer.
async fn pooled_url(pool: &PgPool) -> String {
    let mut url = url::Url::parse(&database_url(pool).await).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(pgbouncer_port())).unwrap();
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
        Duration::from_secs(60),
    )
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
    let ends = end_offsets(&kafka, &kafka.results_topic);
    let committed = committed_offsets(&pool, &kafka.results_topic, 3).await;
    // The trip's state event reaches the state topic only through the relay, a leader job: the lock worked.
    let relayed = "SELECT count(*) FROM costsim_breaker_events WHERE published_at IS NOT NULL";
    let published = wait_for(&pool, relayed, 1, Duration::from_secs(30)).await;
    let stderr = run.stderr();
    let first_error = ["prepared statement", "retrying", "ERROR"]
        .iter()
        .find_map(|w| stderr.lines().find(|l| l.contains(w)))
        .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
        .unwrap_or_default();
    println!(
        "faults-row: scenario=pgbouncer-transaction-pool runs=1 events={count} lost={} duplicated={} total_s={:.1} \
         relayed={published} committed={committed:?} ends={ends:?} first_problem={first_error:?}",
        count as i64 - stored,
        rows - stored,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(committed, ends, "the offsets reached the end");
    assert_eq!((stored, rows), (count as i64, count as i64));
    assert!(published >= 1, "the relay (a leader job) published the trip");
    assert!(!stderr.contains("prepared statement"), "no prepared-statement error:\n{stderr}");
}

/// How the contention test sends its queries.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// sqlx's default (`persistent(true)`), with `statement-cache-capacity=0` in the URL.
    Named,
    /// `.persistent(false)`: the unnamed statement, outside any transaction.
    Unnamed,
    /// `.persistent(false)` inside `BEGIN … COMMIT`.
    UnnamedInTransaction,
}

/// One query of the contention test: true when it answered its own statement.
async fn one_query(bouncer: &PgPool, mode: Mode, c: u32, i: u32) -> Result<bool, sqlx::Error> {
    let persistent = matches!(mode, Mode::Named);
    // `begin()` sends BEGIN and COMMIT as simple queries, as the processor's batches do.
    let mut tx = if matches!(mode, Mode::UnnamedInTransaction) { Some(bouncer.begin().await?) } else { None };
    let mut pooled = if tx.is_none() { Some(bouncer.acquire().await?) } else { None };
    let conn: &mut sqlx::PgConnection = match (&mut tx, &mut pooled) {
        (Some(tx), _) => tx,
        (None, Some(pooled)) => pooled,
        (None, None) => unreachable!("one of the two is set"),
    };
    // Two statement shapes with different parameter types, so a Bind on a foreign statement shows.
    let ok = if (c + i) % 2 == 0 {
        sqlx::query_scalar::<_, i64>("SELECT $1::bigint * 2")
            .persistent(persistent)
            .bind(i64::from(i))
            .fetch_one(&mut *conn)
            .await?
            == 2 * i64::from(i)
    } else {
        sqlx::query_scalar::<_, String>("SELECT $1::text || '-' || $2::text")
            .persistent(persistent)
            .bind(c.to_string())
            .bind(i.to_string())
            .fetch_one(&mut *conn)
            .await?
            == format!("{c}-{i}")
    };
    if let Some(tx) = tx {
        tx.commit().await?;
    }
    Ok(ok)
}

/// sqlx 0.9 with `statement-cache-capacity=0` still names its statements (`sqlx_s_N`, per connection, never
/// closed): only `.persistent(false)` gives the unnamed statement, prepared in a round trip of its own (Parse,
/// Describe, Sync) before Bind, Execute, Sync. Outside a transaction PgBouncer may hand the second half to another
/// server connection. This measures each way with more clients (60) than PgBouncer has servers (20), and returns
/// the queries that answered another statement's result and the errors.
async fn contention(pool: PgPool, mode: Mode) -> (u32, usize) {
    // sqlx's cache off, as the earlier advice was: it does not stop the naming (the Named row).
    let url = format!("{}?statement-cache-capacity=0", pooled_url(&pool).await);
    let options: PgConnectOptions = url.parse().unwrap();
    let clients = 60u32;
    let bouncer = PgPoolOptions::new().max_connections(clients).connect_with(options).await.unwrap();
    let per_client = 300;
    let results: Vec<(u32, u32, Vec<String>)> = futures::stream::iter(0..clients)
        .map(|c| {
            let bouncer = bouncer.clone();
            async move {
                let (mut ok, mut wrong, mut errors) = (0, 0, Vec::new());
                for i in 0..per_client {
                    match one_query(&bouncer, mode, c, i).await {
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
        "pgbouncer-statements: mode={mode:?} clients={clients} queries={} ok={ok} wrong={wrong} errors={} first_error={:?}",
        clients * per_client,
        errors.len(),
        errors.first()
    );
    bouncer.close().await;
    (wrong, errors.len())
}

// The first two demonstrate why every statement of `src/` is unnamed and inside a transaction: they pass when
// PgBouncer mixes the statements up, as it did in every run measured (docs/RELIABILITY.md, note 2).
#[sqlx::test]
#[ignore = "long form: needs `scripts/pgbouncer up`"]
async fn named_statements_through_pgbouncer_under_contention(pool: PgPool) {
    let (wrong, errors) = contention(pool, Mode::Named).await;
    assert!(wrong + errors as u32 > 0, "named statements collided on shared server connections: none failed");
}

#[sqlx::test]
#[ignore = "long form: needs `scripts/pgbouncer up`"]
async fn unnamed_statements_outside_transactions_under_contention(pool: PgPool) {
    let (wrong, errors) = contention(pool, Mode::Unnamed).await;
    assert!(wrong + errors as u32 > 0, "unnamed statements outside a transaction split across servers: none failed");
}

#[sqlx::test]
#[ignore = "long form: needs `scripts/pgbouncer up`"]
async fn unnamed_statements_inside_transactions_under_contention(pool: PgPool) {
    let (wrong, errors) = contention(pool, Mode::UnnamedInTransaction).await;
    assert_eq!((wrong, errors), (0, 0), "every query answered its own statement");
}

/// What an unnamed statement costs on a direct connection, next to sqlx's default (named and cached): the same
/// primary-key read, alternately named and unnamed, 20 000 times each inside one transaction, five rounds. The
/// unnamed one adds a round trip (`Parse`/`Describe`/`Sync`) and a parse and plan per execution.
#[sqlx::test]
#[ignore = "long form: a measurement (docs/RELIABILITY.md, note 2 of parts 4-7)"]
async fn unnamed_statements_cost_on_a_direct_connection(pool: PgPool) {
    let statements = 20_000u32;
    let mut conn = pool.acquire().await.unwrap();
    let mut micros = [Vec::new(), Vec::new()];
    for _round in 0..5 {
        for (k, persistent) in [true, false].into_iter().enumerate() {
            let started = Instant::now();
            let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            for i in 0..statements {
                let name = if i % 2 == 0 { "costsim_v2" } else { "none" };
                let _: Option<String> = sqlx::query_scalar("SELECT state FROM costsim_cb_state WHERE name = $1")
                    .persistent(persistent)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            micros[k].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(statements));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "pgbouncer-cost: statements={statements} named_us={:.1?} unnamed_us={:.1?} median_named_us={:.1} \
         median_unnamed_us={:.1}",
        micros[0],
        micros[1],
        median(&micros[0]),
        median(&micros[1])
    );
    assert!(micros.iter().all(|m| m.len() == 5), "every round measured");
}

/// Every `sqlx::query*` call in `src/` is made `.persistent(false)` before it runs: a persistent statement is named
/// (`sqlx_s_<n>`) and collides with another client's on PgBouncer 1.18's shared server connections.
#[test]
fn every_statement_in_src_is_unnamed() {
    let (mut statements, mut offenders) = (0, Vec::new());
    for (path, text) in crate::support::rust_sources() {
        for (at, _) in text.match_indices("sqlx::query") {
            // The builder chain up to the call that runs it.
            let chain = &text[at..];
            let end = [".fetch", ".execute("].iter().filter_map(|w| chain.find(w)).min().unwrap_or(chain.len());
            statements += 1;
            if !chain[..end].contains(".persistent(false)") {
                let line = text[..at].lines().count();
                offenders.push(format!("{path}:{line}: {}", chain.lines().next().unwrap_or_default()));
            }
        }
    }
    assert!(statements > 60, "found the statements ({statements})");
    assert!(offenders.is_empty(), "statements sqlx would name:\n{}", offenders.join("\n"));
}

/// Nothing in `src/` runs statements on the pool or on a bare pooled connection outside a transaction: an unnamed
/// statement takes two round trips, and between them a transaction-mode pooler may hand the server to another
/// client. The one `acquire()` left is `store::migrate`'s, documented as direct only.
#[test]
fn pooled_connections_in_src_run_statements_only_inside_transactions() {
    // `.fetch_one(&pool)`, `.execute(&self.pool)`, ...: an executor argument that is a pool.
    let on_pool = |line: &str| {
        [".fetch", ".execute("].iter().any(|w| {
            line.match_indices(w).any(|(at, _)| {
                let call = &line[at..];
                let args = call.find('(').map(|open| &call[open + 1..]).unwrap_or_default();
                let arg = args.split(')').next().unwrap_or_default().trim().trim_start_matches('&');
                arg.rsplit('.').next() == Some("pool")
            })
        })
    };
    let mut offenders = Vec::new();
    for (path, text) in crate::support::rust_sources() {
        for (n, line) in text.lines().enumerate() {
            let acquire = line.contains(".acquire()") && !path.ends_with("src/store.rs");
            if acquire || on_pool(line) {
                offenders.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "statements outside a transaction:\n{}", offenders.join("\n"));
}
