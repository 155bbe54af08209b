//! An instance down while its partitions' events arrive: three processors share a stream, one is killed
//! (SIGKILL) and started again after a while, and the run is compared bucket by bucket with one processor's run
//! over the same events. After `COSTSIM_IDLE_PARTITION_SECONDS` the dead instance's partitions stop holding the
//! merged watermark back, so the other instances decide without them (each decision names them in its evidence);
//! their events, read later, must still land in their buckets, inside the window, or be counted as too late: none
//! may drop out unseen.

use std::time::{Duration, Instant};

use crate::support::oracle::{audit, decisions, topic_ends};
use crate::support::processor::{Launch, Processor};
use crate::support::report::Row;
use crate::support::stream::{Stream, produce};
use crate::support::{Database, committed_at_least, env_u64, other_group, poll, private_kafka, run_deadline};

/// Engine settings: 1 s buckets in a ten-minute window, so an outage of up to six minutes stays inside it.
const ENGINE: &[&str] =
    &["bucket_seconds=1", "window_seconds=600", "probation_seconds=5", "min_samples=20", "disable_ttl_seconds=5"];

/// A processor of this scenario (the stream's event time lies a day ahead: see [`Stream::future`]), with the
/// default idle timeout of 10 s.
fn launch(kafka: &costsim_breaker::kafka::KafkaConfig, url: &str) -> Launch {
    Launch::new(kafka, url, ENGINE).env("COSTSIM_MAX_FUTURE_SKEW_SECONDS", "604800")
}

/// `costsim_events_total{outcome="too_late"}` of a running processor.
async fn too_late(processor: &Processor) -> u64 {
    let addr = processor.http_addr().await;
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("costsim_events_total{outcome=\"too_late\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

async fn instance_down(events: u64, down: Duration, test: &'static str) {
    let (_broker, kafka) = private_kafka().await;
    let stream = Stream::future(events, 41);
    let (reference_db, db) = (Database::shared().await, Database::shared().await);
    let names = ["first", "second", "third"];
    let mut running: Vec<Processor> = names.iter().map(|n| Processor::start(&launch(&kafka, &db.url), n)).collect();
    // Each of the three owns one of the three partitions before the stream starts.
    for p in &running {
        poll(&format!("{} has a partition", p.name), run_deadline(0), async || {
            p.find("Partitions assigned.", |f| f["partitions"].as_str().is_some_and(|s| s != "[]")).map(|_| ())
        })
        .await;
    }
    // Produced while the three consume, so the kill lands early in the stream.
    let n = stream.len() as i64;
    let sending = tokio::spawn({
        let kafka = kafka.clone();
        async move { produce(&kafka, stream.events()).await }
    });
    let deadline = run_deadline(n as u64) + down;
    committed_at_least(&db, n / 10, deadline).await;
    let third = running.pop().expect("three");
    third.kill().await;
    let killed_at = Instant::now();
    let at_kill = db.committed().await;
    // The outage itself: a fault of fixed length, not a wait for a result.
    tokio::time::sleep(down).await;
    let during = db.committed().await;
    assert_eq!(sending.await.unwrap() as i64, n, "every event produced");
    let ends = topic_ends(&kafka);
    running.push(Processor::start(&launch(&kafka, &db.url), "third-again"));
    committed_at_least(&db, n, deadline).await;
    let caught_up = killed_at.elapsed();

    let reference = Processor::start(&launch(&other_group(&kafka, "reference"), &reference_db.url), "reference");
    committed_at_least(&reference_db, n, deadline).await;
    let mut late = 0;
    for p in &running {
        late += too_late(p).await;
    }
    reference.terminate().await;
    for p in running {
        p.terminate().await;
    }
    let counts = audit(&db, &ends).await;
    let (expected, got) = (decisions(&reference_db).await, decisions(&db).await);
    let bucket_mismatches = expected.bucket_differences(&got);
    let decision_differences = expected.differences(&got) - bucket_mismatches;
    let behind: i64 = db
        .scalar("SELECT count(*) FROM costsim_cb_incidents WHERE jsonb_array_length(evidence->'partitions_behind') > 0")
        .await;
    let samples = |d: &crate::support::oracle::Decisions| d.buckets.values().sum::<i64>();
    assert_eq!(late, 0, "an outage inside the window leaves no event too late");
    assert_eq!(samples(&expected), samples(&got), "every event counted in its bucket once");
    Row {
        scenario: format!("one of three instances killed for {} s, then started again", down.as_secs()),
        runs: 1,
        events: n,
        lost: counts.lost,
        duplicated: counts.duplicated,
        decision_mismatches: bucket_mismatches,
        recoveries: vec![caught_up],
        recovery_measures: "kill to every record committed",
        test,
        notes: format!(
            "committed {at_kill} at the kill and {during} when the instance came back; per-bucket drift samples equal \
             to a one-processor run ({} samples in {} buckets); {decision_differences} decision rows differ from that \
             run (decided without the dead instance's partition: {behind} incidents name partitions behind in their \
             evidence); {late} events too late",
            samples(&got),
            got.buckets.len()
        ),
    }
    .submit();
    reference_db.drop_now().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn short_an_instance_down_for_60_s_leaves_every_event_in_its_bucket() {
    instance_down(
        60_000,
        Duration::from_secs(60),
        "late::short_an_instance_down_for_60_s_leaves_every_event_in_its_bucket",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long form (COSTSIM_FAULTS_EVENTS / 5 events, a six-minute outage): scripts/faults"]
async fn long_an_instance_down_for_6_minutes_leaves_every_event_in_its_bucket() {
    let events = env_u64("COSTSIM_FAULTS_EVENTS", 1_000_000) / 5;
    instance_down(
        events,
        Duration::from_secs(360),
        "late::long_an_instance_down_for_6_minutes_leaves_every_event_in_its_bucket",
    )
    .await;
}
