//! PostgreSQL for the benchmark: a fresh database per phase, the processor's progress, and the COPY limit.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use costsim_breaker::event::SimulationResult;
use costsim_breaker::store::provenance::{KafkaOrigin, ProvenanceRow};
use sqlx::PgPool;

/// Creates database `name` on the server `admin_url` points at and returns its URL (schema not applied).
pub async fn fresh(admin: &PgPool, admin_url: &str, name: &str) -> anyhow::Result<String> {
    anyhow::ensure!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad database name {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin)
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    let mut url = url::Url::parse(admin_url).context("DATABASE_URL is not a URL")?;
    url.set_path(name);
    Ok(url.to_string())
}

/// Drops the databases of run `id` (`bench_<id>_*`): a run leaves gigabytes of provenance rows behind otherwise.
pub async fn drop_run(admin: &PgPool, id: &str) -> anyhow::Result<usize> {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
        .bind(format!("bench\\_{id}\\_%"))
        .fetch_all(admin)
        .await?;
    for name in &names {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)"))).execute(admin).await?;
    }
    Ok(names.len())
}

/// Records of `topic` the processor has committed (the sum of its partitions' next offsets); 0 before its schema
/// exists.
pub async fn processed(pool: &PgPool, topic: &str) -> u64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM costsim_consumed_offsets WHERE topic = $1",
    )
    .bind(topic)
    .fetch_one(pool)
    .await
    .map(|n| n as u64)
    .unwrap_or(0)
}

/// The columns the processor writes, in CSV order.
pub const COPY_COLUMNS: &str = "event_id, occurred_at, run_id, tenant_id, variant_slug, source, model_version, \
     adapter_version, commit_sha, input_hash, v1_cost, v2_cost, cost_delta, v1_feasible, v2_feasible, v2_status, \
     drift_score, verdict, runtime_ms, kafka_topic, kafka_partition, kafka_offset, processed";

/// Writes the provenance rows the processor would write for these events (as if read from `topic` with
/// `partitions` partitions) as CSV for `COPY`.
pub fn write_copy_csv(
    path: &Path,
    events: impl Iterator<Item = SimulationResult>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut n = 0u64;
    for (i, e) in events.enumerate() {
        let origin = KafkaOrigin { topic, partition: i as i32 % partitions, offset: i as i64 / partitions as i64 };
        let r = ProvenanceRow::of_result(&e, Some(origin));
        let text = |v: Option<&str>| v.map(csv).unwrap_or_default();
        let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let flag = |v: Option<bool>| v.map(|b| if b { "t" } else { "f" }).unwrap_or_default().to_owned();
        let delta = match (r.v1_cost, r.v2_cost) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let fields = [
            csv(&r.event_id),
            r.occurred_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            text(r.run_id.as_deref()),
            text(r.tenant_id.as_deref()),
            text(r.variant_slug.as_deref()),
            text(r.source.as_deref()),
            text(r.model_version.as_deref()),
            text(r.adapter_version.as_deref()),
            text(r.commit_sha.as_deref()),
            text(r.input_hash.as_deref()),
            num(r.v1_cost),
            num(r.v2_cost),
            num(delta),
            flag(r.v1_feasible),
            flag(r.v2_feasible),
            text(r.v2_status.as_deref()),
            num(r.drift_score),
            text(r.verdict),
            r.runtime_ms.map(|m| m.to_string()).unwrap_or_default(),
            text(r.kafka_topic.as_deref()),
            r.kafka_partition.map(|p| p.to_string()).unwrap_or_default(),
            r.kafka_offset.map(|o| o.to_string()).unwrap_or_default(),
            "t".to_owned(),
        ];
        writeln!(out, "{}", fields.join(","))?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// A CSV field: quoted, so an empty string is not read as NULL.
fn csv(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
