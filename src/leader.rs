//! Leader election for singleton jobs (state relay, timers, alert drainer, canary) with PostgreSQL advisory locks.
//!
//! # Guarantee
//! A job runs only while its contender holds the job's session-level advisory lock on a **dedicated** connection,
//! opened for the purpose and never taken from a pool (a pooled or PgBouncer-multiplexed session would leak the lock to
//! whoever reuses it, docs/DOMAIN.md, *11.25 Advisory lock on a pooled connection*). The holder records itself in
//! `costsim_leader_leases` and checks every [`LeaderTiming::check_interval`] that its connection answers and still
//! holds the lock. When a check fails or times out, the job's [`CancellationToken`] is cancelled at once and the
//! contender goes back to acquiring; on a clean stop it deletes its lease and unlocks explicitly.
//!
//! A holder whose connection went half-open (its packets dropped or a proxy stopped) stops its job at its next
//! failed check, but its server session may live on holding the lock; a contender that finds the lease without a
//! heartbeat for [`LeaderTiming::lease_timeout`] ends that session (`pg_terminate_backend`, allowed for sessions of
//! the same role) and takes over.
//!
//! What it does not guarantee: between the moment PostgreSQL drops a dead leader's session (which frees the lock
//! for another contender) and that leader's next failed check, two jobs may run for up to `check_interval +
//! check_timeout`. Jobs therefore also claim their work row by row (`FOR UPDATE SKIP LOCKED`), so two leaders by
//! mistake still never deliver the same row twice at once.
//!
//! The connection must reach PostgreSQL directly (not through PgBouncer in transaction mode): pass the direct
//! address.

mod session;

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use session::LeaderSession;
use session::{Attempt, connect};

/// The advisory lock of each singleton job: every lock id of the system is declared here, in 7000–7999.
///
/// 7001 and 7002 keep the older system's ids; 7003 (provenance archiver) and 7004 (baseline backfill) were
/// reserved there and are skipped, so a deployment that still runs the older system against the same database
/// cannot collide with ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaderLock {
    /// The daily canary run.
    Canary = 7001,
    /// The Alertmanager outbox drainer.
    AlertWorker = 7002,
    /// The state-event relay to the compacted state topic.
    StateRelay = 7005,
    /// The wall-clock breaker timers (open → half-open, probation decisions).
    Timers = 7006,
    /// Storage maintenance: provenance partitions ahead and expired, outbox retention.
    StorageMaintenance = 7007,
}

/// The transaction-level advisory lock of one storage maintenance pass, taken by the leader's pass and by
/// `storage maintain` alike (not the leader lock, which a session holds for as long as it leads).
pub const MAINTENANCE_PASS_LOCK: i64 = 7008;

impl LeaderLock {
    /// Every lock, in id order.
    pub const ALL: [LeaderLock; 5] = [
        LeaderLock::Canary,
        LeaderLock::AlertWorker,
        LeaderLock::StateRelay,
        LeaderLock::Timers,
        LeaderLock::StorageMaintenance,
    ];

    /// The advisory lock id (`pg_try_advisory_lock(id)`), also the lease row's key.
    pub const fn id(self) -> i32 {
        self as i32
    }

    /// The job's name in leases and logs.
    pub const fn job(self) -> &'static str {
        match self {
            LeaderLock::Canary => "canary",
            LeaderLock::AlertWorker => "alert_worker",
            LeaderLock::StateRelay => "state_relay",
            LeaderLock::Timers => "timers",
            LeaderLock::StorageMaintenance => "storage_maintenance",
        }
    }
}

impl std::fmt::Display for LeaderLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.job(), self.id())
    }
}

/// How often a leader checks its connection, how long it waits, and how contenders retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTiming {
    /// Time between two liveness checks of the leader's connection; also bounds how long a dead leader's job
    /// may run on.
    pub check_interval: Duration,
    /// How long one liveness check may take before the leader counts its connection as lost.
    pub check_timeout: Duration,
    /// Time between two attempts of a contender that found the lock taken (or could not connect).
    pub retry_interval: Duration,
    /// How long a contender that finds the lock taken waits for the holder's lease to go without a heartbeat
    /// before it ends the holder's session (see [`session::end_stale_holder`]); well above `check_interval +
    /// check_timeout`, after which a live holder has stopped its job by itself.
    pub lease_timeout: Duration,
    /// How long a job may take to return once its token is cancelled before it is dropped mid-flight.
    pub stop_grace: Duration,
}

impl Default for LeaderTiming {
    fn default() -> Self {
        LeaderTiming {
            check_interval: Duration::from_secs(2),
            check_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(8),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// How one term of leadership ended.
enum Term {
    /// The caller cancelled: stop contending.
    Stopped,
    /// The job returned by itself (done or failed): stop contending and report it.
    Finished(anyhow::Result<()>),
    /// The connection or the lock was lost: contend again.
    Lost,
}

/// One contender for one lock: acquires it, runs the job while it holds it, and contends again when it loses it.
#[derive(Debug, Clone)]
pub struct Election {
    options: PgConnectOptions,
    lock: LeaderLock,
    holder: String,
    timing: LeaderTiming,
}

impl Election {
    /// A contender for `lock` named `holder` (e.g. the instance id), connecting with `options` (a direct address,
    /// not a pooler), with the default timing.
    pub fn new(options: PgConnectOptions, lock: LeaderLock, holder: impl Into<String>) -> Self {
        Election { options, lock, holder: holder.into(), timing: LeaderTiming::default() }
    }

    /// The same contender with other timing.
    pub fn with_timing(self, timing: LeaderTiming) -> Self {
        Election { timing, ..self }
    }

    /// Contends until `cancel`, running `job` with a child token for each term of leadership. Returns `Ok` when
    /// cancelled (after the job stopped and the lock was released) or when the job returned `Ok` by itself, and
    /// the job's error when it failed while leading (a failing job takes the process down loudly).
    pub async fn run<F, Fut>(&self, cancel: CancellationToken, mut job: F) -> anyhow::Result<()>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let (lock, holder) = (self.lock, self.holder.as_str());
        loop {
            let connected = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                connected = connect(&self.options, lock) => connected,
            };
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(job = lock.job(), holder, error = %err, "Cannot connect to contend for leadership.");
                    if !self.pause(&cancel).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            let mut announced = false;
            let session = loop {
                let attempt = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    attempt = LeaderSession::attempt(conn, lock, holder) => attempt,
                };
                match attempt {
                    Ok(Attempt::Acquired(session)) => break Some(session),
                    Ok(Attempt::Busy(mut busy)) => {
                        match session::end_stale_holder(&mut busy, lock, self.timing.lease_timeout).await {
                            Ok(Some(pid)) => tracing::warn!(job = lock.job(), holder, backend_pid = pid,
                                lease_timeout = ?self.timing.lease_timeout,
                                "The leader's lease went without a heartbeat: ended its session to take over."),
                            Ok(None) => {}
                            Err(err) => tracing::warn!(job = lock.job(), holder, error = %err,
                                "Cannot check the leader's lease."),
                        }
                        if !announced {
                            tracing::info!(job = lock.job(), holder, "Another instance leads; standing by.");
                            announced = true;
                        }
                        conn = busy;
                        if !self.pause(&cancel).await {
                            return Ok(());
                        }
                    }
                    Err(err) => {
                        tracing::warn!(job = lock.job(), holder, error = %err, "Cannot try the leader lock.");
                        break None;
                    }
                }
            };
            let Some(session) = session else {
                if !self.pause(&cancel).await {
                    return Ok(());
                }
                continue;
            };
            tracing::info!(job = lock.job(), holder, backend_pid = session.backend_pid(), "Became leader.");
            match self.lead(session, &cancel, &mut job).await {
                Term::Stopped => return Ok(()),
                Term::Finished(result) => return result,
                // Pause before contending again: another contender that is alive gets the first chance.
                Term::Lost => {
                    if !self.pause(&cancel).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Runs one term: the job, and the liveness checks beside it.
    async fn lead<F, Fut>(&self, mut session: LeaderSession, cancel: &CancellationToken, job: &mut F) -> Term
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let (lock, holder, timing) = (self.lock, self.holder.as_str(), self.timing);
        let token = cancel.child_token();
        let mut work = std::pin::pin!(job(token.clone()));
        let mut checks = tokio::time::interval_at(Instant::now() + timing.check_interval, timing.check_interval);
        // After a slow check, wait a full interval again rather than checking in a burst.
        checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = &mut work => {
                    self.release(session).await;
                    return match result {
                        Ok(()) if cancel.is_cancelled() => Term::Stopped,
                        Ok(()) => {
                            tracing::info!(job = lock.job(), holder, "Leader job finished; released the lock.");
                            Term::Finished(Ok(()))
                        }
                        Err(err) => Term::Finished(Err(err.context(format!("leader job {lock} failed")))),
                    };
                }
                _ = cancel.cancelled() => {
                    // The job holds the child token and is stopping; give it its grace, then unlock.
                    let result = self.finish(&mut work).await;
                    self.release(session).await;
                    return match result {
                        Some(Err(err)) => Term::Finished(Err(err.context(format!("leader job {lock} failed")))),
                        _ => Term::Stopped,
                    };
                }
                _ = checks.tick() => {
                    let why = match tokio::time::timeout(timing.check_timeout, session.check()).await {
                        Ok(Ok(true)) => continue,
                        Ok(Ok(false)) => "the lock or the lease is no longer held by this session".to_owned(),
                        Ok(Err(err)) => err.to_string(),
                        Err(_) => format!("the liveness check took longer than {:?}", timing.check_timeout),
                    };
                    token.cancel();
                    tracing::warn!(job = lock.job(), holder, reason = %why, "Lost leadership; stopped the job.");
                    // Dropping the connection ends its session (if it still exists), which frees the lock.
                    drop(session);
                    if let Some(Err(err)) = self.finish(&mut work).await {
                        tracing::warn!(job = lock.job(), holder, error = %err, "Leader job failed while stopping.");
                    }
                    return Term::Lost;
                }
            }
        }
    }

    /// Waits up to the grace period for a cancelled job; `None` when it had to be dropped mid-flight.
    async fn finish<Fut: Future<Output = anyhow::Result<()>>>(
        &self,
        work: &mut std::pin::Pin<&mut Fut>,
    ) -> Option<anyhow::Result<()>> {
        match tokio::time::timeout(self.timing.stop_grace, work.as_mut()).await {
            Ok(result) => Some(result),
            Err(_) => {
                tracing::warn!(job = self.lock.job(), holder = %self.holder, grace = ?self.timing.stop_grace,
                    "Leader job did not stop within its grace period; dropped it.");
                None
            }
        }
    }

    /// Unlocks and closes; a failure only means the session ends by itself when the connection drops.
    async fn release(&self, session: LeaderSession) {
        match tokio::time::timeout(self.timing.check_timeout, session.release()).await {
            Ok(Ok(())) => tracing::info!(job = self.lock.job(), holder = %self.holder, "Released the leader lock."),
            Ok(Err(err)) => tracing::warn!(job = self.lock.job(), holder = %self.holder, error = %err,
                "Cannot release the leader lock; dropping its connection instead."),
            Err(_) => tracing::warn!(job = self.lock.job(), holder = %self.holder,
                "Releasing the leader lock timed out; dropping its connection instead."),
        }
    }

    /// Sleeps one retry interval; `false` when cancelled meanwhile.
    async fn pause(&self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(self.timing.retry_interval) => true,
        }
    }
}

/// Runs `job` whenever this contender holds `lock`, until `cancel`: see [`Election::run`].
pub async fn run_as_leader<F, Fut>(
    options: &PgConnectOptions,
    lock: LeaderLock,
    holder: &str,
    cancel: CancellationToken,
    job: F,
) -> anyhow::Result<()>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    Election::new(options.clone(), lock, holder).run(cancel, job).await
}

/// Parses a database URL into the options of a dedicated leader connection.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(crate::store::parse_url(url, "the leader's database URL")?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_unique_and_in_the_reserved_range() {
        let ids: std::collections::BTreeSet<i32> = LeaderLock::ALL.iter().map(|l| l.id()).collect();
        assert_eq!(ids.len(), LeaderLock::ALL.len());
        assert!(ids.iter().all(|id| (7000..=7999).contains(id)), "{ids:?}");
        assert!(!ids.contains(&(MAINTENANCE_PASS_LOCK as i32)));
    }

    #[test]
    fn the_older_systems_lock_ids_are_kept() {
        assert_eq!(LeaderLock::Canary.id(), 7001);
        assert_eq!(LeaderLock::AlertWorker.id(), 7002);
    }

    #[test]
    fn job_names_are_distinct() {
        let names: std::collections::BTreeSet<&str> = LeaderLock::ALL.iter().map(|l| l.job()).collect();
        assert_eq!(names.len(), LeaderLock::ALL.len());
    }
}
