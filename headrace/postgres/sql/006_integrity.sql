-- Exactly once from push to export: rows carry the transaction that wrote them (exports read by it instead of
-- rows topics), batches apply in stream order, event ids are remembered for a window, and stream positions
-- belong to one incarnation of their topic.

-- Every storage row carries the transaction that last wrote it, indexed: an export run takes the rows of the
-- transactions in [its last horizon, the oldest transaction still running).
DO $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT id, table_name FROM headrace.storages LOOP
        EXECUTE format(
            'ALTER TABLE storage.%I ADD COLUMN IF NOT EXISTS _xid xid8 NOT NULL DEFAULT pg_current_xact_id()',
            s.table_name);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON storage.%I (_xid)', 'hr_xid_' || replace(s.id::text, '-', ''),
            s.table_name);
    END LOOP;
END $$;

-- The rows topics are gone: rows leave a storage by commit order, read from Postgres.
DROP TABLE IF EXISTS headrace.rows_published;

-- Batches: `complete` holds a batch whose rows all arrived while an earlier batch (by end-marker position on
-- the same partition) is not applied yet; `applied` is in the storage. The end marker's position orders them.
ALTER TABLE headrace.batches DROP CONSTRAINT IF EXISTS batches_state_check;
UPDATE headrace.batches SET state = 'applied' WHERE state IN ('swapped', 'published');
ALTER TABLE headrace.batches RENAME COLUMN swapped_at TO applied_at;
ALTER TABLE headrace.batches
    ADD CONSTRAINT batches_state_check CHECK (state IN ('open', 'complete', 'applied', 'failed')),
    ADD COLUMN marker_partition integer,
    ADD COLUMN marker_offset bigint,
    ADD COLUMN marker_read_at timestamptz,
    ADD COLUMN duplicates bigint NOT NULL DEFAULT 0;
CREATE INDEX batches_pending ON headrace.batches (storage_id, marker_partition, marker_offset)
    WHERE state IN ('open', 'complete');

-- Event ids written to each storage (a 16-byte hash of each), kept for the deduplication window: an event sent
-- twice (a retried push, a record with the same `_id`) is written once, whichever partition each copy took.
CREATE TABLE headrace.event_ids (
    storage_id  uuid NOT NULL REFERENCES headrace.storages (id) ON DELETE CASCADE,
    id_hash     bytea NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (storage_id, id_hash)
);
CREATE INDEX event_ids_age ON headrace.event_ids USING brin (seen_at);

-- A stored position is used only on the topic incarnation it was taken on: the Kafka cluster id plus the marker
-- Headrace records when it creates the topic. A recreated topic (or a restarted in-memory broker) is read again
-- from its beginning.
ALTER TABLE headrace.stream_positions ADD COLUMN incarnation text;
CREATE TABLE headrace.topic_incarnations (
    topic       text PRIMARY KEY,
    marker      uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
