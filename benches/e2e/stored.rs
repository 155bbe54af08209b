//! The stored-rows phases: `run` end to end on a database that already holds many provenance rows (0, 10 and 50
//! million by default), spread over the retention window's partitions as production's would be; the bytes a run
//! leaves on disk per million events; and the time of a maintenance pass that finds expired partitions and
//! expired rows of the other tables.
//!
//! The rows are written server-side (`INSERT … SELECT … FROM generate_series`), shaped like the rows the
//! processor writes for the generated stream (the same columns filled, strings of the same lengths), in time
//! order within each chunk. The levels are cumulative: one database is topped up from one level to the next, so
//! 50 million is 50 million rows in all, the earlier runs' rows counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use costsim_breaker::kafka::{KafkaConfig, TopicRole};
use costsim_breaker::storage::{self, MaintenanceReport, StorageSettings};
use costsim_breaker::store::partitions;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::load::{Feed, Supply};
use crate::procs::{self, MockBroker, Processor};
use crate::{Args, BrokerKind, db, say};

/// Rows of one fill statement: small enough that progress is seen, large enough that a statement's overhead is
/// nothing.
const CHUNK: u64 = 250_000;

/// What one level measured.
pub struct Level {
    /// Provenance rows stored when its run started: the rows filled so far and the earlier runs' events.
    pub stored: u64,
    /// Rows filled before this run.
    pub filled: u64,
    /// Seconds the fill took, VACUUM ANALYZE and CHECKPOINT included.
    pub fill_secs: f64,
    /// Bytes the fill added to provenance, to set beside the run's.
    pub fill_bytes: i64,
    /// Events of the run.
    pub events: u64,
    /// Events per second of `run` end to end.
    pub run: Option<f64>,
    /// Bytes the run added to provenance (its partitions, their indexes and TOAST).
    pub provenance_bytes: i64,
    /// Bytes the run added to the other tables (buckets, offsets, outboxes, …).
    pub other_bytes: i64,
}

/// What the maintenance pass measured.
pub struct Retention {
    /// The pass ran as if at this time (now moved on until the wanted partitions had expired).
    pub shifted_hours: f64,
    /// Provenance rows the expired partitions held (counted).
    pub expired_rows: u64,
    /// Rows in provenance before the pass.
    pub stored_rows: u64,
    /// Seconds of the partition half (expired partitions dropped, partitions ahead created).
    pub partitions_secs: f64,
    /// Partitions it dropped.
    pub dropped: usize,
    /// Partitions it created ahead.
    pub created: usize,
    /// Seconds of the retention half (the other tables' deletes).
    pub deletes_secs: f64,
    /// Rows it deleted, by table.
    pub deleted: Vec<(&'static str, u64)>,
    /// Expired rows the benchmark put into each of the other tables.
    pub other_rows: u64,
    /// Seconds of a whole pass right after, with nothing left to do (what the leader pays every interval).
    pub idle_secs: f64,
}

/// Everything the stored-rows phases measured.
pub struct Stored {
    /// The broker of the runs.
    pub broker: BrokerKind,
    /// One per level, in order.
    pub levels: Vec<Level>,
    /// The maintenance pass, after the last level.
    pub retention: Option<Retention>,
    /// Why the phases stopped early.
    pub failure: Option<String>,
}

impl Stored {
    /// Nothing measured yet.
    pub fn new(broker: BrokerKind) -> Self {
        Stored { broker, levels: Vec::new(), retention: None, failure: None }
    }
}

/// The storage settings `run` starts with here (its defaults and `COSTSIM_*` variables of the environment).
fn settings() -> anyhow::Result<StorageSettings> {
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        settings: StorageSettings,
    }
    let wrapper = <Wrapper as clap::Parser>::try_parse_from(["bench"]).context("the storage settings")?;
    Ok(wrapper.settings)
}

/// Runs the levels of `args.prefill` in one database, then the maintenance pass on it.
pub async fn phases(
    args: &Args,
    admin: &PgPool,
    id: &str,
    work: &std::path::Path,
    out: &mut Stored,
) -> anyhow::Result<()> {
    let settings = settings()?;
    let url = db::fresh(admin, &args.database_url, &format!("bench_{id}_stored")).await?;
    let kafka = crate::kafka_config("unused", "bench.stored", "unused");
    let mut migrate = procs::cli(&kafka, &url);
    migrate.arg("migrate");
    procs::run_cli(migrate, "migrate").await?;
    let pool = PgPoolOptions::new().max_connections(args.fill_connections.max(1) as u32 + 1).connect(&url).await?;

    let now = Utc::now();
    let window_start = now - TimeDelta::days(i64::from(settings.provenance_retention_days));
    let created = create_window(&pool, &settings, window_start, now).await?;
    say(&format!(
        "stored: {created} {} partitions created over the {} days of retention",
        format!("{:?}", settings.partition).to_lowercase(),
        settings.provenance_retention_days
    ));

    // Each run's events take a stretch of event time of their own, after every filled row and after the earlier
    // runs' events, as a live stream's would: a later run never writes between an earlier one's rows, nor into
    // buckets the breaker has already judged. The last stretch ends 10 minutes before now.
    let slot = crate::load::stream_span(args.events) + TimeDelta::minutes(1);
    let runs_from = now - slot * args.prefill.len() as i32 - TimeDelta::minutes(10);
    anyhow::ensure!(runs_from > window_start, "--events × levels do not fit in the retention window");

    let mut stored = 0u64;
    for (i, &level) in args.prefill.iter().enumerate() {
        anyhow::ensure!(level >= stored, "--prefill levels must grow: {level} after {stored} rows stored");
        let filled = level - stored;
        let started = Instant::now();
        let before_fill = bytes(&pool).await?;
        if filled > 0 {
            check_disk(admin, filled).await?;
            let to = runs_from;
            say(&format!("stored: filling {filled} rows over {} .. {}", window_start.to_rfc3339(), to.to_rfc3339()));
            fill(&pool, filled, window_start, to, &format!("l{i}"), args.fill_connections).await?;
            say("stored: VACUUM ANALYZE costsim_provenance");
            sqlx::raw_sql("VACUUM (ANALYZE) costsim_provenance").execute(&pool).await?;
        }
        // The fill's gigabytes would otherwise still be on their way to disk while the run commits: written out
        // now, so the run pays for the rows stored, not for the benchmark having just written them.
        sqlx::raw_sql("CHECKPOINT").execute(&pool).await?;
        let fill_secs = started.elapsed().as_secs_f64();
        stored += filled;
        say(&format!("stored: {stored} rows stored; run end to end on {} events ({:?})", args.events, out.broker));
        let before = bytes(&pool).await?;
        let fill_bytes = before.0 - before_fill.0;
        let start = runs_from + slot * i as i32;
        let run = e2e(args, &url, &format!("bench-{id}-stored{i}"), out.broker, (50 + i as u64, start), work).await?;
        let after = bytes(&pool).await?;
        say(&format!("stored: run {run:.0} events/s with {stored} rows stored"));
        out.levels.push(Level {
            stored,
            filled,
            fill_secs,
            fill_bytes,
            events: args.events,
            run: Some(run),
            provenance_bytes: after.0 - before.0,
            other_bytes: after.1 - before.1,
        });
        stored += args.events;
    }

    if args.prefill.last().is_some_and(|&l| l > 0) {
        out.retention = Some(retention(&pool, &settings, args.expire_rows, args.expire_other_rows, stored).await?);
    }
    pool.close().await;
    Ok(())
}

/// Creates the provenance partitions of `[from, to]` that are missing (the migration creates today's and the
/// next days'); returns how many.
async fn create_window(
    pool: &PgPool,
    settings: &StorageSettings,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let existing = partitions::list(&mut tx).await?;
    let default = existing.iter().find(|p| p.is_default()).map(|p| p.name.clone());
    let planned = partitions::plan_creations(&existing, &settings.partition.slots(from, to));
    for bounds in &planned {
        partitions::create(&mut tx, *bounds, default.as_deref()).await?;
    }
    tx.commit().await?;
    Ok(planned.len())
}

/// Refuses a fill the server's disk cannot take: about 500 bytes a row with its indexes (measured), twice that
/// while the write-ahead log of the fill waits for its checkpoint, and 5 GiB to spare.
async fn check_disk(admin: &PgPool, rows: u64) -> anyhow::Result<()> {
    let dir: String = sqlx::query_scalar("SHOW data_directory").fetch_one(admin).await?;
    let out = std::process::Command::new("df").args(["--output=avail", "-B1", &dir]).output()?;
    let avail: Option<u64> = String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok());
    let Some(avail) = avail else {
        say(&format!("stored: cannot read the free space of {dir} (not on this machine?); filling anyway"));
        return Ok(());
    };
    let need = rows * 500 * 2 + (5 << 30);
    anyhow::ensure!(
        avail >= need,
        "{rows} rows need about {} GiB on the server's disk ({dir}), {} GiB are free",
        need >> 30,
        avail >> 30
    );
    Ok(())
}

/// Inserts `rows` provenance rows spread evenly over `[from, to)`, in chunks taken by `connections` statements
/// at a time; `tag` keeps this fill's event ids apart from other fills'. Prints progress on stderr.
async fn fill(
    pool: &PgPool,
    rows: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tag: &str,
    connections: usize,
) -> anyhow::Result<()> {
    // The row of index i is stamped `from + i × step`: each chunk covers its own stretch of time.
    let step_us = (to - from).num_microseconds().context("window too long")? as f64 / rows as f64;
    let chunks = Chunks { rows, next: AtomicU64::new(0), done: AtomicU64::new(0), started: Instant::now() };
    let chunks = Arc::new(chunks);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (pool, chunks, tag) = (pool.clone(), chunks.clone(), tag.to_owned());
        tasks.spawn(async move { fill_chunks(&pool, &chunks, from, step_us, &tag).await });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    Ok(())
}

/// The chunks of one fill, taken by its statements in turn.
struct Chunks {
    rows: u64,
    /// The first row index not yet taken.
    next: AtomicU64,
    /// Rows inserted.
    done: AtomicU64,
    started: Instant,
}

/// Inserts chunks until none is left.
async fn fill_chunks(
    pool: &PgPool,
    chunks: &Chunks,
    from: DateTime<Utc>,
    step_us: f64,
    tag: &str,
) -> anyhow::Result<()> {
    loop {
        let first = chunks.next.fetch_add(CHUNK, Ordering::Relaxed);
        if first >= chunks.rows {
            return Ok(());
        }
        let last = (first + CHUNK).min(chunks.rows) - 1;
        sqlx::query(FILL)
            .bind(first as i64)
            .bind(last as i64)
            .bind(from)
            .bind(step_us)
            .bind(tag)
            .execute(pool)
            .await
            .context("a fill statement")?;
        let n = last + 1 - first;
        let total = chunks.done.fetch_add(n, Ordering::Relaxed) + n;
        if total % (CHUNK * 4) == 0 || total == chunks.rows {
            let rate = total as f64 / chunks.started.elapsed().as_secs_f64();
            say(&format!("  … {total} of {} rows ({rate:.0} rows/s)", chunks.rows));
        }
    }
}

/// One chunk of the fill: `$1..=$2` the row indexes, `$3` the window's start, `$4` microseconds between two rows,
/// `$5` the fill's tag. Every column the processor fills for a generated event is filled here with a value of the
/// same shape: a UUID event id, a 64-hex-digit input hash, 50 tenants, steady drift scores and their verdicts.
const FILL: &str = "INSERT INTO costsim_provenance (event_id, occurred_at, run_id, tenant_id, variant_slug, source, \
     model_version, adapter_version, commit_sha, input_hash, v1_cost, v2_cost, cost_delta, v1_feasible, \
     v2_feasible, v2_status, drift_score, verdict, runtime_ms, kafka_topic, kafka_partition, kafka_offset, processed) \
     SELECT md5($5 || ':' || i)::uuid::text, $3::timestamptz + (i * $4::float8) * interval '1 microsecond', \
     'run-' || $5 || '-' || i, 'tenant-' || lpad(floor(random() * 50)::int::text, 3, '0'), 'v2', 'sandbox', \
     '2.0.0', '2.0.0', 'synthetic000', md5('a' || $5 || i) || md5('b' || $5 || i), c, c + d, d, f, f, 'success', \
     s, CASE WHEN s <= 0.05 THEN 'match' WHEN s <= 0.15 THEN 'minor_drift' ELSE 'major_drift' END, \
     5 + floor(random() * 115)::int, 'bench.prefill.results', (i % 6)::int, i / 6, true \
     FROM (SELECT i, 50 + floor(random() * 4950) AS c, floor(random() * 250) AS d, random() < 0.9 AS f, \
                  0.1 * random() ^ 2 AS s \
           FROM generate_series($1::int8, $2::int8) AS i) g";

/// Bytes on disk of provenance (every partition, with indexes and TOAST) and of every other table.
async fn bytes(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "WITH tree AS (SELECT relid FROM pg_partition_tree('costsim_provenance'::regclass)) \
         SELECT coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.oid IN (SELECT relid FROM tree)), 0)::int8, \
                coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.oid NOT IN (SELECT relid FROM tree)), 0)::int8 \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r'",
    )
    .fetch_one(pool)
    .await?)
}

/// `run` end to end on `url` for `args.events` fresh events (`stream`: the generator's seed and the first
/// event's time) on fresh topics named after `prefix`: on a mock cluster of its own, or on the stack broker with
/// the input produced first.
async fn e2e(
    args: &Args,
    url: &str,
    prefix: &str,
    kind: BrokerKind,
    stream: (u64, DateTime<Utc>),
    work: &std::path::Path,
) -> anyhow::Result<f64> {
    let topics = crate::kafka_config("", prefix, prefix);
    let mock = match kind {
        BrokerKind::Stack => None,
        BrokerKind::Mock => Some(
            MockBroker::start(
                &args.mock_kafka,
                &[(topics.results_topic.clone(), 6), (topics.state_topic.clone(), 1), (topics.dlq_topic.clone(), 1)],
            )
            .await?,
        ),
    };
    let brokers = mock.as_ref().map_or(args.stack_brokers.clone(), |m| m.brokers.clone());
    let kafka = KafkaConfig { brokers, ..topics };
    kafka.ensure_topics(&[TopicRole::Results, TopicRole::State, TopicRole::DeadLetter]).await?;
    let mut feed = Feed::of(&kafka, crate::load::stream_config_at(args.events, stream.0, stream.1))?;
    if kind == BrokerKind::Stack {
        feed.send(args.events).await?;
    }
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let log = work.join(format!("{prefix}.log"));
    let mut processor = Processor::start(&kafka, url, &[], &args.run_args, &log)?;
    let supply = match kind {
        BrokerKind::Stack => Supply::Upfront,
        BrokerKind::Mock => Supply::TopUp { feed: &mut feed, low: 20_000, high: 40_000 },
    };
    let drive = crate::load::drive(&pool, &kafka.results_topic, &mut processor, args.events, supply).await?;
    processor.stop().await?;
    pool.close().await;
    drop(mock);
    Ok(drive.rate(args.events))
}

/// The maintenance pass on the filled database: `other_rows` expired rows put into each table retention deletes
/// from, and the pass run as if time had moved on until the oldest partitions holding at least `expire_rows` rows
/// had expired. Times each half in its own transaction, as `storage::maintain_at` runs them, then a whole pass
/// right after, which finds nothing to do.
async fn retention(
    pool: &PgPool,
    settings: &StorageSettings,
    expire_rows: u64,
    other_rows: u64,
    stored_rows: u64,
) -> anyhow::Result<Retention> {
    say(&format!("retention: {other_rows} expired rows into each of the outboxes, lost records, canary reports"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(expired_rows_sql(other_rows))).execute(pool).await?;

    let now = Utc::now();
    let mut conn = pool.begin().await?;
    let existing = partitions::list(&mut conn).await?;
    conn.commit().await?;
    let today = settings.partition.floor(now);
    let mut expired_rows = 0u64;
    let mut until = None;
    for p in existing.iter().filter(|p| !p.is_default()) {
        let Some((_, Some(end))) = p.bounds else { continue };
        if end > today || expired_rows >= expire_rows {
            break;
        }
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{}\"", p.name)))
            .fetch_one(pool)
            .await?;
        expired_rows += n as u64;
        until = Some(end);
    }
    let until = until.context("no partition before today to expire")?;
    // Just past the moment the last of them expires.
    let at = until + TimeDelta::days(i64::from(settings.provenance_retention_days)) + TimeDelta::minutes(1);
    let shifted_hours = (at - now).num_seconds() as f64 / 3600.0;
    say(&format!(
        "retention: a pass {shifted_hours:.1} h ahead, when partitions holding {expired_rows} of {stored_rows} rows have expired"
    ));

    let mut report = MaintenanceReport::new(at);
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    storage::apply_retention(&mut tx, settings, at, &mut report).await?;
    tx.commit().await?;
    let deletes_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    storage::maintain_partitions(&mut tx, settings, at, &mut report).await?;
    tx.commit().await?;
    let partitions_secs = started.elapsed().as_secs_f64();
    say(&format!("retention: deletes {deletes_secs:.3} s, partitions {partitions_secs:.3} s\n{report}"));

    let started = Instant::now();
    let idle = storage::maintain_at(pool, settings, at).await.context("the pass with nothing to do")?;
    let idle_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(idle.is_empty(), "a second pass still found work: {idle}");
    say(&format!("retention: a pass with nothing to do {idle_secs:.3} s"));

    Ok(Retention {
        shifted_hours,
        expired_rows,
        stored_rows,
        partitions_secs,
        dropped: report.dropped.len(),
        created: report.created.len(),
        deletes_secs,
        deleted: report.deleted.iter().map(|d| (d.table, d.rows)).collect(),
        other_rows,
        idle_secs,
    })
}

/// `n` rows older than any retention (400 days) in each table retention deletes from, shaped so that each delete
/// finds most of them: published state events of a breaker of their own, sent alerts two to an alert (the newer
/// is kept), lost-record ranges, and canary reports of one breaker (its newest is kept).
fn expired_rows_sql(n: u64) -> String {
    format!(
        "INSERT INTO costsim_cb_state (name, version) VALUES ('bench-retention', {n} + 1);
         INSERT INTO costsim_breaker_events (event_id, breaker, version, payload, created_at, published_at)
           SELECT md5('e' || v)::uuid::text, 'bench-retention', v,
                  jsonb_build_object('event_id', md5('e' || v)::uuid::text, 'breaker', 'bench-retention',
                                     'version', v, 'state', 'closed', 'reason', 'benchmark retention row'),
                  t, t
           FROM generate_series(1, {n}) AS v, LATERAL (SELECT now() - interval '400 days' - v * interval '1 s') AS x(t);
         INSERT INTO costsim_alert_queue (payload, alert_type, circuit_breaker_name, incident_id, status, created_at,
                                          sent_at, next_attempt_at)
           SELECT jsonb_build_object('labels', jsonb_build_object('alertname', 'CostSimBreakerOpen',
                                     'breaker', 'bench-retention', 'incident', 'inc-' || (i / 2))),
                  'breaker_open', 'bench-retention', 'inc-' || (i / 2), 'sent', t, t, t
           FROM generate_series(1, {n}) AS i, LATERAL (SELECT now() - interval '400 days' - i * interval '1 s') AS x(t);
         INSERT INTO costsim_lost_records (consumer_group, topic, \"partition\", first_offset, end_offset,
                                           log_start_offset, detected_at)
           SELECT 'bench', 'bench.retention', 0, i * 10, i * 10 + 5, i * 10 + 5,
                  now() - interval '400 days' - i * interval '1 s'
           FROM generate_series(1, {n}) AS i;
         INSERT INTO costsim_canary_reports (run_id, \"timestamp\", status, breaker)
           SELECT 'bench-canary-' || i, now() - interval '400 days' - i * interval '1 s', 'pass', 'bench-retention'
           FROM generate_series(1, {n}) AS i;
         ANALYZE costsim_breaker_events, costsim_alert_queue, costsim_lost_records, costsim_canary_reports;"
    )
}
