//! Scenario 5, WebSocket capacity (jobq only; the reference is 31 KB per idle socket for
//! the seed's FastAPI app, target <= 16 KB).
//!
//! One jobq process (`--role all`, defaults); the subscribers live in a separate process (this
//! binary's hidden `__ws-client` subcommand), authenticated by header, idle. Resident memory
//! per connection = (VmRSS of jobq with them - VmRSS before) / connections. Then a job is
//! enqueued and the subscriber process reports how many of them got its `succeeded` event.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::Ctx;
use crate::cleanup;
use crate::jobq::{self, Api, Jobq, JobqDb};
use crate::report::{Row, Target, Unit};
use crate::ws;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let db = JobqDb::create(&ctx.pg, "ws").await?;
    let result = async {
        let jobq = Jobq::start(&db, "ws", &[]).await?;
        let api = Api::new(&jobq, &db.token)?;
        measure(ctx, &jobq, &api).await?;
        jobq.stop().await
    }
    .await;
    ctx.pg.drop_db(&db.name).await?;
    result
}

struct Client {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Client {
    async fn start(url: &str, token: &str, count: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("path of the harness binary")?;
        let log = jobq::log_dir().join("ws-client.log");
        std::fs::create_dir_all(jobq::log_dir())?;
        let err = std::fs::File::create(&log)?;
        let mut child = Command::new(exe)
            .args(["__ws-client", "--url", url, "--count", &count.to_string()])
            .env("JOBQ_BENCH_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("start the subscriber process")?;
        let pid = child.id().context("subscriber process exited at once")?;
        cleanup::track_child(pid);
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(Self {
            child,
            pid,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn read(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("the subscriber process said nothing for {timeout:?}"))??
            .context("the subscriber process ended")?;
        serde_json::from_str(&line).with_context(|| format!("subscriber process said {line:?}"))
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn quit(mut self) {
        let _ = self.send("quit").await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        cleanup::untrack_child(self.pid);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        cleanup::untrack_child(self.pid);
    }
}

async fn measure(ctx: &Ctx, jobq: &Jobq, api: &Api) -> anyhow::Result<()> {
    let n = ctx.plan.ws_idle;
    // Warm-up: one subscriber and one job, so that lazily built parts exist before measuring.
    let warm = ws::connect(&api.ws_url(""), &api.token, Duration::from_secs(10)).await?;
    api.enqueue_hash("x", 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = jobq.rss_kib()?;

    let mut client = Client::start(&api.ws_url(""), &api.token, n).await?;
    let hello = client.read(Duration::from_secs(300)).await?;
    let connected = hello["connected"].as_u64().unwrap_or(0) as usize;
    ctx.log(format!("subscriber process: {hello}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = jobq.rss_kib()?;
    let per_connection = (connected > 0).then(|| (after as f64 - before as f64) / connected as f64);

    let job = api.enqueue_hash("x", 1).await?;
    client.send(&format!("report {} 20000", job.id)).await?;
    let report = client.read(Duration::from_secs(40)).await?;
    client.quit().await;
    let got = report["got"].as_u64().unwrap_or(0) as usize;
    let open = report["open"].as_u64().unwrap_or(0) as usize;
    let last_ms = report["latency_ms"]["max"].as_f64();

    ctx.detail(
        "capacity",
        json!({
            "subscribers": n,
            "connected": connected,
            "connect": hello,
            "rss_kib_before": before,
            "rss_kib_after": after,
            "rss_kib_per_connection": per_connection,
            "event": report,
        }),
    );
    ctx.row(
        Row::new(
            format!("{n} idle WebSockets: RSS per connection"),
            Unit::KiB,
        )
        .jobq(per_connection)
        .target(Target::AtMost { value: 16.0 })
        .note(format!(
            "jobq VmRSS {:.1} -> {:.1} MiB with {connected} of {n} connected; FastAPI seed: 31 KB",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        )),
    );
    ctx.row(
        Row::new(
            format!("{n} idle WebSockets: got a new job's event"),
            Unit::Count,
        )
        .jobq(Some(got as f64))
        .target(Target::AtLeast { value: n as f64 })
        .note(format!("{open} connections still open")),
    );
    ctx.row(
        Row::new(
            format!("{n} idle WebSockets: event to the last one"),
            Unit::Ms,
        )
        .jobq(last_ms)
        .note(format!(
            "p50 {:.1} ms",
            report["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN)
        )),
    );
    if connected < n {
        bail!(
            "only {connected} of {n} subscribers connected: {}",
            hello["first_error"]
        );
    }
    if got < n {
        bail!("only {got} of {n} subscribers got the new job's event");
    }
    Ok(())
}
