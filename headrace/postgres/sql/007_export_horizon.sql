-- Exports read rows by the transaction that wrote them instead of from rows topics: each export keeps a horizon,
-- and each live run records the transaction range it ships, [xid_from, xid_to), and its report stamp.

-- Every transaction below an export's horizon has ended and its rows have gone out (or were there before the
-- export existed and were shipped through the rows topics). An export that has run already starts from now, so
-- the rows the rows topics shipped are not shipped again; one that never ran starts from the beginning ('0').
ALTER TABLE headrace.exports ADD COLUMN horizon xid8 NOT NULL DEFAULT '0';
UPDATE headrace.exports e SET horizon = pg_snapshot_xmin(pg_current_snapshot())
    WHERE EXISTS (SELECT 1 FROM headrace.export_positions p WHERE p.export_id = e.id);

DROP TABLE headrace.export_positions;

-- A run's range and the stamp of its report; a replay of a failed run keeps both, so it rewrites the same names.
-- `delivered` lists the names a run has put on its destination so far: a replay removes the ones it does not
-- write again, so no unreported file of a failed attempt is left beside the reported ones.
ALTER TABLE headrace.export_runs
    ADD COLUMN xid_from xid8,
    ADD COLUMN xid_to xid8,
    ADD COLUMN stamp timestamptz,
    ADD COLUMN replay_of uuid,
    ADD COLUMN delivered text[] NOT NULL DEFAULT '{}';
-- Runs from the rows-topic era recorded offset ranges, which mean nothing now: they can never be replayed.
UPDATE headrace.export_runs SET status = 'failed', error = coalesce(error, 'interrupted before the move to horizons')
    WHERE status = 'running';
UPDATE headrace.export_runs SET range = NULL WHERE kind = 'live';
