-- The catalog: storages, their push tokens and model versions, and stream positions.
CREATE SCHEMA IF NOT EXISTS storage;

CREATE TABLE headrace.storages (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    table_name   text NOT NULL UNIQUE,
    primary_key  text[] NOT NULL DEFAULT '{}',
    load_mode    text NOT NULL DEFAULT 'append' CHECK (load_mode IN ('append', 'merge', 'replace')),
    locked       boolean NOT NULL DEFAULT false,
    -- The current model version; writers compare it with the one they cached.
    model_version integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Only a hash of each token is kept; a revoked token stays for the record.
CREATE TABLE headrace.push_tokens (
    storage_id   uuid NOT NULL REFERENCES headrace.storages (id) ON DELETE CASCADE,
    token_sha256 bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    PRIMARY KEY (storage_id, token_sha256)
);

-- Every version of every storage's model: the ordered columns with their types.
CREATE TABLE headrace.model_versions (
    storage_id   uuid NOT NULL REFERENCES headrace.storages (id) ON DELETE CASCADE,
    version      integer NOT NULL,
    columns      jsonb NOT NULL,
    change       jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (storage_id, version)
);

-- Where each consumer group stands in each partition, committed with the rows it wrote.
CREATE TABLE headrace.stream_positions (
    group_name   text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, topic, partition)
);

-- Rows a locked model refused, with the payload as it arrived and why; replayable.
CREATE TABLE headrace.rejected_rows (
    id           bigserial PRIMARY KEY,
    storage_id   uuid NOT NULL REFERENCES headrace.storages (id) ON DELETE CASCADE,
    event_id     text,
    payload      jsonb NOT NULL,
    reason       text NOT NULL,
    source       text NOT NULL,
    rejected_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz
);
CREATE INDEX rejected_rows_storage ON headrace.rejected_rows (storage_id) WHERE replayed_at IS NULL;
