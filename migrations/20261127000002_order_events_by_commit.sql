-- Live event delivery needs an order in which no event can appear behind one already delivered.
-- Event ids come from a sequence and become visible out of order (a transaction that took id 41
-- may commit after the one that took 42). So readers order events by (xid, id): the writing
-- transaction's id first. Every transaction with an xid below the snapshot's xmin has ended, so
-- the events below that horizon are final, and anything that commits later sorts after them.
ALTER TABLE jobq.job_events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX job_events_position ON jobq.job_events (xid, id);

-- One NOTIFY per inserting statement, sent at commit, wakes the event readers of every process.
-- It carries nothing: readers fetch what is new from the table.
CREATE FUNCTION jobq.notify_job_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobq_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_events_notify
    AFTER INSERT ON jobq.job_events
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_job_events();
