-- A schedule whose expression never ticks again (February 30, say) has no next run.
ALTER TABLE jobq.schedules ALTER COLUMN next_run_at DROP NOT NULL;
