-- Operations: run-time statistics need when the current attempt started; retention and
-- "finished in the last minute" scan by finish time.
ALTER TABLE jobq.jobs ADD COLUMN attempt_started_at timestamptz;

CREATE INDEX jobs_finished_at ON jobq.jobs (finished_at) WHERE finished_at IS NOT NULL;
