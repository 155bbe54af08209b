//! The held lock: a dedicated connection that holds a job's advisory lock, and the lease row naming its holder.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};

use super::LeaderLock;

/// A held advisory lock: the dedicated connection that holds it and the lease row that names the holder.
pub struct LeaderSession {
    conn: PgConnection,
    lock: LeaderLock,
    backend_pid: i32,
}

/// What an attempt to take the lock found.
pub(super) enum Attempt {
    /// The lock is ours.
    Acquired(LeaderSession),
    /// Another session holds it; the connection is handed back for the next attempt.
    Busy(PgConnection),
}

/// Opens the dedicated connection of a contender, named so operators can find it in `pg_stat_activity`.
pub(super) async fn connect(options: &PgConnectOptions, lock: LeaderLock) -> Result<PgConnection, sqlx::Error> {
    options.clone().application_name(&format!("costsim-breaker leader {}", lock.job())).connect().await
}

/// Ends the session of a holder whose lease went without a heartbeat for `stale_after`, when that session still
/// holds the lock; returns its backend pid. Such a holder has given up leading by its own check timeout long
/// before, but its server session lives on when the connection went half-open (a stopped proxy or a partitioned
/// network keeps the server's socket open, and TCP keepalives go unanswered only when the peer host is gone), and
/// with it the lock, so no other contender could ever take over.
pub(super) async fn end_stale_holder(
    conn: &mut PgConnection,
    lock: LeaderLock,
    stale_after: std::time::Duration,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        // Materialized, so no session is signalled before both conditions hold.
        "WITH stale AS MATERIALIZED ( \
             SELECT l.backend_pid FROM costsim_leader_leases l \
             WHERE l.lock_id = $1 AND l.heartbeat_at < now() - make_interval(secs => $2) \
             AND EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = l.backend_pid AND granted \
                 AND classid = 0 AND objid = $1::oid AND objsubid = 1)) \
         SELECT backend_pid FROM stale WHERE pg_terminate_backend(backend_pid)",
    )
    .persistent(false)
    .bind(lock.id())
    .bind(stale_after.as_secs_f64())
    .fetch_optional(conn)
    .await
}

impl LeaderSession {
    /// Opens a dedicated connection and tries the lock once; `None` when another session holds it.
    pub async fn try_acquire(
        options: &PgConnectOptions,
        lock: LeaderLock,
        holder: &str,
    ) -> Result<Option<LeaderSession>, sqlx::Error> {
        let conn = connect(options, lock).await?;
        match Self::attempt(conn, lock, holder).await? {
            Attempt::Acquired(session) => Ok(Some(session)),
            Attempt::Busy(conn) => {
                let _ = conn.close().await;
                Ok(None)
            }
        }
    }

    pub(super) async fn attempt(
        mut conn: PgConnection,
        lock: LeaderLock,
        holder: &str,
    ) -> Result<Attempt, sqlx::Error> {
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1::bigint)")
            .persistent(false)
            .bind(lock.id())
            .fetch_one(&mut conn)
            .await?;
        if !acquired {
            return Ok(Attempt::Busy(conn));
        }
        // On error the connection is dropped, which ends the session and frees the lock with it.
        let backend_pid: i32 = sqlx::query_scalar(
            "INSERT INTO costsim_leader_leases (lock_id, job, holder, backend_pid) VALUES ($1, $2, $3, pg_backend_pid()) \
             ON CONFLICT ON CONSTRAINT pk_costsim_leader_leases DO UPDATE SET job = EXCLUDED.job, \
             holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid, acquired_at = now(), heartbeat_at = now() \
             RETURNING backend_pid",
        ).persistent(false)
        .bind(lock.id())
        .bind(lock.job())
        .bind(holder)
        .fetch_one(&mut conn)
        .await?;
        Ok(Attempt::Acquired(LeaderSession { conn, lock, backend_pid }))
    }

    /// The lock this session holds.
    pub fn lock(&self) -> LeaderLock {
        self.lock
    }

    /// The PostgreSQL server process of the dedicated connection.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Checks that the connection answers and still holds the lock, and records the heartbeat; `false` when the
    /// lock or the lease is no longer this session's.
    pub async fn check(&mut self) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE costsim_leader_leases SET heartbeat_at = now() \
             WHERE lock_id = $1 AND backend_pid = pg_backend_pid() AND EXISTS ( \
                 SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted \
                 AND classid = 0 AND objid = $1::oid AND objsubid = 1)",
        )
        .persistent(false)
        .bind(self.lock.id())
        .execute(&mut self.conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the lease, unlocks explicitly and closes the connection.
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM costsim_leader_leases WHERE lock_id = $1 AND backend_pid = pg_backend_pid()")
            .persistent(false)
            .bind(self.lock.id())
            .execute(&mut self.conn)
            .await?;
        let _held: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1::bigint)")
            .persistent(false)
            .bind(self.lock.id())
            .fetch_one(&mut self.conn)
            .await?;
        self.conn.close().await
    }
}
