//! The benchmark's results: the table printed at the end and `BENCHMARKS.md` with the machine and the goals.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::BrokerKind;
use crate::delay::{Delays, percentile};
use crate::stored::Stored;

/// What one broker's phases measured; `None` where a phase did not run.
pub struct BrokerResult {
    kind: BrokerKind,
    /// Records per second of the producer on the stack broker (the input of the run).
    pub produce: Option<f64>,
    /// Records per second of the plain reader.
    pub read: Option<f64>,
    /// `backfill`: rows inserted and rows per second.
    pub backfill: Option<(u64, f64)>,
    /// Events per second of `run` end to end.
    pub run: Option<f64>,
    /// Events per second of the same processor on to the memory target, input produced while it reads.
    pub run_topped_up: Option<f64>,
    /// Resident bytes after the first target.
    pub rss_first: Option<u64>,
    /// Resident bytes after the memory target.
    pub rss_last: Option<u64>,
    /// Resident bytes as the committed count passed each whole million.
    pub rss_path: Vec<(u64, u64)>,
    /// The decision delays.
    pub delays: Option<Delays>,
    /// Why the phases stopped early.
    pub failure: Option<String>,
}

impl BrokerResult {
    /// Nothing measured yet.
    pub fn new(kind: BrokerKind) -> Self {
        BrokerResult {
            kind,
            produce: None,
            read: None,
            backfill: None,
            run: None,
            run_topped_up: None,
            rss_first: None,
            rss_last: None,
            rss_path: Vec::new(),
            delays: None,
            failure: None,
        }
    }
}

/// A row of the table: its name and how to fill a broker's cell.
type Row<'a> = (String, Box<dyn Fn(&BrokerResult) -> String + 'a>);

/// Everything a run measured, with where and when.
pub struct Results {
    command: String,
    stack_label: String,
    events: u64,
    memory_events: u64,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    machine: Vec<(String, String)>,
    load_before: String,
    load_after: String,
    /// Engine events per second.
    pub engine: Option<f64>,
    /// COPY rows per second into the migrated `costsim_provenance`.
    pub copy: Option<f64>,
    /// COPY rows per second of the same rows into a table with only a primary key: the storage floor.
    pub copy_floor: Option<f64>,
    /// The stored-rows phases.
    pub stored: Option<Stored>,
    /// Per broker, in run order.
    pub brokers: Vec<BrokerResult>,
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Results {
    /// Records the machine and its load before the first phase.
    pub async fn start(admin: &PgPool, command: &str, stack_label: &str, events: u64, memory_events: u64) -> Self {
        let pg: String = sqlx::query_scalar("SELECT version()").fetch_one(admin).await.unwrap_or_default();
        let machine = vec![
            ("CPU".into(), sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs")),
            ("Cores (nproc)".into(), sh("nproc")),
            ("Memory".into(), sh("free -m | awk '/^Mem:/ {print $2 \" MiB total, \" $7 \" MiB available at start\"}'")),
            ("Kernel".into(), sh("uname -srvm")),
            ("PostgreSQL".into(), pg),
            ("librdkafka".into(), rdkafka::util::get_rdkafka_version().1),
            ("Commit".into(), sh("git describe --always --dirty 2>/dev/null")),
        ];
        Results {
            command: command.to_owned(),
            stack_label: stack_label.to_owned(),
            events,
            memory_events,
            started: Utc::now(),
            finished: None,
            machine,
            load_before: sh("cut -d' ' -f1-3 /proc/loadavg"),
            load_after: String::new(),
            engine: None,
            copy: None,
            copy_floor: None,
            stored: None,
            brokers: Vec::new(),
        }
    }

    /// Records the end and the load after the last phase.
    pub async fn finish(&mut self) {
        self.finished = Some(Utc::now());
        self.load_after = sh("cut -d' ' -f1-3 /proc/loadavg");
    }

    fn label(&self, kind: BrokerKind) -> String {
        match kind {
            BrokerKind::Stack => self.stack_label.clone(),
            BrokerKind::Mock => "librdkafka mock cluster".to_owned(),
        }
    }

    /// The results as a Markdown table, one column per broker.
    pub fn table(&self) -> String {
        let mut t = String::from("| measure |");
        for b in &self.brokers {
            let _ = write!(t, " {} |", self.label(b.kind));
        }
        t.push_str("\n|---|");
        t.push_str(&"---:|".repeat(self.brokers.len()));
        t.push('\n');
        let m = millions(self.events);
        let mm = millions(self.memory_events);
        let rows: Vec<Row<'_>> = vec![
            ("raw limit: plain reader of the input topic (records/s)".into(), Box::new(|b| rate(b.read))),
            (
                "raw limit: `psql` COPY of the same provenance rows into `costsim_provenance` (rows/s; no broker)"
                    .into(),
                Box::new(|_| rate(self.copy)),
            ),
            (
                "storage floor: the same COPY into a table with only a primary key (rows/s; no broker)".into(),
                Box::new(|_| rate(self.copy_floor)),
            ),
            (format!("`run` end to end, {m} events (events/s)"), Box::new(|b| rate(b.run))),
            ("… ÷ plain read".into(), Box::new(|b| ratio(b.run, b.read))),
            ("… ÷ COPY".into(), Box::new(|b| ratio(b.run, self.copy))),
            ("… ÷ storage floor".into(), Box::new(|b| ratio(b.run, self.copy_floor))),
            (
                "decision delay from producing the burst, p50 / p99 (s)".into(),
                Box::new(|b| delay(b, |d| &d.from_produce)),
            ),
            (
                "… from the close of the burst's bucket, p50 / p99 (s)".into(),
                Box::new(|b| delay(b, |d| &d.from_bucket_close)),
            ),
            (
                "… … of which bucket close → the deciding transaction starts, p50 / p99 (s)".into(),
                Box::new(|b| delay(b, |d| &d.to_decision)),
            ),
            (
                "… … and that start → the relay delivered the state event, p50 / p99 (s)".into(),
                Box::new(|b| delay(b, |d| &d.to_published)),
            ),
            (
                "… trips / background achieved (events/s)".into(),
                Box::new(|b| {
                    b.delays
                        .as_ref()
                        .map_or("–".into(), |d| format!("{} / {:.0}", d.from_produce.len(), d.background_rate))
                }),
            ),
            (
                format!("resident memory after {m} events (MiB)"),
                Box::new(|b| b.rss_first.map_or("–".into(), |r| format!("{:.1}", mib(r)))),
            ),
            (
                format!("resident memory after {mm} events (MiB)"),
                Box::new(|b| b.rss_last.map_or("–".into(), |r| format!("{:.1}", mib(r)))),
            ),
            (
                format!("… growth {m} → {mm}"),
                Box::new(|b| growth(b).map_or("–".into(), |g| format!("{:+.1} %", g * 100.0))),
            ),
            (
                "… resident memory as each million was committed (MiB)".into(),
                Box::new(|b| {
                    let path: Vec<String> = b.rss_path.iter().map(|(_, r)| format!("{:.0}", mib(*r))).collect();
                    if path.is_empty() { "–".into() } else { path.join(", ") }
                }),
            ),
            (
                format!("`run` {m} → {mm} with the input produced meanwhile (events/s)"),
                Box::new(|b| rate(b.run_topped_up)),
            ),
            ("`backtest` engine alone (events/s, one core; no broker)".into(), Box::new(|_| rate(self.engine))),
            (
                "`backfill` from the topic (rows/s; rows)".into(),
                Box::new(|b| b.backfill.map_or("–".into(), |(rows, r)| format!("{r:.0}; {rows}"))),
            ),
            ("… next to COPY".into(), Box::new(|b| ratio(b.backfill.map(|(_, r)| r), self.copy))),
            (format!("produce {m} events into the stack broker (records/s)"), Box::new(|b| rate(b.produce))),
        ];
        for (name, cell) in rows {
            let _ = write!(t, "| {name} |");
            for b in &self.brokers {
                let _ = write!(t, " {} |", cell(b));
            }
            t.push('\n');
        }
        t
    }

    fn goals(&self) -> String {
        let mut t = String::from("| goal |");
        for b in &self.brokers {
            let _ = write!(t, " {} |", self.label(b.kind));
        }
        t.push_str("\n|---|");
        t.push_str(&"---|".repeat(self.brokers.len()));
        t.push('\n');
        let verdict = |ok: Option<bool>, detail: String| match ok {
            Some(true) => format!("met ({detail})"),
            Some(false) => format!("**not met** ({detail})"),
            None => "not measured".to_owned(),
        };
        let _ = write!(t, "| end to end ≥ 0.5 × the storage floor (COPY into a primary-key-only table) |");
        for b in &self.brokers {
            let limit = self.copy_floor;
            let ok = b.run.zip(limit).map(|(run, l)| run >= 0.5 * l);
            let detail = format!("{} vs 0.5 × {} = {}", rate(b.run), rate(limit), rate(limit.map(|l| l * 0.5)));
            let _ = write!(t, " {} |", verdict(ok, detail));
        }
        let _ = write!(t, "\n| decision delay p99 ≤ 1 s (from producing) |");
        for b in &self.brokers {
            let p99 =
                b.delays.as_ref().filter(|d| !d.from_produce.is_empty()).map(|d| percentile(&d.from_produce, 0.99));
            let _ = write!(t, " {} |", verdict(p99.map(|p| p <= 1.0), p99.map_or("–".into(), |p| format!("{p:.3} s"))));
        }
        let _ = write!(t, "\n| memory growth {} → {} ≤ 10 % |", millions(self.events), millions(self.memory_events));
        for b in &self.brokers {
            let g = growth(b);
            let _ = write!(
                t,
                " {} |",
                verdict(g.map(|g| g <= 0.10), g.map_or("–".into(), |g| format!("{:+.1} %", g * 100.0)))
            );
        }
        if let Some(stored) = &self.stored {
            let _ = write!(t, "\n| end to end with the most rows stored within 10 % of the run with the fewest |");
            for b in &self.brokers {
                let cell = if b.kind == stored.broker { stored_goal(stored) } else { "–".to_owned() };
                let _ = write!(t, " {cell} |");
            }
        }
        t.push('\n');
        t
    }

    /// The stored-rows phases as a Markdown section.
    fn stored_section(&self, stored: &Stored) -> String {
        let mut s = String::from("\n## With rows already stored\n\n");
        let _ = writeln!(
            s,
            "`run` end to end on the {}, each run on fresh topics into the same database, topped up between runs; \
             bytes are what each run added on disk (`pg_total_relation_size`: provenance over every partition with \
             indexes and TOAST, and every other table), per million events.\n",
            self.label(stored.broker)
        );
        s.push_str(
            "| rows stored before the run | rows added before it (s, VACUUM ANALYZE and CHECKPOINT included) | `run` end to end \
             (events/s) | … ÷ the run with the fewest | bytes per million events: provenance | … other tables | … \
             total | bytes per million rows filled |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let first = stored.levels.first().and_then(|l| l.run);
        for l in &stored.levels {
            let per_m = |b: i64| format!("{:.0} MiB", mib(b.max(0) as u64) * 1e6 / l.events as f64);
            let filled = if l.filled == 0 {
                "–".to_owned()
            } else {
                format!("{:.0} MiB", mib(l.fill_bytes.max(0) as u64) * 1e6 / l.filled as f64)
            };
            let _ = writeln!(
                s,
                "| {} | {} ({:.0} s) | {} | {} | {} | {} | {} | {filled} |",
                l.stored,
                l.filled,
                l.fill_secs,
                rate(l.run),
                ratio(l.run, first),
                per_m(l.provenance_bytes),
                per_m(l.other_bytes),
                per_m(l.provenance_bytes + l.other_bytes)
            );
        }
        if let Some(r) = &stored.retention {
            let deleted: Vec<String> =
                r.deleted.iter().filter(|(_, n)| *n > 0).map(|(t, n)| format!("{n} of {t}")).collect();
            let _ = writeln!(
                s,
                "\nRetention, on the same database after the last run ({} provenance rows), as if {:.1} hours later, \
                 when the oldest partitions had expired; {} expired rows had been put into each of the tables \
                 retention deletes from:\n\n\
                 | step of the pass | time (s) | what it did |\n|---|---:|---|\n\
                 | partitions: expired dropped, ahead created | {:.3} | dropped {} partitions holding {} rows, created {} |\n\
                 | the other tables' deletes | {:.3} | deleted {} |\n\
                 | a whole pass right after, nothing to do | {:.3} | nothing |",
                r.stored_rows,
                r.shifted_hours,
                r.other_rows,
                r.partitions_secs,
                r.dropped,
                r.expired_rows,
                r.created,
                r.deletes_secs,
                if deleted.is_empty() { "nothing".to_owned() } else { deleted.join(", ") },
                r.idle_secs
            );
        }
        let _ = writeln!(
            s,
            "\nGoal, `run` with the most rows stored within 10 % of itself with the fewest: {}",
            stored_goal(stored)
        );
        if let Some(f) = &stored.failure {
            let _ = writeln!(s, "\nThe stored-rows phases stopped early: {f}");
        }
        s
    }

    /// The whole report.
    pub fn markdown(&self, notes: &str) -> String {
        let mut s = String::from("# Benchmarks\n\n");
        let finished = self.finished.unwrap_or(self.started);
        let _ = writeln!(
            s,
            "Written by the benchmark itself (`benches/e2e`) from ONE run of `{}`, {} to {} UTC ({} minutes). \
             Rerun that command to regenerate this file.\n",
            self.command,
            self.started.format("%Y-%m-%d %H:%M"),
            finished.format("%H:%M"),
            (finished - self.started).num_minutes()
        );
        s.push_str("## Machine\n\n");
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(
            s,
            "- Load average (1, 5, 15 min) before the run: {}; after: {}",
            self.load_before, self.load_after
        );
        let _ = writeln!(
            s,
            "- Brokers: {}; the mock cluster is `examples/mock_kafka.rs` on 127.0.0.1\n",
            self.brokers.iter().map(|b| self.label(b.kind)).collect::<Vec<_>>().join(", ")
        );
        s.push_str("## Results\n\n");
        s.push_str(&self.table());
        for b in &self.brokers {
            if let Some(f) = &b.failure {
                let _ = writeln!(s, "\n{}: the phases stopped early: {f}", self.label(b.kind));
            }
        }
        if let Some(stored) = &self.stored {
            s.push_str(&self.stored_section(stored));
        }
        s.push_str("\n## Goals\n\n");
        s.push_str(&self.goals());
        if !notes.is_empty() {
            s.push('\n');
            s.push_str(notes);
        }
        s
    }
}

/// `backfill`'s summary line: (rows inserted, rows per second).
pub fn parse_backfill(summary: &str) -> Option<(u64, f64)> {
    let line = summary.lines().find(|l| l.starts_with("backfill:"))?;
    let inserted = line.split(", ").find_map(|p| p.strip_prefix("inserted "))?.parse::<u64>().ok()?;
    let secs = line.rsplit_once('(')?.1.split(" s,").next()?.trim().parse::<f64>().ok()?;
    Some((inserted, inserted as f64 / secs))
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn millions(n: u64) -> String {
    if n % 1_000_000 == 0 { format!("{}M", n / 1_000_000) } else { n.to_string() }
}

fn rate(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    a.zip(b).map_or("–".into(), |(a, b)| format!("{:.2}", a / b))
}

fn delay(b: &BrokerResult, pick: fn(&Delays) -> &Vec<f64>) -> String {
    match b.delays.as_ref().map(pick).filter(|v| !v.is_empty()) {
        Some(v) => format!("{:.3} / {:.3}", percentile(v, 0.5), percentile(v, 0.99)),
        None => "–".into(),
    }
}

/// Whether the run with the most rows stored is within 10 % of the run with the fewest, with the numbers.
fn stored_goal(stored: &Stored) -> String {
    let mut ran = stored.levels.iter().filter(|l| l.run.is_some());
    let (Some(first), Some(last)) = (ran.next(), ran.next_back()) else {
        return "not measured".to_owned();
    };
    let r = last.run.unwrap_or_default() / first.run.unwrap_or(f64::NAN);
    let detail = format!(
        "{} events/s with {} rows vs {} with {}: {:+.1} %",
        rate(last.run),
        last.stored,
        rate(first.run),
        first.stored,
        (r - 1.0) * 100.0
    );
    if (r - 1.0).abs() <= 0.10 { format!("met ({detail})") } else { format!("**not met** ({detail})") }
}

fn growth(b: &BrokerResult) -> Option<f64> {
    b.rss_first.zip(b.rss_last).map(|(a, z)| z as f64 / a as f64 - 1.0)
}
