//! The fault suite (issue 8): breaks things on purpose while events flow and counts what was lost or duplicated.
//!
//! Two forms, one binary:
//! - the short form, the tests that are not ignored, runs in CI with `cargo test` (a few thousand events each);
//! - the long form, the `#[ignore]` tests, runs on demand with `scripts/faults` (one million events, twenty kills),
//!   sized by `COSTSIM_FAULTS_EVENTS`, `COSTSIM_FAULTS_KILLS` and `COSTSIM_FAULTS_ROUNDS`.
//!
//! Every scenario ends with a [`support::report::Row`] (scenario, runs, events, lost, duplicated, recovery time)
//! appended to `COSTSIM_FAULTS_REPORT` when set, and asserts that lost and duplicated are 0.
//!
//! Services a scenario restarts are private instances (a PostgreSQL cluster, a tansu broker, an Alertmanager on
//! free ports in a temporary folder): the shared stack of `scripts/stack` is never stopped.

mod alert_outage;
mod crashes;
mod rebalances;
mod restarts;
mod support;
