//! The statements the store sends, qualified with its schema once, at
//! connect time, so no query depends on the session's `search_path`.
//!
//! This is the one place SQL is built from a runtime value: the schema name,
//! which `check_schema` has restricted to `[a-z_][a-z0-9_]*`.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

/// A statement built from the checked schema name.
fn stmt(sql: String) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(sql)).into_sql_str()
}

/// Every statement of one store (cheap to clone: shared strings).
#[derive(Debug)]
pub struct Sql {
    /// The schema's name, quoted, for statements built per call.
    pub schema: String,
    pub enqueue: SqlStr,
    pub claim: SqlStr,
    pub ack_and_claim: SqlStr,
    pub extend: SqlStr,
    pub rescue: SqlStr,
    pub cancel: SqlStr,
    pub retry_dead: SqlStr,
    pub purge_dead: SqlStr,
    pub prune: SqlStr,
    pub promote: SqlStr,
    pub vacuum_heads: SqlStr,
    pub next_due: SqlStr,
    pub audit: SqlStr,
    pub declare_queue: SqlStr,
    pub queue_info: SqlStr,
    pub list_queues: SqlStr,
    pub set_paused: SqlStr,
    pub notify: SqlStr,
    pub get: SqlStr,
    pub counts: SqlStr,
    pub next_in_line: SqlStr,
    pub fold_counts: SqlStr,
    pub position: SqlStr,
    pub acquire_lock: SqlStr,
    pub renew_lock: SqlStr,
    pub release_lock: SqlStr,
    pub set_session: SqlStr,
    pub session_info: SqlStr,
    pub list_sessions: SqlStr,
    pub paused_sessions: SqlStr,
    pub set_admissions: SqlStr,
    pub admit: SqlStr,
}

impl Sql {
    /// The statements for `schema` (a validated identifier).
    pub fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        // A session as operators see it; `waiting` from its partial index.
        let session = format!(
            "SELECT s.session, s.max_running, s.rate_starts, s.rate_per_us, s.rate_jitter_us, \
               s.paused, s.pause_reason, s.running, s.next_start, \
               (SELECT count(*) FROM {s}.jobs j \
                 WHERE j.queue = s.queue AND j.session = s.session AND j.state < 2 \
                   AND j.session IS NOT NULL) AS waiting \
             FROM {s}.sessions s"
        );
        Self {
            schema: s.clone(),
            enqueue: stmt(format!(
                "SELECT * FROM {s}.enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            )),
            claim: stmt(format!("SELECT * FROM {s}.claim($1, $2, $3, $4, $5)")),
            ack_and_claim: stmt(format!(
                "SELECT * FROM {s}.ack_and_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            )),
            extend: stmt(format!(
                "SELECT ord, outcome FROM {s}.extend($1, $2, $3, $4)"
            )),
            rescue: stmt(format!("SELECT id, queue, state FROM {s}.rescue($1, $2)")),
            cancel: stmt(format!("SELECT * FROM {s}.cancel($1, $2)")),
            retry_dead: stmt(format!("SELECT {s}.retry_dead($1, $2, $3)")),
            purge_dead: stmt(format!("SELECT {s}.purge_dead($1, $2, $3)")),
            prune: stmt(format!("SELECT {s}.prune($1, $2)")),
            promote: stmt(format!(
                "SELECT moved, CASE WHEN moved > 0 THEN {s}.wq_wake($1)::text END \
                 FROM (SELECT {s}.wq_promote($1, $2, $3) \
                         + {s}.wq_promote_sessions($1, $2, $3) AS moved) t"
            )),
            vacuum_heads: stmt(format!("VACUUM (SKIP_LOCKED) {s}.heads")),
            next_due: stmt(format!("SELECT due FROM {s}.next_due($1, $2)")),
            audit: stmt(format!(
                "SELECT kind, group_key, id, repaired, checked FROM {s}.audit($1, $2, $3)"
            )),
            declare_queue: stmt(format!(
                "INSERT INTO {s}.queues (name, config) VALUES ($1, $2::jsonb) \
                 ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config"
            )),
            queue_info: stmt(format!(
                "SELECT config::text AS config, paused FROM {s}.queues WHERE name = $1"
            )),
            list_queues: stmt(format!(
                "SELECT config::text AS config, paused FROM {s}.queues ORDER BY name"
            )),
            set_paused: stmt(format!("UPDATE {s}.queues SET paused = $2 WHERE name = $1")),
            notify: stmt(format!("SELECT {s}.wq_wake($1)::text")),
            get: stmt(format!("SELECT * FROM {s}.jobs WHERE id = $1")),
            // Waiting and running jobs from their partial indexes, finished
            // ones from their counted changes (`finished_counts`): the cost
            // does not grow with what is retained; state -1 is how many
            // rows of changes there are (see `fold_counts`). The first row
            // tells an unknown queue (no row) from an empty one.
            counts: stmt(format!(
                "SELECT NULL::smallint AS state, 0::bigint AS n FROM {s}.queues WHERE name = $1 \
                 UNION ALL SELECT state, count(*) FROM {s}.jobs \
                   WHERE queue = $1 AND state < 2 GROUP BY state \
                 UNION ALL SELECT 2::smallint, count(*) FROM {s}.jobs \
                   WHERE queue = $1 AND state = 2 \
                 UNION ALL SELECT state, sum(n)::bigint FROM {s}.finished_counts \
                   WHERE queue = $1 GROUP BY state \
                 UNION ALL SELECT -1::smallint, count(*) FROM {s}.finished_counts \
                   WHERE queue = $1"
            )),
            // Four index probes: the first head in claim order, the first
            // open session's front, and the earliest scheduled heads (with
            // and without a session) that came due unpromoted.
            fold_counts: stmt(format!("SELECT {s}.fold_counts($1)")),
            next_in_line: stmt(format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE name = $1) AS known, least( \
                   (SELECT run_at FROM {s}.heads \
                     WHERE queue = $1 AND ready AND session IS NULL \
                     ORDER BY priority, fresh, run_at, seq LIMIT 1), \
                   (SELECT front_run_at FROM {s}.sessions WHERE queue = $1 AND state = 2 \
                     ORDER BY front_priority, front_fresh, front_run_at, front_seq LIMIT 1), \
                   (SELECT min(run_at) FROM {s}.heads \
                     WHERE queue = $1 AND NOT ready AND session IS NULL AND run_at <= $2), \
                   (SELECT min(run_at) FROM {s}.heads \
                     WHERE queue = $1 AND NOT ready AND session IS NOT NULL AND run_at <= $2) \
                 ) AS due"
            )),
            position: stmt(format!(
                "SELECT j.state, j.group_key IS NOT NULL AS grouped, \
                   (SELECT count(*) FROM {s}.jobs o \
                     WHERE o.queue = j.queue AND o.group_key = j.group_key \
                       AND o.state < 3 AND o.seq < j.seq) \
                 + (SELECT count(*) FROM {s}.groups g JOIN {s}.jobs h ON h.id = g.held_by \
                     WHERE g.queue = j.queue AND g.group_key = j.group_key AND h.seq < j.seq) \
                   AS in_group, \
                   (SELECT count(*) FROM {s}.jobs o \
                     WHERE o.queue = j.queue AND o.state IN (0, 1) \
                       AND (o.priority, NOT {s}.wq_continued(o.history), o.run_at, o.seq) \
                         < (j.priority, NOT {s}.wq_continued(j.history), j.run_at, j.seq)) \
                   AS in_queue \
                 FROM {s}.jobs j WHERE j.id = $1"
            )),
            acquire_lock: stmt(format!(
                "INSERT INTO {s}.locks AS l (name, holder, token, expires_at) \
                 VALUES ($1, $2, nextval('{s}.lease_tokens'), $4) \
                 ON CONFLICT (name) DO UPDATE \
                   SET holder = EXCLUDED.holder, token = EXCLUDED.token, \
                       expires_at = EXCLUDED.expires_at \
                   WHERE l.expires_at <= $3 \
                 RETURNING name, holder, token, expires_at"
            )),
            renew_lock: stmt(format!(
                "UPDATE {s}.locks SET expires_at = $4 \
                 WHERE name = $1 AND token = $2 AND expires_at > $3 \
                 RETURNING name, holder, token, expires_at"
            )),
            release_lock: stmt(format!(
                "DELETE FROM {s}.locks WHERE name = $1 AND token = $2"
            )),
            // As `list_sessions`, paused ones only: the jobs of no other
            // session are counted.
            paused_sessions: stmt(format!(
                "SELECT x.* FROM {s}.queues q \
                 LEFT JOIN LATERAL ({session} \
                   WHERE s.queue = q.name AND s.paused AND s.session > $2 \
                   ORDER BY s.session LIMIT $3) x \
                   ON true \
                 WHERE q.name = $1"
            )),
            set_admissions: stmt(format!(
                "SELECT {s}.set_admissions($1, $2, $3, $4, $5, $6, $7)::text"
            )),
            admit: stmt(format!("SELECT * FROM {s}.admit($1, $2, $3, $4)")),
            set_session: stmt(format!(
                "SELECT {s}.set_session($1, $2, $3, $4, $5, $6, $7, $8, $9) AS changed"
            )),
            // A row for the queue (none: no such queue) joined with the
            // session, or the page (NULL columns: none).
            session_info: stmt(format!(
                "SELECT x.* FROM {s}.queues q \
                 LEFT JOIN LATERAL ({session} WHERE s.queue = q.name AND s.session = $2) x \
                   ON true \
                 WHERE q.name = $1"
            )),
            // `> $2`, with '' for the first page: a bound the index can
            // use (session keys are never empty).
            list_sessions: stmt(format!(
                "SELECT x.* FROM {s}.queues q \
                 LEFT JOIN LATERAL ({session} \
                   WHERE s.queue = q.name AND s.session > $2 ORDER BY s.session LIMIT $3) x \
                   ON true \
                 WHERE q.name = $1"
            )),
        }
    }
}
