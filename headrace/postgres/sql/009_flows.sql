-- Dataflows: flow definitions (upload credentials sealed), their runs and step runs, incremental horizons.
CREATE TABLE headrace.flows (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    definition   jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- The scheduler's state: when the flow is next due (NULL: no schedule). Moved past now when a run starts,
    -- so runs missed while nothing was running make one run, not one each.
    next_run_at  timestamptz
);
CREATE INDEX flows_due ON headrace.flows (next_run_at) WHERE next_run_at IS NOT NULL;

CREATE TABLE headrace.flow_runs (
    id           uuid PRIMARY KEY,
    flow_id      uuid NOT NULL REFERENCES headrace.flows (id) ON DELETE CASCADE,
    trigger      text NOT NULL,                  -- api, schedule, rerun
    params       jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    rerun_of     uuid,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    error        text
);
CREATE INDEX flow_runs_by_flow ON headrace.flow_runs (flow_id, started_at DESC);

-- One row per attempt of a step in a run; a parametric step records each value's status in `values`.
CREATE TABLE headrace.flow_step_runs (
    run_id        uuid NOT NULL REFERENCES headrace.flow_runs (id) ON DELETE CASCADE,
    step          text NOT NULL,
    attempt       integer NOT NULL,
    status        text NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'failed', 'upstream_failed', 'skipped')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    rows_read     bigint,
    rows_written  bigint,
    sql           text,
    parameters    jsonb,
    model_change  jsonb,
    error         text,
    transient     boolean NOT NULL DEFAULT false,
    "values"      jsonb,
    output        text,                            -- a python step's stdout and stderr (their ends)
    PRIMARY KEY (run_id, step, attempt)
);

-- Incremental steps: every transaction below the horizon has ended and its input rows were processed.
CREATE TABLE headrace.flow_step_horizons (
    flow_id      uuid NOT NULL REFERENCES headrace.flows (id) ON DELETE CASCADE,
    step         text NOT NULL,
    horizon      xid8 NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_id, step)
);
