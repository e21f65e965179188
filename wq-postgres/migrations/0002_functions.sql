-- The operations of the store, one function each, so that every call is one
-- round trip and one transaction. Names inside resolve through the session's
-- search_path, which every connection of the store sets to its schema (a
-- per-function `SET search_path` clause would cost more than the function's
-- own work on every call).
--
-- Lock order, everywhere: group rows in (queue, group) order, then `heads`
-- rows, then job rows in id order, then session rows in (queue, session)
-- order, all of a call's sessions in one statement (`wq_sessions_sync`),
-- after which the call waits for no other lock. The claim and promotion
-- take sessions first but with SKIP LOCKED, and while they hold one they
-- take heads and jobs with SKIP LOCKED too: they never wait while holding
-- a session. The one rule that keeps every group with
-- exactly one head: whatever changes which job heads a group (storing a
-- grouped job, ending one, placing one in `heads`) holds the group's row
-- lock, and decides from a statement that began after the lock was granted
-- (under READ COMMITTED each statement sees what committed before it began,
-- so it sees every earlier holder's work). The same rule keeps a session's
-- state true: whatever changes its heads, running count, pause or limits
-- recomputes its front and state under its row lock, in a statement begun
-- after the lock. docs/postgres.md has the proof.
--
-- Codes. States: 0 scheduled, 1 available, 2 running, 3 completed, 4 dead,
-- 5 cancelled. Ack actions: 0 complete, 1 retry, 2 defer, 3 kill,
-- 4 release, 5 continue (its message is the step). Ack outcomes: 0 applied, 1 stale, 2 not found. Extend
-- outcomes: 0 extended, 1 cancel requested, 2 lost. Cancel outcomes:
-- 0 done, 1 invalid state, 2 not found.

-- Wakes the queue's idle workers in every process.
CREATE FUNCTION wq_wake(p_queue text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('wq:' || current_schema(), p_queue)
$$;

-- Counts jobs that finished (p_sign 1) or left a finished state (-1):
-- one row per (queue, state) of the given ones (see `finished_counts`).
-- State 9 counts every job that ever finished, kept or not: it only grows.
CREATE FUNCTION wq_count_finished(p_queues text[], p_states smallint[], p_sign integer)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO finished_counts (queue, state, n)
    SELECT q, st, p_sign * count(*) FROM unnest(p_queues, p_states) AS t(q, st)
    WHERE st >= 3
    GROUP BY q, st
$$;

-- Lowers the running count of each given session by its p_left (a start
-- counts -1) and recomputes its front and state, in one statement. The
-- pairs are distinct, in (queue, session) order, and this transaction
-- holds every one's row lock, taken before this statement began, so it
-- sees every head placed or taken before them. A pair with a token
-- (p_tokens) is a start under that lease at p_now: under a rate it sets
-- `next_start` to p_now plus Rate::spacing_after(token) (integer
-- microseconds) and closes the rate. Wakes the queue of a session that may
-- start a job sooner than before. Otherwise no clock is involved: a
-- session with a rate waits from each start until a promotion, by the
-- claiming process's clock, sees its `next_start` pass.
CREATE FUNCTION wq_sessions_apply(p_queues text[], p_sessions text[], p_left integer[],
                                  p_tokens bigint[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_woken text[];
BEGIN
    WITH synced AS (
        UPDATE sessions s
        SET running = c.running, next_start = c.next_start, rate_open = c.rate_open,
            front_priority = c.priority, front_fresh = c.fresh, front_run_at = c.run_at,
            front_seq = c.seq,
            state = CASE
                WHEN c.seq IS NULL OR s.paused
                     OR (s.max_running IS NOT NULL AND c.running >= s.max_running) THEN 0
                -- A front between steps takes no start: the rate holds it not.
                WHEN s.rate_starts IS NOT NULL AND c.next_start IS NOT NULL
                     AND NOT c.rate_open AND c.fresh THEN 1
                ELSE 2 END
        FROM (
            SELECT w.q, w.s, o.state AS old_state, greatest(o.running - w.n, 0) AS running,
                   CASE WHEN w.token IS NULL OR o.rate_starts IS NULL THEN o.next_start
                        ELSE p_now + (o.rate_per_us / o.rate_starts
                                      + o.rate_jitter_us * ((w.token % 65536) * 40503 % 65536)
                                        / 65536)
                                     * interval '1 microsecond' END AS next_start,
                   o.rate_open AND (w.token IS NULL OR o.rate_starts IS NULL) AS rate_open,
                   f.priority, f.fresh, f.run_at, f.seq
            FROM unnest(p_queues, p_sessions, p_left, p_tokens) AS w(q, s, n, token)
            JOIN sessions o ON o.queue = w.q AND o.session = w.s
            LEFT JOIN LATERAL (
                SELECT h.priority, h.fresh, h.run_at, h.seq FROM heads h
                WHERE h.queue = w.q AND h.session = w.s AND h.session IS NOT NULL AND h.ready
                ORDER BY h.priority, h.fresh, h.run_at, h.seq
                LIMIT 1) f ON true
        ) c
        WHERE s.queue = c.q AND s.session = c.s
        RETURNING s.queue, s.state, c.old_state
    )
    SELECT array_agg(DISTINCT queue) FILTER (WHERE state > old_state) INTO v_woken FROM synced;
    PERFORM wq_wake(q) FROM unnest(v_woken) AS t(q);
END $$;

-- Locks the given sessions, and those of the heads of the given groups
-- (the caller holds those groups), in (queue, session) order, creating a
-- missing row; then applies each one's p_left and p_tokens (pairs may
-- repeat) with `wq_sessions_apply`.
CREATE FUNCTION wq_sessions_sync(p_queues text[], p_sessions text[], p_left integer[],
                                 p_tokens bigint[], p_group_queues text[], p_groups text[],
                                 p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_queues text[];
    v_sessions text[];
    v_left integer[];
    v_tokens bigint[];
    v_locked integer;
BEGIN
    -- The sessions of the given groups' heads join the given ones (a
    -- group's head is read unlocked: the caller holds the group).
    IF p_groups IS NOT NULL THEN
        SELECT array_agg(u.q), array_agg(u.s), array_agg(u.n), array_agg(u.token)
        INTO p_queues, p_sessions, p_left, p_tokens
        FROM (SELECT x.q, x.s, x.n, x.token
              FROM unnest(p_queues, p_sessions, p_left, p_tokens) AS x(q, s, n, token)
              UNION ALL
              SELECT h.queue, h.session, 0, NULL
              FROM unnest(p_group_queues, p_groups) AS g(q, k)
              CROSS JOIN LATERAL (SELECT queue, session FROM heads
                                  WHERE queue = g.q AND group_key = g.k) h
              WHERE h.session IS NOT NULL) u;
    END IF;
    -- Which sessions, and how many of each one's jobs left running; each
    -- locked in (queue, session) order as the join reaches it.
    SELECT array_agg(t.q ORDER BY t.q, t.s), array_agg(t.s ORDER BY t.q, t.s),
           array_agg(t.n ORDER BY t.q, t.s), array_agg(t.token ORDER BY t.q, t.s),
           count(l.one)
    INTO v_queues, v_sessions, v_left, v_tokens, v_locked
    FROM (SELECT x.q, x.s COLLATE "C" AS s, sum(coalesce(x.n, 0))::integer AS n,
                 max(x.token) AS token
          FROM unnest(p_queues, p_sessions, p_left, p_tokens) AS x(q, s, n, token)
          WHERE x.s IS NOT NULL
          GROUP BY x.q, x.s COLLATE "C"
          ORDER BY x.q, x.s COLLATE "C") t
    LEFT JOIN LATERAL (
        SELECT 1 AS one FROM sessions x WHERE x.queue = t.q AND x.session = t.s FOR UPDATE) l ON true;
    IF v_queues IS NULL THEN
        RETURN;
    END IF;
    -- A job names its session from its enqueue on, which creates the row;
    -- should one be missing all the same, create it rather than skip it.
    IF v_locked < cardinality(v_queues) THEN
        INSERT INTO sessions AS cur (queue, session)
        SELECT w.q, w.s FROM unnest(v_queues, v_sessions) AS w(q, s)
        ORDER BY w.q, w.s
        ON CONFLICT (queue, session) DO UPDATE SET paused = cur.paused;
        -- The queue's row, the first time only, after every other lock:
        -- its other writers (declare, pause) take nothing else.
        UPDATE queues SET has_sessions = true
        WHERE name = ANY(v_queues) AND NOT has_sessions;
    END IF;
    PERFORM wq_sessions_apply(v_queues, v_sessions, v_left, v_tokens, p_now);
END $$;

-- The least time between a group moving on and its next head running
-- (QueueConfig::group_gap, zero by default).
CREATE FUNCTION wq_group_gap(p_queue text) RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT coalesce((config->>'group_gap')::bigint, 0) * interval '1 millisecond'
    FROM queues WHERE name = p_queue
$$;

-- Locks a group's row, creating it if needed.
CREATE FUNCTION wq_lock_group(p_queue text, p_group text) RETURNS groups
LANGUAGE sql AS $$
    INSERT INTO groups AS g (queue, group_key, last_run_at)
    VALUES (p_queue, p_group, '-infinity')
    ON CONFLICT (queue, group_key) DO UPDATE SET held_by = g.held_by
    RETURNING *
$$;

-- Locks the groups of the given jobs, in (queue, group) order, creating a
-- missing row. Callers lock these before any of the jobs themselves.
CREATE FUNCTION wq_lock_groups_of(p_ids uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_wanted integer;
    v_locked integer;
BEGIN
    -- One statement: each job's group by a lookup per id (group keys never
    -- change, so reading them unlocked is safe), then each group's row
    -- locked in (queue, group) order.
    SELECT count(*), count(l.one) INTO v_wanted, v_locked
    FROM (SELECT DISTINCT j.queue, j.group_key
          FROM unnest(p_ids) AS i(id)
          CROSS JOIN LATERAL (SELECT queue, group_key FROM jobs WHERE id = i.id) j
          WHERE j.group_key IS NOT NULL
          ORDER BY j.queue, j.group_key) w
    LEFT JOIN LATERAL (
        SELECT 1 AS one FROM groups g
        WHERE g.queue = w.queue AND g.group_key = w.group_key FOR UPDATE) l ON true;
    -- A running or waiting job always has its group's row; should one be
    -- missing all the same, create it rather than decide without a lock.
    IF v_locked < v_wanted THEN
        INSERT INTO groups AS cur (queue, group_key, last_run_at)
        SELECT DISTINCT j.queue, j.group_key, '-infinity'::timestamptz
        FROM unnest(p_ids) AS i(id)
        CROSS JOIN LATERAL (SELECT queue, group_key FROM jobs WHERE id = i.id) j
        WHERE j.group_key IS NOT NULL
        ORDER BY j.queue, j.group_key
        ON CONFLICT (queue, group_key) DO UPDATE SET held_by = cur.held_by;
    END IF;
END $$;

-- Makes a job that heads its group (or has none) claimable: available if
-- due, scheduled otherwise. Returns its state.
CREATE FUNCTION wq_place(p_id uuid, p_now timestamptz) RETURNS smallint
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
BEGIN
    -- A running job placed again (rescue) forgets its token; any other keeps
    -- the token of the acknowledgement that last applied to it (see `ack`).
    UPDATE jobs
    SET state = CASE WHEN run_at <= p_now THEN 1 ELSE 0 END, updated_at = p_now,
        lease_token = CASE WHEN state = 2 THEN NULL ELSE lease_token END,
        lease_expires_at = NULL, lease_worker = NULL
    WHERE id = p_id
    RETURNING * INTO j;
    INSERT INTO heads (id, queue, group_key, session, priority, run_at, seq, fresh, ready)
    VALUES (j.id, j.queue, j.group_key, j.session, j.priority, j.run_at, j.seq,
            NOT wq_continued(j.history), j.state = 1);
    PERFORM wq_wake(j.queue);
    RETURN j.state;
END $$;

-- The group moves on at p_now: a queue with a group gap starts it now (it
-- never shortens), and the group places its next job, no earlier than the
-- gap's end, or is forgotten when nothing is left and neither its chain
-- nor its gap lies ahead. Without a gap the next job keeps its run_at, and
-- so its place in the queue's order. The caller holds the group's lock,
-- and syncs the session of the head placed.
CREATE FUNCTION wq_advance(p_queue text, p_group text, p_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_next uuid;
    v_gap interval := wq_group_gap(p_queue);
    v_gap_until timestamptz;
BEGIN
    UPDATE groups
    SET gap_until = CASE WHEN v_gap > interval '0' THEN greatest(gap_until, p_now + v_gap)
                         ELSE gap_until END
    WHERE queue = p_queue AND group_key = p_group
    RETURNING gap_until INTO v_gap_until;
    SELECT id INTO v_next FROM jobs
    WHERE queue = p_queue AND group_key = p_group AND state < 3
    ORDER BY seq LIMIT 1;
    IF FOUND THEN
        UPDATE jobs SET run_at = greatest(run_at, v_gap_until) WHERE id = v_next;
        PERFORM wq_place(v_next, p_now);
    ELSE
        DELETE FROM groups
        WHERE queue = p_queue AND group_key = p_group
          AND held_by IS NULL AND last_run_at <= p_now
          AND (gap_until IS NULL OR gap_until <= p_now);
    END IF;
END $$;

-- Ends a job in a terminal state. Its group moves on, unless it is a dead
-- head of a queue that holds groups on a dead head.
-- A job's history with one more finished run, in the JSON a
-- `wq_core::Attempt` reads (times in microseconds, no `error` when there is
-- none), the oldest run dropped beyond `wq_core::attempt::MAX_HISTORY` (20).
-- A plain expression, so that the planner inlines it into the updates.
CREATE FUNCTION wq_history(p_history jsonb, p_attempt integer, p_started timestamptz,
                           p_ended timestamptz, p_worker text, p_outcome text, p_error text)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN jsonb_array_length(coalesce(p_history, '[]')) >= 20
                THEN p_history - 0 ELSE coalesce(p_history, '[]') END
           || jsonb_build_array(
                  jsonb_build_object(
                      'attempt', p_attempt,
                      'started_at', (extract(epoch FROM coalesce(p_started, p_ended))
                                     * 1000000)::bigint,
                      'ended_at', (extract(epoch FROM p_ended) * 1000000)::bigint,
                      'worker', coalesce(p_worker, ''),
                      'outcome', p_outcome)
                  || CASE WHEN p_error IS NULL THEN '{}'::jsonb
                          ELSE jsonb_build_object('error', p_error) END)
$$;

-- Whether a job whose history this is waits between steps: its last run
-- ended with a step (`wq_core::Job::continued`). A plain expression, so that
-- the planner inlines it.
CREATE FUNCTION wq_continued(p_history jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_history -> -1 ->> 'outcome' = 'continued', false)
$$;

CREATE FUNCTION wq_finish(p_id uuid, p_state smallint, p_error text, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    q queues;
    g groups;
BEGIN
    -- The group first (callers usually hold it already): the job's end and
    -- the choice of the group's next head happen under its lock.
    SELECT * INTO j FROM jobs WHERE id = p_id;
    IF j.group_key IS NOT NULL THEN
        g := wq_lock_group(j.queue, j.group_key);
    END IF;
    UPDATE jobs
    SET state = p_state, finished_at = p_now, updated_at = p_now,
        lease_token = CASE WHEN state = 2 THEN NULL ELSE lease_token END,
        lease_expires_at = NULL, lease_worker = NULL, lease_started_at = NULL,
        last_error = coalesce(p_error, last_error)
    WHERE id = p_id
    RETURNING * INTO j;
    DELETE FROM heads WHERE id = p_id;
    SELECT * INTO q FROM queues WHERE name = j.queue;
    IF j.group_key IS NOT NULL THEN
        IF g.held_by IS NULL AND NOT EXISTS (
            SELECT 1 FROM jobs
            WHERE queue = j.queue AND group_key = j.group_key AND state < 3 AND seq < j.seq)
        THEN
            IF p_state = 4 AND q.config->>'on_dead' = 'hold' THEN
                UPDATE groups SET held_by = j.id
                WHERE queue = j.queue AND group_key = j.group_key;
            ELSE
                PERFORM wq_advance(j.queue, j.group_key, p_now);
            END IF;
        END IF;
    END IF;
    IF p_state <> 4 AND (q.config->'retention'->>'completed')::bigint = 0 THEN
        DELETE FROM jobs WHERE id = p_id;
        PERFORM wq_count_finished(ARRAY[j.queue], ARRAY[9::smallint], 1);
    ELSE
        PERFORM wq_count_finished(ARRAY[j.queue, j.queue], ARRAY[p_state, 9::smallint], 1);
    END IF;
END $$;

-- Deletes a finished job; a group its dead head held moves on. Returns the
-- number of jobs deleted (0 or 1).
CREATE FUNCTION wq_purge(p_id uuid, p_now timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    g groups;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF j.group_key IS NOT NULL THEN
        g := wq_lock_group(j.queue, j.group_key);
    END IF;
    DELETE FROM jobs WHERE id = p_id AND state >= 3 RETURNING * INTO j;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM wq_count_finished(ARRAY[j.queue], ARRAY[j.state], -1);
    IF g.held_by = p_id THEN
        UPDATE groups SET held_by = NULL WHERE queue = j.queue AND group_key = j.group_key;
        PERFORM wq_advance(j.queue, j.group_key, p_now);
    END IF;
    RETURN 1;
END $$;

-- Moves up to p_limit scheduled heads without a session whose time has
-- come to available.
CREATE FUNCTION wq_promote(p_queue text, p_now timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_moved integer;
BEGIN
    -- ARRAY(...) runs once and `id = ANY` stays a key lookup: an IN
    -- (subquery) lets a generic plan scan all of heads.
    WITH due AS (
        UPDATE heads h SET ready = true
        WHERE h.id = ANY(ARRAY(
            SELECT id FROM heads
            WHERE queue = p_queue AND NOT ready AND session IS NULL AND run_at <= p_now
            ORDER BY run_at
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED))
        RETURNING h.id
    )
    UPDATE jobs j SET state = 1, updated_at = p_now FROM due WHERE j.id = due.id;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_moved;
END $$;

-- The same for heads of sessions, whose sessions must be synced as their
-- heads become ready; and sessions whose `next_start` has come, which
-- become ready. Sessions another transaction holds are skipped (their
-- heads stay scheduled until the next promotion): while it holds a
-- session, this takes no lock it would wait for. Returns the heads moved.
CREATE FUNCTION wq_promote_sessions(p_queue text, p_now timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_heads uuid[];
    v_names text[];
    v_moved integer := 0;
BEGIN
    v_heads := ARRAY(
        SELECT h.id FROM heads h JOIN jobs j ON j.id = h.id
        WHERE h.queue = p_queue AND NOT h.ready AND h.session IS NOT NULL
          AND h.run_at <= p_now
        ORDER BY h.run_at
        LIMIT p_limit
        FOR UPDATE OF h, j SKIP LOCKED);
    v_names := ARRAY(
        SELECT s.session FROM sessions s
        WHERE s.queue = p_queue
          AND s.session = ANY(ARRAY(
              SELECT h.session FROM unnest(v_heads) AS i(id)
              CROSS JOIN LATERAL (SELECT session FROM heads WHERE id = i.id) h
              UNION
              (SELECT t.session FROM sessions t
               WHERE t.queue = p_queue AND t.state = 1 AND t.next_start <= p_now
               LIMIT p_limit)))
        ORDER BY s.session
        FOR UPDATE SKIP LOCKED);
    IF cardinality(v_names) = 0 THEN
        RETURN 0;
    END IF;
    -- Whatever held the session (its rate, or no due head until the heads
    -- promoted here), the time its rate asked for has passed.
    UPDATE sessions SET rate_open = true
    WHERE queue = p_queue AND session = ANY(v_names) AND next_start <= p_now AND NOT rate_open;
    IF cardinality(v_heads) > 0 THEN
        WITH due AS (
            UPDATE heads h SET ready = true
            WHERE h.id = ANY(v_heads) AND h.session = ANY(v_names)
            RETURNING h.id
        )
        UPDATE jobs j SET state = 1, updated_at = p_now FROM due WHERE j.id = due.id;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
    END IF;
    PERFORM wq_sessions_sync(array_fill(p_queue, ARRAY[cardinality(v_names)]), v_names, NULL,
                             NULL, NULL, NULL, NULL);
    RETURN v_moved;
END $$;

-- Stores a batch of jobs, all or nothing, in order. A job whose id or
-- idempotency key is already known (in the store, or earlier in the batch)
-- stores nothing and returns the existing job. Returns one row per input, in
-- no particular order: its position, 1 if it was created, and the job.
CREATE FUNCTION enqueue(
    p_ids uuid[], p_queues text[], p_tenants text[], p_groups text[], p_sessions text[],
    p_priorities smallint[], p_run_ats timestamptz[], p_offsets bigint[],
    p_max_attempts integer[], p_keys text[], p_payloads text[], p_now timestamptz)
RETURNS SETOF job_result
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_ids, 1), 0);
    v_missing text;
    v_existing uuid[];
    v_src integer[];
    v_grouped boolean := cardinality(array_remove(p_groups, NULL)) > 0;
    v_seq bigint;
    -- Positions of the new ungrouped jobs, ascending.
    v_flat integer[];
    v_seqs bigint[];
    v_run_at timestamptz;
    v_head boolean;
    g groups;
    j jobs;
    v_in record;
    v_sq text[];
    v_ss text[];
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    SELECT t.q INTO v_missing FROM unnest(p_queues) AS t(q)
    WHERE NOT EXISTS (SELECT 1 FROM queues WHERE name = t.q) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown queue %', v_missing USING ERRCODE = 'WQ001';
    END IF;

    -- Lock every group of the batch, in one order so that concurrent batches
    -- cannot deadlock. Sequences are taken under these locks, so within a
    -- group they follow commit order.
    IF v_grouped THEN
        INSERT INTO groups AS cur (queue, group_key, last_run_at)
        SELECT DISTINCT t.q_name, t.g_key, '-infinity'::timestamptz
        FROM unnest(p_queues, p_groups) AS t(q_name, g_key)
        WHERE t.g_key IS NOT NULL
        ORDER BY t.q_name, t.g_key
        ON CONFLICT (queue, group_key) DO UPDATE SET held_by = cur.held_by;
    END IF;

    -- Each input's job: the stored one with its id or key... (Scalar
    -- subqueries, because the planner never turns them into joins: a generic
    -- plan made while the table was small would otherwise hash-join every job.)
    SELECT array_agg(coalesce(
               (SELECT id FROM jobs WHERE id = inp.id),
               (SELECT id FROM jobs
                WHERE inp.key IS NOT NULL AND queue = inp.queue AND idempotency_key = inp.key))
           ORDER BY inp.ord)
    INTO v_existing
    FROM unnest(p_ids, p_queues, p_keys) WITH ORDINALITY AS inp(id, queue, key, ord);
    -- ...or the first input of the batch with the same id or key, or its own.
    IF n > 1 AND (
        (SELECT count(DISTINCT x) FROM unnest(p_ids) AS t(x)) < n
        OR EXISTS (SELECT 1 FROM unnest(p_queues, p_keys) AS t(q, k)
                   WHERE k IS NOT NULL GROUP BY q, k HAVING count(*) > 1))
    THEN
        SELECT array_agg(t.src ORDER BY t.ord) INTO v_src
        FROM (
            SELECT inp.ord,
                   least(min(inp.ord) OVER (PARTITION BY inp.id),
                         CASE WHEN inp.key IS NULL THEN inp.ord
                              ELSE min(inp.ord) OVER (PARTITION BY inp.queue, inp.key) END)::integer
                       AS src
            FROM unnest(p_ids, p_queues, p_keys) WITH ORDINALITY AS inp(id, queue, key, ord)
        ) t;
    ELSE
        v_src := ARRAY(SELECT generate_series(1, n));
    END IF;

    -- Grouped jobs: chain, head and insert under the group's lock, one at a
    -- time, so later jobs of the batch see earlier ones. (The inputs come
    -- from unnest: subscripting a text array walks it from the start.)
    IF v_grouped THEN
        FOR v_in IN
            SELECT t.* FROM unnest(p_ids, p_queues, p_tenants, p_groups, p_sessions, p_priorities,
                                   p_run_ats, p_offsets, p_max_attempts, p_keys, p_payloads)
                 WITH ORDINALITY AS t(id, queue, tenant, grp, sess, priority, run_at, off,
                                      max_attempts, key, payload, ord)
            WHERE t.grp IS NOT NULL AND v_existing[t.ord::integer] IS NULL
              AND v_src[t.ord::integer] = t.ord
            ORDER BY t.ord
        LOOP
            v_seq := nextval('job_seq');
            SELECT * INTO g FROM groups WHERE queue = v_in.queue AND group_key = v_in.grp;
            v_run_at := coalesce(v_in.run_at,
                                 greatest(g.last_run_at, p_now)
                                     + v_in.off * interval '1 microsecond');
            v_head := g.held_by IS NULL AND NOT EXISTS (
                SELECT 1 FROM jobs WHERE queue = v_in.queue AND group_key = v_in.grp AND state < 3);
            -- The head of an empty group waits out the gap since the group
            -- last moved on.
            IF v_head AND g.gap_until IS NOT NULL THEN
                v_run_at := greatest(v_run_at, g.gap_until);
            END IF;
            INSERT INTO jobs (id, queue, tenant, group_key, session, seq, priority, run_at,
                              max_attempts, state, idempotency_key, created_at, updated_at,
                              payload)
            VALUES (v_in.id, v_in.queue, v_in.tenant, v_in.grp, v_in.sess, v_seq, v_in.priority,
                    v_run_at, v_in.max_attempts, CASE WHEN v_run_at <= p_now THEN 1 ELSE 0 END,
                    v_in.key, p_now, p_now, v_in.payload)
            RETURNING * INTO j;
            RETURN QUERY SELECT v_in.ord::integer, 1::smallint, (j).*;
            IF v_head THEN
                INSERT INTO heads (id, queue, group_key, session, priority, run_at, seq, ready)
                VALUES (v_in.id, v_in.queue, v_in.grp, v_in.sess, v_in.priority, v_run_at, v_seq,
                        v_run_at <= p_now);
            END IF;
            UPDATE groups SET last_run_at = greatest(last_run_at, v_run_at)
            WHERE queue = v_in.queue AND group_key = v_in.grp;
        END LOOP;
    END IF;

    -- Ungrouped jobs, all at once: each heads itself. Their seqs are drawn
    -- first, in input order, so the k-th smallest seq is the k-th new
    -- ungrouped position (the caller checks the ids match). The rows go in
    -- by (queue, key): two batches that share idempotency keys then wait
    -- for each other on the unique index in one order, never in a cycle.
    v_flat := ARRAY(SELECT t.k::integer FROM unnest(p_groups) WITH ORDINALITY AS t(grp, k)
                    WHERE t.grp IS NULL AND v_existing[t.k::integer] IS NULL
                      AND v_src[t.k::integer] = t.k
                    ORDER BY t.k);
    v_seqs := ARRAY(SELECT nextval('job_seq') FROM generate_series(1, cardinality(v_flat)));
    RETURN QUERY
    WITH new AS (
        INSERT INTO jobs (id, queue, tenant, group_key, session, seq, priority, run_at,
                          max_attempts, state, idempotency_key, created_at, updated_at, payload)
        SELECT t.id, t.queue, t.tenant, NULL, t.sess, v_seqs[t.rank], t.priority, r.run_at,
               t.max_attempts,
               CASE WHEN r.run_at <= p_now THEN 1 ELSE 0 END, t.key, p_now, p_now, t.payload
        FROM (
            SELECT u.*, row_number() OVER (ORDER BY u.ord)::integer AS rank
            FROM unnest(p_ids, p_queues, p_tenants, p_groups, p_sessions, p_priorities,
                        p_run_ats, p_offsets, p_max_attempts, p_keys, p_payloads)
                 WITH ORDINALITY AS u(id, queue, tenant, grp, sess, priority, run_at, off,
                                      max_attempts, key, payload, ord)
            WHERE u.grp IS NULL AND v_existing[u.ord::integer] IS NULL
              AND v_src[u.ord::integer] = u.ord
        ) t
        CROSS JOIN LATERAL (
            SELECT coalesce(t.run_at, p_now + t.off * interval '1 microsecond') AS run_at) r
        ORDER BY t.queue, t.key, t.ord
        RETURNING *
    ), headed AS (
        INSERT INTO heads (id, queue, group_key, session, priority, run_at, seq, ready)
        SELECT new.id, new.queue, NULL, new.session, new.priority, new.run_at, new.seq,
               new.state = 1
        FROM new
    )
    SELECT v_flat[(row_number() OVER (ORDER BY new.seq))::integer], 1::smallint, new.*
    FROM new;

    -- The sessions of the jobs stored: created if new, their fronts and
    -- states brought up to date with the heads just placed. Last, as every
    -- function takes sessions. (A job that existed names nothing new.)
    IF cardinality(array_remove(p_sessions, NULL)) > 0 THEN
        SELECT array_agg(t.q), array_agg(t.s) INTO v_sq, v_ss
        FROM unnest(p_queues, p_sessions) WITH ORDINALITY AS t(q, s, ord)
        WHERE t.s IS NOT NULL AND v_existing[t.ord::integer] IS NULL
          AND v_src[t.ord::integer] = t.ord;
        PERFORM wq_sessions_sync(v_sq, v_ss, NULL, NULL, NULL, NULL, NULL);
    END IF;

    -- Tagged with the enqueuing store's origin, whose listener skips it.
    PERFORM pg_notify('wq:' || current_schema(),
                      concat_ws(' ', t.q, nullif(current_setting('wq.origin', true), '')))
    FROM (SELECT DISTINCT unnest(p_queues) AS q) t;

    -- Jobs that existed, and repeats within the batch.
    RETURN QUERY
    SELECT t.ord, 0::smallint, x.*
    FROM generate_series(1, n) AS t(ord)
    CROSS JOIN LATERAL (
        SELECT * FROM jobs
        WHERE id = coalesce(v_existing[t.ord], v_existing[v_src[t.ord]], p_ids[v_src[t.ord]])) x
    WHERE v_existing[t.ord] IS NOT NULL OR v_src[t.ord] <> t.ord;
END $$;

-- Hands out up to p_limit jobs of a queue: due heads in priority order,
-- skipping heads another claim holds, and heads of sessions that may not
-- start a job. Returns the jobs, now running.
--
-- Heads without a session come from `heads_ready`. Heads of sessions come
-- through the sessions that may start one (`sessions_ready`, by their best
-- head): the first p_limit of them, each with as many of its heads as it
-- may start (`max_running` less its running jobs; one under a rate, since
-- the start pushes `next_start` past now). Those are the only heads a
-- session can contribute to the first p_limit in key order, so the merge
-- hands out what a walk through every due head would, and a blocked
-- session's heads are never read.
CREATE FUNCTION claim(p_queue text, p_limit integer, p_now timestamptz,
                      p_lease_until timestamptz, p_worker text)
RETURNS SETOF jobs
LANGUAGE plpgsql AS $$
DECLARE
    v_paused boolean;
    v_has_sessions boolean;
    v_due boolean;
    v_session_due boolean;
    v_sessions boolean;
    v_names text[];
    v_allow integer[];
    v_ids uuid[];
    -- The jobs taken between steps: they run, but are no start.
    v_between uuid[];
    -- The sessions of the jobs started, and their leases' tokens.
    v_sq text[];
    v_ss text[];
    v_sn integer[];
    v_st bigint[];
BEGIN
    SELECT paused, has_sessions INTO v_paused, v_has_sessions FROM queues WHERE name = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown queue %', p_queue USING ERRCODE = 'WQ001';
    END IF;
    IF v_paused OR p_limit <= 0 THEN
        RETURN;
    END IF;
    -- A queue that never had a session claims as it did before sessions.
    IF NOT v_has_sessions THEN
        v_due := EXISTS (SELECT 1 FROM heads
                         WHERE queue = p_queue AND NOT ready AND session IS NULL
                           AND run_at <= p_now);
    ELSE
        SELECT EXISTS (SELECT 1 FROM heads
                       WHERE queue = p_queue AND NOT ready AND session IS NULL
                         AND run_at <= p_now),
               EXISTS (SELECT 1 FROM heads
                       WHERE queue = p_queue AND NOT ready AND session IS NOT NULL
                         AND run_at <= p_now)
               OR EXISTS (SELECT 1 FROM sessions
                          WHERE queue = p_queue AND state = 1 AND next_start <= p_now),
               EXISTS (SELECT 1 FROM sessions WHERE queue = p_queue AND state = 2)
        INTO v_due, v_session_due, v_sessions;
    END IF;
    IF v_due THEN
        PERFORM wq_promote(p_queue, p_now, 1000);
    END IF;
    IF v_session_due THEN
        PERFORM wq_promote_sessions(p_queue, p_now, 1000);
        v_sessions := true;
    END IF;

    -- The sessions that may start a job, SKIP LOCKED: a session another
    -- claim holds is its to start.
    IF v_sessions THEN
        SELECT array_agg(x.session), array_agg(x.allow)
        INTO v_names, v_allow
        FROM (SELECT s.session,
                     least(p_limit, coalesce(s.max_running - s.running, p_limit),
                           CASE WHEN s.rate_starts IS NULL THEN p_limit ELSE 1 END) AS allow
              FROM sessions s
              WHERE s.queue = p_queue AND s.state = 2
              ORDER BY s.front_priority, s.front_fresh, s.front_run_at, s.front_seq
              LIMIT p_limit
              FOR UPDATE SKIP LOCKED) x;
    END IF;

    IF v_names IS NULL THEN
        -- No session to start: the one index, as before sessions.
        RETURN QUERY
        WITH picked AS (
            DELETE FROM heads h
            WHERE h.id = ANY(ARRAY(
                SELECT id FROM heads
                WHERE queue = p_queue AND ready AND session IS NULL
                ORDER BY priority, fresh, run_at, seq
                LIMIT p_limit
                FOR UPDATE SKIP LOCKED))
            RETURNING h.id
        )
        UPDATE jobs j
        SET state = 2, attempt = j.attempt + 1, lease_token = nextval('lease_tokens'),
            lease_expires_at = p_lease_until, lease_worker = p_worker,
            lease_started_at = p_now, updated_at = p_now
        FROM picked
        WHERE j.id = picked.id
        RETURNING j.*;
        RETURN;
    END IF;

    -- Holding sessions, this claim must wait for no lock: heads and their
    -- jobs are taken SKIP LOCKED together.
    SELECT coalesce(array_agg(c.id ORDER BY c.priority, c.fresh, c.run_at, c.seq), '{}'),
           coalesce(array_agg(c.id) FILTER (WHERE NOT c.fresh), '{}')
    INTO v_ids, v_between
    FROM (
        SELECT c.id, c.priority, c.fresh, c.run_at, c.seq FROM (
            SELECT c.id, c.priority, c.fresh, c.run_at, c.seq FROM (
                SELECT h.id, h.priority, h.fresh, h.run_at, h.seq
                FROM heads h JOIN jobs j ON j.id = h.id
                WHERE h.queue = p_queue AND h.ready AND h.session IS NULL
                ORDER BY h.priority, h.fresh, h.run_at, h.seq
                LIMIT p_limit
                FOR UPDATE OF h, j SKIP LOCKED) c
            UNION ALL
            SELECT x.id, x.priority, x.fresh, x.run_at, x.seq
            FROM unnest(v_names, v_allow) AS t(name, allow)
            CROSS JOIN LATERAL (
                SELECT h.id, h.priority, h.fresh, h.run_at, h.seq
                FROM heads h JOIN jobs j ON j.id = h.id
                WHERE h.queue = p_queue AND h.session = t.name AND h.session IS NOT NULL
                  AND h.ready
                ORDER BY h.priority, h.fresh, h.run_at, h.seq
                LIMIT t.allow
                FOR UPDATE OF h, j SKIP LOCKED) x
        ) c
        ORDER BY c.priority, c.fresh, c.run_at, c.seq
        LIMIT p_limit) c;
    RETURN QUERY
    WITH picked AS (
        DELETE FROM heads h WHERE h.id = ANY(v_ids) RETURNING h.id
    )
    UPDATE jobs j
    SET state = 2, attempt = j.attempt + 1, lease_token = nextval('lease_tokens'),
        lease_expires_at = p_lease_until, lease_worker = p_worker,
            lease_started_at = p_now, updated_at = p_now
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.*;
    -- Each start counts, and under a rate (one job per claim) pushes the
    -- next one back (see wq_sessions_apply); a job between steps runs but
    -- is no start. Every session started from is one this claim locked
    -- above: no lock is taken again.
    SELECT array_agg(t.q ORDER BY t.s), array_agg(t.s ORDER BY t.s),
           array_agg(t.n ORDER BY t.s), array_agg(t.token ORDER BY t.s)
    INTO v_sq, v_ss, v_sn, v_st
    FROM (SELECT j.queue AS q, j.session AS s, -count(*)::integer AS n,
                 max(j.lease_token) FILTER (WHERE NOT j.id = ANY(v_between)) AS token
          FROM unnest(v_ids) AS i(id)
          CROSS JOIN LATERAL (SELECT id, queue, session, lease_token
                              FROM jobs WHERE id = i.id) j
          WHERE j.session IS NOT NULL
          GROUP BY j.queue, j.session) t;
    IF v_sq IS NOT NULL THEN
        PERFORM wq_sessions_apply(v_sq, v_ss, v_sn, v_st, p_now);
    END IF;
END $$;

-- Makes jobs that head their groups (or have none) claimable, all at once:
-- available if due, scheduled otherwise, leases cleared; wakes their queues.
-- Those in p_between wait between steps (their heads are not fresh): the
-- caller knows, so the jobs' histories are not read on this path.
CREATE FUNCTION wq_place_all(p_ids uuid[], p_between uuid[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_queues text[];
BEGIN
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    -- Jobs an acknowledgement put back keep its token (see `ack`).
    WITH placed AS (
        UPDATE jobs
        SET state = CASE WHEN run_at <= p_now THEN 1 ELSE 0 END, updated_at = p_now,
            lease_expires_at = NULL, lease_worker = NULL, lease_started_at = NULL
        WHERE id = ANY(p_ids)
        RETURNING id, queue, group_key, session, priority, run_at, seq, state
    ), headed AS (
        INSERT INTO heads (id, queue, group_key, session, priority, run_at, seq, fresh, ready)
        SELECT id, queue, group_key, session, priority, run_at, seq, NOT id = ANY(p_between),
               state = 1
        FROM placed
        RETURNING queue
    )
    SELECT array_agg(DISTINCT queue) INTO v_queues FROM headed;
    PERFORM pg_notify('wq:' || current_schema(), q) FROM unnest(v_queues) AS t(q);
END $$;

-- Applies a batch of acknowledgements, each checked against its fencing
-- token and lease expiry, set by set: every valid acknowledgement is for a
-- running job, which heads its group, so groups move on together at the end.
-- Returns one row per input: its position, the outcome and the new state.
CREATE FUNCTION ack(p_ids uuid[], p_tokens bigint[], p_actions smallint[],
                    p_run_ats timestamptz[], p_messages text[], p_outputs text[],
                    p_now timestamptz)
RETURNS SETOF job_result
LANGUAGE plpgsql AS $$
DECLARE
    v_ord integer[];
    v_outcome smallint[];
    v_fate smallint[];
    v_finished uuid[];
    v_requeued uuid[];
    v_next uuid[];
    -- Next heads that must wait out their group's gap, and until when.
    v_gap_ids uuid[];
    v_gap_untils timestamptz[];
    v_empty_queues text[];
    v_empty_groups text[];
    v_grouped boolean;
    v_drop boolean;
    v_gapped boolean;
    -- Finished jobs kept, by queue and state; the queues of all finished.
    v_cq text[];
    v_cs smallint[];
    v_fq text[];
    -- Sessions of the jobs that left running, and of the next heads.
    v_sq text[];
    v_ss text[];
    v_nq text[];
    v_ns text[];
    r job_result;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    -- Lock the batch's groups before its jobs. A job that ends below and the
    -- group's next head, chosen after it, are then decided under the group's
    -- lock by statements that see every enqueue committed into the group.
    PERFORM wq_lock_groups_of(p_ids);
    -- Lock the jobs, in id order, and judge each acknowledgement against its
    -- job. Fates: 3 completed, 4 dead, 5 cancelled, -1 back in line (retry,
    -- defer, release, continue), -2 a repeat. A job keeps the token of the
    -- last acknowledgement applied to it until it is claimed, rescued or
    -- revived from the dead-letter queue, so
    -- the same acknowledgement sent again (its reply was lost) answers applied,
    -- with the job's state now, and changes nothing.
    SELECT array_agg(inp.ord::integer ORDER BY inp.ord),
           array_agg(v.outcome ORDER BY inp.ord),
           array_agg(f.fate ORDER BY inp.ord),
           coalesce(array_agg(inp.id) FILTER (WHERE f.fate IN (3, 4, 5)), '{}'),
           coalesce(array_agg(inp.id) FILTER (WHERE f.fate = -1), '{}'),
           coalesce(bool_or(f.fate IN (3, 4, 5) AND j.group_key IS NOT NULL), false),
           coalesce(bool_or(f.fate IN (3, 5) AND j.cfg[1] = 0), false),
           coalesce(bool_or(f.fate IN (3, 4, 5) AND j.group_key IS NOT NULL AND j.cfg[2] > 0),
                    false),
           array_agg(j.queue) FILTER (WHERE f.fate <> -2 AND j.session IS NOT NULL),
           array_agg(j.session) FILTER (WHERE f.fate <> -2 AND j.session IS NOT NULL),
           -- Finished and kept (a queue that keeps no completed job drops
           -- its completed and cancelled ones below): counted.
           array_agg(j.queue) FILTER (WHERE f.fate = 4 OR (f.fate IN (3, 5) AND j.cfg[1] <> 0)),
           array_agg(f.fate) FILTER (WHERE f.fate = 4 OR (f.fate IN (3, 5) AND j.cfg[1] <> 0)),
           -- Every job finished, kept or not: what only grows (state 9).
           array_agg(j.queue) FILTER (WHERE f.fate IN (3, 4, 5))
    INTO v_ord, v_outcome, v_fate, v_finished, v_requeued, v_grouped, v_drop, v_gapped,
         v_sq, v_ss, v_cq, v_cs, v_fq
    FROM unnest(p_ids, p_tokens, p_actions) WITH ORDINALITY AS inp(id, token, action, ord)
    -- Only running jobs are locked: a stale worker's acknowledgement of a
    -- job that waits again must not hold its row, which a claim may be
    -- about to take while holding other rows.
    LEFT JOIN (
        SELECT id, queue, group_key, session, state, lease_token, lease_expires_at,
               cancel_requested, attempt, max_attempts,
               -- What the queue keeps of finished jobs, and its group gap.
               (SELECT ARRAY[(q.config->'retention'->>'completed')::bigint,
                             coalesce((q.config->>'group_gap')::bigint, 0)]
                FROM queues q WHERE q.name = jobs.queue) AS cfg
        FROM jobs WHERE id = ANY(p_ids) AND state = 2
        ORDER BY id
        FOR UPDATE
    ) j ON j.id = inp.id
    -- The others, unlocked: a repeat, a stale token, or no such job. One
    -- that was running when this statement began but no longer is by the
    -- time its lock came changed under it: stale.
    LEFT JOIN LATERAL (
        SELECT o.state, o.lease_token FROM jobs o WHERE o.id = inp.id AND j.id IS NULL
    ) o ON true
    CROSS JOIN LATERAL (
        SELECT CASE WHEN j.id IS NULL AND o.state IS NULL THEN 2
                    WHEN j.id IS NULL AND o.state <> 2 AND o.lease_token = inp.token THEN 0
                    WHEN j.id IS NULL OR j.lease_token IS DISTINCT FROM inp.token
                         OR j.lease_expires_at <= p_now THEN 1
                    ELSE 0 END::smallint AS outcome) v
    CROSS JOIN LATERAL (
        SELECT CASE WHEN v.outcome <> 0 THEN NULL
                    WHEN j.id IS NULL THEN -2
                    WHEN inp.action = 0 THEN 3
                    WHEN j.cancel_requested THEN 5
                    WHEN inp.action = 3 OR (inp.action = 1 AND j.attempt >= j.max_attempts) THEN 4
                    ELSE -1 END::smallint AS fate) f;

    -- An acknowledgement whose job changed while this call waited for its
    -- lock was judged against the statement's older snapshot, as stale. A
    -- new statement sees the change: if a copy of this acknowledgement made
    -- it (the job left running under this token), it answers applied, as
    -- a repeat. Only when something was judged stale.
    IF 1 = ANY(v_outcome) THEN
        SELECT array_agg(CASE WHEN v_outcome[i] = 1 AND o.state <> 2
                                   AND o.lease_token = p_tokens[i]
                              THEN 0 ELSE v_outcome[i] END::smallint ORDER BY i),
               array_agg(CASE WHEN v_outcome[i] = 1 AND o.state <> 2
                                   AND o.lease_token = p_tokens[i]
                              THEN -2 ELSE v_fate[i] END::smallint ORDER BY i)
        INTO v_outcome, v_fate
        FROM generate_subscripts(p_ids, 1) AS i
        LEFT JOIN jobs o ON o.id = p_ids[i];
    END IF;

    -- Updates below find their rows by `id = ANY(...)` (index lookups) and
    -- their values by position in the request. Steps with nothing to do are
    -- skipped: starting a statement costs the server more than running a
    -- one-row one, and a turn typically acknowledges a job or two.

    -- Every run that ends here leaves its record in the job's history: its
    -- message is the failure or the reason to wait (actions 1 to 3), never
    -- a step.

    -- Terminal ones.
    UPDATE jobs j
    SET state = v_fate[array_position(p_ids, j.id)], finished_at = p_now, updated_at = p_now,
        lease_expires_at = NULL, lease_worker = NULL, lease_started_at = NULL,
        last_error = CASE WHEN v_fate[array_position(p_ids, j.id)] = 4
                          THEN coalesce(p_messages[array_position(p_ids, j.id)], j.last_error)
                          -- A completed job's earlier failure no longer describes it.
                          WHEN v_fate[array_position(p_ids, j.id)] = 3 THEN NULL
                          ELSE j.last_error END,
        output = CASE WHEN v_fate[array_position(p_ids, j.id)] = 3
                      THEN p_outputs[array_position(p_ids, j.id)] END,
        history = wq_history(j.history, j.attempt, j.lease_started_at, p_now, j.lease_worker,
                             CASE v_fate[array_position(p_ids, j.id)]
                                 WHEN 3 THEN 'completed' WHEN 4 THEN 'dead'
                                 ELSE 'cancelled' END,
                             CASE WHEN p_actions[array_position(p_ids, j.id)] IN (1, 2, 3)
                                  THEN p_messages[array_position(p_ids, j.id)] END)
    WHERE j.id = ANY(v_finished);

    IF v_fq IS NOT NULL THEN
        PERFORM wq_count_finished(coalesce(v_cq, '{}') || v_fq,
                                  coalesce(v_cs, '{}')
                                  || array_fill(9::smallint, ARRAY[cardinality(v_fq)]), 1);
    END IF;

    -- Back in line: the attempt is spent (retry) or given back (defer, release,
    -- continue, whose message is the step).
    IF cardinality(v_requeued) > 0 THEN
        UPDATE jobs j
        SET run_at = coalesce(p_run_ats[array_position(p_ids, j.id)], j.run_at),
            last_error = CASE WHEN p_actions[array_position(p_ids, j.id)] = 5 THEN j.last_error
                              ELSE coalesce(p_messages[array_position(p_ids, j.id)], j.last_error)
                         END,
            step = CASE WHEN p_actions[array_position(p_ids, j.id)] = 5
                        THEN p_messages[array_position(p_ids, j.id)] ELSE j.step END,
            attempt = CASE WHEN p_actions[array_position(p_ids, j.id)] IN (2, 4, 5)
                           THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
            history = wq_history(j.history, j.attempt, j.lease_started_at, p_now,
                                 j.lease_worker,
                                 CASE p_actions[array_position(p_ids, j.id)]
                                     WHEN 1 THEN 'retried' WHEN 2 THEN 'deferred'
                                     WHEN 4 THEN 'released' ELSE 'continued' END,
                                 CASE WHEN p_actions[array_position(p_ids, j.id)] IN (1, 2)
                                      THEN p_messages[array_position(p_ids, j.id)] END)
        WHERE j.id = ANY(v_requeued);
    END IF;

    -- Groups whose head finished (locked since the start; LATERAL keeps
    -- each a key lookup): a dead head of a holding queue holds its group;
    -- every other group moves on to its next job, or is forgotten when
    -- nothing is left and neither its chain nor its gap lies ahead. This
    -- statement began after the locks were granted, so it sees every job
    -- stored into the group.
    v_next := '{}';
    IF v_grouped THEN
        IF 4 = ANY(v_fate) THEN
            UPDATE groups g SET held_by = j.id
            FROM jobs j JOIN queues q ON q.name = j.queue
            WHERE j.id = ANY(ARRAY(SELECT p_ids[i] FROM generate_subscripts(p_ids, 1) AS i
                                   WHERE v_fate[i] = 4))
              AND q.config->>'on_dead' = 'hold'
              AND g.queue = j.queue AND g.group_key = j.group_key;
        END IF;
        SELECT coalesce(array_agg(n.id) FILTER (WHERE n.id IS NOT NULL), '{}'),
               coalesce(array_agg(f.queue) FILTER (WHERE n.id IS NULL AND g.held_by IS NULL), '{}'),
               coalesce(array_agg(f.group_key) FILTER (WHERE n.id IS NULL AND g.held_by IS NULL), '{}'),
               array_agg(n.queue) FILTER (WHERE n.session IS NOT NULL),
               array_agg(n.session) FILTER (WHERE n.session IS NOT NULL),
               array_agg(n.id) FILTER (WHERE n.id IS NOT NULL AND u.gap_until IS NOT NULL),
               array_agg(u.gap_until) FILTER (WHERE n.id IS NOT NULL AND u.gap_until IS NOT NULL)
        INTO v_next, v_empty_queues, v_empty_groups, v_nq, v_ns, v_gap_ids, v_gap_untils
        -- The gap from a subquery, not `wq_group_gap`: a call to an SQL
        -- function that reads a table costs more than the rest of the row.
        FROM (SELECT queue, group_key,
                     CASE WHEN v_gapped
                          THEN (SELECT coalesce((q.config->>'group_gap')::bigint, 0)
                                FROM queues q WHERE q.name = jobs.queue)
                          ELSE 0 END AS gap_ms
              FROM jobs
              WHERE id = ANY(v_finished) AND group_key IS NOT NULL
              ORDER BY queue, group_key) f
        CROSS JOIN LATERAL (
            SELECT held_by, gap_until FROM groups g
            WHERE g.queue = f.queue AND g.group_key = f.group_key) g
        LEFT JOIN LATERAL (
            SELECT w.id, w.queue, w.session FROM jobs w
            WHERE w.queue = f.queue AND w.group_key = f.group_key AND w.state < 3
            ORDER BY w.seq LIMIT 1) n ON g.held_by IS NULL
        CROSS JOIN LATERAL (
            SELECT CASE WHEN f.gap_ms > 0
                        THEN greatest(g.gap_until, p_now + f.gap_ms * interval '1 millisecond')
                        ELSE g.gap_until END AS gap_until) u;
        -- Groups of queues with a gap that moved on remember it, and their
        -- next heads wait it out.
        IF v_gap_ids IS NOT NULL THEN
            UPDATE jobs SET run_at = greatest(run_at, v_gap_untils[array_position(v_gap_ids, id)])
            WHERE id = ANY(v_gap_ids);
        END IF;
        IF v_gapped THEN
            UPDATE groups g
            SET gap_until = greatest(g.gap_until, p_now + wq_group_gap(j.queue))
            FROM jobs j
            WHERE j.id = ANY(v_finished) AND j.group_key IS NOT NULL
              AND g.queue = j.queue AND g.group_key = j.group_key AND g.held_by IS NULL
              AND wq_group_gap(j.queue) > interval '0';
        END IF;
        FOR i IN 1 .. cardinality(v_empty_queues) LOOP
            DELETE FROM groups
            WHERE queue = v_empty_queues[i] AND group_key = v_empty_groups[i]
              AND held_by IS NULL AND last_run_at <= p_now
              AND (gap_until IS NULL OR gap_until <= p_now);
        END LOOP;
    END IF;
    -- Completed and cancelled jobs of zero-retention queues leave at once.
    -- The fates pick them, not a `state` predicate: with one, a generic plan
    -- may walk every finished job through `jobs_finished` on each call.
    IF v_drop THEN
        DELETE FROM jobs j USING queues q
        WHERE j.id = ANY(ARRAY(SELECT p_ids[i] FROM generate_subscripts(p_ids, 1) AS i
                               WHERE v_fate[i] IN (3, 5)))
          AND q.name = j.queue
          AND (q.config->'retention'->>'completed')::bigint = 0;
    END IF;
    IF cardinality(v_requeued) + cardinality(v_next) > 0 THEN
        -- Those that ended a step wait between steps; every other one
        -- (a retry, a wait, a release, a group's next job) is fresh.
        PERFORM wq_place_all(v_requeued || v_next,
                             ARRAY(SELECT p_ids[i] FROM generate_subscripts(p_ids, 1) AS i
                                   WHERE v_fate[i] = -1 AND p_actions[i] = 5),
                             p_now);
    END IF;
    -- Sessions last: a job that left running frees its session's slot, a
    -- head placed may change its session's front.
    IF v_sq IS NOT NULL OR v_nq IS NOT NULL THEN
        PERFORM wq_sessions_sync(coalesce(v_sq, '{}') || coalesce(v_nq, '{}'),
                                 coalesce(v_ss, '{}') || coalesce(v_ns, '{}'),
                                 array_fill(1, ARRAY[coalesce(cardinality(v_sq), 0)]), NULL, NULL,
                                 NULL, NULL);
    END IF;

    FOR i IN 1 .. cardinality(p_ids) LOOP
        r := NULL;
        r.ord := v_ord[i];
        r.outcome := v_outcome[i];
        r.state := v_fate[i];
        IF v_fate[i] < 0 THEN
            SELECT state INTO r.state FROM jobs WHERE id = p_ids[i];
        END IF;
        RETURN NEXT r;
    END LOOP;
END $$;

-- When a queue's next job is due: `p_now` if a head without a session or
-- a session may start one now; else the earliest scheduled head's run_at
-- or session's `next_start` (a session that is paused or full counts only
-- once it may start again, which wakes the workers); NULL when nothing
-- waits or the queue is paused. No row for an unknown queue.
CREATE FUNCTION next_due(p_queue text, p_now timestamptz) RETURNS TABLE (due timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT CASE
               WHEN q.paused THEN NULL
               WHEN EXISTS (SELECT 1 FROM heads
                            WHERE queue = p_queue AND ready AND session IS NULL)
                    OR (q.has_sessions
                        AND EXISTS (SELECT 1 FROM sessions WHERE queue = p_queue AND state = 2))
                   THEN p_now
               WHEN NOT q.has_sessions
                   THEN (SELECT min(run_at) FROM heads
                         WHERE queue = p_queue AND NOT ready AND session IS NULL)
               -- A session whose next start has passed is as good as ready.
               ELSE least((SELECT min(run_at) FROM heads
                           WHERE queue = p_queue AND NOT ready AND session IS NULL),
                          (SELECT min(run_at) FROM heads
                           WHERE queue = p_queue AND NOT ready AND session IS NOT NULL),
                          (SELECT greatest(min(next_start), p_now) FROM sessions
                           WHERE queue = p_queue AND state = 1 HAVING count(*) > 0))
           END
    FROM queues q WHERE q.name = p_queue
$$;

-- Acknowledges a batch, then claims: what a worker does after a batch of
-- attempts, in one round trip and one transaction.
--
-- A transaction that claims nothing commits without waiting for the WAL
-- flush: a server crash may then lose its acknowledgements, and those jobs,
-- still leased from their durable claim, are rescued and run again, as after
-- a worker crash. A claim always waits for the flush, so that a job never
-- runs under a claim the server forgot.
CREATE FUNCTION ack_and_claim(p_ids uuid[], p_tokens bigint[], p_actions smallint[],
                              p_run_ats timestamptz[], p_messages text[], p_outputs text[],
                              p_now timestamptz,
                              p_queue text, p_limit integer, p_lease_until timestamptz,
                              p_worker text)
RETURNS SETOF job_result
LANGUAGE plpgsql AS $$
DECLARE
    v_claimed bigint := 0;
    v_next job_result;
BEGIN
    RETURN QUERY SELECT * FROM ack(p_ids, p_tokens, p_actions, p_run_ats, p_messages, p_outputs,
                                   p_now);
    IF p_queue IS NOT NULL THEN
        RETURN QUERY
        SELECT NULL::integer, NULL::smallint, c.*
        FROM claim(p_queue, p_limit, p_now, p_lease_until, p_worker) c;
        GET DIAGNOSTICS v_claimed = ROW_COUNT;
        -- A short claim also answers when to look again (outcome 2, in
        -- run_at; NULL when nothing waits or the queue is paused), saving
        -- the worker a round trip.
        IF v_claimed < p_limit THEN
            v_next.outcome := 2;
            SELECT d.due INTO v_next.run_at FROM next_due(p_queue, p_now) AS d;
            RETURN NEXT v_next;
        END IF;
    END IF;
    -- Nothing claimed: only acknowledgements, which may commit without
    -- waiting for the flush (see docs/postgres.md).
    IF v_claimed = 0 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END $$;

-- Extends leases still held under their tokens. Returns one row per input.
CREATE FUNCTION extend(p_ids uuid[], p_tokens bigint[], p_until timestamptz, p_now timestamptz)
RETURNS TABLE (ord integer, outcome smallint)
LANGUAGE sql AS $$
    WITH input AS (
        SELECT * FROM unnest(p_ids, p_tokens) WITH ORDINALITY AS t(id, token, ord)
    ), locked AS (
        -- In id order, as every function locks jobs, so that a heartbeat and
        -- an acknowledgement of the same jobs cannot deadlock; running jobs
        -- only: a stale worker still heartbeating a job that was rescued
        -- and waits again must not lock it (a cancel or the group's next
        -- acknowledgement may be about to take that row).
        SELECT id FROM jobs WHERE id = ANY(p_ids) AND state = 2 ORDER BY id FOR UPDATE
    ), extended AS (
        UPDATE jobs j SET lease_expires_at = p_until
        FROM input
        WHERE j.id = input.id AND j.state = 2 AND j.lease_token = input.token
          AND j.lease_expires_at > p_now
          AND j.id = ANY(ARRAY(SELECT id FROM locked))
        RETURNING j.id, j.lease_token, j.cancel_requested
    )
    -- Matched on the token too: a stale lease on a job its holder claimed
    -- again must still answer "lost".
    SELECT input.ord::integer,
           CASE WHEN e.id IS NULL THEN 2 WHEN e.cancel_requested THEN 1 ELSE 0 END::smallint
    FROM input LEFT JOIN extended e ON e.id = input.id AND e.lease_token = input.token
    ORDER BY input.ord
$$;

-- Takes back up to p_limit jobs whose lease lapsed: cancelled if that was
-- asked, dead if no attempt is left, available again otherwise. Returns a
-- row per job taken back: its id, queue and the state it is in now.
CREATE FUNCTION rescue(p_now timestamptz, p_limit integer)
RETURNS TABLE (id uuid, queue text, state smallint)
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    v_ids uuid[];
    v_lapsed constant text := 'lease expired: the worker stopped heartbeating (crashed or stalled)';
    -- Sessions of the jobs rescued, and the groups that may have a new head.
    v_sq text[] := '{}';
    v_ss text[] := '{}';
    v_gq text[] := '{}';
    v_gk text[] := '{}';
BEGIN
    -- The lapsed jobs, unlocked; then their groups, in order; then each job,
    -- skipped if another transaction holds it and rechecked under the lock.
    v_ids := ARRAY(SELECT x.id FROM jobs x
                   WHERE x.state = 2 AND x.lease_expires_at <= p_now
                   ORDER BY x.id
                   LIMIT p_limit);
    IF cardinality(v_ids) = 0 THEN
        RETURN;
    END IF;
    PERFORM wq_lock_groups_of(v_ids);
    FOR j IN
        SELECT * FROM jobs x
        WHERE x.id = ANY(v_ids)
        ORDER BY x.id
        FOR UPDATE SKIP LOCKED
    LOOP
        CONTINUE WHEN j.state <> 2 OR j.lease_expires_at > p_now;
        IF j.session IS NOT NULL THEN
            v_sq := v_sq || j.queue;
            v_ss := v_ss || j.session;
        END IF;
        IF j.group_key IS NOT NULL THEN
            v_gq := v_gq || j.queue;
            v_gk := v_gk || j.group_key;
        END IF;
        id := j.id;
        queue := j.queue;
        UPDATE jobs x
        SET history = wq_history(x.history, x.attempt, x.lease_started_at, p_now,
                                 x.lease_worker, 'lapsed', v_lapsed)
        WHERE x.id = j.id;
        IF j.cancel_requested THEN
            PERFORM wq_finish(j.id, 5::smallint, NULL, p_now);
            state := 5;
        ELSIF j.attempt >= j.max_attempts THEN
            PERFORM wq_finish(j.id, 4::smallint, v_lapsed, p_now);
            state := 4;
        ELSE
            UPDATE jobs x SET last_error = v_lapsed WHERE x.id = j.id;
            state := wq_place(j.id, p_now);
        END IF;
        RETURN NEXT;
    END LOOP;
    PERFORM wq_sessions_sync(v_sq, v_ss, array_fill(1, ARRAY[cardinality(v_sq)]), NULL, v_gq,
                             v_gk, NULL);
END $$;

-- Cancels a waiting job at once, or asks a running one to stop. Returns one
-- row: the outcome and the job as it is now.
CREATE FUNCTION cancel(p_id uuid, p_now timestamptz) RETURNS SETOF job_result
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    now_row jobs;
    r job_result;
    v_outcome smallint := 0;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_id;
    IF NOT FOUND THEN
        r.ord := 1;
        r.outcome := 2;
        RETURN NEXT r;
        RETURN;
    END IF;
    IF j.group_key IS NOT NULL THEN
        PERFORM wq_lock_group(j.queue, j.group_key);
    END IF;
    DELETE FROM heads WHERE id = p_id;
    SELECT * INTO j FROM jobs WHERE id = p_id FOR UPDATE;
    IF j.state = 2 THEN
        UPDATE jobs SET cancel_requested = true, updated_at = p_now WHERE id = p_id
        RETURNING * INTO j;
    ELSIF j.state < 2 THEN
        PERFORM wq_finish(p_id, 5::smallint, NULL, p_now);
        -- A zero-retention queue has dropped the job already: show what it was.
        SELECT * INTO now_row FROM jobs WHERE id = p_id;
        IF FOUND THEN
            j := now_row;
        ELSE
            j.state := 5;
            j.finished_at := p_now;
            j.updated_at := p_now;
        END IF;
    ELSE
        v_outcome := 1;
    END IF;
    -- The job's session lost a head, the group's may have gained one.
    IF v_outcome = 0 AND j.state <> 2 THEN
        PERFORM wq_sessions_sync(ARRAY[j.queue], ARRAY[j.session], NULL, NULL, ARRAY[j.queue],
                                 ARRAY[j.group_key], NULL);
    END IF;
    RETURN QUERY SELECT 1, v_outcome, (j).*;
END $$;

-- The dead jobs an operation names: every one of a queue, or the given ids.
CREATE FUNCTION wq_dead_ids(p_queue text, p_ids uuid[]) RETURNS uuid[]
LANGUAGE plpgsql AS $$
BEGIN
    IF p_ids IS NULL THEN
        RETURN ARRAY(SELECT id FROM jobs WHERE queue = p_queue AND state = 4);
    END IF;
    -- A lookup per id: a generic plan for `id = ANY(...) AND state = 4`
    -- may walk every finished job through `jobs_finished` instead.
    RETURN ARRAY(SELECT i.id FROM unnest(p_ids) AS i(id)
                 WHERE (SELECT state FROM jobs WHERE id = i.id) = 4);
END $$;

-- Makes dead jobs available again with fresh attempts: in place when the
-- job still holds its group, at the back of its group otherwise.
CREATE FUNCTION retry_dead(p_queue text, p_ids uuid[], p_now timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    -- The queue of each job revived: a dead job fewer each.
    v_revived text[] := '{}';
    d jobs;
    j jobs;
    g groups;
    v_count integer := 0;
    v_sq text[] := '{}';
    v_ss text[] := '{}';
BEGIN
    FOR d IN
        SELECT * FROM jobs
        WHERE id = ANY(wq_dead_ids(p_queue, p_ids))
        ORDER BY queue, group_key, seq
    LOOP
        g := NULL;
        IF d.group_key IS NOT NULL THEN
            g := wq_lock_group(d.queue, d.group_key);
        END IF;
        SELECT * INTO j FROM jobs WHERE id = d.id AND state = 4 FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        UPDATE jobs
        SET attempt = 0, cancel_requested = false, run_at = p_now, finished_at = NULL,
            lease_token = NULL, step = NULL,
            state = 1, updated_at = p_now
        WHERE id = j.id;
        IF j.group_key IS NULL THEN
            PERFORM wq_place(j.id, p_now);
        ELSIF g.held_by = j.id THEN
            UPDATE groups SET held_by = NULL WHERE queue = j.queue AND group_key = j.group_key;
            PERFORM wq_place(j.id, p_now);
        ELSE
            UPDATE jobs SET seq = nextval('job_seq') WHERE id = j.id;
            IF g.held_by IS NULL AND NOT EXISTS (
                SELECT 1 FROM jobs
                WHERE queue = j.queue AND group_key = j.group_key AND state < 3 AND id <> j.id)
            THEN
                -- The head of an empty group waits out its gap.
                IF g.gap_until IS NOT NULL THEN
                    UPDATE jobs SET run_at = greatest(run_at, g.gap_until) WHERE id = j.id;
                END IF;
                PERFORM wq_place(j.id, p_now);
            END IF;
        END IF;
        IF j.session IS NOT NULL THEN
            v_sq := v_sq || j.queue;
            v_ss := v_ss || j.session;
        END IF;
        v_count := v_count + 1;
        v_revived := v_revived || j.queue;
    END LOOP;
    PERFORM wq_count_finished(v_revived, array_fill(4::smallint, ARRAY[cardinality(v_revived)]), -1);
    PERFORM wq_sessions_sync(v_sq, v_ss, NULL, NULL, NULL, NULL, NULL);
    RETURN v_count;
END $$;

-- Deletes dead jobs; groups they held move on.
CREATE FUNCTION purge_dead(p_queue text, p_ids uuid[], p_now timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d jobs;
    v_count integer := 0;
    v_gq text[] := '{}';
    v_gk text[] := '{}';
BEGIN
    FOR d IN
        SELECT * FROM jobs
        WHERE id = ANY(wq_dead_ids(p_queue, p_ids))
        ORDER BY queue, group_key, seq
    LOOP
        v_count := v_count + wq_purge(d.id, p_now);
        IF d.group_key IS NOT NULL THEN
            v_gq := v_gq || d.queue;
            v_gk := v_gk || d.group_key;
        END IF;
    END LOOP;
    -- A group a purged head held has a new head, maybe of a session.
    PERFORM wq_sessions_sync(NULL, NULL, NULL, NULL, v_gq, v_gk, NULL);
    RETURN v_count;
END $$;

-- Deletes up to p_limit finished jobs past their queue's retention.
CREATE FUNCTION prune(p_now timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    q queues;
    d record;
    v_left integer := p_limit;
    v_gone integer;
    v_gq text[] := '{}';
    v_gk text[] := '{}';
BEGIN
    FOR q IN SELECT * FROM queues ORDER BY name LOOP
        EXIT WHEN v_left <= 0;
        WITH gone AS (
            DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                WHERE queue = q.name AND state IN (3, 5)
                  AND finished_at <= p_now - (q.config->'retention'->>'completed')::bigint
                                             * interval '1 millisecond'
                ORDER BY finished_at
                LIMIT v_left)
            RETURNING state
        ), counted AS (
            INSERT INTO finished_counts (queue, state, n)
            SELECT q.name, state, -count(*) FROM gone GROUP BY state
            RETURNING -n AS n
        )
        SELECT coalesce(sum(n), 0) INTO v_gone FROM counted;
        v_left := v_left - v_gone;
        -- Dead jobs one at a time: a dead head may hold its group. The
        -- oldest ones, taken in group order, as every function locks groups.
        FOR d IN
            SELECT x.id, x.group_key FROM (
                SELECT id, group_key FROM jobs
                WHERE queue = q.name AND state = 4
                  AND finished_at <= p_now - (q.config->'retention'->>'dead')::bigint
                                             * interval '1 millisecond'
                ORDER BY finished_at
                LIMIT greatest(v_left, 0)) x
            ORDER BY x.group_key, x.id
        LOOP
            v_left := v_left - wq_purge(d.id, p_now);
            IF d.group_key IS NOT NULL THEN
                v_gq := v_gq || q.name;
                v_gk := v_gk || d.group_key;
            END IF;
        END LOOP;
    END LOOP;
    PERFORM wq_sessions_sync(NULL, NULL, NULL, NULL, v_gq, v_gk, NULL);
    FOR q IN SELECT * FROM queues ORDER BY name LOOP
        PERFORM fold_counts(q.name);
    END LOOP;
    RETURN p_limit - v_left;
END $$;

-- Folds a queue's counted changes into one row per state. Rows inserted
-- meanwhile are not in this statement's snapshot: they stay. Two folds at
-- once are safe: the second waits for the first's deleted rows and skips
-- them. Called by `prune`, and by a count that found many rows.
CREATE FUNCTION fold_counts(p_queue text) RETURNS void
LANGUAGE sql AS $$
    WITH folded AS (
        DELETE FROM finished_counts WHERE queue = p_queue RETURNING state, n
    )
    INSERT INTO finished_counts (queue, state, n)
    SELECT p_queue, state, sum(n) FROM folded GROUP BY state HAVING sum(n) <> 0
$$;

-- Raises WQ001 (unknown queue) unless p_queue is declared.
CREATE FUNCTION wq_known_queue(p_queue text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM queues WHERE name = p_queue;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown queue %', p_queue USING ERRCODE = 'WQ001';
    END IF;
END $$;

-- Sets a session's limits (when p_limits) and changes its pause (when
-- p_change is given: 1 pause for p_reason, 2 the same unless paused, 3
-- resume, 4 resume only a pause for p_reason; see wq_core::PauseChange),
-- creating the session if needed, under its row lock; then brings its state
-- up to date for the claim. Returns whether the pause or its reason changed.
CREATE FUNCTION set_session(p_queue text, p_session text, p_limits boolean,
                            p_max_running integer, p_rate_starts integer, p_rate_per_us bigint,
                            p_rate_jitter_us bigint, p_change smallint, p_reason text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_was text;
    v_now text;
BEGIN
    PERFORM wq_known_queue(p_queue);
    INSERT INTO sessions AS s (queue, session, max_running, rate_starts, rate_per_us,
                               rate_jitter_us)
    VALUES (p_queue, p_session, p_max_running, p_rate_starts, p_rate_per_us, p_rate_jitter_us)
    ON CONFLICT (queue, session) DO UPDATE
    SET max_running = CASE WHEN p_limits THEN p_max_running ELSE s.max_running END,
        rate_starts = CASE WHEN p_limits THEN p_rate_starts ELSE s.rate_starts END,
        rate_per_us = CASE WHEN p_limits THEN p_rate_per_us ELSE s.rate_per_us END,
        rate_jitter_us = CASE WHEN p_limits THEN p_rate_jitter_us ELSE s.rate_jitter_us END
    RETURNING s.pause_reason INTO v_was;
    v_now := CASE p_change
                 WHEN 1 THEN p_reason
                 WHEN 2 THEN coalesce(v_was, p_reason)
                 WHEN 3 THEN NULL
                 WHEN 4 THEN CASE WHEN v_was = p_reason THEN NULL ELSE v_was END
                 ELSE v_was END;
    IF v_now IS DISTINCT FROM v_was THEN
        UPDATE sessions SET pause_reason = v_now, paused = v_now IS NOT NULL
        WHERE queue = p_queue AND session = p_session;
    END IF;
    UPDATE queues SET has_sessions = true WHERE name = p_queue AND NOT has_sessions;
    PERFORM wq_sessions_sync(ARRAY[p_queue], ARRAY[p_session], NULL, NULL, NULL, NULL, NULL);
    RETURN v_now IS DISTINCT FROM v_was;
END $$;


-- Sets a session's allowance (p_allowance: NULLs lift it) or its hold
-- (p_hold), creating its row if needed.
CREATE FUNCTION set_admissions(p_queue text, p_session text, p_allowance boolean,
                               p_new integer, p_per_us bigint, p_hold boolean,
                               p_held_until timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wq_known_queue(p_queue);
    INSERT INTO admissions AS a (queue, session, allowance_new, allowance_per_us, held_until)
    VALUES (p_queue, p_session, p_new, p_per_us, p_held_until)
    ON CONFLICT (queue, session) DO UPDATE
    SET allowance_new = CASE WHEN p_allowance THEN p_new ELSE a.allowance_new END,
        allowance_per_us = CASE WHEN p_allowance THEN p_per_us ELSE a.allowance_per_us END,
        held_until = CASE WHEN p_hold THEN p_held_until ELSE a.held_until END;
END $$;

-- Admits a session to a group at p_now (wq_core::Admissions::admit):
-- outcome 0 known, 1 admitted, 2 refused until `until`. A known group is
-- one index lookup; a new one is decided under the session's admissions
-- row lock, so two admissions racing for the last place admit one.
CREATE FUNCTION admit(p_queue text, p_session text, p_group text, p_now timestamptz)
RETURNS TABLE (outcome smallint, until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    a admissions;
    v_per interval;
    v_count integer;
    v_oldest timestamptz;
BEGIN
    PERFORM wq_known_queue(p_queue);
    IF EXISTS (SELECT 1 FROM admitted
               WHERE queue = p_queue AND session = p_session AND group_key = p_group) THEN
        RETURN QUERY SELECT 0::smallint, NULL::timestamptz;
        RETURN;
    END IF;
    INSERT INTO admissions (queue, session) VALUES (p_queue, p_session)
    ON CONFLICT (queue, session) DO NOTHING;
    SELECT * INTO a FROM admissions WHERE queue = p_queue AND session = p_session FOR UPDATE;
    -- Under the lock, a racing admission of the same group may be in.
    IF EXISTS (SELECT 1 FROM admitted
               WHERE queue = p_queue AND session = p_session AND group_key = p_group) THEN
        RETURN QUERY SELECT 0::smallint, NULL::timestamptz;
        RETURN;
    END IF;
    IF a.held_until > p_now THEN
        RETURN QUERY SELECT 2::smallint, a.held_until;
        RETURN;
    END IF;
    IF a.allowance_new IS NOT NULL THEN
        v_per := a.allowance_per_us * interval '1 microsecond';
        SELECT count(*), min(admitted_at) INTO v_count, v_oldest FROM admitted
        WHERE queue = p_queue AND session = p_session AND admitted_at > p_now - v_per;
        IF v_count >= a.allowance_new THEN
            RETURN QUERY SELECT 2::smallint, v_oldest + v_per;
            RETURN;
        END IF;
    END IF;
    INSERT INTO admitted (queue, session, group_key, admitted_at)
    VALUES (p_queue, p_session, p_group, p_now);
    RETURN QUERY SELECT 1::smallint, NULL::timestamptz;
END $$;
