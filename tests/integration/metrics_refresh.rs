//! The gauges that describe shared state follow the database's rows, not what one process decided.

use costsim_breaker::metrics::Metrics;
use costsim_breaker::metrics::refresh::{refresh_once, run_refresher};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{DEADLINE, app_pool, eventually};

async fn execute(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[sqlx::test]
async fn a_refresh_sets_every_shared_gauge_from_the_rows(pool: PgPool) {
    execute(
        &pool,
        "UPDATE costsim_cb_state SET state = 'open', consecutive_failures = 3, version = 1 WHERE name = 'costsim_v2'",
    )
    .await;
    execute(&pool, "INSERT INTO costsim_cb_state (name, state) VALUES ('costsim_v3', 'half_open')").await;
    execute(
        &pool,
        "INSERT INTO costsim_alert_queue (payload, status, sent_at) VALUES \
         ('{}', 'pending', NULL), ('{}', 'pending', NULL), ('{}', 'sent', now()), ('{}', 'failed', NULL)",
    )
    .await;
    execute(
        &pool,
        "INSERT INTO costsim_breaker_events (event_id, breaker, version, payload, created_at, published_at) VALUES \
         ('e1', 'costsim_v2', 1, '{}', now() - interval '90 seconds', NULL), \
         ('e0', 'costsim_v2', 0, '{}', now() - interval '1 hour', now())",
    )
    .await;

    let (app, metrics) = (app_pool(&pool).await, Metrics::new());
    refresh_once(&app, &metrics).await.unwrap();
    let state = |breaker: &str| metrics.v2_circuit_breaker_state.with_label_values(&[breaker]).get();
    assert_eq!((state("costsim_v2"), state("costsim_v3")), (1, 2));
    assert_eq!(metrics.cb_consecutive_failures.with_label_values(&["costsim_v2"]).get(), 3);
    assert_eq!(metrics.cb_alert_queue_depth.get(), 2, "the real pending count");
    assert_eq!(metrics.outbox_pending_events.get(), 1);
    let lag = metrics.outbox_lag_seconds.get();
    assert!((90.0..600.0).contains(&lag), "the oldest unpublished event's age, not the published one's: {lag}");
    assert!(metrics.gauges_refreshed_timestamp_seconds.get() > 1.7e9);

    execute(&pool, "UPDATE costsim_cb_state SET state = 'closed', consecutive_failures = 0 WHERE name = 'costsim_v2'")
        .await;
    execute(&pool, "UPDATE costsim_breaker_events SET published_at = now()").await;
    refresh_once(&app, &metrics).await.unwrap();
    assert_eq!(state("costsim_v2"), 0);
    assert_eq!(metrics.cb_consecutive_failures.with_label_values(&["costsim_v2"]).get(), 0);
    assert_eq!((metrics.outbox_pending_events.get(), metrics.outbox_lag_seconds.get()), (0, 0.0));
}

#[sqlx::test]
async fn the_refresher_refreshes_at_once_and_stops_when_cancelled(pool: PgPool) {
    execute(&pool, "UPDATE costsim_cb_state SET state = 'open' WHERE name = 'costsim_v2'").await;
    let metrics = Metrics::new();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_refresher(app_pool(&pool).await, metrics.clone(), cancel.clone()));
    let gauge = metrics.v2_circuit_breaker_state.with_label_values(&["costsim_v2"]);
    eventually("the first refresh sets the state gauge", || gauge.get() == 1).await;
    cancel.cancel();
    tokio::time::timeout(DEADLINE, task).await.expect("the refresher stopped").unwrap();
}
