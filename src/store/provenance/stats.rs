//! What the provenance table holds: totals per variant and source, rows with costs, drift statistics, and which
//! of a set of event ids are stored with which costs.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::{Keys, ProvenanceRow, keyed_rows};

/// Rows of one (variant, source) pair.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Totals {
    /// `variant_slug`, if set.
    pub variant_slug: Option<String>,
    /// `source`, if set.
    pub source: Option<String>,
    /// All rows.
    pub rows: i64,
    /// Rows with a V1 cost.
    pub with_v1_cost: i64,
    /// Rows with a V2 cost.
    pub with_v2_cost: i64,
    /// Rows with both costs.
    pub with_both_costs: i64,
}

/// Statistics of `drift_score` over the rows that have one.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DriftStats {
    /// Rows with a drift score.
    pub count: i64,
    /// Mean score.
    pub mean: Option<f64>,
    /// Median score.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

/// Which costs a stored row has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCosts {
    /// The V1 cost is set.
    pub v1: bool,
    /// The V2 cost is set.
    pub v2: bool,
}

/// Row counts per variant and source, ordered by variant then source.
pub async fn totals(conn: &mut PgConnection) -> Result<Vec<Totals>, sqlx::Error> {
    sqlx::query_as(
        "SELECT variant_slug, source, count(*) AS rows, count(v1_cost) AS with_v1_cost, \
         count(v2_cost) AS with_v2_cost, count(cost_delta) AS with_both_costs \
         FROM costsim_provenance GROUP BY variant_slug, source ORDER BY variant_slug, source",
    )
    .persistent(false)
    .fetch_all(conn)
    .await
}

/// Drift statistics over every row with a score.
pub async fn drift(conn: &mut PgConnection) -> Result<DriftStats, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(drift_score) AS count, avg(drift_score) AS mean, \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY drift_score) AS p50, \
         percentile_cont(0.95) WITHIN GROUP (ORDER BY drift_score) AS p95 \
         FROM costsim_provenance WHERE drift_score IS NOT NULL",
    )
    .persistent(false)
    .fetch_one(conn)
    .await
}

/// The stored costs of each of `rows` that is stored, looked up by its key (`occurred_at`, `event_id`).
pub async fn stored_costs(
    conn: &mut PgConnection,
    rows: &[ProvenanceRow],
) -> Result<HashMap<String, StoredCosts>, sqlx::Error> {
    let keys = Keys::of(rows);
    let rows: Vec<(String, bool, bool)> =
        sqlx::query_as(keyed_rows!("p.event_id, p.v1_cost IS NOT NULL, p.v2_cost IS NOT NULL"))
            .persistent(false)
            .bind(&keys.occurred_at)
            .bind(&keys.event_id)
            .bind(&keys.untimed)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id, v1, v2)| (id, StoredCosts { v1, v2 })).collect())
}
