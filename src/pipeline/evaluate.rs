//! The breaker decisions of the buckets that closed, taken under the breaker row's lock in the batch's
//! transaction.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgConnection;

use super::Pipeline;
use crate::breaker::{Outcome, decide};
use crate::event::Severity;
use crate::store::{breaker, buckets, offsets};
use crate::window::{WindowSpec, WindowSummary};

/// At most this many bucket ends are judged in one transaction; a longer gap (a stream resuming after a day)
/// judges only the most recent ones, whose windows are the only ones that can hold events.
const MAX_EVALUATIONS: usize = 4096;

/// Decides once for every bucket that closed since the last decision, oldest first. `seen_evaluated_at` is the
/// breaker's last evaluation as the batch read it without a lock, to skip the lock when no bucket closed.
pub async fn closed_buckets(
    p: &Pipeline,
    window: WindowSpec,
    tx: &mut PgConnection,
    seen_evaluated_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let (topic, group) = (p.kafka.results_topic.as_str(), p.kafka.group_id.as_str());
    let marks = offsets::marks(tx, group, topic, p.settings.idle_partition_seconds).await?;
    let Some(merged) = offsets::merged_watermark(&marks) else { return Ok(()) };
    // The bucket holding the watermark is still open; every bucket before it is closed.
    let closed_until = window.bucket_start(merged);
    let name = p.settings.breaker.as_str();
    let due = |last: Option<DateTime<Utc>>| last.is_none_or(|l| l < closed_until);
    // Batches inside one bucket never wait for the breaker row's lock.
    if !due(seen_evaluated_at) {
        return Ok(());
    }
    let Some(mut row) = breaker::lock(tx, name).await? else { return Ok(()) };
    if !due(row.last_evaluated_at) {
        return Ok(());
    }
    // The first decision ever starts at the oldest stored bucket, so a backlog is judged bucket by bucket as a
    // replay of it would be.
    let first = match row.last_evaluated_at {
        Some(last) => last,
        None => match buckets::oldest(tx, name).await? {
            Some(oldest) => oldest,
            None => return Ok(()),
        },
    };
    let ends = bucket_ends(first, closed_until, window.bucket());
    let Some(&first_end) = ends.first() else { return Ok(()) };
    let stored = buckets::load(tx, name, first_end - p.engine.window(), closed_until).await?;
    for end in ends {
        let (start, stop) = row.record.window_bounds(&p.engine, end);
        let summary = WindowSummary::of_buckets(start, stop, stored.range(start..stop).map(|(at, b)| (*at, b)));
        let mut decision = decide(&row.record, &summary, &p.engine, end);
        let behind = offsets::behind(&marks, end);
        if !behind.is_empty() {
            tracing::info!(breaker = name, bucket_end = %end, partitions = ?behind,
                "Judged without partitions whose events have not reached the bucket's end (idle).");
            if let Some(evidence) = decision.outcome.evidence_mut() {
                evidence.partitions_behind = behind;
            }
        }
        count(p, &decision.outcome);
        let change = breaker::apply(tx, &row, &decision, breaker::AUTOMATIC_ACTOR, &p.apply, end, Some(end)).await?;
        if let Some(change) = change {
            tracing::info!(breaker = name, version = change.version, from = %change.from_state, to = %change.to_state,
                reason = %change.reason, "Breaker state changed.");
        }
        row = breaker::lock(tx, name).await?.expect("the locked row exists");
    }
    Ok(())
}

/// Judges the buckets that closed in a transaction of its own, for when no batch comes to carry the decision.
pub async fn in_own_transaction(p: &Pipeline, window: WindowSpec) -> Result<(), sqlx::Error> {
    let mut tx = p.pool.begin().await?;
    let seen = breaker::get(&mut tx, &p.settings.breaker).await?.and_then(|row| row.last_evaluated_at);
    closed_buckets(p, window, &mut tx, seen).await?;
    tx.commit().await
}

/// When the processing loop judges closed buckets on its own, outside a batch: once the loop has had nothing to
/// commit for a batch wait after a commit (batches of different partitions that committed concurrently did not
/// see each other's progress, so the last ones of a stream that ran dry may have judged too little), and once
/// more when the partitions that committed last have turned idle (the merged watermark then moves on without a
/// new record). Time is a parameter.
#[derive(Debug, Default)]
pub struct JudgeSchedule {
    quiet: Option<Instant>,
    idle: Option<Instant>,
}

impl JudgeSchedule {
    /// A batch finished at `now`: judge once the loop stays quiet `quiet_after`, and again after `idle_after`.
    pub fn after_batch(&mut self, now: Instant, quiet_after: Duration, idle_after: Duration) {
        self.quiet = Some(now + quiet_after);
        self.idle = Some(now + idle_after);
    }

    /// The next time a pass is due, if any.
    pub fn next(&self) -> Option<Instant> {
        self.quiet.into_iter().chain(self.idle).min()
    }

    /// Whether a pass is due at `now`; the due times passed are used up.
    pub fn take_due(&mut self, now: Instant) -> bool {
        let mut due = false;
        for slot in [&mut self.quiet, &mut self.idle] {
            if slot.is_some_and(|at| at <= now) {
                *slot = None;
                due = true;
            }
        }
        due
    }
}

/// The ends of the buckets to judge: each one after `last` up to `closed_until`.
fn bucket_ends(last: DateTime<Utc>, closed_until: DateTime<Utc>, step: TimeDelta) -> Vec<DateTime<Utc>> {
    let count = ((closed_until - last).num_milliseconds() / step.num_milliseconds().max(1)).max(0) as usize;
    let skip = count.saturating_sub(MAX_EVALUATIONS);
    if skip > 0 {
        tracing::warn!(skipped = skip, "Event time jumped; judging only the most recent buckets.");
    }
    (skip + 1..=count).map(|i| last + step * i as i32).collect()
}

fn count(p: &Pipeline, outcome: &Outcome) {
    let m = &p.metrics;
    match outcome {
        Outcome::Trip { severity, .. } => {
            let reason = if *severity == Severity::P3 { "schema" } else { "drift" };
            m.cb_disabled_total.with_label_values(&[reason, severity.as_str()]).inc();
            m.cb_incidents_total.with_label_values(&[severity.as_str(), "false"]).inc();
        }
        Outcome::Close { .. } => {
            m.cb_auto_recovery_total.inc();
            m.cb_enabled_total.with_label_values(&["auto_recovery"]).inc();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    #[test]
    fn every_bucket_closed_since_the_last_decision_is_judged_in_order() {
        assert_eq!(bucket_ends(at(70), at(100), TimeDelta::seconds(10)), [at(80), at(90), at(100)]);
        assert!(bucket_ends(at(100), at(100), TimeDelta::seconds(10)).is_empty());
    }

    #[test]
    fn a_finished_batch_schedules_a_quiet_pass_then_an_idle_pass_each_once() {
        let t0 = Instant::now();
        let mut judge = JudgeSchedule::default();
        assert!(judge.next().is_none() && !judge.take_due(t0));
        judge.after_batch(t0, Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(judge.next(), Some(t0 + Duration::from_millis(100)));
        assert!(!judge.take_due(t0 + Duration::from_millis(50)));
        assert!(judge.take_due(t0 + Duration::from_millis(100)));
        assert!(!judge.take_due(t0 + Duration::from_millis(200)), "the quiet pass is used up");
        assert_eq!(judge.next(), Some(t0 + Duration::from_secs(10)));
        assert!(judge.take_due(t0 + Duration::from_secs(11)));
        assert!(judge.next().is_none());
    }

    #[test]
    fn a_later_batch_moves_both_passes_on() {
        let t0 = Instant::now();
        let mut judge = JudgeSchedule::default();
        judge.after_batch(t0, Duration::from_millis(100), Duration::from_secs(10));
        judge.after_batch(t0 + Duration::from_secs(5), Duration::from_millis(100), Duration::from_secs(10));
        assert!(judge.take_due(t0 + Duration::from_secs(10)), "the second batch's quiet pass");
        assert_eq!(judge.next(), Some(t0 + Duration::from_secs(15)), "the idle pass counts from the second batch");
    }

    #[test]
    fn a_huge_jump_judges_only_the_most_recent_buckets() {
        let ends = bucket_ends(at(0), at(10 * 100_000), TimeDelta::seconds(10));
        assert_eq!(ends.len(), MAX_EVALUATIONS);
        assert_eq!(ends.last(), Some(&at(1_000_000)));
    }
}
