//! Group commit for single enqueues: requests arriving while earlier groups commit are accepted
//! together in the next one. One commit (one fsync) then serves many concurrent HTTP requests;
//! a lone request goes at once, nothing waits to fill a group. Groups are written on a kept
//! connection (see [`KeptConnections`]), on which the accept statement is planned already.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::db::KeptConnections;
use crate::lifecycle::enqueue::enqueue_many_on;
use crate::lifecycle::{EnqueueError, EnqueueRequest, Enqueued, enqueue_many};

/// Most requests accepted in one transaction.
const MAX_GROUP: usize = 256;
/// Groups being written at once: while one waits for its commit, the next is written.
const GROUPS_IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<Enqueued, EnqueueError>>;

/// Idle connections kept for groups (one serves requests that come one at a time).
const KEPT_CONNECTIONS: usize = 1;

#[derive(Clone)]
pub struct Enqueuer {
    pool: PgPool,
    /// Cancelled at shutdown: the kept connection goes back to the pool.
    closing: CancellationToken,
    /// Started on first use (building the API, e.g. to print the spec, needs no runtime).
    queue: Arc<OnceLock<mpsc::UnboundedSender<(EnqueueRequest, Reply)>>>,
}

impl Enqueuer {
    pub fn new(pool: PgPool, closing: CancellationToken) -> Self {
        Self {
            pool,
            closing,
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
            let conns =
                KeptConnections::new(self.pool.clone(), KEPT_CONNECTIONS, self.closing.clone());
            tokio::spawn(accept_groups(self.pool.clone(), conns, rx));
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
    enqueue_many(pool, std::slice::from_ref(&req))
        .await?
        .pop()
        .ok_or_else(|| EnqueueError::Store(sqlx::Error::RowNotFound.into()))
}

async fn accept_groups(
    pool: PgPool,
    conns: KeptConnections,
    mut rx: mpsc::UnboundedReceiver<(EnqueueRequest, Reply)>,
) {
    let in_flight = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    let mut group = Vec::new();
    loop {
        // Take a slot first: while all groups are in flight, requests gather for the next one.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let (reqs, replies): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        let (pool, conns) = (pool.clone(), conns.clone());
        tokio::spawn(async move {
            accept_group(&pool, &conns, reqs, replies).await;
            drop(slot);
        });
    }
}

/// Accepts a group on a kept connection (kept for the next group when the group was accepted).
async fn accept_group(
    pool: &PgPool,
    conns: &KeptConnections,
    reqs: Vec<EnqueueRequest>,
    replies: Vec<Reply>,
) {
    match conns
        .run(async |conn| enqueue_many_on(conn, &reqs).await)
        .await
    {
        Ok(done) if done.len() == replies.len() => {
            for (reply, d) in replies.into_iter().zip(done) {
                let _ = reply.send(Ok(d));
            }
            return;
        }
        // The database is out of reach, and the group may even have committed just before the
        // connection broke: writing the jobs again one by one could accept them twice.
        Err(EnqueueError::Store(e)) if e.is_unavailable() => {
            let cause = e.to_string();
            for reply in replies {
                let lost =
                    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, cause.clone());
                let _ = reply.send(Err(EnqueueError::Store(sqlx::Error::Io(lost).into())));
            }
            return;
        }
        // A lone request's refusal is its own answer.
        Err(e) if replies.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
            return;
        }
        // Some request was refused: one must not fail the others, so each goes alone.
        _ => {}
    }
    for (req, reply) in reqs.into_iter().zip(replies) {
        let _ = reply.send(single(pool, req).await);
    }
}
