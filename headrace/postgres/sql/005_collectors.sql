-- Collectors: their definitions (secrets included: only the API and CLI mask them), cursors and staged batches.
CREATE TABLE headrace.collectors (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    definition jsonb NOT NULL,
    cursor jsonb,                               -- the tagged cursor value, or for file sources the last file taken
    batch_seq bigint NOT NULL DEFAULT 0,        -- batches sent so far; the next batch's id derives from it
    next_run_at timestamptz,
    last_run_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE headrace.collector_batches (
    collector_id uuid NOT NULL REFERENCES headrace.collectors (id) ON DELETE CASCADE,
    batch_id text NOT NULL,
    seq bigint NOT NULL,
    load_mode text NOT NULL,
    extract_mode text NOT NULL,
    cursor_from jsonb,
    cursor_to jsonb,
    files jsonb,                                -- file sources: the files this batch holds, to re-send exactly them
    replay_of text,                             -- a replay's original batch
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    rows bigint,
    deletes bigint,
    topic text,
    offsets jsonb,                              -- {partition: [first, last]} of its events on the ingest topic
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    PRIMARY KEY (collector_id, batch_id)
);

CREATE INDEX collector_batches_by_time ON headrace.collector_batches (collector_id, created_at DESC);
CREATE INDEX collectors_due ON headrace.collectors (next_run_at) WHERE next_run_at IS NOT NULL;
