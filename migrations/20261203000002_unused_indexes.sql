-- Indexes no query uses, dropped: each one costs every insert and update of its table.
--
-- What stays, with the query that uses it:
--   costsim_cb_incidents: idx_costsim_cb_incidents_cb_name (the API's incidents of a breaker),
--     idx_costsim_cb_incidents_timestamp (newest first), uq_costsim_cb_incidents_one_open (one open incident).
--   costsim_alert_queue: idx_costsim_alert_queue_pending_ready (the drainer's claim of due pending rows and the
--     pending backlog gauge), idx_costsim_alert_queue_pending_labels (an older pending row of the same alert),
--     idx_costsim_alert_queue_incident and idx_costsim_alert_queue_breaker_type (the newest row of an alert).
--   costsim_canary_reports: idx_costsim_canary_run_id (unique run ids, a report by id),
--     idx_costsim_canary_timestamp (newest first, retention), idx_costsim_canary_trigger_timestamp (the last
--     scheduled run).
--
-- Dropped: a boolean (resolved) and status columns of a few values, which every filter on them reads through
-- another index or a small table anyway, and next_attempt_at over every row, which the partial index of pending
-- rows replaces for the one query that orders by it.
DROP INDEX idx_costsim_cb_incidents_resolved;
DROP INDEX idx_costsim_alert_queue_next;
DROP INDEX idx_costsim_alert_queue_status;
DROP INDEX idx_costsim_canary_status;
DROP INDEX idx_costsim_canary_passed;
