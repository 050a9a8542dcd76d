-- Scheduling and flow control: jobs due later (`scheduled`), priorities, per-attempt timeouts,
-- tags; per-kind queue controls (pause, rate limit); recurring schedules.

ALTER TABLE jobq.jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobq.jobs ADD CONSTRAINT jobs_status_check CHECK (
    status IN ('scheduled', 'queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'));

ALTER TABLE jobq.jobs
    -- When the job may first run (NULL: at once).
    ADD COLUMN run_at     timestamptz,
    -- Higher runs first within a kind; every attempt's queue entry carries it.
    ADD COLUMN priority   integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    -- An attempt running longer fails (and is retried like any failure).
    ADD COLUMN timeout_ms integer CHECK (timeout_ms > 0),
    ADD COLUMN tags       text[] NOT NULL DEFAULT '{}';

CREATE INDEX jobs_tags ON jobq.jobs USING gin (tags);

-- One row per kind once an operator touched it: pause and rate limit, shared by every worker
-- process. The rate limit is a token bucket kept in the row (tokens, refilled_at), so that
-- adding processes does not raise it.
CREATE TABLE jobq.queues (
    kind        text        PRIMARY KEY CHECK (kind IN ('email', 'long_running', 'hash')),
    paused      boolean     NOT NULL DEFAULT false,
    rate_limit  double precision CHECK (rate_limit > 0),
    tokens      double precision NOT NULL DEFAULT 0,
    refilled_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text
);

-- Workers of every process learn of a pause, resume or new rate at once.
CREATE FUNCTION jobq.notify_queues() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.paused IS DISTINCT FROM NEW.paused
       OR OLD.rate_limit IS DISTINCT FROM NEW.rate_limit THEN
        PERFORM pg_notify('jobq_queues', NEW.kind);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER queues_notify
    AFTER INSERT OR UPDATE ON jobq.queues
    FOR EACH ROW EXECUTE FUNCTION jobq.notify_queues();

-- Recurring jobs. `job` is a validated enqueue request (kind, payload, options).
CREATE TABLE jobq.schedules (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    tenant      text        NOT NULL,
    cron        text        NOT NULL,
    timezone    text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('email', 'long_running', 'hash')),
    job         jsonb       NOT NULL,
    -- A tick missed while no process ran: enqueue one job for it ('run_once') or not ('skip').
    missed      text        NOT NULL CHECK (missed IN ('run_once', 'skip')),
    paused      boolean     NOT NULL DEFAULT false,
    next_run_at timestamptz NOT NULL,
    last_run_at timestamptz,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, name)
);

CREATE INDEX schedules_due ON jobq.schedules (next_run_at) WHERE NOT paused;
