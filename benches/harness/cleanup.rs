//! What the harness must undo however it ends: child processes it started and databases it
//! created. Normal paths stop and drop them as they go; this registry catches the rest at the
//! end of a run, on a failed scenario, and on ctrl-c/SIGTERM.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static DATABASES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn track_child(pid: u32) {
    lock(&CHILDREN).insert(pid);
}

pub fn untrack_child(pid: u32) {
    lock(&CHILDREN).remove(&pid);
}

pub fn track_db(name: &str) {
    lock(&DATABASES).insert(name.to_owned());
}

pub fn untrack_db(name: &str) {
    lock(&DATABASES).remove(name);
}

pub fn tracked_dbs() -> Vec<String> {
    lock(&DATABASES).iter().cloned().collect()
}

/// Sends `signal` to a process we started (errors such as "already gone" are ignored).
pub fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// SIGKILLs every child still registered.
pub fn kill_children() -> usize {
    let pids: Vec<u32> = std::mem::take(&mut *lock(&CHILDREN)).into_iter().collect();
    for pid in &pids {
        signal(*pid, Signal::SIGKILL);
    }
    pids.len()
}

/// Drops every registered database (FORCE: open connections are terminated).
pub async fn drop_dbs(admin_url: &str) -> anyhow::Result<usize> {
    let names = tracked_dbs();
    if names.is_empty() {
        return Ok(0);
    }
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        <sqlx::PgConnection as sqlx::Connection>::connect(admin_url),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("timed out connecting to Postgres to drop the bench databases")
    })??;
    for name in &names {
        // Our own names: `jobq_bench_<pid>_<n>_<label>`, [a-z0-9_] only.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        untrack_db(name);
    }
    Ok(names.len())
}

/// On ctrl-c or SIGTERM: kill the children, drop the databases, exit 130.
pub fn on_signal_clean_up_and_exit(admin_url: String) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("bench: cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("\nbench: interrupted; stopping child processes and dropping databases");
        kill_children();
        // Give the killed processes a moment to close their connections.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match tokio::time::timeout(Duration::from_secs(20), drop_dbs(&admin_url)).await {
            Ok(Ok(n)) => eprintln!("bench: dropped {n} database(s)"),
            Ok(Err(e)) => eprintln!("bench: could not drop every database: {e:#}"),
            Err(_) => eprintln!("bench: timed out dropping databases"),
        }
        std::process::exit(130);
    });
}
