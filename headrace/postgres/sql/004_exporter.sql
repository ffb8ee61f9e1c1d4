-- The exporter: export definitions, where each export stands in the rows topics, and its runs.
CREATE TABLE headrace.exports (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    -- The whole definition, credentials included; they are masked whenever it is shown.
    definition   jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Per rows partition: the next offset to read, and the last `_source_offset` taken (the duplicate watermark).
-- Written only after a run's delivery report, in the same transaction as the run's record.
CREATE TABLE headrace.export_positions (
    export_id          uuid NOT NULL REFERENCES headrace.exports (id) ON DELETE CASCADE,
    topic              text NOT NULL,
    partition          integer NOT NULL,
    next_offset        bigint NOT NULL,
    last_source_offset bigint,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (export_id, topic, partition)
);

CREATE TABLE headrace.export_runs (
    id              uuid PRIMARY KEY,
    export_id       uuid NOT NULL REFERENCES headrace.exports (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('live', 'regenerate')),
    trigger         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'empty', 'failed')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    files           integer NOT NULL DEFAULT 0,
    rows            bigint NOT NULL DEFAULT 0,
    bytes           bigint NOT NULL DEFAULT 0,
    dropped_privacy bigint NOT NULL DEFAULT 0,
    unknown_time    bigint NOT NULL DEFAULT 0,
    report          text,
    range           jsonb,
    error           text
);
CREATE INDEX export_runs_by_export ON headrace.export_runs (export_id, started_at DESC);
