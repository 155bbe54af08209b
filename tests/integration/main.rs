//! Integration tests against the real stack (`scripts/stack up`): PostgreSQL, a Kafka-protocol broker and
//! Alertmanager, reached through DATABASE_URL, KAFKA_BROKERS and ALERTMANAGER_URL.

mod alert_faults;
mod alerts;
mod alerts_cli;
mod avro_confluent;
mod avro_interop;
mod backfill;
mod backtest;
mod breaker_cli;
mod cli;
mod config;
mod gaps;
mod helpers;
mod http;
mod http_api;
mod kafka_roundtrip;
mod leader;
mod metrics_refresh;
mod migrations;
mod pg_tls;
mod pipeline;
mod proxy;
mod relay;
mod reports;
mod runtime_role;
mod timers;
mod view;
