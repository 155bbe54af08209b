//! The fault suite: breaks things on purpose while events flow and counts what was lost or duplicated.
//!
//! Two forms, one binary:
//! - the short form, the tests that are not ignored, runs in CI with `cargo test` (a few thousand events each);
//! - the long form, the `#[ignore]` tests, runs on demand with `scripts/faults` (one million events, twenty kills),
//!   sized by `COSTSIM_FAULTS_EVENTS`, `COSTSIM_FAULTS_KILLS` and `COSTSIM_FAULTS_ROUNDS`.
//!
//! Crash, restart and rebalance scenarios end with a [`support::report::Row`] (scenario, runs, events, lost,
//! duplicated, recovery time) appended to `COSTSIM_FAULTS_REPORT` when set; the Kafka-fault, bad-input, PgBouncer and
//! security tests print a `faults-row:` line with the same columns. Each asserts that lost and duplicated are 0.
//!
//! Services a scenario restarts are private instances (a PostgreSQL cluster, a tansu broker, an Alertmanager on
//! free ports in a temporary folder): the shared stack of `scripts/stack` is never stopped. Needs the stack
//! (`scripts/stack up`, `eval "$(scripts/stack env)"`); the PgBouncer tests of the long form also need
//! `scripts/pgbouncer up`.

mod alert_outage;
mod bad_input;
mod child;
mod crashes;
mod fuzz;
mod late;
mod mock_kafka;
mod pgbouncer;
mod poison;
mod rebalances;
mod restarts;
mod security;
mod support;
#[path = "../common/tansu.rs"]
mod tansu;
