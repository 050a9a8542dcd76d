-- Job counts per kind, status and owner, kept as they change, so that /v1/stats, the dashboard
-- and /v1/jobs/counts no longer count the whole table (141 ms with 1,000,000 finished jobs, and
-- the dashboard asks after every burst of events).
--
-- Every statement that inserts, updates or deletes jobs appends its net change (one row per
-- kind, status and owner that changed; none when no status changed, as for progress) from
-- statement triggers over its transition tables: one place, whatever the statement, and in the
-- statement's own transaction, so the counts are exactly those of the rows any snapshot sees.
-- Rows are only appended (no row is updated, so concurrent writers never wait for each other
-- here); housekeeping folds them into one row per key now and then (jobq.fold_job_counts).
CREATE TABLE jobq.job_counts (
    kind   text   NOT NULL,
    status text   NOT NULL,
    owner  text   NOT NULL,
    n      bigint NOT NULL
);

CREATE FUNCTION jobq.count_inserted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobq.job_counts (kind, status, owner, n)
    SELECT kind, status, owner, count(*) FROM inserted GROUP BY kind, status, owner;
    RETURN NULL;
END
$$;

CREATE FUNCTION jobq.count_updated_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobq.job_counts (kind, status, owner, n)
    SELECT kind, status, owner, sum(d)
    FROM (SELECT kind, status, owner, 1 AS d FROM after_rows
          UNION ALL
          SELECT kind, status, owner, -1 AS d FROM before_rows) AS change
    GROUP BY kind, status, owner
    HAVING sum(d) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION jobq.count_deleted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobq.job_counts (kind, status, owner, n)
    SELECT kind, status, owner, -count(*) FROM deleted GROUP BY kind, status, owner;
    RETURN NULL;
END
$$;

-- Taken before the first count: writers wait until this migration commits (the trigger's lock
-- conflicts with theirs), so no change falls between the count and the triggers.
LOCK TABLE jobq.jobs IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobq.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.count_inserted_jobs();
CREATE TRIGGER jobs_count_updated AFTER UPDATE ON jobq.jobs
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.count_updated_jobs();
CREATE TRIGGER jobs_count_deleted AFTER DELETE ON jobq.jobs
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.count_deleted_jobs();

INSERT INTO jobq.job_counts (kind, status, owner, n)
SELECT kind, status, owner, count(*) FROM jobq.jobs GROUP BY kind, status, owner;

-- Folds the appended changes into one row per key (dropping keys that net to zero). Rows
-- appended meanwhile by transactions this statement does not see are left for the next fold;
-- two folds at once are safe too (the second skips the rows the first deleted).
CREATE FUNCTION jobq.fold_job_counts() RETURNS bigint
LANGUAGE sql AS $$
    WITH folded AS (
        DELETE FROM jobq.job_counts RETURNING kind, status, owner, n
    ), kept AS (
        INSERT INTO jobq.job_counts (kind, status, owner, n)
        SELECT kind, status, owner, sum(n) FROM folded
        GROUP BY kind, status, owner
        HAVING sum(n) <> 0
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM folded) - (SELECT count(*) FROM kept)
$$;
