-- The transactions an ETL step's attempt wrote its output in: a derived row's provenance is its _xid.
ALTER TABLE headrace.flow_step_runs ADD COLUMN transactions text[];
