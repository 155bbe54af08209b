//! Integration tests against the real stack (`scripts/stack up`): PostgreSQL, a Kafka-protocol broker and
//! Alertmanager, reached through DATABASE_URL, KAFKA_BROKERS and ALERTMANAGER_URL.

mod backtest;
mod cli;
mod helpers;
mod kafka_roundtrip;
mod migrations;
mod pipeline;
mod proxy;
