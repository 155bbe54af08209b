//! Progress of a backfill: a bar with rate and ETA on a terminal, a plain line every few seconds otherwise.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Reports how far the input has been read (in bytes or records) and how many records were handled.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Starts reporting on stderr for an input of `total` units.
    pub(super) fn start(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}%  {msg}  ETA {eta}",
            )
            .expect("a valid template");
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Progress { bar, total, started: now, last_line: now }
    }

    /// Reports `done` units of the input read and `records` handled so far.
    pub(super) fn update(&mut self, done: u64, records: u64) {
        let rate = self.rate(records);
        match &self.bar {
            Some(bar) => {
                bar.set_position(done.min(self.total));
                bar.set_message(format!("{records} records, {rate:.0}/s"));
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", plain_line(records, done, self.total, self.started.elapsed().as_secs_f64()));
            }
            None => {}
        }
    }

    /// Writes one line to stderr without breaking the bar.
    pub(super) fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Records per second since the start.
    pub(super) fn rate(&self, records: u64) -> f64 {
        records as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// Seconds since the start.
    pub(super) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Removes the bar (before the summary is printed).
    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The periodic line: records, rate, share of the input read, and the time left at the rate so far.
fn plain_line(records: u64, done: u64, total: u64, elapsed: f64) -> String {
    let fraction = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) };
    let rate = records as f64 / elapsed.max(1e-3);
    let eta = if fraction > 0.0 { format!("{:.0} s", elapsed / fraction - elapsed) } else { "unknown".to_owned() };
    format!("backfill: {records} records, {rate:.0} records/s, {:.0}% read, ETA {eta}", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_gives_rate_share_read_and_time_left() {
        assert_eq!(plain_line(4000, 250, 1000, 2.0), "backfill: 4000 records, 2000 records/s, 25% read, ETA 6 s");
        assert_eq!(plain_line(0, 0, 1000, 5.0), "backfill: 0 records, 0 records/s, 0% read, ETA unknown");
        assert_eq!(plain_line(10, 0, 0, 1.0), "backfill: 10 records, 10 records/s, 100% read, ETA 0 s");
    }
}
