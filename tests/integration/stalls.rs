//! Nothing that waits for PostgreSQL stalls the processor as a whole: a partition stuck behind a lock pauses alone
//! while the others go on, and a rebalance during an outage neither ends the process nor makes the consumer
//! overrun `max.poll.interval.ms`.

use std::process::Stdio;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{KafkaConfig, TopicRole};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt as _;

use crate::helpers::{DEADLINE, app_url, fresh_kafka};
use crate::pipeline::{FAST, Processor, produce, spike};

/// Each partition's end offset (its high watermark).
fn topic_ends(kafka: &KafkaConfig) -> Vec<(i32, i64)> {
    let consumer: BaseConsumer = kafka.client_config().create().unwrap();
    (0..kafka.results_partitions)
        .map(|p| {
            let (_, high) = consumer.fetch_watermarks(&kafka.results_topic, p, Duration::from_secs(10)).unwrap();
            (p, high)
        })
        .collect()
}

/// The committed next offset of each registered partition.
async fn committed(pool: &PgPool) -> Vec<(i32, Option<i64>)> {
    sqlx::query_as("SELECT \"partition\", next_offset FROM costsim_consumed_offsets ORDER BY \"partition\"")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Polls until `done` holds of the committed offsets, or panics with the last ones after `within`.
async fn until_committed(pool: &PgPool, what: &str, within: Duration, done: impl Fn(&[(i32, Option<i64>)]) -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = committed(pool).await;
        if done(&now) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}; committed {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads a child's stderr into a shared log, so the child never blocks on a full pipe and the test can search it.
fn collect_stderr(child: &mut tokio::process::Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    log
}

#[sqlx::test]
async fn a_partition_stuck_behind_a_lock_pauses_alone_while_the_others_commit_to_their_end(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    // Small batches, so partition 0 fills its next batch long before the others are read to their end.
    let env = [
        ("COSTSIM_BATCH_MAX_RECORDS", "10"),
        ("COSTSIM_BATCH_MAX_WAIT_MS", "20"),
        ("COSTSIM_DB_LOCK_TIMEOUT_MS", "1000"),
    ];
    let Processor(mut run) = Processor::start_with(&kafka, &app_url(&pool), FAST, Stdio::piped(), &env, &[]);
    let log = collect_stderr(&mut run);
    until_committed(&pool, "every partition registered", DEADLINE, |c| c.len() == 3).await;

    // Partition 0's row stays locked: each of its batches waits, fails at the lock timeout and is retried.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM costsim_consumed_offsets WHERE \"partition\" = 0 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    // Fifty tenants as keys: every partition gets a share.
    let events: Vec<_> = Generator::new(GeneratorConfig {
        count: 1500,
        profile: DriftProfile::Spike,
        start: Utc::now() - TimeDelta::seconds(10),
        events_per_second: 300.0,
        seed: 11,
        tenants: 50,
    })
    .collect();
    produce(&kafka, &events).await;
    let ends = topic_ends(&kafka);
    assert!(ends.iter().all(|(_, end)| *end >= 100), "every partition got records: {ends:?}");
    let others_done = |c: &[(i32, Option<i64>)]| {
        ends.iter().filter(|(p, _)| *p != 0).all(|(p, end)| c.iter().any(|(q, n)| q == p && *n == Some(*end)))
    };
    until_committed(&pool, "partitions 1 and 2 read to their end while partition 0 is locked", DEADLINE, others_done)
        .await;
    let now = committed(&pool).await;
    assert!(now[0].1.is_none_or(|n| n < ends[0].1), "partition 0 cannot have committed past the lock: {now:?}");
    assert!(
        log.lock().unwrap().iter().any(|l| l.contains("Batch not committed; retrying")),
        "partition 0's batch failed at the lock timeout and was retried: {:?}",
        log.lock().unwrap()
    );

    holder.rollback().await.unwrap();
    until_committed(&pool, "every partition read to its end", DEADLINE, |c| {
        ends.iter().all(|(p, end)| c.iter().any(|(q, n)| q == p && *n == Some(*end)))
    })
    .await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 1500);
    assert_eq!(run.try_wait().unwrap(), None, "the processor is still running");
}

#[sqlx::test]
async fn a_rebalance_during_a_postgres_outage_neither_ends_the_processor_nor_overruns_its_poll_interval(pool: PgPool) {
    let kafka = fresh_kafka();
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await.unwrap();
    let proxy = crate::proxy::Proxy::start(crate::helpers::app_server_addr()).await;
    let url = proxy.database_url(&pool);
    // librdkafka's floor for the poll interval is the session timeout; the outage lasts twice as long.
    let start = |url: &str| {
        Processor::start_with(&kafka, url, FAST, Stdio::piped(), &[], &["-X", "max.poll.interval.ms=8000"]).0
    };
    let mut first = start(&url);
    let first_log = collect_stderr(&mut first);
    let events = spike(600, 100.0, 13);
    produce(&kafka, &events[..300]).await;
    until_committed(&pool, "the first 300 events", DEADLINE, |c| c.iter().filter_map(|(_, n)| *n).sum::<i64>() == 300)
        .await;

    // The first processor loses PostgreSQL; a second one, which reaches it, joins the group meanwhile.
    proxy.cut();
    let mut second = start(&app_url(&pool));
    let second_log = collect_stderr(&mut second);
    produce(&kafka, &events[300..]).await;
    let registration_failed = "Cannot register the assigned partitions; retrying";
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !first_log.lock().unwrap().iter().any(|l| l.contains(registration_failed)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first processor never took a new assignment in the outage"
        );
        assert_eq!(first.try_wait().unwrap(), None, "the first processor ended: {:?}", first_log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The outage outlasts the poll interval twice over (the fault itself, not a wait for a result).
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(first.try_wait().unwrap(), None, "the first processor ended: {:?}", first_log.lock().unwrap());

    proxy.restore();
    until_committed(&pool, "all 600 events", DEADLINE * 2, |c| c.iter().filter_map(|(_, n)| *n).sum::<i64>() == 600)
        .await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM costsim_provenance").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 600, "every event stored once");
    assert_eq!(first.try_wait().unwrap(), None, "the first processor is still running");
    for (name, log) in [("first", &first_log), ("second", &second_log)] {
        let overran: Vec<String> =
            log.lock().unwrap().iter().filter(|l| l.contains("poll interval")).cloned().collect();
        assert!(overran.is_empty(), "the {name} processor overran max.poll.interval.ms: {overran:?}");
    }
    let _ = second.kill().await;
}

#[sqlx::test]
async fn pooled_sessions_start_with_the_statement_lock_and_idle_in_transaction_timeouts(pool: PgPool) {
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        database: costsim_breaker::store::DatabaseConfig,
    }
    let url = app_url(&pool);
    let args = <Args as clap::Parser>::try_parse_from(["test", "--database-url", &url, "--db-lock-timeout-ms", "2500"])
        .unwrap();
    let app = args.database.connect().await.unwrap();
    let mut tx = app.begin().await.unwrap();
    let mut show = async |name: &str| -> String {
        sqlx::query_scalar("SELECT current_setting($1)").bind(name).fetch_one(&mut *tx).await.unwrap()
    };
    let timeouts = (
        show("statement_timeout").await,
        show("lock_timeout").await,
        show("idle_in_transaction_session_timeout").await,
    );
    // Through PgBouncer the startup parameters are dropped (the README says to set them on the role there).
    if crate::helpers::pooler_addr().is_none() {
        assert_eq!(timeouts, ("1min".to_owned(), "2500ms".to_owned(), "1min".to_owned()));
    }
    tx.rollback().await.unwrap();

    // A statement that waits for a lock longer than lock_timeout fails with 55P03, which the processor retries.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("CREATE TABLE lock_probe (id int)").execute(&pool).await.unwrap();
    sqlx::query("LOCK TABLE lock_probe IN ACCESS EXCLUSIVE MODE").execute(&mut *holder).await.unwrap();
    if crate::helpers::pooler_addr().is_none() {
        let err = sqlx::query("SELECT * FROM lock_probe").fetch_all(&app).await.unwrap_err();
        assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("55P03"), "{err}");
    }
    holder.rollback().await.unwrap();
}
