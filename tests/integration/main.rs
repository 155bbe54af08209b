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
mod codecs;
mod config;
mod dlq;
mod gaps;
mod helpers;
mod http;
mod http_api;
mod independent;
mod kafka_roundtrip;
mod leader;
mod metrics_refresh;
mod migrations;
mod pg_tls;
mod pipeline;
mod pki;
mod proxy;
mod relay;
mod reports;
mod runtime_role;
mod secure_kafka;
mod stalls;
mod storage;
#[path = "../common/tansu.rs"]
mod tansu;
mod timers;
mod view;
