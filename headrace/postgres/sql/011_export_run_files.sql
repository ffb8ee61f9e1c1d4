-- Each export run keeps the files its report lists (name, interval, rows, bytes, sha256), so that the console and the
-- API can show a run's files without reading its destination.
ALTER TABLE headrace.export_runs ADD COLUMN file_list jsonb NOT NULL DEFAULT '[]';
