-- Idempotent provenance writes: the partitioned table's UNIQUE (occurred_at, event_id) against the table it
-- replaced (primary key, UNIQUE (event_id) and nine secondary indexes), with the processor's conflict action, on
-- the same rows: random event ids (as producers make them) over two days of event time, across midnight.
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -f benches/storage/dedup.sql
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -v rows=1000000 -f benches/storage/dedup.sql
--
-- It works in a schema of its own (bench_storage), dropped at the start and at the end. Each step prints its
-- rows, the rows it stored and its rate; each re-insert must store 0 rows (the check fails the script otherwise).
\if :{?rows}
\else
\set rows 200000
\endif
DROP SCHEMA IF EXISTS bench_storage CASCADE;
CREATE SCHEMA bench_storage;
SET search_path = bench_storage;
SET client_min_messages = notice;

-- The rows: what `ProvenanceRow::of_result` writes for a generated event.
CREATE TABLE src AS
SELECT md5('event-' || g) AS event_id,
       timestamptz '2026-12-01 00:00:00+00' + (g::float8 / :rows) * interval '2 days' AS occurred_at,
       md5('run-' || (g / 50)) AS run_id, 'tenant-' || (g % 20) AS tenant_id, 'v2' AS variant_slug,
       'sandbox' AS source, '2.0.0' AS model_version, '2.0.0' AS adapter_version, md5('input-' || g) AS input_hash,
       (1000 + g % 5000)::float8 AS v1_cost, (1000 + g % 5100)::float8 AS v2_cost, true AS v1_feasible,
       true AS v2_feasible, 'success' AS v2_status, (g % 100) / 1000.0 AS drift_score, 'match' AS verdict,
       (g % 900)::int AS runtime_ms, 'costsim.simulation-results' AS kafka_topic, (g % 12)::int AS kafka_partition,
       g::int8 AS kafka_offset, (g - 1) / 1000 AS batch_no
FROM generate_series(1, :rows) g;
CREATE INDEX ON src (batch_no);
ANALYZE src;

-- Before: the unpartitioned table of the first migration.
CREATE TABLE old_provenance (
    id BIGINT GENERATED ALWAYS AS IDENTITY, event_id TEXT NOT NULL, occurred_at TIMESTAMPTZ, run_id TEXT,
    tenant_id TEXT, variant_slug TEXT, source TEXT, model_version TEXT, adapter_version TEXT, commit_sha TEXT,
    input_hash TEXT, output_hash TEXT, v1_cost DOUBLE PRECISION, v2_cost DOUBLE PRECISION,
    cost_delta DOUBLE PRECISION, v1_feasible BOOLEAN, v2_feasible BOOLEAN, v2_status TEXT,
    drift_score DOUBLE PRECISION, verdict TEXT, payload JSONB, runtime_ms INTEGER, kafka_topic TEXT,
    kafka_partition INTEGER, kafka_offset BIGINT, processed BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT old_pk PRIMARY KEY (id), CONSTRAINT old_uq UNIQUE (event_id));
CREATE INDEX ON old_provenance (run_id);
CREATE INDEX ON old_provenance (tenant_id);
CREATE INDEX ON old_provenance (variant_slug);
CREATE INDEX ON old_provenance (input_hash);
CREATE INDEX ON old_provenance (source);
CREATE INDEX ON old_provenance (created_at);
CREATE INDEX ON old_provenance (occurred_at);
CREATE INDEX ON old_provenance (tenant_id, created_at);
CREATE INDEX ON old_provenance (variant_slug, created_at);

-- After: partitioned by day, the two indexes of the partitioning migration.
CREATE TABLE new_provenance (LIKE old_provenance INCLUDING DEFAULTS INCLUDING IDENTITY,
    CONSTRAINT new_uq UNIQUE NULLS NOT DISTINCT (occurred_at, event_id)) PARTITION BY RANGE (occurred_at);
CREATE INDEX ON new_provenance (tenant_id, occurred_at);
CREATE TABLE new_provenance_default PARTITION OF new_provenance DEFAULT;
CREATE TABLE new_provenance_d1 PARTITION OF new_provenance FOR VALUES FROM ('2026-12-01 00:00+00') TO ('2026-12-02 00:00+00');
CREATE TABLE new_provenance_d2 PARTITION OF new_provenance FOR VALUES FROM ('2026-12-02 00:00+00') TO ('2026-12-03 00:00+00');
CREATE TABLE new_provenance_d3 PARTITION OF new_provenance FOR VALUES FROM ('2026-12-03 00:00+00') TO ('2026-12-04 00:00+00');

-- Inserts the `src` rows whose number is a multiple of `step` (all rows with 1) in batches of 1,000 events with the processor's
-- conflict action; reports and returns the rows stored.
CREATE FUNCTION write(target text, conflict text, step int, label text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    stored bigint := 0;
    n bigint;
    total bigint := 0;
    batch int := 0;
    batches int := (SELECT ceil(count(*) / 1000.0) FROM src);
BEGIN
    WHILE batch < batches LOOP
        EXECUTE format(
            'WITH b AS (SELECT * FROM src WHERE batch_no = %s) '
            'INSERT INTO %I AS t (event_id, occurred_at, run_id, tenant_id, variant_slug, source, model_version, '
            'adapter_version, input_hash, v1_cost, v2_cost, cost_delta, v1_feasible, v2_feasible, v2_status, '
            'drift_score, verdict, runtime_ms, kafka_topic, kafka_partition, kafka_offset) '
            'SELECT event_id, occurred_at, run_id, tenant_id, variant_slug, source, model_version, adapter_version, '
            'input_hash, v1_cost, v2_cost, v2_cost - v1_cost, v1_feasible, v2_feasible, v2_status, drift_score, '
            'verdict, runtime_ms, kafka_topic, kafka_partition, kafka_offset FROM b WHERE kafka_offset %% %s = 0 '
            'ON CONFLICT ON CONSTRAINT %I DO UPDATE SET processed = true WHERE NOT t.processed',
            batch, target, step, conflict);
        GET DIAGNOSTICS n = ROW_COUNT;
        stored := stored + n;
        batch := batch + 1;
    END LOOP;
    total := (SELECT count(*) FROM src WHERE kafka_offset % step = 0);
    RAISE NOTICE '% | % rows offered, % stored | % ms | % rows/s', rpad(label, 62), total, stored,
        round(extract(epoch FROM clock_timestamp() - started) * 1000),
        round(total / extract(epoch FROM clock_timestamp() - started));
    RETURN stored;
END
$$;

DO $$
BEGIN
    PERFORM write('old_provenance', 'old_uq', 1, 'before: first write (PK, UNIQUE event_id, 9 indexes)');
    PERFORM write('new_provenance', 'new_uq', 1, 'after: first write (UNIQUE (occurred_at, event_id), 1 index)');
    IF write('old_provenance', 'old_uq', 1, 'before: every event again') <> 0 THEN
        RAISE EXCEPTION 'the old table stored a duplicate';
    END IF;
    IF write('new_provenance', 'new_uq', 1, 'after: every event again') <> 0 THEN
        RAISE EXCEPTION 'the partitioned table stored a duplicate';
    END IF;
    IF write('new_provenance', 'new_uq', 2, 'after: every second event again') <> 0 THEN
        RAISE EXCEPTION 'the partitioned table stored a duplicate';
    END IF;
    IF (SELECT count(*) FROM new_provenance) <> (SELECT count(*) FROM src)
       OR (SELECT count(DISTINCT event_id) FROM new_provenance) <> (SELECT count(*) FROM src) THEN
        RAISE EXCEPTION 'the partitioned table does not hold each event once';
    END IF;
    RAISE NOTICE 'rows per partition: %', (SELECT string_agg(tableoid::regclass || '=' || c, ', ' ORDER BY tableoid::regclass::text)
        FROM (SELECT tableoid, count(*) AS c FROM new_provenance GROUP BY tableoid) s);
    RAISE NOTICE 'bytes: before % MB, after % MB', (SELECT round(pg_total_relation_size('old_provenance') / 1048576.0, 1)),
        (SELECT round(sum(pg_total_relation_size(relid)) / 1048576.0, 1) FROM pg_partition_tree('new_provenance'));
END
$$;

DROP SCHEMA bench_storage CASCADE;
