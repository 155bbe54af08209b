//! The batch write path of provenance measured both ways on the stack's PostgreSQL, on the partitioned table:
//! the earlier `INSERT … SELECT FROM UNNEST` (one array per column, kept in this file) against the product's
//! [`provenance::insert_rows`]: sqlx's binary `COPY` into a staging table (`ON COMMIT DROP`, so it is safe behind
//! PgBouncer's transaction pooling) followed by the same `INSERT … SELECT … ON CONFLICT … RETURNING` from it.
//! Each way gets a fresh database, the same rows, batches of 1,000 in one transaction each (as the processor
//! writes), then the same rows again (every one a duplicate).
//!
//!   COSTSIM_BENCH_ROWS=200000 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench --bench storage_write
//!
//! `COSTSIM_BENCH_ROWS` sets the rows per way; without it (or without DATABASE_URL) it does nothing, so
//! `cargo bench` alone creates no database.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use costsim_breaker::store::provenance::{self, ProvenanceRow, Writer};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

const BATCH: usize = 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let (Ok(admin_url), Ok(count)) = (std::env::var("DATABASE_URL"), std::env::var("COSTSIM_BENCH_ROWS")) else {
        eprintln!("storage_write: set COSTSIM_BENCH_ROWS and DATABASE_URL to measure; nothing to do.");
        return Ok(());
    };
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let count: usize = count.parse().context("COSTSIM_BENCH_ROWS is not a number")?;
    let rows = generate(count, Utc::now());
    let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.context("cannot connect")?;
    println!("| way | rows | first write rows/s | every row again rows/s |");
    println!("|---|---:|---:|---:|");
    for way in [Way::Unnest, Way::Copy] {
        let name = format!("bench_storage_write_{}_{}", std::process::id(), way.name());
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
        let mut url = url::Url::parse(&admin_url)?;
        url.set_path(&name);
        let pool = PgPoolOptions::new().max_connections(1).connect(url.as_str()).await?;
        costsim_breaker::store::migrate(&pool).await?;
        let first = write_all(&pool, &rows, way).await?;
        let again = write_all(&pool, &rows, way).await?;
        anyhow::ensure!(first.0 == count && again.0 == 0, "{}: stored {} then {}", way.name(), first.0, again.0);
        println!("| {} | {count} | {:.0} | {:.0} |", way.name(), first.1, again.1);
        pool.close().await;
        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Way {
    Unnest,
    Copy,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Unnest => "unnest",
            Way::Copy => "copy",
        }
    }
}

/// Writes every row in batches, one transaction each; returns the rows stored and the rate.
async fn write_all(pool: &PgPool, rows: &[ProvenanceRow], way: Way) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let mut stored = 0;
    for batch in rows.chunks(BATCH) {
        let mut tx = pool.begin().await?;
        stored += match way {
            Way::Unnest => unnest_batch(&mut tx, batch, Writer::Processor).await?.len(),
            Way::Copy => provenance::insert_rows(&mut tx, batch, Writer::Processor).await?.len(),
        };
        tx.commit().await?;
    }
    Ok((stored, rows.len() as f64 / started.elapsed().as_secs_f64()))
}

/// The processor's rows: random ids, a day of event time, the columns `ProvenanceRow::of_result` fills.
fn generate(count: usize, start: DateTime<Utc>) -> Vec<ProvenanceRow> {
    (0..count)
        .map(|i| {
            let id = format!("{:016x}{:016x}", splitmix(i as u64), splitmix(i as u64 ^ 0x9e37));
            ProvenanceRow {
                event_id: id.clone(),
                occurred_at: Some(start + Duration::milliseconds((i as i64 * 86_400_000) / count as i64)),
                run_id: Some(format!("run-{}", i / 50)),
                tenant_id: Some(format!("tenant-{}", i % 20)),
                variant_slug: Some("v2".into()),
                source: Some("sandbox".into()),
                model_version: Some("2.0.0".into()),
                adapter_version: Some("2.0.0".into()),
                input_hash: Some(id),
                v1_cost: Some(1000.0 + (i % 5000) as f64),
                v2_cost: Some(1000.0 + (i % 5100) as f64),
                v1_feasible: Some(true),
                v2_feasible: Some(true),
                v2_status: Some("success".into()),
                drift_score: Some((i % 100) as f64 / 1000.0),
                verdict: Some("match"),
                runtime_ms: Some((i % 900) as i32),
                kafka_topic: Some("costsim.simulation-results".into()),
                kafka_partition: Some((i % 12) as i32),
                kafka_offset: Some(i as i64),
                ..ProvenanceRow::default()
            }
        })
        .collect()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The batch insert up to its conflict action: one array per column, `$24` whether the rows are `processed`.
macro_rules! insert_rows_sql {
    () => {
        "INSERT INTO costsim_provenance (event_id, occurred_at, run_id, tenant_id, variant_slug, source, \
         model_version, adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, cost_delta, \
         v1_feasible, v2_feasible, v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, \
         kafka_partition, kafka_offset, processed) \
         SELECT e, o, r, t, vs, s, mv, av, cs, ih, oh, c1, c2, c2 - c1, f1, f2, st, d, vd, p::jsonb, ms, kt, kp, ko, \
         $24::bool \
         FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[], $13::float8[], $14::bool[], $15::bool[], \
         $16::text[], $17::float8[], $18::text[], $19::text[], $20::int4[], $21::text[], $22::int4[], $23::int8[]) \
         AS u(e, o, r, t, vs, s, mv, av, cs, ih, oh, c1, c2, f1, f2, st, d, vd, p, ms, kt, kp, ko) \
         ON CONFLICT ON CONSTRAINT uq_costsim_provenance_event_id "
    };
}

/// The write path before COPY: one `INSERT … SELECT FROM UNNEST`, one array per column (kept here to measure).
async fn unnest_batch(
    conn: &mut PgConnection,
    rows: &[ProvenanceRow],
    writer: Writer,
) -> Result<HashSet<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    // One statement may not touch a row twice with ON CONFLICT DO UPDATE: repeats are dropped here.
    let mut ids = HashSet::with_capacity(rows.len());
    let unique: Vec<&ProvenanceRow> = rows.iter().filter(|r| ids.insert(r.event_id.as_str())).collect();
    let c = Columns::of(&unique);
    let sql = match writer {
        Writer::Processor => concat!(
            insert_rows_sql!(),
            "DO UPDATE SET processed = true WHERE NOT costsim_provenance.processed RETURNING event_id"
        ),
        Writer::Backfill => concat!(insert_rows_sql!(), "DO NOTHING RETURNING event_id"),
    };
    let inserted: Vec<String> = sqlx::query_scalar(sql)
        .persistent(false)
        .bind(&c.event_id)
        .bind(&c.occurred_at)
        .bind(&c.run_id)
        .bind(&c.tenant_id)
        .bind(&c.variant_slug)
        .bind(&c.source)
        .bind(&c.model_version)
        .bind(&c.adapter_version)
        .bind(&c.commit_sha)
        .bind(&c.input_hash)
        .bind(&c.output_hash)
        .bind(&c.v1_cost)
        .bind(&c.v2_cost)
        .bind(&c.v1_feasible)
        .bind(&c.v2_feasible)
        .bind(&c.v2_status)
        .bind(&c.drift_score)
        .bind(&c.verdict)
        .bind(&c.payload)
        .bind(&c.runtime_ms)
        .bind(&c.kafka_topic)
        .bind(&c.kafka_partition)
        .bind(&c.kafka_offset)
        .bind(writer == Writer::Processor)
        .fetch_all(conn)
        .await?;
    Ok(inserted.into_iter().collect())
}

/// The batch as one array per column, the shape `UNNEST` takes.
#[derive(Default)]
struct Columns<'a> {
    event_id: Vec<&'a str>,
    occurred_at: Vec<Option<DateTime<Utc>>>,
    run_id: Vec<Option<&'a str>>,
    tenant_id: Vec<Option<&'a str>>,
    variant_slug: Vec<Option<&'a str>>,
    source: Vec<Option<&'a str>>,
    model_version: Vec<Option<&'a str>>,
    adapter_version: Vec<Option<&'a str>>,
    commit_sha: Vec<Option<&'a str>>,
    input_hash: Vec<Option<&'a str>>,
    output_hash: Vec<Option<&'a str>>,
    v1_cost: Vec<Option<f64>>,
    v2_cost: Vec<Option<f64>>,
    v1_feasible: Vec<Option<bool>>,
    v2_feasible: Vec<Option<bool>>,
    v2_status: Vec<Option<&'a str>>,
    drift_score: Vec<Option<f64>>,
    verdict: Vec<Option<&'static str>>,
    // Sent as text and cast in SQL: one array type for any JSON value.
    payload: Vec<Option<String>>,
    runtime_ms: Vec<Option<i32>>,
    kafka_topic: Vec<Option<&'a str>>,
    kafka_partition: Vec<Option<i32>>,
    kafka_offset: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &[&'a ProvenanceRow]) -> Self {
        let mut c = Columns { event_id: Vec::with_capacity(rows.len()), ..Default::default() };
        for r in rows {
            c.event_id.push(&r.event_id);
            c.occurred_at.push(r.occurred_at);
            c.run_id.push(r.run_id.as_deref());
            c.tenant_id.push(r.tenant_id.as_deref());
            c.variant_slug.push(r.variant_slug.as_deref());
            c.source.push(r.source.as_deref());
            c.model_version.push(r.model_version.as_deref());
            c.adapter_version.push(r.adapter_version.as_deref());
            c.commit_sha.push(r.commit_sha.as_deref());
            c.input_hash.push(r.input_hash.as_deref());
            c.output_hash.push(r.output_hash.as_deref());
            c.v1_cost.push(r.v1_cost);
            c.v2_cost.push(r.v2_cost);
            c.v1_feasible.push(r.v1_feasible);
            c.v2_feasible.push(r.v2_feasible);
            c.v2_status.push(r.v2_status.as_deref());
            c.drift_score.push(r.drift_score);
            c.verdict.push(r.verdict);
            c.payload.push(r.payload.as_ref().map(|p| p.to_string()));
            c.runtime_ms.push(r.runtime_ms);
            c.kafka_topic.push(r.kafka_topic.as_deref());
            c.kafka_partition.push(r.kafka_partition);
            c.kafka_offset.push(r.kafka_offset);
        }
        c
    }
}
