-- jobq's own tables. The queue itself (pending attempts, locks, heartbeats) lives in schema
-- `apalis`, owned by apalis-postgres; clients never see it. What the API reads is here:
-- one status row per job and an append-only log of what happened to it.

CREATE SCHEMA IF NOT EXISTS jobq;

CREATE TABLE jobq.jobs (
    -- UUIDv7: ids sort by creation time, so "newest first" is an index scan on the key.
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('email', 'long_running', 'hash')),
    status          text        NOT NULL
                    CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    -- The validated request, as the worker needs it (hash input is stored once, here).
    payload         jsonb       NOT NULL,
    -- Durable progress; for the long-running kind it is also the checkpoint a rescued job resumes from.
    progress_done   integer     NOT NULL DEFAULT 0 CHECK (progress_done >= 0),
    progress_total  integer     NOT NULL DEFAULT 0 CHECK (progress_total >= 0),
    -- attempt counts the attempts started so far (0 while the first one waits).
    attempt         integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts    integer     NOT NULL CHECK (max_attempts >= 1),
    result          jsonb,
    last_error      text,
    -- The apalis task that carries the current attempt. Every worker-side change is fenced on it,
    -- so a stale attempt (rescued elsewhere, cancelled, retried by ops) can never overwrite the row.
    task_id         text        NOT NULL,
    worker          text,
    -- Tenant that owns the job; every read is scoped by it once auth lands.
    owner           text        NOT NULL DEFAULT 'default',
    idempotency_key text,
    -- SHA-256 of the normalised request, to tell a replay from a different request with the same key.
    request_hash    bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    next_attempt_at timestamptz
);

-- An Idempotency-Key is unique per owner; concurrent requests with one key serialise on this index.
CREATE UNIQUE INDEX jobs_owner_idempotency_key ON jobq.jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- List filters, newest first.
CREATE INDEX jobs_status_id ON jobq.jobs (status, id);
CREATE INDEX jobs_kind_id ON jobq.jobs (kind, id);

CREATE TABLE jobq.job_events (
    -- Monotonic, but ids become visible out of order under concurrency; readers that resume
    -- "after id N" must account for that (see the events module).
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid        NOT NULL REFERENCES jobq.jobs (id) ON DELETE CASCADE,
    kind       text        NOT NULL,
    type       text        NOT NULL,
    -- The job's status right after this event.
    status     text        NOT NULL,
    data       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    owner      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_events_job_id ON jobq.job_events (job_id, id);
