//! The schema migrations apply to a fresh database and leave it ready for the first event.

use sqlx::PgPool;

#[sqlx::test]
async fn migrations_create_every_table_and_seed_the_breaker(pool: PgPool) {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_name LIKE 'costsim_%' \
         AND table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition) ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "costsim_alert_queue",
            "costsim_breaker_events",
            "costsim_canary_reports",
            "costsim_cb_incidents",
            "costsim_cb_state",
            "costsim_consumed_offsets",
            "costsim_drift_buckets",
            "costsim_leader_leases",
            "costsim_lost_records",
            "costsim_provenance",
        ]
    );
    let (state, disabled, version): (String, bool, i64) =
        sqlx::query_as("SELECT state, disabled, version FROM costsim_cb_state WHERE name = 'costsim_v2'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), disabled, version), ("closed", false, 0));
}

#[sqlx::test]
async fn provenance_is_unique_per_event_and_a_breaker_has_at_most_one_open_incident(pool: PgPool) {
    let insert = "INSERT INTO costsim_provenance (event_id) VALUES ('e-1') ON CONFLICT DO NOTHING";
    let first = sqlx::query(insert).execute(&pool).await.unwrap().rows_affected();
    let second = sqlx::query(insert).execute(&pool).await.unwrap().rows_affected();
    assert_eq!((first, second), (1, 0));

    let incident = "INSERT INTO costsim_cb_incidents (id, circuit_breaker_name, reason, severity) \
                    VALUES ($1, 'costsim_v2', 'test', 'P1')";
    sqlx::query(incident).bind("i-1").execute(&pool).await.unwrap();
    let err = sqlx::query(incident).bind("i-2").execute(&pool).await.unwrap_err();
    let constraint = err.as_database_error().and_then(|e| e.constraint().map(str::to_owned));
    assert_eq!(constraint.as_deref(), Some("uq_costsim_cb_incidents_one_open"));
}

#[sqlx::test(migrations = false)]
async fn the_migrate_command_applies_everything_once(pool: PgPool) {
    assert_eq!(costsim_breaker::store::migrate(&pool).await.unwrap(), costsim_breaker::store::MIGRATOR.iter().count());
    assert_eq!(costsim_breaker::store::migrate(&pool).await.unwrap(), 0);
}
