-- costsim-breaker initial schema.
-- Tables of the older system (domain.md §1) where they are sound, fixed where they were not, plus our own:
-- consumed offsets, drift buckets, the state-event outbox and leader leases. Every constraint has a name.
-- Migrations are append-only: change the schema in a new file, never edit this one once applied.

-- One row per breaker: the live state, changed only under SELECT … FOR UPDATE.
CREATE TABLE costsim_cb_state (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY,
    name                 TEXT        NOT NULL,
    state                TEXT        NOT NULL DEFAULT 'closed',
    -- Kept for readers of the older schema: true exactly while the breaker is open.
    disabled             BOOLEAN     GENERATED ALWAYS AS (state = 'open') STORED,
    -- +1 per state change; the `version` of the BreakerStateChanged event.
    version              BIGINT      NOT NULL DEFAULT 0,
    disabled_by          TEXT,
    disabled_reason      TEXT,
    -- NULL while open means latched: only an operator closes it.
    disabled_until       TIMESTAMPTZ,
    -- The TTL of the current open period, doubled on each reopen from half-open; 0 when latched.
    open_ttl_seconds     BIGINT      NOT NULL DEFAULT 0,
    incident_id          TEXT,
    -- Severity of the current incident, from trip to close.
    severity             TEXT,
    opened_at            TIMESTAMPTZ,
    consecutive_failures INTEGER     NOT NULL DEFAULT 0,
    last_failure_at      TIMESTAMPTZ,
    half_open_since      TIMESTAMPTZ,
    -- End of the last window bucket the breaker was evaluated at (event time): each bucket is judged once.
    last_evaluated_at    TIMESTAMPTZ,
    -- Whether the P2 drift warning is firing.
    warning_active       BOOLEAN     NOT NULL DEFAULT false,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT pk_costsim_cb_state PRIMARY KEY (id),
    CONSTRAINT uq_costsim_cb_state_name UNIQUE (name),
    CONSTRAINT ck_costsim_cb_state_state CHECK (state IN ('closed', 'open', 'half_open')),
    CONSTRAINT ck_costsim_cb_state_failures CHECK (consecutive_failures >= 0),
    CONSTRAINT ck_costsim_cb_state_severity CHECK (severity IS NULL OR severity IN ('P1', 'P2', 'P3')),
    CONSTRAINT ck_costsim_cb_state_ttl CHECK (open_ttl_seconds >= 0),
    CONSTRAINT ck_costsim_cb_state_version CHECK (version >= 0)
);

-- The breaker exists before the first event, so no code path inserts it lazily (domain.md §11.13).
INSERT INTO costsim_cb_state (name) VALUES ('costsim_v2') ON CONFLICT ON CONSTRAINT uq_costsim_cb_state_name DO NOTHING;

-- Audit record of each trip, resolved on enable or recovery.
CREATE TABLE costsim_cb_incidents (
    id                   TEXT        NOT NULL,
    circuit_breaker_name TEXT        NOT NULL,
    "timestamp"          TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason               TEXT        NOT NULL,
    severity             TEXT        NOT NULL,
    drift_score          DOUBLE PRECISION,
    sample_count         INTEGER,
    -- What the decision saw: p95, samples, thresholds, window bounds.
    evidence             JSONB,
    details_json         TEXT,
    resolved             BOOLEAN     NOT NULL DEFAULT false,
    resolved_at          TIMESTAMPTZ,
    resolved_by          TEXT,
    resolution_notes     TEXT,
    alert_sent           BOOLEAN     NOT NULL DEFAULT false,
    alert_sent_at        TIMESTAMPTZ,
    alert_response       TEXT,
    CONSTRAINT pk_costsim_cb_incidents PRIMARY KEY (id),
    CONSTRAINT fk_costsim_cb_incidents_breaker FOREIGN KEY (circuit_breaker_name)
        REFERENCES costsim_cb_state (name),
    CONSTRAINT ck_costsim_cb_incidents_severity CHECK (severity IN ('P1', 'P2', 'P3')),
    CONSTRAINT ck_costsim_cb_incidents_resolution CHECK (resolved = (resolved_at IS NOT NULL))
);
CREATE INDEX idx_costsim_cb_incidents_cb_name ON costsim_cb_incidents (circuit_breaker_name);
CREATE INDEX idx_costsim_cb_incidents_timestamp ON costsim_cb_incidents ("timestamp");
CREATE INDEX idx_costsim_cb_incidents_resolved ON costsim_cb_incidents (resolved);
-- At most one open incident per breaker: a second trip while open is a bug, and this makes it an error.
CREATE UNIQUE INDEX uq_costsim_cb_incidents_one_open ON costsim_cb_incidents (circuit_breaker_name)
    WHERE NOT resolved;

-- Outbox of Alertmanager deliveries, written in the transaction of the decision that caused them.
CREATE TABLE costsim_alert_queue (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY,
    payload              JSONB       NOT NULL,
    alert_type           TEXT,
    circuit_breaker_name TEXT,
    incident_id          TEXT,
    attempts             INTEGER     NOT NULL DEFAULT 0,
    max_attempts         INTEGER     NOT NULL DEFAULT 10,
    last_attempt_at      TIMESTAMPTZ,
    next_attempt_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error           TEXT,
    status               TEXT        NOT NULL DEFAULT 'pending',
    -- A drainer that claimed the row holds it until this time; no row lock is held across HTTP calls.
    lease_until          TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at              TIMESTAMPTZ,
    CONSTRAINT pk_costsim_alert_queue PRIMARY KEY (id),
    CONSTRAINT ck_costsim_alert_queue_status CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT ck_costsim_alert_queue_attempts CHECK (attempts >= 0 AND max_attempts > 0),
    CONSTRAINT ck_costsim_alert_queue_sent_at CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX idx_costsim_alert_queue_next ON costsim_alert_queue (next_attempt_at);
CREATE INDEX idx_costsim_alert_queue_status ON costsim_alert_queue (status);
CREATE INDEX idx_costsim_alert_queue_pending_ready ON costsim_alert_queue (status, next_attempt_at)
    WHERE status = 'pending';
-- Rows of one alert (one label set) are delivered in id order: the drainer looks for an older pending row of the
-- same labels before claiming one.
CREATE INDEX idx_costsim_alert_queue_pending_labels ON costsim_alert_queue ((payload->0->'labels'), id)
    WHERE status = 'pending';
-- The newest firing row of an incident or of a breaker's drift warning: re-sends and resolutions start from it.
CREATE INDEX idx_costsim_alert_queue_incident ON costsim_alert_queue (incident_id, id);
CREATE INDEX idx_costsim_alert_queue_breaker_type ON costsim_alert_queue (circuit_breaker_name, alert_type, id);

-- One row per simulation result (or backfilled record), idempotent on event_id.
CREATE TABLE costsim_provenance (
    id              BIGINT GENERATED ALWAYS AS IDENTITY,
    event_id        TEXT        NOT NULL,
    occurred_at     TIMESTAMPTZ,
    run_id          TEXT,
    tenant_id       TEXT,
    variant_slug    TEXT,
    source          TEXT,
    model_version   TEXT,
    adapter_version TEXT,
    commit_sha      TEXT,
    input_hash      TEXT,
    output_hash     TEXT,
    v1_cost         DOUBLE PRECISION,
    v2_cost         DOUBLE PRECISION,
    cost_delta      DOUBLE PRECISION,
    v1_feasible     BOOLEAN,
    v2_feasible     BOOLEAN,
    v2_status       TEXT,
    drift_score     DOUBLE PRECISION,
    verdict         TEXT,
    payload         JSONB,
    runtime_ms      INTEGER,
    -- Where the record came from on Kafka; NULL for file backfills.
    kafka_topic     TEXT,
    kafka_partition INTEGER,
    kafka_offset    BIGINT,
    -- Whether the processor has consumed the event (and counted it in its window unless it was too late). FALSE
    -- for rows only `backfill` wrote: when the processor meets such an event it claims the row and counts the
    -- event, so a backfill ahead of a live processor takes nothing out of its window.
    processed       BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT pk_costsim_provenance PRIMARY KEY (id),
    CONSTRAINT uq_costsim_provenance_event_id UNIQUE (event_id),
    CONSTRAINT ck_costsim_provenance_cost_delta CHECK (
        cost_delta IS NULL OR (v1_cost IS NOT NULL AND v2_cost IS NOT NULL)),
    CONSTRAINT ck_costsim_provenance_v2_status CHECK (
        v2_status IS NULL OR v2_status IN ('success', 'error', 'timeout', 'schema_error')),
    CONSTRAINT ck_costsim_provenance_verdict CHECK (
        verdict IS NULL OR verdict IN ('match', 'minor_drift', 'major_drift', 'mismatch'))
);
CREATE INDEX idx_costsim_prov_run ON costsim_provenance (run_id);
CREATE INDEX idx_costsim_prov_tenant ON costsim_provenance (tenant_id);
CREATE INDEX idx_costsim_prov_variant ON costsim_provenance (variant_slug);
CREATE INDEX idx_costsim_prov_input_hash ON costsim_provenance (input_hash);
CREATE INDEX idx_costsim_prov_source ON costsim_provenance (source);
CREATE INDEX idx_costsim_prov_created_at ON costsim_provenance (created_at);
CREATE INDEX idx_costsim_prov_occurred_at ON costsim_provenance (occurred_at);
CREATE INDEX idx_costsim_prov_tenant_created ON costsim_provenance (tenant_id, created_at);
CREATE INDEX idx_costsim_prov_variant_created ON costsim_provenance (variant_slug, created_at);

-- One row per canary run.
CREATE TABLE costsim_canary_reports (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY,
    run_id                 TEXT        NOT NULL,
    "timestamp"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    status                 TEXT        NOT NULL,
    total_samples          INTEGER     NOT NULL DEFAULT 0,
    matching_samples       INTEGER     NOT NULL DEFAULT 0,
    minor_drift_samples    INTEGER     NOT NULL DEFAULT 0,
    major_drift_samples    INTEGER     NOT NULL DEFAULT 0,
    median_cost_diff       DOUBLE PRECISION,
    p90_cost_diff          DOUBLE PRECISION,
    kl_divergence          DOUBLE PRECISION,
    outlier_count          INTEGER,
    passed                 BOOLEAN     NOT NULL DEFAULT true,
    failure_reasons_json   TEXT,
    artifact_paths_json    TEXT,
    golden_comparison_json TEXT,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT pk_costsim_canary_reports PRIMARY KEY (id),
    CONSTRAINT ck_costsim_canary_reports_status CHECK (status IN ('pass', 'fail', 'error', 'skipped'))
);
CREATE UNIQUE INDEX idx_costsim_canary_run_id ON costsim_canary_reports (run_id);
CREATE INDEX idx_costsim_canary_timestamp ON costsim_canary_reports ("timestamp");
CREATE INDEX idx_costsim_canary_status ON costsim_canary_reports (status);
CREATE INDEX idx_costsim_canary_passed ON costsim_canary_reports (passed);

-- The next offset to consume per group and partition: the source of truth on assignment (Kafka group commits
-- exist only for lag tools).
CREATE TABLE costsim_consumed_offsets (
    consumer_group TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    "partition"    INTEGER     NOT NULL,
    -- NULL until the partition's first batch: then that batch's first offset is where it starts.
    next_offset    BIGINT,
    -- Largest event time consumed from the partition.
    watermark      TIMESTAMPTZ,
    -- Last time the partition moved, or was (re)registered by a processor that starts consuming it.
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT pk_costsim_consumed_offsets PRIMARY KEY (consumer_group, topic, "partition"),
    CONSTRAINT ck_costsim_consumed_offsets_offset CHECK (next_offset IS NULL OR next_offset >= 0)
);

-- Drift sketch buckets per breaker and source partition, merged across partitions when a window is evaluated.
CREATE TABLE costsim_drift_buckets (
    breaker            TEXT        NOT NULL,
    topic              TEXT        NOT NULL,
    "partition"        INTEGER     NOT NULL,
    bucket_start       TIMESTAMPTZ NOT NULL,
    -- The DDSketch of drift scores in its binary form; NULL when the bucket holds no score.
    sketch             BYTEA,
    sample_count       BIGINT      NOT NULL DEFAULT 0,
    schema_error_count BIGINT      NOT NULL DEFAULT 0,
    unscored_count     BIGINT      NOT NULL DEFAULT 0,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT pk_costsim_drift_buckets PRIMARY KEY (breaker, bucket_start, topic, "partition"),
    CONSTRAINT fk_costsim_drift_buckets_breaker FOREIGN KEY (breaker) REFERENCES costsim_cb_state (name),
    CONSTRAINT ck_costsim_drift_buckets_counts CHECK (sample_count >= 0 AND schema_error_count >= 0 AND unscored_count >= 0)
);

-- Outbox of breaker state changes, relayed in version order to the compacted state topic.
CREATE TABLE costsim_breaker_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY,
    event_id     TEXT        NOT NULL,
    breaker      TEXT        NOT NULL,
    version      BIGINT      NOT NULL,
    -- The BreakerStateChanged event in its JSON form.
    payload      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    CONSTRAINT pk_costsim_breaker_events PRIMARY KEY (id),
    CONSTRAINT uq_costsim_breaker_events_event_id UNIQUE (event_id),
    CONSTRAINT uq_costsim_breaker_events_version UNIQUE (breaker, version),
    CONSTRAINT fk_costsim_breaker_events_breaker FOREIGN KEY (breaker) REFERENCES costsim_cb_state (name)
);
CREATE INDEX idx_costsim_breaker_events_unpublished ON costsim_breaker_events (breaker, version)
    WHERE published_at IS NULL;

-- Who holds each singleton job, for operators; the advisory lock itself is the mutual exclusion.
CREATE TABLE costsim_leader_leases (
    lock_id      INTEGER     NOT NULL,
    job          TEXT        NOT NULL,
    holder       TEXT        NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The holder's server process: the session that holds the advisory lock (pg_terminate_backend ends it).
    backend_pid  INTEGER     NOT NULL,
    CONSTRAINT pk_costsim_leader_leases PRIMARY KEY (lock_id),
    CONSTRAINT ck_costsim_leader_leases_lock_range CHECK (lock_id BETWEEN 7000 AND 7999)
);
