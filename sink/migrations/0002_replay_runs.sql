-- Runs of `reservations replay --to postgres`, which rebuilds the snapshot from
-- the changelog. A run empties stock, reservations and the topic's sink_offsets
-- in the transaction that inserts its row; while finished_at is NULL the run is
-- in progress, and a new replay resumes it (from the stored offsets) instead of
-- emptying the tables again.

CREATE TABLE replay_runs (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    resumed_at  timestamptz,                     -- last resume of an interrupted run
    resumes     integer     NOT NULL DEFAULT 0,
    finished_at timestamptz,                     -- NULL: in progress
    records     bigint                           -- changelog offsets the finished run covered
);

-- At most one run in progress per topic.
CREATE UNIQUE INDEX replay_runs_in_progress ON replay_runs (topic) WHERE finished_at IS NULL;
