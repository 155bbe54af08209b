//! `backfill`: fills `costsim_provenance` from a Kafka topic range or from files (ours and the older system's),
//! idempotent on `event_id`.
//!
//! It writes provenance rows only: no breaker state, bucket or consumer offset, and it joins no consumer group
//! (partitions are assigned by hand and nothing is committed), so it is safe while `run` is live; rows `run` has
//! written already are skipped as duplicates. Each batch is a COPY and one `INSERT … SELECT … ON CONFLICT` in its
//! own transaction, so an interrupted backfill keeps the batches it wrote and a rerun completes it.

mod input;
mod progress;
mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::topic_range::Position;
use crate::kafka::KafkaConfig;
use crate::store::DatabaseConfig;
use crate::store::provenance;
use input::{Batch, Source};
use progress::Progress;

/// Arguments of `backfill`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").args(["topic", "file", "dir"])))]
pub struct BackfillArgs {
    /// Replay this Kafka topic (Avro simulation results), without joining a consumer group.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Only these partitions of the topic (comma-separated); default: all.
    #[arg(long, value_name = "P,…", value_delimiter = ',', requires = "topic")]
    partitions: Option<Vec<i32>>,
    /// Start at this offset in every partition (clamped to what it holds); default: the beginning.
    #[arg(long, value_name = "N", requires = "topic", conflicts_with = "from_time")]
    from_offset: Option<u64>,
    /// Start at the first record whose Kafka timestamp is at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME", requires = "topic")]
    from_time: Option<DateTime<Utc>>,
    /// Stop before this offset in every partition; default: the end when the backfill starts.
    #[arg(long, value_name = "N", requires = "topic", conflicts_with = "to_time")]
    to_offset: Option<u64>,
    /// Stop before the first record whose Kafka timestamp is at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME", requires = "topic")]
    to_time: Option<DateTime<Utc>>,
    /// Read one file: JSON lines when it ends in `.jsonl`, otherwise one JSON object or an array of them. Lines
    /// may be our simulation results or the older system's provenance or historical-run records.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Read the folder's `provenance_*.jsonl` files, in name order.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Count what would be inserted or skipped, and write nothing.
    #[arg(long, conflicts_with = "verify")]
    dry_run: bool,
    /// Write nothing; report what the table holds (per variant and source, costs, drift) and check that every
    /// record of the input, if one is given, is stored with the costs it had. Exits non-zero when not.
    #[arg(long)]
    verify: bool,
    /// Exit 0 even when some records were invalid (they are reported and skipped either way).
    #[arg(long)]
    allow_invalid: bool,
    /// Rows per statement and transaction.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    schemas: super::schema::SchemaArgs,
}

/// What a backfill did.
#[derive(Debug, Default)]
struct Counts {
    files: u64,
    records: u64,
    inserted: u64,
    duplicates: u64,
    invalid: u64,
    read_to_end: bool,
}

/// Runs `backfill`; bad records go to stderr as `place: reason` and are skipped.
pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let source = source(&args)?;
    let pool = args.database.connect().await?;
    let Some(source) = source else {
        let mut tx = pool.begin().await.context("cannot begin a transaction")?;
        let (report, failure) = verify::report(&mut tx, None).await.context("cannot read provenance")?;
        tx.commit().await.context("cannot read provenance")?;
        print!("{report}");
        return Ok(verdict(failure));
    };

    let (size_tx, mut size_rx) = mpsc::channel(1);
    // Two batches in flight: the reader stays one batch ahead of the writer and memory stays bounded.
    let (tx, mut rx) = mpsc::channel::<Batch>(2);
    let batch_size = args.batch_size as usize;
    let reader = tokio::task::spawn_blocking(move || input::read(source, batch_size, &size_tx, tx));
    let mut progress = Progress::start(size_rx.recv().await.unwrap_or(0));
    let mut counts = Counts { read_to_end: true, ..Counts::default() };
    let mut check = verify::Check::default();
    let mut seen = HashSet::new();
    while let Some(batch) = rx.recv().await {
        counts.files = batch.files;
        for rejected in &batch.rejected {
            progress.println(&format!("{}: {}", rejected.place, rejected.message));
            counts.invalid += 1;
            counts.read_to_end &= !rejected.fatal;
        }
        counts.records += (batch.rows.len() + batch.rejected.len()) as u64;
        let mut tx = pool.begin().await.context("cannot begin a transaction")?;
        if args.verify {
            check.batch(&mut tx, &batch.rows).await.context("cannot read provenance")?;
            tx.commit().await.context("cannot read provenance")?;
        } else if args.dry_run {
            let stored =
                provenance::existing_event_ids(&mut tx, &batch.rows).await.context("cannot read provenance")?;
            tx.commit().await.context("cannot read provenance")?;
            for id in batch.rows.iter().map(|r| r.event_id.clone()) {
                if stored.contains(&id) || !seen.insert(id) {
                    counts.duplicates += 1;
                } else {
                    counts.inserted += 1;
                }
            }
        } else {
            let inserted = provenance::insert_rows(&mut tx, &batch.rows, provenance::Writer::Backfill)
                .await
                .context("cannot write provenance")?;
            tx.commit().await.context("cannot commit a batch of provenance")?;
            counts.inserted += inserted.len() as u64;
            counts.duplicates += (batch.rows.len() - inserted.len()) as u64;
        }
        progress.update(batch.done, counts.records);
    }
    reader.await.context("the reader failed")??;
    progress.finish();

    if args.verify {
        let mut tx = pool.begin().await.context("cannot begin a transaction")?;
        let (report, failure) = verify::report(&mut tx, Some(&check)).await.context("cannot read provenance")?;
        tx.commit().await.context("cannot read provenance")?;
        print!("{report}");
        return Ok(verdict(failure.or_else(|| invalid_failure(&counts, args.allow_invalid))));
    }
    let inserted = if args.dry_run { "would insert" } else { "inserted" };
    println!(
        "backfill: files {}, records {}, {inserted} {}, duplicates skipped {}, invalid {} ({:.1} s, {:.0} records/s)",
        counts.files,
        counts.records,
        counts.inserted,
        counts.duplicates,
        counts.invalid,
        progress.elapsed(),
        progress.rate(counts.records)
    );
    Ok(verdict(invalid_failure(&counts, args.allow_invalid)))
}

/// The input the arguments name, `None` for `--verify` alone.
fn source(args: &BackfillArgs) -> anyhow::Result<Option<Source>> {
    let position = |offset: Option<u64>, time: Option<DateTime<Utc>>| match (offset, time) {
        (Some(offset), _) => Some(Position::Offset(i64::try_from(offset).unwrap_or(i64::MAX))),
        (None, Some(time)) => Some(Position::Time(time)),
        (None, None) => None,
    };
    let topic_only = args.partitions.is_some()
        || args.from_offset.is_some()
        || args.from_time.is_some()
        || args.to_offset.is_some()
        || args.to_time.is_some();
    anyhow::ensure!(
        args.topic.is_some() || !topic_only,
        "--partitions, --from-offset, --from-time, --to-offset and --to-time apply to --topic only"
    );
    Ok(match (&args.topic, &args.file, &args.dir) {
        (Some(topic), _, _) => Some(Source::Topic {
            kafka: Box::new(args.kafka.clone()),
            writers: Box::new((args.schemas.writers()?, args.schemas.registry()?)),
            topic: topic.clone(),
            partitions: args.partitions.clone(),
            from: position(args.from_offset, args.from_time),
            to: position(args.to_offset, args.to_time),
        }),
        (None, Some(file), _) => Some(Source::Files(vec![file.clone()])),
        (None, None, Some(dir)) => {
            let files = input::provenance_files(dir)?;
            anyhow::ensure!(!files.is_empty(), "no provenance_*.jsonl files in {}", dir.display());
            Some(Source::Files(files))
        }
        (None, None, None) if args.verify => None,
        (None, None, None) => anyhow::bail!("give --topic TOPIC, --file FILE or --dir DIR (or --verify alone)"),
    })
}

fn invalid_failure(counts: &Counts, allow_invalid: bool) -> Option<String> {
    if !counts.read_to_end {
        Some("the input could not be read to its end".to_owned())
    } else if counts.invalid > 0 && !allow_invalid {
        Some(format!("{} invalid records (use --allow-invalid to accept them)", counts.invalid))
    } else {
        None
    }
}

fn verdict(failure: Option<String>) -> ExitCode {
    match failure {
        None => ExitCode::SUCCESS,
        Some(reason) => {
            eprintln!("backfill: {reason}");
            ExitCode::FAILURE
        }
    }
}
