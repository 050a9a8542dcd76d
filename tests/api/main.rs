//! Integration tests: each starts the real app (random port, fresh database) and talks HTTP to it.
// In tests an unwrap that fails is a test failure with a backtrace, which is what we want.
#![allow(clippy::unwrap_used)]

mod helpers;

mod email;
mod events;
mod faults;
mod hash;
mod idempotency;
mod long_running;
mod ops;
mod process;
mod reads;
mod retries;
mod scheduling;
mod security;
mod spec;
mod validation;
mod workers;
