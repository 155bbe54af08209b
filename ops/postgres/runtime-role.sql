-- The privileges of the role `run` connects as when the schema is managed by a separate migration role
-- (`costsim-breaker migrate` as the schema's owner, then `run --no-migrate`): data only, no DDL.
--
--   psql "$MIGRATION_URL" -v ON_ERROR_STOP=1 -f ops/postgres/runtime-role.sql
--
-- Run it as the role that owns the schema (the one `migrate` connects as), once per database, after the first
-- `migrate`. It creates no login: give the role a password (ALTER ROLE costsim_runtime LOGIN PASSWORD '...') or
-- grant it to an existing login role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'costsim_runtime') THEN
        CREATE ROLE costsim_runtime NOLOGIN;
    END IF;
END
$$;

GRANT CONNECT ON DATABASE :"DBNAME" TO costsim_runtime;
GRANT USAGE ON SCHEMA public TO costsim_runtime;
-- Every table: provenance, buckets, offsets, breaker state and incidents, the outboxes (the drainer and the relay
-- update and purge their rows), canary reports, lost records. The migrations' own table is read by --no-migrate.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO costsim_runtime;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO costsim_runtime;
-- Tables and sequences later migrations create get the same rights.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO costsim_runtime;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO costsim_runtime;
-- No CREATE on the schema, no ownership: the runtime role cannot change the schema.
REVOKE CREATE ON SCHEMA public FROM costsim_runtime;
