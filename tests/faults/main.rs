//! The fault suite: `cargo test --test faults` (short form, CI) and `cargo test --test faults -- --ignored` (long
//! form, on demand). Each test prints a `faults-row:` line with the counts docs/RELIABILITY.md reports.
//!
//! Needs the stack (`scripts/stack up`, `eval "$(scripts/stack env)"`); the PgBouncer tests of the long form also
//! need `scripts/pgbouncer up`.

mod bad_input;
mod child;
mod fuzz;
mod mock_kafka;
mod pgbouncer;
mod security;
