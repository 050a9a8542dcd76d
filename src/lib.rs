//! jobq: a durable job queue service on Postgres.
#![forbid(unsafe_code)]

/// HTTP API: routes, OpenAPI document, error mapping.
pub mod api;
/// Wiring of a process by role.
pub mod app;
/// API keys, roles, tenants, rate limits.
pub mod auth;
/// Command-line interface.
pub mod cli;
/// Every setting (flags and JOBQ_* variables).
pub mod config;
/// Connecting to Postgres and migrating.
pub mod db;
/// Pure job vocabulary and rules.
pub mod domain;
/// Live job events: the log reader and the WebSocket sessions.
pub mod events;
/// The job kinds: payloads, parsing, running.
pub mod jobs;
/// State changes of a job, one transaction each.
pub mod lifecycle;
/// Periodic housekeeping: queue pruning, retention.
pub mod maintenance;
/// Prometheus metrics.
pub mod metrics;
/// Process-wide shutdown signal.
pub mod shutdown;
/// All SQL.
pub mod store;
/// Logging set-up.
pub mod telemetry;
/// The operators' dashboard at `/ui` (embedded static page).
pub mod ui;
/// apalis workers and their executor.
pub mod worker;
