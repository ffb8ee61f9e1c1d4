-- Transform: per-storage streaming ETL, how far rows are published to the rows topics, replace batches.

-- The storage's streaming ETL (select, rename, filter, compute), applied by transform before each write.
ALTER TABLE headrace.storages ADD COLUMN IF NOT EXISTS etl jsonb NOT NULL DEFAULT '{}';

-- Per ingest (topic, partition): every row whose source offset is below next_offset is on the rows topic.
-- Behind stream_positions only between a write's commit and its publication (or after a crash there).
CREATE TABLE headrace.rows_published (
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Batches (a collector's slice, a file or DataFrame load): rows are staged in headrace_staging.<staging_table>
-- until the end marker's count is reached, then applied to the storage in one transaction by the batch's load
-- mode (replace, append or merge). A batch id is applied once: the same batch sent again is dropped.
CREATE SCHEMA IF NOT EXISTS headrace_staging;
CREATE TABLE headrace.batches (
    storage_id    uuid NOT NULL REFERENCES headrace.storages (id) ON DELETE CASCADE,
    batch_id      text NOT NULL,
    staging_table text NOT NULL,
    load_mode     text NOT NULL DEFAULT 'replace' CHECK (load_mode IN ('append', 'merge', 'replace')),
    -- Row events of the batch taken so far: staged, filtered out by the ETL or rejected alike.
    rows_seen     bigint NOT NULL DEFAULT 0,
    expected_rows bigint,
    -- open: staging; swapped: the storage holds it, rows not yet all published; published: done;
    -- failed: more rows than the end marker announced (the staging table is kept for inspection).
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'swapped', 'published', 'failed')),
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    swapped_at    timestamptz,
    PRIMARY KEY (storage_id, batch_id)
);

-- The distinct events of each open batch, so that a batch sent twice is counted and staged once.
CREATE TABLE headrace.batch_events (
    storage_id  uuid NOT NULL,
    batch_id    text NOT NULL,
    event_id    text NOT NULL,
    PRIMARY KEY (storage_id, batch_id, event_id)
);
