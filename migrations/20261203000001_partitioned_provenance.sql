-- Provenance partitioned by event time, so that it expires by dropping whole partitions instead of deleting rows,
-- with only the indexes a query uses.
--
-- Idempotency: a unique key of a partitioned table must contain the partition key, so UNIQUE (event_id) is no
-- longer possible. An event's `occurred_at` is part of the event and the same for every copy of it (a re-produced
-- or re-read record, a backfill of the same topic or file), so UNIQUE (occurred_at, event_id) still stores each
-- event once, across partitions: two copies carry the same `occurred_at` and therefore meet in the same partition.
-- NULLS NOT DISTINCT keeps rows without an event time (older-system files without a timestamp, which live in the
-- DEFAULT partition) unique on event_id alone. The constraint keeps its name, so `ON CONFLICT ON CONSTRAINT
-- uq_costsim_provenance_event_id` means what it meant.
--
-- Indexes, each paid for by a query:
--   uq_costsim_provenance_event_id (occurred_at, event_id): idempotent inserts; every event-time range (canary
--     sample, divergence report, runbook queries, partition pruning within a partition); backfill verify and
--     dry-run lookups by (occurred_at, event_id).
--   idx_costsim_prov_tenant_occurred (tenant_id, occurred_at): the divergence report of one tenant (API).
-- Dropped: the primary key on id (a partitioned primary key must contain occurred_at, which may be NULL; no query
-- reads a row by id, which stays as an increasing row number), and the indexes on run_id, tenant_id, variant_slug,
-- input_hash, source, created_at, occurred_at (covered by the unique key), (tenant_id, created_at) and
-- (variant_slug, created_at), which no query used.
--
-- The existing rows move into the new table (ids kept, the identity continues after the largest), with one daily
-- partition per day they cover and one per day from today to three days ahead; `storage maintain` takes over from
-- there (granularity, pre-creation, retention). The DEFAULT partition takes any row no partition covers, so no
-- row is ever refused.

ALTER TABLE costsim_provenance RENAME TO costsim_provenance_unpartitioned;
ALTER TABLE costsim_provenance_unpartitioned RENAME CONSTRAINT pk_costsim_provenance TO pk_costsim_provenance_unpartitioned;
ALTER TABLE costsim_provenance_unpartitioned
    RENAME CONSTRAINT uq_costsim_provenance_event_id TO uq_costsim_provenance_unpartitioned_event_id;

-- One row per simulation result (or backfilled record), idempotent on (occurred_at, event_id), see above.
CREATE TABLE costsim_provenance (
    -- A row number for readers of the older schema; not a key (see above).
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
    CONSTRAINT uq_costsim_provenance_event_id UNIQUE NULLS NOT DISTINCT (occurred_at, event_id),
    CONSTRAINT ck_costsim_provenance_cost_delta CHECK (
        cost_delta IS NULL OR (v1_cost IS NOT NULL AND v2_cost IS NOT NULL)),
    CONSTRAINT ck_costsim_provenance_v2_status CHECK (
        v2_status IS NULL OR v2_status IN ('success', 'error', 'timeout', 'schema_error')),
    CONSTRAINT ck_costsim_provenance_verdict CHECK (
        verdict IS NULL OR verdict IN ('match', 'minor_drift', 'major_drift', 'mismatch'))
) PARTITION BY RANGE (occurred_at);
CREATE INDEX idx_costsim_prov_tenant_occurred ON costsim_provenance (tenant_id, occurred_at);

-- Rows no partition covers: without an event time, beyond the partitions created ahead, or older than the oldest
-- partition. `storage maintain` moves them into a partition when it creates one for their range.
CREATE TABLE costsim_provenance_default PARTITION OF costsim_provenance DEFAULT;

-- Daily partitions named costsim_provenance_<from>_<to> (UTC, yyyymmddhh), as `storage maintain` names them.
DO $$
DECLARE
    day date;
BEGIN
    FOR day IN
        SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date FROM costsim_provenance_unpartitioned
        WHERE occurred_at IS NOT NULL
        UNION
        SELECT d::date FROM generate_series((now() AT TIME ZONE 'UTC')::date,
                                            (now() AT TIME ZONE 'UTC')::date + 3, interval '1 day') AS d
        ORDER BY 1
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF costsim_provenance FOR VALUES FROM (%L) TO (%L)',
            'costsim_provenance_' || to_char(day, 'YYYYMMDD') || '00_' || to_char(day + 1, 'YYYYMMDD') || '00',
            day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END
$$;

INSERT INTO costsim_provenance (id, event_id, occurred_at, run_id, tenant_id, variant_slug, source, model_version,
    adapter_version, commit_sha, input_hash, output_hash, v1_cost, v2_cost, cost_delta, v1_feasible, v2_feasible,
    v2_status, drift_score, verdict, payload, runtime_ms, kafka_topic, kafka_partition, kafka_offset, processed,
    created_at)
OVERRIDING SYSTEM VALUE
SELECT id, event_id, occurred_at, run_id, tenant_id, variant_slug, source, model_version, adapter_version,
    commit_sha, input_hash, output_hash, v1_cost, v2_cost, cost_delta, v1_feasible, v2_feasible, v2_status,
    drift_score, verdict, payload, runtime_ms, kafka_topic, kafka_partition, kafka_offset, processed, created_at
FROM costsim_provenance_unpartitioned;

-- New rows get ids after every moved one.
SELECT CASE WHEN max(id) IS NULL THEN setval(pg_get_serial_sequence('costsim_provenance', 'id'), 1, false)
            ELSE setval(pg_get_serial_sequence('costsim_provenance', 'id'), max(id)) END
FROM costsim_provenance_unpartitioned;

DROP TABLE costsim_provenance_unpartitioned;
