//! The divergence report (`GET /costsim/divergence`): V1 against V2 over a window of provenance, aggregated in
//! PostgreSQL so a window of millions of rows is never loaded into memory.
//!
//! Over the rows whose event time lies in the window (optionally one tenant's): `sample_count` counts them all,
//! `scored_count` those with both costs. Over the scored rows: `delta_p50` and `delta_p90` are the nearest-rank
//! percentiles of |V2 − V1| (`sorted[⌊n·q⌋]`, 2 decimal places), `kl_divergence` the KL of the V1 and V2 cost
//! histograms ([`crate::divergence`]; the bins are computed here with the same float8 expression as
//! [`Binning::bin`]), `outlier_count` the rows with a drift score above 0.5, and `fail_ratio` the share with a drift
//! score above the breaker's threshold. `matching_rate` is the share of ALL rows in the `match` band: a V2 run that
//! failed is not a match. All shares have 4 decimal places.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use crate::divergence::{BINS, Binning, Histograms, rank, round_to};

/// The window and the filters of a report.
#[derive(Debug, Clone)]
pub struct DivergenceQuery {
    /// Start of the window (event time, inclusive).
    pub start: DateTime<Utc>,
    /// End of the window (exclusive).
    pub end: DateTime<Utc>,
    /// Only this tenant's rows.
    pub tenant_id: Option<String>,
    /// A drift score above this counts in `fail_ratio` (the breaker's drift threshold).
    pub drift_threshold: f64,
    /// How many of the newest rows to list in `detailed_samples` (0 to 100).
    pub detailed: i64,
}

/// One listed comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetailedSample {
    /// Event time.
    pub timestamp: Option<DateTime<Utc>>,
    /// The first 16 characters of the input hash.
    pub input_hash: Option<String>,
    /// V1's cost in cents.
    pub v1_cost_cents: Option<f64>,
    /// V2's cost in cents.
    pub v2_cost_cents: Option<f64>,
    /// V2 − V1.
    pub cost_delta_cents: Option<f64>,
    /// The drift score.
    pub drift_score: Option<f64>,
    /// The verdict band.
    pub verdict: Option<String>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DivergenceReport {
    /// Start of the window.
    pub start_date: DateTime<Utc>,
    /// End of the window.
    pub end_date: DateTime<Utc>,
    /// The tenant filter, if any.
    pub tenant_id: Option<String>,
    /// The model version of the newest row in the window.
    pub version: Option<String>,
    /// Rows in the window.
    pub sample_count: i64,
    /// Rows with both costs.
    pub scored_count: i64,
    /// Median |V2 − V1| in cents.
    pub delta_p50: Option<f64>,
    /// p90 |V2 − V1| in cents.
    pub delta_p90: Option<f64>,
    /// KL divergence of the V1 and V2 cost histograms.
    pub kl_divergence: f64,
    /// Scored rows with a drift score above 0.5.
    pub outlier_count: i64,
    /// Share of scored rows with a drift score above the breaker's threshold.
    pub fail_ratio: f64,
    /// Share of all rows in the `match` band.
    pub matching_rate: f64,
    /// The newest rows, newest first.
    pub detailed_samples: Vec<DetailedSample>,
}

/// Rows of the window (`$1`, `$2`, tenant `$3`), as a literal so every query stays a static string.
macro_rules! window {
    () => {
        " FROM costsim_provenance WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::text IS NULL OR tenant_id = $3)"
    };
}

/// Scored rows of the window.
macro_rules! scored {
    () => {
        concat!(window!(), " AND v1_cost IS NOT NULL AND v2_cost IS NOT NULL")
    };
}

/// Computes the report in one snapshot (the caller's transaction should be REPEATABLE READ).
pub async fn report(conn: &mut PgConnection, q: &DivergenceQuery) -> Result<DivergenceReport, sqlx::Error> {
    let counts = sqlx::query(concat!(
        "SELECT count(*) AS rows, \
                count(*) FILTER (WHERE v1_cost IS NOT NULL AND v2_cost IS NOT NULL) AS scored, \
                count(*) FILTER (WHERE v1_cost IS NOT NULL AND v2_cost IS NOT NULL AND drift_score > 0.5) AS outliers, \
                count(*) FILTER (WHERE v1_cost IS NOT NULL AND v2_cost IS NOT NULL AND drift_score > $4) AS fails, \
                count(*) FILTER (WHERE verdict = 'match') AS matches, \
                min(LEAST(GREATEST(v1_cost, 1), GREATEST(v2_cost, 1))) \
                    FILTER (WHERE v1_cost IS NOT NULL AND v2_cost IS NOT NULL) AS low, \
                max(GREATEST(v1_cost, v2_cost, 1)) FILTER (WHERE v1_cost IS NOT NULL AND v2_cost IS NOT NULL) AS high",
        window!()
    ))
    .persistent(false)
    .bind(q.start)
    .bind(q.end)
    .bind(&q.tenant_id)
    .bind(q.drift_threshold)
    .fetch_one(&mut *conn)
    .await?;
    let rows: i64 = counts.try_get("rows")?;
    let scored: i64 = counts.try_get("scored")?;
    let (low, high): (Option<f64>, Option<f64>) = (counts.try_get("low")?, counts.try_get("high")?);

    let histograms = match low.zip(high).and_then(|(low, high)| Binning::over(low, high)) {
        Some(binning) => histograms(conn, q, binning).await?,
        None => Histograms::default(),
    };
    let (delta_p50, delta_p90) = percentiles(conn, q, scored).await?;
    let version: Option<String> =
        sqlx::query_scalar(concat!("SELECT model_version", window!(), " ORDER BY occurred_at DESC, id DESC LIMIT 1"))
            .persistent(false)
            .bind(q.start)
            .bind(q.end)
            .bind(&q.tenant_id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let detailed_samples = detailed(conn, q).await?;
    let share = |n: i64, of: i64| if of == 0 { 0.0 } else { round_to(n as f64 / of as f64, 4) };
    Ok(DivergenceReport {
        start_date: q.start,
        end_date: q.end,
        tenant_id: q.tenant_id.clone(),
        version,
        sample_count: rows,
        scored_count: scored,
        delta_p50,
        delta_p90,
        kl_divergence: round_to(histograms.kl(), 4),
        outlier_count: counts.try_get("outliers")?,
        fail_ratio: share(counts.try_get("fails")?, scored),
        matching_rate: share(counts.try_get("matches")?, rows),
        detailed_samples,
    })
}

/// Counts per bin of the V1 and V2 costs, binned in SQL exactly as [`Binning::bin`] does.
async fn histograms(conn: &mut PgConnection, q: &DivergenceQuery, b: Binning) -> Result<Histograms, sqlx::Error> {
    let cells: Vec<(i32, i32, i64)> = sqlx::query_as(concat!(
        "SELECT LEAST(floor((GREATEST(v1_cost, 1) - $4) / $5)::int, $6) AS p, \
                LEAST(floor((GREATEST(v2_cost, 1) - $4) / $5)::int, $6) AS q, count(*)",
        scored!(),
        " GROUP BY 1, 2"
    ))
    .persistent(false)
    .bind(q.start)
    .bind(q.end)
    .bind(&q.tenant_id)
    .bind(b.min)
    .bind(b.width)
    .bind(BINS as i32 - 1)
    .fetch_all(conn)
    .await?;
    let mut h = Histograms::default();
    for (p, q, n) in cells {
        let bin = |i: i32| usize::try_from(i).unwrap_or(0).min(BINS - 1);
        h.p[bin(p)] += n as u64;
        h.q[bin(q)] += n as u64;
    }
    Ok(h)
}

/// The nearest-rank median and p90 of |V2 − V1| over the scored rows, rounded to cents' hundredths.
async fn percentiles(
    conn: &mut PgConnection,
    q: &DivergenceQuery,
    scored: i64,
) -> Result<(Option<f64>, Option<f64>), sqlx::Error> {
    let (Some(p50), Some(p90)) = (rank(scored as usize, 0.5), rank(scored as usize, 0.9)) else {
        return Ok((None, None));
    };
    let picked: Vec<(i64, f64)> = sqlx::query_as(concat!(
        "SELECT rn, d FROM (SELECT row_number() OVER (ORDER BY abs(v2_cost - v1_cost)) - 1 AS rn, \
                abs(v2_cost - v1_cost) AS d",
        scored!(),
        ") ranked WHERE rn = ANY($4)"
    ))
    .persistent(false)
    .bind(q.start)
    .bind(q.end)
    .bind(&q.tenant_id)
    .bind(vec![p50 as i64, p90 as i64])
    .fetch_all(conn)
    .await?;
    let at = |r: usize| picked.iter().find(|(rn, _)| *rn == r as i64).map(|(_, d)| round_to(*d, 2));
    Ok((at(p50), at(p90)))
}

/// The newest rows of the window.
async fn detailed(conn: &mut PgConnection, q: &DivergenceQuery) -> Result<Vec<DetailedSample>, sqlx::Error> {
    if q.detailed <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(concat!(
        "SELECT occurred_at, left(input_hash, 16) AS input_hash, v1_cost, v2_cost, cost_delta, drift_score, verdict",
        window!(),
        " ORDER BY occurred_at DESC, id DESC LIMIT $4"
    ))
    .persistent(false)
    .bind(q.start)
    .bind(q.end)
    .bind(&q.tenant_id)
    .bind(q.detailed)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DetailedSample {
                timestamp: row.try_get("occurred_at")?,
                input_hash: row.try_get("input_hash")?,
                v1_cost_cents: row.try_get("v1_cost")?,
                v2_cost_cents: row.try_get("v2_cost")?,
                cost_delta_cents: row.try_get("cost_delta")?,
                drift_score: row.try_get("drift_score")?,
                verdict: row.try_get("verdict")?,
            })
        })
        .collect()
}
