-- The tables of one wq schema. Every statement resolves names through the
-- search_path the migration runs with: the schema the application named.
--
-- State codes: 0 scheduled, 1 available, 2 running, 3 completed, 4 dead,
-- 5 cancelled.

CREATE TABLE queues (
    name         text PRIMARY KEY,
    config       jsonb NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    -- Set with the queue's first session, never cleared: until then the
    -- claim and `next_due` skip every look at sessions.
    has_sessions boolean NOT NULL DEFAULT false
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
    -- The session whose limits and pause apply (docs/sessions.md). Session
    -- keys compare byte by byte everywhere, as sessions are listed by key.
    session          text COLLATE "C",
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
    -- When the lease's run began, for its record in `history`.
    lease_started_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    last_error       text,
    -- The step a handler continues at (AckAction::Continue).
    step             text,
    -- What a completed job's handler stored: JSON text kept byte for byte.
    output           text,
    -- The finished runs, oldest first, as `wq_core::Attempt` JSON; NULL
    -- until the first run ends.
    history          jsonb,
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
-- The id column serves listing in id order (src/list.rs) at no cost: a
-- job's entry is written when it enters the state either way.
CREATE INDEX jobs_waiting ON jobs (queue, state, id) WHERE state < 2;
CREATE INDEX jobs_running ON jobs (queue, id) WHERE state = 2;
-- Pruning and the dead-letter queue.
CREATE INDEX jobs_finished ON jobs (queue, state, finished_at) WHERE state >= 3;
-- Listing a group's finished jobs (its unfinished ones are its line,
-- `jobs_group_line`) and a tenant's jobs, in id order. A job without a
-- tenant costs the second nothing.
CREATE INDEX jobs_group_finished ON jobs (queue, group_key, id)
    WHERE state >= 3 AND group_key IS NOT NULL;
CREATE INDEX jobs_tenant ON jobs (tenant, id) WHERE tenant IS NOT NULL;
-- A session's waiting jobs, which operators see counted.
CREATE INDEX jobs_session_waiting ON jobs (queue, session)
    WHERE state < 2 AND session IS NOT NULL;

-- The jobs a claim may hand out: ungrouped jobs and group heads, nothing
-- else. A claim reads only this table, so its cost does not depend on the
-- backlog. A group's next job gets a row only once its head is terminal.
CREATE TABLE heads (
    id        uuid PRIMARY KEY,
    queue     text NOT NULL,
    group_key text,
    session   text COLLATE "C",
    priority  smallint NOT NULL,
    run_at    timestamptz NOT NULL,
    seq       bigint NOT NULL,
    -- False for a job between steps (`wq_continued`): it has started, so it
    -- comes first at its priority and takes no start from a session's rate.
    fresh     boolean NOT NULL DEFAULT true,
    ready     boolean NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

-- Heads without a session: the claim's main read path. Heads of a session
-- are kept apart, so that a session that may not start a job costs the
-- claim nothing, however many heads it has: the claim reaches them only
-- through the session's row (`sessions_ready`).
CREATE INDEX heads_ready ON heads (queue, priority, fresh, run_at, seq)
    WHERE ready AND session IS NULL;
CREATE INDEX heads_scheduled ON heads (queue, run_at) WHERE NOT ready AND session IS NULL;
CREATE INDEX heads_session_ready ON heads (queue, session, priority, fresh, run_at, seq)
    WHERE ready AND session IS NOT NULL;
CREATE INDEX heads_session_scheduled ON heads (queue, run_at)
    WHERE NOT ready AND session IS NOT NULL;
CREATE UNIQUE INDEX heads_one_per_group ON heads (queue, group_key)
    WHERE group_key IS NOT NULL;

-- One row per group with work, a pending chain or a pending gap: the lock
-- that orders enqueues into the group, the chain's latest run_at, the dead
-- head that holds the group (OnDead::Hold), and the earliest time its next
-- head may run (QueueConfig::group_gap after the group last moved on).
CREATE TABLE groups (
    queue       text NOT NULL,
    group_key   text NOT NULL,
    last_run_at timestamptz NOT NULL,
    held_by     uuid,
    gap_until   timestamptz,
    PRIMARY KEY (queue, group_key)
);

-- One row per session of a queue (docs/sessions.md), kept while the queue
-- exists. Besides the operator's settings it carries what the claim needs
-- to reach a session's jobs without looking at its heads when it may not
-- start one: `state` (0 blocked: paused, full or no ready head; 1 waiting
-- for `next_start`; 2 ready) and `front`, the key of its best ready head.
-- `wq_sessions_sync` recomputes both whenever a head, the running count,
-- the pause or the limits change; only a claim's promotion, by its clock,
-- moves a session from waiting to ready (`rate_open`).
CREATE TABLE sessions (
    queue          text NOT NULL,
    session        text COLLATE "C" NOT NULL,
    -- SessionLimits: NULL where unset. The rate as given (microseconds),
    -- so that it reads back as it was set.
    max_running    integer,
    rate_starts    integer,
    rate_per_us    bigint,
    rate_jitter_us bigint,
    paused         boolean NOT NULL DEFAULT false,
    -- Why, as the pause said (wq_core::PauseChange); NULL when not paused.
    pause_reason   text,
    -- Its jobs running now.
    running        integer NOT NULL DEFAULT 0,
    -- The earliest time its rate lets it start a job; NULL before the first
    -- start under a rate.
    next_start     timestamptz,
    -- A promotion saw `next_start` pass since the last start.
    rate_open      boolean NOT NULL DEFAULT false,
    state          smallint NOT NULL DEFAULT 0,
    front_priority smallint,
    front_fresh    boolean,
    front_run_at   timestamptz,
    front_seq      bigint,
    PRIMARY KEY (queue, session)
);

-- Sessions that may start a job now, in the order of their best heads.
CREATE INDEX sessions_ready ON sessions (queue, front_priority, front_fresh, front_run_at,
                                         front_seq)
    WHERE state = 2;
-- Sessions waiting for their rate: promoted to ready when `next_start` comes.
CREATE INDEX sessions_timer ON sessions (queue, next_start) WHERE state = 1;

-- A session's budget of new groups (wq_core::Admissions): its allowance and
-- a hold. The row is the lock that makes an admission atomic; it is
-- created by the first admission or setting.
CREATE TABLE admissions (
    queue            text NOT NULL,
    session          text COLLATE "C" NOT NULL,
    allowance_new    integer,
    allowance_per_us bigint,
    held_until       timestamptz,
    PRIMARY KEY (queue, session)
);

-- Every group a session was admitted to, and when: known groups are looked
-- up by key, the allowance's window counted by time.
CREATE TABLE admitted (
    queue       text NOT NULL,
    session     text COLLATE "C" NOT NULL,
    group_key   text NOT NULL,
    admitted_at timestamptz NOT NULL,
    PRIMARY KEY (queue, session, group_key)
);
CREATE INDEX admitted_by_time ON admitted (queue, session, admitted_at);

-- Finished jobs counted by queue and state, as changes: every call that
-- finishes, revives or deletes jobs inserts one row per (queue, state) it
-- changed, and `prune` folds a queue's rows into one per state. Inserts
-- take no lock a worker waits on (a counter row per queue would serialize
-- every acknowledgement), and a count reads a few rows, not the retained
-- jobs. State 9 counts every job that ever finished (`Counts::finished`).
CREATE TABLE finished_counts (
    queue text NOT NULL,
    state smallint NOT NULL,
    n     bigint NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX finished_counts_queue ON finished_counts (queue);

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
    session          text,
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
    lease_started_at timestamptz,
    cancel_requested boolean,
    last_error       text,
    step             text,
    output           text,
    history          jsonb,
    created_at       timestamptz,
    updated_at       timestamptz,
    finished_at      timestamptz,
    payload          text
);
