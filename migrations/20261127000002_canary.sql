-- The canary report job (issue 7): who asked for each run and over which window, and the canary's own signal on
-- the breaker, kept apart from the per-event evaluation (domain.md §11.3).

ALTER TABLE costsim_canary_reports
    ADD COLUMN breaker      TEXT,
    -- `schedule` (the daily leader job), `api` (POST /costsim/canary/run) or `cli` (`canary run`).
    ADD COLUMN trigger      TEXT NOT NULL DEFAULT 'schedule',
    -- The API token's name or the CLI actor; NULL for scheduled runs.
    ADD COLUMN requested_by TEXT,
    -- The provenance window the samples were drawn from (event time).
    ADD COLUMN window_start TIMESTAMPTZ,
    ADD COLUMN window_end   TIMESTAMPTZ,
    -- The limits the run was judged by and how many samples it asked for.
    ADD COLUMN settings     JSONB,
    ADD CONSTRAINT ck_costsim_canary_reports_trigger CHECK (trigger IN ('schedule', 'api', 'cli'));
CREATE INDEX idx_costsim_canary_trigger_timestamp ON costsim_canary_reports (trigger, "timestamp");

-- The newest canary verdict on each breaker: a failed canary raises CostSimV2CanaryFailed until a later run
-- passes; it never changes the breaker's state or its consecutive-failure count.
ALTER TABLE costsim_cb_state
    ADD COLUMN canary_failing    BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN canary_run_id     TEXT,
    ADD COLUMN canary_checked_at TIMESTAMPTZ;
