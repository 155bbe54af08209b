//! Alertmanager down across a trip and a recovery: the decisions go on, their alert rows wait in the outbox, and once a
//! private Alertmanager is back every row is delivered, once, each alert's rows in order, so it ends with the
//! incident's alert resolved.

use std::process::Stdio;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::support::oracle::{audit, decisions, topic_ends};
use crate::support::processor::{Launch, Processor, cli};
use crate::support::report::Row;
use crate::support::services::PrivateAlertmanager;
use crate::support::{DEADLINE, Database, env_u64, poll, private_kafka};

/// Engine settings of a live stream that trips and recovers within 30 s, as in the pipeline's own test.
const LIVE: &[&str] =
    &["bucket_seconds=1", "window_seconds=5", "probation_seconds=3", "min_samples=20", "disable_ttl_seconds=3"];

/// Alerts of these types fire; the others resolve.
const FIRING: &[&str] = &["disable", "warning", "resend"];

/// Alertmanager's count of alerts received with `status` (firing or resolved), from its own metrics.
async fn received(am: &PrivateAlertmanager, status: &str) -> i64 {
    let text = reqwest::get(format!("{}/metrics", am.url())).await.unwrap().text().await.unwrap();
    let needle = format!("status=\"{status}\"");
    text.lines()
        .filter(|l| l.starts_with("alertmanager_alerts_received_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

async fn one_outage(round: u64) -> (i64, i64, i64, std::time::Duration, String) {
    let mut am = PrivateAlertmanager::start().await;
    am.stop();
    let db = Database::shared().await;
    let (_broker, kafka) = private_kafka().await;
    let run = Processor::start(&Launch::new(&kafka, &db.url, LIVE).alerts_to(&am.url()), &format!("am-outage-{round}"));
    // A live stream as a user sends it: 30 s at 200 events/s, drift spike from 12 s to 18 s.
    let mut stream = cli(&kafka)
        .args(["produce", "--generate", "6000", "--drift-profile", "spike", "--events-per-second", "200"])
        .args(["--rate", "200", "--seed", &(40 + round).to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    poll("a trip and a recovery while Alertmanager is down", 3 * DEADLINE, async || {
        let closed =
            db.scalar("SELECT count(*) FROM costsim_breaker_events WHERE payload->>'to_state' = 'closed'").await;
        (closed >= 1).then_some(())
    })
    .await;
    let tried =
        db.scalar("SELECT count(*) FROM costsim_alert_queue WHERE attempts > 0 AND last_error IS NOT NULL").await;
    let sent = db.scalar("SELECT count(*) FROM costsim_alert_queue WHERE status = 'sent'").await;
    assert!(
        tried >= 1 && sent == 0,
        "the drainer tried and failed while Alertmanager was down ({tried} tried, {sent} sent)"
    );

    let back = Instant::now();
    am.start_again().await;
    poll("every alert row delivered", 3 * DEADLINE, async || {
        (db.scalar("SELECT count(*) FROM costsim_alert_queue WHERE status = 'pending'").await == 0).then_some(())
    })
    .await;
    let recovery = back.elapsed();
    assert!(stream.wait().await.unwrap().success(), "the stream was delivered");
    let ends = topic_ends(&kafka);
    let total: i64 = ends.iter().map(|(_, end)| end).sum();
    poll("every event committed", DEADLINE, async || (db.committed().await == total).then_some(())).await;
    run.terminate().await;

    let rows: Vec<(String, String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT alert_type, status, (payload->0->'labels')::text, sent_at FROM costsim_alert_queue ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let undelivered = rows.iter().filter(|r| r.1 != "sent").count() as i64;
    // Each alert's rows reached Alertmanager in the order they were queued.
    for (i, later) in rows.iter().enumerate() {
        for earlier in rows[..i].iter().filter(|e| e.2 == later.2) {
            assert!(earlier.3 <= later.3, "rows of {} delivered out of order: {rows:#?}", later.2);
        }
    }
    let firing = rows.iter().filter(|r| FIRING.contains(&r.0.as_str())).count() as i64;
    let resolved = rows.len() as i64 - firing;
    let (got_firing, got_resolved) = (received(&am, "firing").await, received(&am, "resolved").await);
    let made = decisions(&db).await;
    assert!(made.trips() >= 1, "the stream tripped the breaker: {made:#?}");
    let active: serde_json::Value =
        reqwest::get(format!("{}/api/v2/alerts", am.url())).await.unwrap().json().await.unwrap();
    let still_firing =
        active.as_array().unwrap().iter().filter(|a| a["labels"]["alertname"] == "CostSimV2Disabled").count();
    assert_eq!(still_firing, 0, "the incident's alert ends resolved: {active:#}");

    let events = audit(&db, &ends).await;
    db.drop_now().await;
    let lost = events.lost + undelivered + (firing - got_firing).max(0) + (resolved - got_resolved).max(0);
    let duplicated = events.duplicated + (got_firing - firing).max(0) + (got_resolved - resolved).max(0);
    let note = format!(
        "{} alert rows ({firing} firing, {resolved} resolved) queued during the outage ({tried} with failed attempts); \
         Alertmanager received {got_firing} firing and {got_resolved} resolved; {} trips",
        rows.len(),
        made.trips()
    );
    (total, lost, duplicated, recovery, note)
}

async fn alertmanager_outages(rounds: u64, test: &'static str) {
    let (mut events, mut lost, mut duplicated, mut recoveries, mut notes) = (0, 0, 0, Vec::new(), Vec::new());
    for round in 0..rounds {
        let (n, l, d, recovery, note) = one_outage(round).await;
        (events, lost, duplicated) = (events + n, lost + l, duplicated + d);
        recoveries.push(recovery);
        notes.push(note);
    }
    Row {
        scenario: "Alertmanager down across a trip and a recovery".into(),
        runs: rounds,
        events,
        lost,
        duplicated,
        decision_mismatches: 0,
        recoveries,
        recovery_measures: "Alertmanager start to every queued alert row delivered",
        test,
        notes: notes.join("; "),
    }
    .submit();
}

#[tokio::test(flavor = "multi_thread")]
async fn short_alertmanager_down_across_a_trip_and_a_recovery_delivers_every_alert_once_in_order() {
    alertmanager_outages(
        1,
        "alert_outage::short_alertmanager_down_across_a_trip_and_a_recovery_delivers_every_alert_once_in_order",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long form (COSTSIM_FAULTS_ROUNDS outages): scripts/faults"]
async fn long_alertmanager_outages_deliver_every_alert_once_in_order() {
    let rounds = env_u64("COSTSIM_FAULTS_ROUNDS", 3);
    alertmanager_outages(rounds, "alert_outage::long_alertmanager_outages_deliver_every_alert_once_in_order").await;
}
