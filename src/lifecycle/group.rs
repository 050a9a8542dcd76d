//! Group commit for single enqueues: requests arriving while the previous transaction commits
//! are accepted together in the next one. One commit (one fsync) then serves many concurrent
//! HTTP requests; a lone request goes at once, nothing waits to fill a group.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::lifecycle::{EnqueueError, EnqueueRequest, Enqueued, enqueue_many};

/// Most requests accepted in one transaction.
const MAX_GROUP: usize = 256;

type Reply = oneshot::Sender<Result<Enqueued, EnqueueError>>;

#[derive(Clone)]
pub struct Enqueuer {
    pool: PgPool,
    /// Started on first use (building the API, e.g. to print the spec, needs no runtime).
    queue: Arc<OnceLock<mpsc::UnboundedSender<(EnqueueRequest, Reply)>>>,
}

impl Enqueuer {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queue: Arc::default(),
        }
    }

    /// Accepts one request, in a transaction shared with other requests arriving meanwhile. A
    /// request with an idempotency key has a transaction of its own: a reused key fails the
    /// transaction it is in, and must not fail anyone else's request.
    pub async fn enqueue(&self, req: EnqueueRequest) -> Result<Enqueued, EnqueueError> {
        if req.idempotency_key.is_some() {
            return single(&self.pool, req).await;
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(accept_groups(self.pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((req, _))) = queue.send((req, reply)) {
            return single(&self.pool, req).await;
        }
        answer
            .await
            .map_err(|_| EnqueueError::Store(sqlx::Error::PoolClosed.into()))?
    }
}

async fn single(pool: &PgPool, req: EnqueueRequest) -> Result<Enqueued, EnqueueError> {
    enqueue_many(pool, vec![req])
        .await?
        .pop()
        .ok_or_else(|| EnqueueError::Store(sqlx::Error::RowNotFound.into()))
}

async fn accept_groups(pool: PgPool, mut rx: mpsc::UnboundedReceiver<(EnqueueRequest, Reply)>) {
    let mut group = Vec::new();
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (reqs, replies): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        if reqs.len() == 1 {
            let req = reqs.into_iter().next();
            if let (Some(req), Some(reply)) = (req, replies.into_iter().next()) {
                let _ = reply.send(single(&pool, req).await);
            }
            continue;
        }
        match enqueue_many(&pool, reqs.clone()).await {
            Ok(done) if done.len() == replies.len() => {
                for (reply, d) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(d));
                }
            }
            _ => {
                // One request must not fail the others: accept them one by one.
                for (req, reply) in reqs.into_iter().zip(replies) {
                    let _ = reply.send(single(&pool, req).await);
                }
            }
        }
    }
}
