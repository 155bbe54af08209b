//! `backfill --verify`: what the provenance table holds, and whether it holds every row of the given input with
//! the costs the input had.

use std::fmt::Write as _;

use sqlx::PgConnection;

use crate::store::provenance::ProvenanceRow;
use crate::store::provenance::stats::{self, DriftStats, Totals};

/// How the input compares with the table.
#[derive(Debug, Default)]
pub(super) struct Check {
    /// Input rows seen.
    pub(super) rows: u64,
    /// Input rows stored.
    pub(super) stored: u64,
    /// Ids of input rows that are not stored (the first few).
    pub(super) missing: Vec<String>,
    /// How many input rows are not stored.
    pub(super) missing_count: u64,
    /// Input rows stored without a cost the input had.
    pub(super) without_costs: u64,
}

impl Check {
    /// Compares one batch of input rows with what is stored.
    pub(super) async fn batch(&mut self, conn: &mut PgConnection, rows: &[ProvenanceRow]) -> Result<(), sqlx::Error> {
        let stored = stats::stored_costs(conn, rows).await?;
        for row in rows {
            self.rows += 1;
            match stored.get(&row.event_id) {
                None => {
                    self.missing_count += 1;
                    if self.missing.len() < 5 {
                        self.missing.push(row.event_id.clone());
                    }
                }
                Some(costs) => {
                    self.stored += 1;
                    if (row.v1_cost.is_some() && !costs.v1) || (row.v2_cost.is_some() && !costs.v2) {
                        self.without_costs += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The report and, when the table is not as it should be, the reason.
pub(super) async fn report(
    conn: &mut PgConnection,
    check: Option<&Check>,
) -> Result<(String, Option<String>), sqlx::Error> {
    let totals = stats::totals(conn).await?;
    let drift = stats::drift(conn).await?;
    let mut out = format_totals(&totals);
    out += &format_drift(&drift);
    let total: i64 = totals.iter().map(|t| t.rows).sum();
    let mut failure = (total == 0).then(|| "the provenance table is empty".to_owned());
    if let Some(c) = check {
        let _ = writeln!(
            out,
            "input: {} records, {} stored, {} missing, {} stored without a cost the input had",
            c.rows, c.stored, c.missing_count, c.without_costs
        );
        if c.missing_count > 0 {
            failure = Some(format!("{} input records are not stored (e.g. {})", c.missing_count, c.missing.join(", ")));
        } else if c.without_costs > 0 {
            failure = Some(format!("{} input records are stored without a cost the input had", c.without_costs));
        }
    }
    Ok((out, failure))
}

fn format_totals(totals: &[Totals]) -> String {
    let mut out = format!(
        "{:<10} {:<16} {:>10} {:>10} {:>10} {:>10}\n",
        "variant", "source", "rows", "v1_cost", "v2_cost", "both"
    );
    for t in totals {
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:>10} {:>10} {:>10} {:>10}",
            t.variant_slug.as_deref().unwrap_or("-"),
            t.source.as_deref().unwrap_or("-"),
            t.rows,
            t.with_v1_cost,
            t.with_v2_cost,
            t.with_both_costs
        );
    }
    out
}

fn format_drift(d: &DriftStats) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
    format!("drift: count {}, mean {}, p50 {}, p95 {}\n", d.count, f(d.mean), f(d.p50), f(d.p95))
}
