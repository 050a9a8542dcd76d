//! The command line: `jobq serve | migrate | openapi`.

use clap::{Parser, Subcommand};

use crate::auth::Role;
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
    /// Manage API keys.
    Keys {
        #[command(flatten)]
        db: DbConfig,
        #[command(subcommand)]
        action: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token (the only time it is shown) on stdout.
    Create {
        /// Who or what uses the key.
        #[arg(long)]
        name: String,
        /// What the key may do.
        #[arg(long, value_enum, default_value_t = Role::Client)]
        role: Role,
        /// The tenant whose jobs the key creates and sees.
        #[arg(long, default_value = crate::auth::DEFAULT_TENANT)]
        tenant: String,
        /// Enqueue requests per second for this key (default: the server's).
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key: it stops working at once in every process.
    Revoke {
        /// The key's id (from `jobq keys list`).
        id: uuid::Uuid,
    },
}
