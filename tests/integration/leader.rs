//! Leader election: one holder per lock, recorded in the lease table; a leader whose connection dies stops its
//! job at once and another contender takes over; a clean stop unlocks and removes the lease.

use std::time::Duration;

use costsim_breaker::leader::{LeaderLock, LeaderSession, run_as_leader};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::helpers::DEADLINE;

/// How soon another contender must lead after the leader's backend is killed.
const TAKEOVER: Duration = Duration::from_secs(10);

/// The leader connection's options: the test's database, directly on the server, also when the suite runs through
/// PgBouncer (advisory locks are session state, which a transaction-mode pooler does not keep).
fn options(pool: &PgPool) -> PgConnectOptions {
    (*pool.connect_options()).clone()
}

async fn lease(pool: &PgPool, lock: LeaderLock) -> Option<(String, i32)> {
    sqlx::query_as("SELECT holder, backend_pid FROM costsim_leader_leases WHERE lock_id = $1")
        .bind(lock.id())
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_second_contender_does_not_get_the_lock_until_the_first_releases_it(pool: PgPool) {
    let options = options(&pool);
    let lock = LeaderLock::StateRelay;
    let mut first = LeaderSession::try_acquire(&options, lock, "instance-a").await.unwrap().expect("the lock is free");
    assert!(LeaderSession::try_acquire(&options, lock, "instance-b").await.unwrap().is_none());
    assert_eq!(lease(&pool, lock).await, Some(("instance-a".to_owned(), first.backend_pid())));
    assert!(first.check().await.unwrap(), "the holder sees that it still holds the lock");

    let other = LeaderSession::try_acquire(&options, LeaderLock::Timers, "instance-b").await.unwrap();
    assert!(other.is_some(), "another job's lock is independent");

    first.release().await.unwrap();
    assert_eq!(lease(&pool, lock).await, None, "a clean release removes the lease");
    let second = LeaderSession::try_acquire(&options, lock, "instance-b").await.unwrap();
    assert!(second.is_some(), "the released lock is free again");
}

/// Spawns a contender whose job reports its start (holder and token) and runs until its token is cancelled.
fn contender(
    pool: &PgPool,
    holder: &'static str,
    cancel: CancellationToken,
    started: mpsc::UnboundedSender<(&'static str, CancellationToken)>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let options = options(pool);
    tokio::spawn(async move {
        run_as_leader(&options, LeaderLock::Timers, holder, cancel, move |token: CancellationToken| {
            let started = started.clone();
            async move {
                started.send((holder, token.clone())).expect("the test listens");
                token.cancelled().await;
                Ok(())
            }
        })
        .await
    })
}

#[sqlx::test]
async fn killing_the_leaders_backend_cancels_its_job_and_another_contender_takes_over(pool: PgPool) {
    let (started, mut starts) = mpsc::unbounded_channel();
    let (cancel_a, cancel_b) = (CancellationToken::new(), CancellationToken::new());
    let a = contender(&pool, "instance-a", cancel_a.clone(), started.clone());
    let (holder, job_a) = timeout(DEADLINE, starts.recv()).await.expect("a contender leads").unwrap();
    assert_eq!(holder, "instance-a");
    let b = contender(&pool, "instance-b", cancel_b.clone(), started);
    let (_, pid_a) = lease(&pool, LeaderLock::Timers).await.expect("the leader holds a lease");

    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid_a).fetch_one(&pool).await.unwrap();
    assert!(killed);
    let deadline = Instant::now() + TAKEOVER;
    timeout_at(deadline, job_a.cancelled()).await.expect("the dead leader's job is cancelled");
    // The dead leader waits a retry interval before contending again; keep it out so the takeover is b's.
    cancel_a.cancel();
    let (holder, job_b) = timeout_at(deadline, starts.recv()).await.expect("another contender takes over").unwrap();
    assert_eq!(holder, "instance-b");
    let (lease_holder, pid_b) = lease(&pool, LeaderLock::Timers).await.expect("the new leader holds a lease");
    assert_eq!(lease_holder, "instance-b");
    assert_ne!(pid_b, pid_a);
    timeout(DEADLINE, a).await.expect("the old leader stops").unwrap().unwrap();

    cancel_b.cancel();
    timeout(DEADLINE, job_b.cancelled()).await.unwrap();
    timeout(DEADLINE, b).await.expect("the new leader stops").unwrap().unwrap();
    assert_eq!(lease(&pool, LeaderLock::Timers).await, None, "a clean stop removes the lease");
    let options = options(&pool);
    let free = LeaderSession::try_acquire(&options, LeaderLock::Timers, "instance-c").await.unwrap();
    assert!(free.is_some(), "a clean stop unlocks");
}
