//! Wiring: one process = the API and/or the workers on one pool, stopped by one token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::Mailbox;
use poem::Server;
use poem::listener::{Acceptor, Listener, TcpListener};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{KeyStore, RateLimits};
use crate::config::{EmailConfig, ServeConfig};
use crate::events::EventHub;
use crate::jobs::email::Mailer;
use crate::{api, worker};

/// A running jobq process: its HTTP server is bound, its workers started. Dropping it starts
/// a graceful shutdown.
pub struct App {
    addr: SocketAddr,
    shutdown: CancellationToken,
    /// Runs the parts, then closes the pool.
    done: Option<JoinHandle<anyhow::Result<()>>>,
}

impl App {
    /// Binds the listener and starts the parts `config.role` asks for. The database must be
    /// migrated already.
    pub async fn start(
        config: ServeConfig,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind(config.listen.clone())
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("listener has no socket address")?;

        let workers = if config.role.runs_workers() {
            let mailer = Arc::new(mailer(&config.email)?);
            if mailer.is_folder() {
                tracing::warn!(
                    delivery = mailer.describe(),
                    "no SMTP server configured (--smtp-url / JOBQ_SMTP_URL): emails are written to files, not sent"
                );
            } else {
                tracing::info!(delivery = mailer.describe(), "email delivery");
            }
            let (pool, config, token) = (pool.clone(), config.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                worker::run(pool, &config, mailer, token).await
            }))
        } else {
            None
        };

        let api_config = config.api.clone();
        let make_job: crate::maintenance::scheduler::MakeJob =
            Arc::new(move |s| api::schedules::job_of(s, &api_config));
        crate::maintenance::start(
            pool.clone(),
            config.retention,
            config.retention_interval,
            make_job,
            shutdown.clone(),
        );
        let keys = KeyStore::start(pool.clone(), config.api.insecure_no_auth, shutdown.clone());
        if config.api.insecure_no_auth {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--insecure-no-auth): every request is accepted as an admin. \
                 Never run like this where anyone else can reach the port."
            );
        }
        let hub = match config.role.runs_api() {
            true => Some(EventHub::start(pool.clone(), shutdown.clone()).await),
            false => None,
        };
        let events = hub.map(|hub| api::events::EventsState {
            hub,
            pool: pool.clone(),
            keys: keys.clone(),
            shutdown: shutdown.clone(),
            send_timeout: config.api.ws_send_timeout,
            ping_interval: config.api.ws_ping_interval,
        });
        let state = api::ApiState {
            pool: pool.clone(),
            config: config.api.clone(),
            keys,
            limits: RateLimits::new(config.api.enqueue_rate_limit),
            hub: events.as_ref().map(|e| e.hub.clone()),
            shutdown: shutdown.clone(),
        };
        let routes = api::routes(state, config.role, events);
        let token = shutdown.clone();
        let grace = config.shutdown_grace;
        let server = tokio::spawn(async move {
            Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(routes, token.cancelled_owned(), Some(grace))
                .await
                .context("HTTP server failed")
        });
        tracing::info!(%addr, role = ?config.role, "jobq listening");

        let done = tokio::spawn(async move {
            let served = server.await.context("HTTP server task panicked")?;
            if let Some(workers) = workers {
                workers.await.context("worker task panicked")??;
            }
            pool.close().await;
            served
        });
        Ok(Self {
            addr,
            shutdown,
            done: Some(done),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the shutdown token is cancelled and every part has stopped.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        match self.done.take() {
            Some(done) => done.await.context("jobq task panicked")?,
            None => Ok(()),
        }
    }

    /// Starts a graceful shutdown and waits for it, at most `timeout`.
    pub async fn stop(self, timeout: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(timeout, self.wait())
            .await
            .context("shutdown timed out")?
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn mailer(config: &EmailConfig) -> anyhow::Result<Mailer> {
    let from: Mailbox = config.email_from.parse().with_context(|| {
        format!(
            "--email-from {:?} is not a valid mailbox",
            config.email_from
        )
    })?;
    match &config.smtp_url {
        Some(url) => Mailer::smtp(url, from, config.smtp_timeout),
        None => Mailer::folder(&config.mail_dir, from),
    }
}
