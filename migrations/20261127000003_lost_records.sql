-- Offsets of the results topic whose records the broker deleted (retention) before any processor applied them.
-- One row per range, written in the transaction that moves the consumed offset past it, so each loss is recorded
-- exactly once and the processor goes on instead of waiting for records that no longer exist.
CREATE TABLE costsim_lost_records (
    consumer_group   TEXT        NOT NULL,
    topic            TEXT        NOT NULL,
    "partition"      INTEGER     NOT NULL,
    -- The range [first_offset, end_offset) of offsets never read.
    first_offset     BIGINT      NOT NULL,
    end_offset       BIGINT      NOT NULL,
    -- The partition's log start offset when the loss was found.
    log_start_offset BIGINT      NOT NULL,
    detected_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT pk_costsim_lost_records PRIMARY KEY (consumer_group, topic, "partition", first_offset),
    CONSTRAINT ck_costsim_lost_records_range CHECK (end_offset > first_offset)
);
