//! The batch write path of provenance measured both ways on the stack's PostgreSQL, on the partitioned table:
//! today's `INSERT … SELECT FROM UNNEST` (one array per column, [`provenance::insert_rows`]) against sqlx's
//! binary `COPY` into a staging table (`ON COMMIT DROP`, so it is safe behind PgBouncer's transaction pooling)
//! followed by the same `INSERT … SELECT … ON CONFLICT … RETURNING` from it. Each way gets a fresh database,
//! the same rows, batches of 1,000 in one transaction each (as the processor writes), then the same rows again
//! (every one a duplicate).
//!
//!   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench storage_write
//!
//! `COSTSIM_BENCH_ROWS` (200000) sets the rows per way. Without DATABASE_URL it does nothing (so `cargo bench`
//! alone passes).

use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use costsim_breaker::store::provenance::{self, ProvenanceRow, Writer};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

const BATCH: usize = 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let Ok(admin_url) = std::env::var("DATABASE_URL") else {
        eprintln!("storage_write: DATABASE_URL is not set; nothing to measure.");
        return Ok(());
    };
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let count: usize = std::env::var("COSTSIM_BENCH_ROWS").ok().map(|v| v.parse()).transpose()?.unwrap_or(200_000);
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
            Way::Unnest => provenance::insert_rows(&mut tx, batch, Writer::Processor).await?.len(),
            Way::Copy => copy_batch(&mut tx, batch).await?,
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

/// The staging table's columns, in COPY order.
const COLUMNS: &str = "event_id, occurred_at, run_id, tenant_id, variant_slug, source, model_version, adapter_version, \
     commit_sha, input_hash, output_hash, v1_cost, v2_cost, v1_feasible, v2_feasible, v2_status, drift_score, \
     verdict, payload, runtime_ms, kafka_topic, kafka_partition, kafka_offset";

/// Binary COPY into a staging table dropped at commit, then the processor's insert from it.
async fn copy_batch(conn: &mut PgConnection, rows: &[ProvenanceRow]) -> anyhow::Result<usize> {
    sqlx::query(
        "CREATE TEMP TABLE costsim_provenance_stage (event_id text, occurred_at timestamptz, run_id text, \
         tenant_id text, variant_slug text, source text, model_version text, adapter_version text, commit_sha text, \
         input_hash text, output_hash text, v1_cost float8, v2_cost float8, v1_feasible bool, v2_feasible bool, \
         v2_status text, drift_score float8, verdict text, payload jsonb, runtime_ms int4, kafka_topic text, \
         kafka_partition int4, kafka_offset int8) ON COMMIT DROP",
    )
    .persistent(false)
    .execute(&mut *conn)
    .await?;
    let mut copy = conn
        .copy_in_raw(&format!("COPY costsim_provenance_stage ({COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await?;
    copy.send(encode(rows)).await?;
    copy.finish().await?;
    let stored: Vec<String> = sqlx::query_scalar(
        "INSERT INTO costsim_provenance (event_id, occurred_at, run_id, tenant_id, variant_slug, source, \
         model_version, adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, cost_delta, \
         v1_feasible, v2_feasible, v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, \
         kafka_partition, kafka_offset, processed) \
         SELECT DISTINCT ON (event_id) event_id, occurred_at, run_id, tenant_id, variant_slug, source, \
         model_version, adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, v2_cost - v1_cost, \
         v1_feasible, v2_feasible, v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, \
         kafka_partition, kafka_offset, true FROM costsim_provenance_stage \
         ON CONFLICT ON CONSTRAINT uq_costsim_provenance_event_id \
         DO UPDATE SET processed = true WHERE NOT costsim_provenance.processed RETURNING event_id",
    )
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok(stored.len())
}

/// PostgreSQL's binary COPY format: a header, then per row a field count and each field as length + bytes.
fn encode(rows: &[ProvenanceRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let text = |out: &mut Vec<u8>, v: Option<&str>| field(out, v.map(str::as_bytes));
    let f8 = |out: &mut Vec<u8>, v: Option<f64>| field(out, v.map(|v| v.to_be_bytes()).as_ref().map(|b| &b[..]));
    let b1 = |out: &mut Vec<u8>, v: Option<bool>| field(out, v.map(|v| [u8::from(v)]).as_ref().map(|b| &b[..]));
    let i4 = |out: &mut Vec<u8>, v: Option<i32>| field(out, v.map(|v| v.to_be_bytes()).as_ref().map(|b| &b[..]));
    let i8 = |out: &mut Vec<u8>, v: Option<i64>| field(out, v.map(|v| v.to_be_bytes()).as_ref().map(|b| &b[..]));
    // Microseconds since 2000-01-01T00:00:00Z.
    const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
    for r in rows {
        out.extend_from_slice(&23i16.to_be_bytes());
        text(&mut out, Some(&r.event_id));
        i8(&mut out, r.occurred_at.map(|t| t.timestamp_micros() - PG_EPOCH_MICROS));
        text(&mut out, r.run_id.as_deref());
        text(&mut out, r.tenant_id.as_deref());
        text(&mut out, r.variant_slug.as_deref());
        text(&mut out, r.source.as_deref());
        text(&mut out, r.model_version.as_deref());
        text(&mut out, r.adapter_version.as_deref());
        text(&mut out, r.commit_sha.as_deref());
        text(&mut out, r.input_hash.as_deref());
        text(&mut out, r.output_hash.as_deref());
        f8(&mut out, r.v1_cost);
        f8(&mut out, r.v2_cost);
        b1(&mut out, r.v1_feasible);
        b1(&mut out, r.v2_feasible);
        text(&mut out, r.v2_status.as_deref());
        f8(&mut out, r.drift_score);
        text(&mut out, r.verdict);
        // jsonb's binary form: version 1, then the JSON text.
        let payload = r.payload.as_ref().map(|p| [&[1u8][..], p.to_string().as_bytes()].concat());
        field(&mut out, payload.as_deref());
        i4(&mut out, r.runtime_ms);
        text(&mut out, r.kafka_topic.as_deref());
        i4(&mut out, r.kafka_partition);
        i8(&mut out, r.kafka_offset);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}
