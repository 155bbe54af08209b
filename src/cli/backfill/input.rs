//! What `backfill` reads: files of JSON lines, JSON documents (an object or an array), a folder of
//! `provenance_*.jsonl` files, or a Kafka topic range, as batches of provenance rows and rejected records.
//!
//! Reading is blocking (files, librdkafka's `BaseConsumer`): it runs on a blocking thread and hands batches to
//! the writer through a bounded channel, so reading the next batch overlaps writing the last one.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::sync::mpsc;

use crate::cli::topic_range::{Position, Rejected, TopicRange};
use crate::codec::{backfill_json, backfill_row, backfill_row_from_json};
use crate::kafka::KafkaConfig;
use crate::store::provenance::{KafkaOrigin, ProvenanceRow};

/// Where the records come from.
#[derive(Debug)]
pub(super) enum Source {
    /// These files, in this order.
    Files(Vec<PathBuf>),
    /// A range of a topic.
    Topic {
        kafka: Box<KafkaConfig>,
        writers: Box<(crate::codec::WriterSchemas, Option<crate::registry::Registry>)>,
        topic: String,
        partitions: Option<Vec<i32>>,
        from: Option<Position>,
        to: Option<Position>,
    },
}

/// Some rows and the records that gave none, with how far reading has come.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Rows read.
    pub(super) rows: Vec<ProvenanceRow>,
    /// Records that gave no row.
    pub(super) rejected: Vec<Rejected>,
    /// Progress so far, in the units of [`Source::size`] (bytes of files, or records of a topic).
    pub(super) done: u64,
    /// Files opened so far.
    pub(super) files: u64,
}

/// The `provenance_*.jsonl` files of a folder, sorted by name.
pub(super) fn provenance_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read the folder {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("provenance_") && name.ends_with(".jsonl") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `source` in batches of `batch_size` rows into `tx`; the first message is the total size. Returns
/// when everything is read or the receiver is gone.
pub(super) fn read(
    source: Source,
    batch_size: usize,
    size: &mpsc::Sender<u64>,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut out = Sender { tx, batch: Batch::default(), batch_size };
    match source {
        Source::Files(paths) => {
            let total = paths.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
            let _ = size.blocking_send(total);
            let mut before = 0;
            for path in paths {
                out.batch.files += 1;
                before += read_file(&path, before, &mut out)?;
                out.batch.done = before;
            }
        }
        Source::Topic { kafka, writers, topic, partitions, from, to } => {
            let range = TopicRange::open(&kafka, *writers, &topic, partitions.as_deref(), from, to)?;
            let _ = size.blocking_send(range.len());
            for item in range {
                out.batch.done += 1;
                out.push(item.map(|l| {
                    let origin = KafkaOrigin { topic: &topic, partition: l.partition, offset: l.offset };
                    ProvenanceRow::of_result(&l.event, Some(origin))
                }));
            }
        }
    }
    out.flush();
    Ok(())
}

/// Reads one file (JSON lines when its name ends in `.jsonl`, one JSON document otherwise); returns its size.
fn read_file(path: &Path, before: u64, out: &mut Sender) -> anyhow::Result<u64> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let mut reader = BufReader::new(file);
    if !name.ends_with(".jsonl") {
        let mut text = String::new();
        if let Err(e) = reader.read_to_string(&mut text) {
            out.push(Err(rejected(name.clone(), "read_error", format!("read error: {e}"), true)));
            return Ok(0);
        }
        let size = text.len() as u64;
        match backfill_json(&text) {
            Ok(serde_json::Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    out.push(
                        backfill_row(item)
                            .map_err(|e| rejected(format!("{name}[{i}]"), "invalid", e.to_string(), false)),
                    );
                }
            }
            Ok(item) => {
                out.push(backfill_row(item).map_err(|e| rejected(name.clone(), "invalid", e.to_string(), false)))
            }
            Err(e) => out.push(Err(rejected(name.clone(), "bad_json", e.to_string(), false))),
        }
        out.batch.done = before + size;
        return Ok(size);
    }
    let (mut line_no, mut size, mut buf) = (0usize, 0u64, String::new());
    loop {
        buf.clear();
        line_no += 1;
        match reader.read_line(&mut buf) {
            Ok(0) => return Ok(size),
            Ok(n) => {
                size += n as u64;
                out.batch.done = before + size;
                if !buf.trim().is_empty() {
                    let row = backfill_row_from_json(buf.trim_end());
                    out.push(row.map_err(|e| rejected(format!("{name}:{line_no}"), "invalid", e.to_string(), false)));
                }
            }
            Err(e) => {
                out.push(Err(rejected(format!("{name}:{line_no}"), "read_error", format!("read error: {e}"), true)));
                return Ok(size);
            }
        }
    }
}

fn rejected(place: String, class: &'static str, message: String, fatal: bool) -> Rejected {
    Rejected { place, class, message, fatal }
}

/// Collects rows into batches and sends each full one.
struct Sender {
    tx: mpsc::Sender<Batch>,
    batch: Batch,
    batch_size: usize,
}

impl Sender {
    fn push(&mut self, item: Result<ProvenanceRow, Rejected>) {
        match item {
            Ok(row) => self.batch.rows.push(row),
            Err(rejected) => self.batch.rejected.push(rejected),
        }
        if self.batch.rows.len() + self.batch.rejected.len() >= self.batch_size {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let next = Batch { done: self.batch.done, files: self.batch.files, ..Batch::default() };
        let batch = std::mem::replace(&mut self.batch, next);
        // A closed channel means the writer stopped (and says why); reading on is pointless but harmless.
        let _ = self.tx.blocking_send(batch);
    }
}
