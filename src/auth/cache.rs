//! Key lookups with a short-lived cache that every revocation clears, in every process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{Principal, hash_token};
use crate::store;

/// A cached answer is trusted this long (a backstop: revocations clear the cache at once).
const TTL: Duration = Duration::from_secs(5);
/// Past this many entries the cache starts over (a client spraying bad keys cannot grow it).
const MAX_ENTRIES: usize = 10_000;
const CHANNEL: &str = "jobq_keys";

type Entries = HashMap<[u8; 32], (Instant, Option<Principal>)>;

#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
    cache: Arc<RwLock<Entries>>,
    insecure: bool,
}

impl KeyStore {
    /// With `insecure`, every request is an admin (local development only).
    pub fn start(pool: PgPool, insecure: bool, shutdown: CancellationToken) -> Self {
        let store = Self {
            pool,
            cache: Arc::default(),
            insecure,
        };
        if !insecure {
            tokio::spawn(store.clone().listen(shutdown));
        }
        store
    }

    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The principal of `token`, `None` if the token is unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> sqlx::Result<Option<Principal>> {
        if self.insecure {
            return Ok(Some(Principal::insecure_dev()));
        }
        let hash = hash_token(token);
        if let Ok(cache) = self.cache.read()
            && let Some((at, principal)) = cache.get(&hash)
            && at.elapsed() < TTL
        {
            return Ok(principal.clone());
        }
        let principal = store::keys::find_active(&self.pool, &hash)
            .await?
            .and_then(|row| Principal::try_from(row).ok());
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(hash, (Instant::now(), principal.clone()));
        }
        Ok(principal)
    }

    /// Forgets every cached answer (after a revocation).
    pub fn clear(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    async fn listen(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "key LISTEN failed; retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "key LISTEN connection failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            // Revocations while disconnected were not heard: start from a clean cache.
            self.clear();
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = listener.try_recv() => r,
                };
                match received {
                    Ok(Some(_)) | Ok(None) => self.clear(),
                    Err(e) => {
                        tracing::warn!(error = %e, "key LISTEN connection failed; reconnecting");
                        self.clear();
                        break;
                    }
                }
            }
        }
    }
}
