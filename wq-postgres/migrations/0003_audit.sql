-- The audit of a queue's invariants (the `Audit` trait): every group with
-- waiting jobs has one head, its lowest unfinished sequence, claimable (a
-- `heads` row) or running; every running job has a lease the rescuer finds.
--
-- Anomaly kinds: 1 headless, 2 misplaced head, 3 unleased. A head of a
-- session is a claimable head like any other: it is in `heads`. The findings come
-- from one statement, so from one consistent snapshot; each repair locks the
-- group and checks again before it writes, since the snapshot may be stale.

-- Whether a job heads its group (or has none) as things stand now: waiting,
-- lowest unfinished sequence, nothing of its group running, group not held.
-- The caller holds the group's lock.
CREATE FUNCTION wq_should_head(j jobs) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT j.state < 2
       AND (j.group_key IS NULL OR (
            NOT EXISTS (SELECT 1 FROM jobs w
                        WHERE w.queue = j.queue AND w.group_key = j.group_key AND w.state < 3
                          AND (w.seq < j.seq OR w.state = 2))
            AND NOT EXISTS (SELECT 1 FROM groups g
                            WHERE g.queue = j.queue AND g.group_key = j.group_key
                              AND g.held_by IS NOT NULL)))
$$;

-- Repairs one finding after rechecking it under the group's lock; returns
-- whether it wrote anything. A head placed or taken back is synced into
-- its session, last, as every function takes sessions.
CREATE FUNCTION wq_repair(p_kind smallint, p_id uuid, p_now timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    h heads;
BEGIN
    -- The group, its `heads` row, then the job: the order every function
    -- locks in (a claim holds a `heads` row while it takes the job's).
    PERFORM wq_lock_groups_of(ARRAY[p_id]);
    PERFORM 1 FROM heads WHERE id = p_id FOR UPDATE;
    SELECT * INTO j FROM jobs WHERE id = p_id FOR UPDATE;
    IF p_kind = 1 THEN
        IF NOT FOUND OR EXISTS (SELECT 1 FROM heads WHERE id = p_id) OR NOT wq_should_head(j) THEN
            RETURN false;
        END IF;
        PERFORM wq_place(p_id, p_now);
        PERFORM wq_sessions_sync(ARRAY[j.queue], ARRAY[j.session], NULL, NULL, NULL, NULL, NULL);
        RETURN true;
    ELSIF p_kind = 2 THEN
        -- Only a waiting head can be taken back; a running one must finish.
        IF FOUND AND (j.state = 2 OR wq_should_head(j)) THEN
            RETURN false;
        END IF;
        DELETE FROM heads WHERE id = p_id RETURNING * INTO h;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        PERFORM wq_sessions_sync(ARRAY[h.queue], ARRAY[h.session], NULL, NULL, NULL, NULL, NULL);
        RETURN true;
    ELSE
        UPDATE jobs
        SET lease_token = coalesce(lease_token, nextval('lease_tokens')),
            lease_expires_at = least(coalesce(lease_expires_at, p_now), p_now)
        WHERE id = p_id AND state = 2 AND (lease_token IS NULL OR lease_expires_at IS NULL);
        RETURN FOUND;
    END IF;
END $$;

-- Audits one queue. Returns one row per finding (kind, group, job, whether
-- it was repaired) and a last row of kind 0 whose `checked` counts the
-- unfinished jobs looked at.
CREATE FUNCTION audit(p_queue text, p_now timestamptz, p_repair boolean)
RETURNS TABLE (kind smallint, group_key text, id uuid, repaired boolean, checked bigint)
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    v_checked bigint;
BEGIN
    SELECT count(*) INTO v_checked FROM jobs j WHERE j.queue = p_queue AND j.state < 3;
    -- Repairs lock groups as they go: in group order, as every function
    -- does; within a group a misplaced head leaves `heads` before the true
    -- head is placed (one row per group).
    FOR f IN
        SELECT * FROM (
        WITH lines AS (
            -- Each group's lowest unfinished job, and whether any of it runs.
            SELECT DISTINCT ON (j.group_key) j.group_key, j.id, j.state,
                   bool_or(j.state = 2) OVER (PARTITION BY j.group_key) AS busy
            FROM jobs j
            WHERE j.queue = p_queue AND j.state < 3 AND j.group_key IS NOT NULL
            ORDER BY j.group_key, j.seq
        )
        -- Headless: a group's first job, or an ungrouped waiting job, that no
        -- claim can reach.
        SELECT 1::smallint AS kind, l.group_key, l.id
        FROM lines l
        WHERE NOT l.busy
          AND NOT EXISTS (SELECT 1 FROM heads h WHERE h.id = l.id)
          AND NOT EXISTS (SELECT 1 FROM groups g
                          WHERE g.queue = p_queue AND g.group_key = l.group_key
                            AND g.held_by IS NOT NULL)
        UNION ALL
        SELECT 1::smallint, NULL, j.id
        FROM jobs j
        WHERE j.queue = p_queue AND j.state < 2 AND j.group_key IS NULL
          AND NOT EXISTS (SELECT 1 FROM heads h WHERE h.id = j.id)
        UNION ALL
        -- Misplaced: a claimable or running job behind another unfinished
        -- one of its group, or in a held group; or a `heads` row whose job
        -- is not waiting at all.
        SELECT 2::smallint, j.group_key, j.id
        FROM jobs j
        WHERE j.queue = p_queue AND j.group_key IS NOT NULL AND j.state < 3
          AND (j.state = 2 OR EXISTS (SELECT 1 FROM heads h WHERE h.id = j.id))
          AND (EXISTS (SELECT 1 FROM jobs w
                       WHERE w.queue = j.queue AND w.group_key = j.group_key
                         AND w.state < 3 AND w.seq < j.seq)
               OR EXISTS (SELECT 1 FROM groups g
                          WHERE g.queue = j.queue AND g.group_key = j.group_key
                            AND g.held_by IS NOT NULL))
        UNION ALL
        SELECT 2::smallint, h.group_key, h.id
        FROM heads h
        WHERE h.queue = p_queue
          AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = h.id AND j.state < 2)
        UNION ALL
        -- Unleased: running with no lease expiry the rescuer could compare.
        SELECT 3::smallint, j.group_key, j.id
        FROM jobs j
        WHERE j.queue = p_queue AND j.state = 2
          AND (j.lease_token IS NULL OR j.lease_expires_at IS NULL)
        ) found
        ORDER BY found.group_key, found.kind DESC, found.id
    LOOP
        kind := f.kind;
        group_key := f.group_key;
        id := f.id;
        repaired := p_repair AND wq_repair(f.kind, f.id, p_now);
        checked := NULL;
        RETURN NEXT;
    END LOOP;
    kind := 0;
    group_key := NULL;
    id := NULL;
    repaired := NULL;
    checked := v_checked;
    RETURN NEXT;
END $$;
