//! The command line: `jobq serve | migrate | openapi`.

use clap::{Parser, Subcommand};

use crate::config::{DbConfig, ServeConfig};
use crate::telemetry::LogFormat;

/// jobq: a durable job queue on Postgres, with an HTTP/WebSocket API.
#[derive(Debug, Parser)]
#[command(name = "jobq", version, about)]
pub struct Cli {
    /// Log output: human-readable text or JSON lines.
    #[arg(long, env = "JOBQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and/or the workers (creates the database and migrates it first).
    Serve(Box<ServeConfig>),
    /// Create the database if needed and apply all migrations, then exit.
    Migrate(DbConfig),
    /// Print the OpenAPI document (JSON) to stdout.
    Openapi,
}
