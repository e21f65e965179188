-- The tables of one wq schema. Every statement resolves names through the
-- search_path the migration runs with: the schema the application named.
--
-- State codes: 0 scheduled, 1 available, 2 running, 3 completed, 4 dead,
-- 5 cancelled.

CREATE TABLE queues (
    name   text PRIMARY KEY,
    config jsonb NOT NULL,
    paused boolean NOT NULL DEFAULT false
);

-- Enqueue order (taken under the group's lock, so it follows commit order
-- within a group) and fencing tokens (every claim takes a larger one).
CREATE SEQUENCE job_seq;
CREATE SEQUENCE lease_tokens;

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    queue            text NOT NULL,
    tenant           text,
    group_key        text,
    seq              bigint NOT NULL,
    priority         smallint NOT NULL,
    run_at           timestamptz NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    state            smallint NOT NULL,
    idempotency_key  text,
    lease_token      bigint,
    lease_expires_at timestamptz,
    lease_worker     text,
    cancel_requested boolean NOT NULL DEFAULT false,
    last_error       text,
    -- The step a handler continues at (AckAction::Continue).
    step             text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    -- JSON text kept byte for byte.
    payload          text NOT NULL
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);

-- A known key returns the existing job while it is retained.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- One job in flight per group, enforced by the database itself.
CREATE UNIQUE INDEX jobs_one_running_per_group ON jobs (queue, group_key)
    WHERE state = 2 AND group_key IS NOT NULL;
-- A group's line of unfinished jobs: the next head, positions.
CREATE INDEX jobs_group_line ON jobs (queue, group_key, seq)
    WHERE state < 3 AND group_key IS NOT NULL;
-- Each state's jobs, in three partial indexes so that a state change
-- touches only the indexes it enters. Running jobs are few: rescue scans
-- them all, and a lease extension changes no indexed column (a HOT update).
CREATE INDEX jobs_waiting ON jobs (queue, state) WHERE state < 2;
CREATE INDEX jobs_running ON jobs (queue) WHERE state = 2;
-- Pruning and the dead-letter queue.
CREATE INDEX jobs_finished ON jobs (queue, state, finished_at) WHERE state >= 3;

-- The jobs a claim may hand out: ungrouped jobs and group heads, nothing
-- else. A claim reads only this table, so its cost does not depend on the
-- backlog. A group's next job gets a row only once its head is terminal.
CREATE TABLE heads (
    id        uuid PRIMARY KEY,
    queue     text NOT NULL,
    group_key text,
    priority  smallint NOT NULL,
    run_at    timestamptz NOT NULL,
    seq       bigint NOT NULL,
    ready     boolean NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

CREATE INDEX heads_ready ON heads (queue, priority, run_at, seq) WHERE ready;
CREATE INDEX heads_scheduled ON heads (queue, run_at) WHERE NOT ready;
CREATE UNIQUE INDEX heads_one_per_group ON heads (queue, group_key)
    WHERE group_key IS NOT NULL;

-- One row per group with work or a pending chain: the lock that orders
-- enqueues into the group, the chain's latest run_at, and the dead head that
-- holds the group (OnDead::Hold).
CREATE TABLE groups (
    queue       text NOT NULL,
    group_key   text NOT NULL,
    last_run_at timestamptz NOT NULL,
    held_by     uuid,
    PRIMARY KEY (queue, group_key)
);

CREATE TABLE locks (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

-- What the functions return: a position in the request, an outcome code,
-- and a job row (its columns in the order of `jobs`).
CREATE TYPE job_result AS (
    ord              integer,
    outcome          smallint,
    id               uuid,
    queue            text,
    tenant           text,
    group_key        text,
    seq              bigint,
    priority         smallint,
    run_at           timestamptz,
    attempt          integer,
    max_attempts     integer,
    state            smallint,
    idempotency_key  text,
    lease_token      bigint,
    lease_expires_at timestamptz,
    lease_worker     text,
    cancel_requested boolean,
    last_error       text,
    step             text,
    created_at       timestamptz,
    updated_at       timestamptz,
    finished_at      timestamptz,
    payload          text
);
