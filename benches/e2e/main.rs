//! The end-to-end benchmark behind `scripts/bench` (not part of `cargo test`): the machine's raw limits (a plain
//! Kafka reader of the input topic, `psql` COPY of the same provenance rows into the migrated table and into a
//! table with only a primary key, the storage floor), `run` end to end on 1M generated events, the decision delay
//! under a background stream, resident memory after 1M and 5M events, the engine alone and `backfill`, against the
//! stack broker and librdkafka's mock cluster (`examples/mock_kafka.rs`); then `run` end to end with 0, 10M and 50M
//! provenance rows already stored, the bytes on disk per million events and the time of a retention pass
//! (`stored.rs`). It prints each phase as it goes and writes the table, the machine and the goals to
//! `BENCHMARKS.md`.
//!
//! `cargo bench --bench e2e -- --mock-kafka target/release/examples/mock_kafka` with `DATABASE_URL` and
//! `KAFKA_BROKERS` set (`scripts/bench` does all of it); with no options, as a plain `cargo bench` runs it, it does
//! nothing. Every run uses fresh databases and topics.

mod db;
mod delay;
mod load;
mod procs;
mod report;
mod stored;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use costsim_breaker::backtest::Backtest;
use costsim_breaker::breaker::BreakerConfig;
use costsim_breaker::generate::{DriftProfile, Generator, GeneratorConfig};
use costsim_breaker::kafka::{KafkaConfig, TopicRole};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use load::{Feed, Supply};
use procs::{MockBroker, Processor};
use report::{BrokerResult, Results};

/// Which broker a set of phases runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    /// The stack's broker (`KAFKA_BROKERS`, tansu under `scripts/stack`).
    Stack,
    /// librdkafka's in-memory mock cluster, started by `examples/mock_kafka.rs`.
    Mock,
}

/// Options of the benchmark.
#[derive(clap::Parser)]
struct Args {
    /// Events of the end-to-end run (and of the plain read, COPY and backfill on the stack broker).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events after which resident memory is read the second time (the same processor continues).
    #[arg(long, default_value_t = 5_000_000)]
    memory_events: u64,
    /// Trips of the decision-delay phase.
    #[arg(long, default_value_t = 20)]
    trips: usize,
    /// Background events per second during the decision-delay phase.
    #[arg(long, default_value_t = 10_000.0)]
    background_rate: f64,
    /// Brokers to run against, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "stack,mock")]
    brokers: Vec<BrokerKind>,
    /// The stack broker's bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    stack_brokers: String,
    /// What the stack broker is, for the report.
    #[arg(long, default_value = "stack broker")]
    stack_label: String,
    /// PostgreSQL server (any database); the benchmark creates its own databases there.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The mock broker tool (`cargo build --release --example mock_kafka`).
    #[arg(long, default_value = "target/release/examples/mock_kafka")]
    mock_kafka: PathBuf,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Text appended to the report (what the numbers mean, the knobs, the profile).
    #[arg(long)]
    notes: Option<PathBuf>,
    /// An extra argument of every `run` the benchmark starts (repeatable), e.g. `--run-arg=-X
    /// --run-arg=fetch.wait.max.ms=50` to measure a client setting.
    #[arg(long = "run-arg", allow_hyphen_values = true)]
    run_args: Vec<String>,
    /// How the run was started, for the report.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
    /// Provenance rows already stored before each end-to-end run of the stored-rows phases, in order; the levels
    /// top up one database (`bench_<id>_stored`), the earlier runs' rows counted. Empty: no such phase.
    #[arg(long, value_delimiter = ',', default_value = "0,10000000,50000000")]
    prefill: Vec<u64>,
    /// The broker of the stored-rows phases (a mock cluster of their own, or the stack broker).
    #[arg(long, value_enum, default_value = "mock")]
    prefill_broker: BrokerKind,
    /// Statements filling provenance at once.
    #[arg(long, default_value_t = 2)]
    fill_connections: usize,
    /// Provenance rows the retention pass finds expired: it runs as if time had moved on until the oldest
    /// partitions holding at least this many rows had expired (after the last level, when that stored any).
    #[arg(long, default_value_t = 10_000_000)]
    expire_rows: u64,
    /// Expired rows put into each of the other tables retention deletes from before that pass.
    #[arg(long, default_value_t = 100_000)]
    expire_other_rows: u64,
    /// Keep the run's databases (`bench_<id>_*`, gigabytes) instead of dropping them at the end.
    #[arg(long)]
    keep_databases: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Prints a progress line on stderr.
pub fn say(line: &str) {
    eprintln!("[bench {}] {line}", Utc::now().format("%H:%M:%S"));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A plain `cargo bench` runs every bench target with `--bench` alone: this one needs the stack and a quarter of
    // an hour, so it runs only when given options (`scripts/bench` gives them).
    if std::env::args().skip(1).all(|a| a == "--bench") {
        println!("benches/e2e runs only with options; use scripts/bench (see BENCHMARKS.md)");
        return Ok(());
    }
    let args = <Args as clap::Parser>::parse();
    let id = Utc::now().format("%m%d%H%M%S").to_string();
    let work = PathBuf::from("target/bench").join(&id);
    std::fs::create_dir_all(&work)?;
    let admin = PgPoolOptions::new().max_connections(2).connect(&args.database_url).await?;
    let mut results = Results::start(&admin, &args.command, &args.stack_label, args.events, args.memory_events).await;
    say(&format!("run {id}: logs and files in {}", work.display()));

    say(&format!("engine: replaying {} events through the breaker engine (best of 3)", args.events));
    results.engine = Some(engine(args.events));
    say(&format!("engine: {:.0} events/s", results.engine.unwrap_or_default()));

    say(&format!("COPY: {} provenance rows into a fresh database with psql \\copy", args.events));
    let (copy, floor) = copy_limit(&admin, &args.database_url, &format!("bench_{id}_copy"), args.events, &work).await?;
    say(&format!("COPY: {copy:.0} rows/s into costsim_provenance, {floor:.0} rows/s into a primary-key-only table"));
    results.copy = Some(copy);
    results.copy_floor = Some(floor);

    for kind in &args.brokers {
        let mut result = BrokerResult::new(*kind);
        if let Err(err) = broker_phases(&args, &admin, &id, *kind, &work, &mut result).await {
            say(&format!("{kind:?}: FAILED: {err:#}"));
            result.failure = Some(format!("{err:#}"));
        }
        results.brokers.push(result);
    }
    if !args.prefill.is_empty() {
        let mut out = stored::Stored::new(args.prefill_broker);
        if let Err(err) = stored::phases(&args, &admin, &id, &work, &mut out).await {
            say(&format!("stored rows: FAILED: {err:#}"));
            out.failure = Some(format!("{err:#}"));
        }
        results.stored = Some(out);
    }
    results.finish().await;
    let notes = match &args.notes {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => String::new(),
    };
    let text = results.markdown(&notes);
    std::fs::write(&args.output, &text).with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("{}", results.table());
    say(&format!("wrote {}", args.output.display()));
    if !args.keep_databases {
        match db::drop_run(&admin, &id).await {
            Ok(n) => say(&format!("dropped the run's {n} databases (--keep-databases keeps them)")),
            Err(err) => say(&format!("could not drop the run's databases bench_{id}_*: {err:#}")),
        }
    }
    Ok(())
}

/// Events per second of the breaker engine alone, best of three replays of a spike stream.
fn engine(count: u64) -> f64 {
    let events: Vec<_> = Generator::new(GeneratorConfig {
        count,
        profile: DriftProfile::Spike,
        start: chrono::DateTime::from_timestamp_millis(1_764_230_400_000).expect("valid"),
        events_per_second: 100.0,
        seed: 42,
        tenants: 50,
    })
    .collect();
    let config = BreakerConfig::default().with_overrides(["disable_ttl_seconds=60"]).expect("valid settings");
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let mut backtest = Backtest::new(config.clone()).expect("valid settings");
            for event in &events {
                std::hint::black_box(backtest.push(event));
            }
            std::hint::black_box(backtest.finish());
            count as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Rows per second of `psql \copy` of the provenance rows of `count` generated events into a fresh database's
/// `costsim_provenance`, and of the same file into a table of the same columns with only a primary key (no
/// unique key, no other index, no check, not partitioned): the storage floor.
async fn copy_limit(
    admin: &PgPool,
    admin_url: &str,
    name: &str,
    count: u64,
    work: &Path,
) -> anyhow::Result<(f64, f64)> {
    let url = db::fresh(admin, admin_url, name).await?;
    let kafka = kafka_config("unused", "bench.copy", "unused");
    let mut migrate = procs::cli(&kafka, &url);
    migrate.arg("migrate");
    procs::run_cli(migrate, "migrate").await?;
    let csv = std::path::absolute(work.join("provenance.csv"))?;
    let rows = db::write_copy_csv(&csv, Generator::new(load::stream_config(count, 42)), "bench.copy", 6)?;
    let copy = format!("\\copy costsim_provenance ({}) FROM '{}' WITH (FORMAT csv)", db::COPY_COLUMNS, csv.display());
    let took = procs::psql(&url, &copy).await?;
    procs::psql(
        &url,
        "CREATE TABLE bench_floor (LIKE costsim_provenance INCLUDING DEFAULTS INCLUDING IDENTITY); \
         ALTER TABLE bench_floor ADD PRIMARY KEY (id)",
    )
    .await?;
    let floor = procs::psql(&url, &copy.replacen("costsim_provenance", "bench_floor", 1)).await?;
    let _ = std::fs::remove_file(&csv);
    Ok((rows as f64 / took.as_secs_f64(), rows as f64 / floor.as_secs_f64()))
}

/// Client settings for one phase's topics and group.
fn kafka_config(brokers: &str, prefix: &str, group: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        results_topic: format!("{prefix}.results"),
        state_topic: format!("{prefix}.state"),
        dlq_topic: format!("{prefix}.dlq"),
        group_id: group.to_owned(),
        results_partitions: 6,
        replication_factor: Some(1),
        min_insync_replicas: None,
        kafka_config: None,
        options: Vec::new(),
    }
}

/// Every phase that involves a broker, against one broker.
async fn broker_phases(
    args: &Args,
    admin: &PgPool,
    id: &str,
    kind: BrokerKind,
    work: &Path,
    out: &mut BrokerResult,
) -> anyhow::Result<()> {
    let name = format!("{kind:?}").to_lowercase();
    let prefix = format!("bench-{id}-{name}");
    let db_prefix = format!("bench_{id}_{name}");
    let run_topics = kafka_config("", &format!("{prefix}-run"), &format!("{prefix}-run"));
    let delay_topics = kafka_config("", &format!("{prefix}-delay"), &format!("{prefix}-delay"));
    let read_topic = format!("{prefix}-read.results");
    let mock = match kind {
        BrokerKind::Stack => None,
        BrokerKind::Mock => {
            let mut topics = vec![(read_topic.clone(), 6)];
            for k in [&run_topics, &delay_topics] {
                topics.extend([(k.results_topic.clone(), 6), (k.state_topic.clone(), 1), (k.dlq_topic.clone(), 1)]);
            }
            say("mock: starting the mock cluster");
            Some(MockBroker::start(&args.mock_kafka, &topics).await?)
        }
    };
    let brokers = mock.as_ref().map_or(args.stack_brokers.clone(), |m| m.brokers.clone());
    say(&format!("{name}: broker at {brokers}"));
    let kafka = KafkaConfig { brokers: brokers.clone(), ..run_topics };
    let delay_kafka = KafkaConfig { brokers: brokers.clone(), ..delay_topics };
    let roles = [TopicRole::Results, TopicRole::State, TopicRole::DeadLetter];
    kafka.ensure_topics(&roles).await?;
    delay_kafka.ensure_topics(&roles).await?;

    // The input of the plain read and of backfill: the run's 1M events on the stack broker; on the mock, which
    // keeps 5 MiB per partition, a smaller topic read over and over.
    let mut feed = Feed::new(&kafka, args.memory_events, 42)?;
    let source = match kind {
        BrokerKind::Stack => {
            say(&format!("{name}: producing {} events", args.events));
            let started = Instant::now();
            feed.send(args.events).await?;
            out.produce = Some(args.events as f64 / started.elapsed().as_secs_f64());
            say(&format!("{name}: produced at {:.0} records/s", out.produce.unwrap_or_default()));
            kafka.results_topic.clone()
        }
        BrokerKind::Mock => {
            let read_kafka = KafkaConfig { results_topic: read_topic.clone(), ..kafka.clone() };
            Feed::new(&read_kafka, 60_000, 43)?.send(60_000).await?;
            read_topic
        }
    };

    say(&format!("{name}: plain read of {source} until {} records", args.events));
    let (reader_kafka, topic, target) = (kafka.clone(), source.clone(), args.events);
    let (read, secs) = tokio::task::spawn_blocking(move || load::plain_read(&reader_kafka, &topic, target)).await??;
    out.read = Some(read as f64 / secs);
    say(&format!("{name}: plain read {:.0} records/s", out.read.unwrap_or_default()));

    say(&format!("{name}: backfill of {source}"));
    let backfill_db = db::fresh(admin, &args.database_url, &format!("{db_prefix}_backfill")).await?;
    let mut migrate = procs::cli(&kafka, &backfill_db);
    migrate.arg("migrate");
    procs::run_cli(migrate, "migrate").await?;
    let mut backfill = procs::cli(&kafka, &backfill_db);
    backfill.args(["backfill", "--topic", &source]);
    let summary = procs::run_cli(backfill, "backfill").await?;
    out.backfill = report::parse_backfill(&summary);
    say(&format!("{name}: {}", summary.trim()));

    let run_db = db::fresh(admin, &args.database_url, &format!("{db_prefix}_run")).await?;
    let pool = PgPoolOptions::new().max_connections(1).connect(&run_db).await?;
    say(&format!("{name}: run end to end on {} events", args.events));
    let mut processor = Processor::start(&kafka, &run_db, &[], &args.run_args, &work.join(format!("run-{name}.log")))?;
    let supply = match kind {
        BrokerKind::Stack => Supply::Upfront,
        BrokerKind::Mock => Supply::TopUp { feed: &mut feed, low: 20_000, high: 40_000 },
    };
    let drive = load::drive(&pool, &kafka.results_topic, &mut processor, args.events, supply).await?;
    out.run = Some(drive.rate(args.events));
    out.rss_path.extend(drive.rss);
    out.rss_first = Some(processor.rss_bytes()?);
    say(&format!(
        "{name}: run {:.0} events/s; resident {:.1} MiB",
        out.run.unwrap_or_default(),
        report::mib(out.rss_first.unwrap_or_default())
    ));

    if args.memory_events > args.events {
        say(&format!("{name}: the same processor on to {} events (input topped up as it reads)", args.memory_events));
        let (low, high) = if kind == BrokerKind::Mock { (20_000, 40_000) } else { (50_000, 100_000) };
        let supply = Supply::TopUp { feed: &mut feed, low, high };
        let drive = load::drive(&pool, &kafka.results_topic, &mut processor, args.memory_events, supply).await?;
        out.run_topped_up = Some(drive.rate(args.memory_events));
        out.rss_path.extend(drive.rss);
        out.rss_last = Some(processor.rss_bytes()?);
        say(&format!(
            "{name}: resident {:.1} MiB after {} events",
            report::mib(out.rss_last.unwrap_or_default()),
            args.memory_events
        ));
    }
    processor.stop().await?;
    pool.close().await;

    say(&format!("{name}: decision delay, {} trips under {} events/s of background", args.trips, args.background_rate));
    let delay_db = db::fresh(admin, &args.database_url, &format!("{db_prefix}_delay")).await?;
    let pool = PgPoolOptions::new().max_connections(1).connect(&delay_db).await?;
    let log = work.join(format!("delay-{name}.log"));
    let mut processor = Processor::start(&delay_kafka, &delay_db, delay::SETTINGS, &args.run_args, &log)?;
    let delays =
        delay::measure(&delay_kafka, &delay_db, &pool, &mut processor, args.trips, args.background_rate).await?;
    out.delays = Some(delays);
    processor.stop().await?;
    pool.close().await;
    drop(mock);
    Ok(())
}
