-- Long jobs (file imports, export runs and regenerations, replays, collector runs) run in the service that owns them
-- and are recorded here, so any instance of any service can say how one fares. A running job's process beats its
-- heartbeat every second; a job whose heartbeat stopped lost its process and is reported failed.
CREATE TABLE headrace.jobs (
    id           uuid PRIMARY KEY,
    service      text NOT NULL,
    kind         text NOT NULL,
    target       text NOT NULL,                 -- what the job works on: a storage, collector or export name
    state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'succeeded', 'failed')),
    done         bigint NOT NULL DEFAULT 0,
    total        bigint,                        -- unknown (NULL) until the job can tell
    unit         text NOT NULL,
    status       integer,                       -- the HTTP status its synchronous form answers with
    answer       jsonb,                         -- the body of that answer: the result, or the error
    created_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX jobs_by_time ON headrace.jobs (created_at);
