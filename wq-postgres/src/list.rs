//! Listing jobs: one statement per shape of filter, each written so that an
//! index serves it, never a scan of the whole `jobs` table.
//!
//! A statement that tested every filter with `$n IS NULL OR ...` would get
//! one generic plan that can use no index for any of them; so the statement
//! names only the filters given. Which index serves which shape:
//!
//! - an idempotency key: `jobs_idempotency`, one row;
//! - a group: `jobs_group_line` for its unfinished jobs (few: the group's
//!   line) and `jobs_group_finished` for its finished ones, in id order;
//! - a tenant: `jobs_tenant`, in id order;
//! - a queue and a state: `jobs_waiting`, `jobs_running` (in id order), or
//!   for a finished state `jobs_finished`;
//! - nothing selective: the primary key, in id order.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres};
use uuid::Uuid;
use wq_core::{JobState, ListQuery};

use crate::codec;

/// One value bound to a listing statement.
enum Bind {
    Text(String),
    Small(i16),
    Id(Uuid),
    Big(i64),
}

/// A listing statement and what it binds, in order.
pub(crate) struct Listing {
    sql: String,
    binds: Vec<Bind>,
}

impl Listing {
    /// The statement for `query` over the tables of `schema` (quoted).
    pub fn new(schema: &str, query: &ListQuery) -> Self {
        let mut l = Listing {
            sql: String::new(),
            binds: Vec::new(),
        };
        let filters = l.filters(query);
        let limit = l.bind(Bind::Big(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        let part = |extra: &str| {
            format!("SELECT * FROM {schema}.jobs WHERE {filters}{extra} ORDER BY id LIMIT {limit}")
        };
        l.sql = if query.group.is_some() && query.idempotency_key.is_none() {
            // The group's line and its finished jobs, each from its own
            // partial index; the literal bounds let the planner use them.
            format!(
                "SELECT * FROM (({}) UNION ALL ({})) j ORDER BY id LIMIT {limit}",
                part(" AND state < 3"),
                part(" AND state >= 3")
            )
        } else {
            part("")
        };
        l
    }

    /// The conditions of `query`, each bound as a parameter.
    fn filters(&mut self, query: &ListQuery) -> String {
        let mut conds = Vec::new();
        if let Some(q) = &query.queue {
            conds.push(format!("queue = {}", self.bind(Bind::Text(q.to_string()))));
        }
        if let Some(k) = &query.idempotency_key {
            conds.push(format!(
                "idempotency_key = {}",
                self.bind(Bind::Text(k.to_string()))
            ));
        }
        if let Some(g) = &query.group {
            conds.push(format!(
                "group_key = {}",
                self.bind(Bind::Text(g.to_string()))
            ));
        }
        if let Some(t) = &query.tenant {
            conds.push(format!("tenant = {}", self.bind(Bind::Text(t.to_string()))));
        }
        if let Some(s) = query.state {
            // The state's partial index needs its predicate in the text.
            conds.push(format!(
                "state = {} AND {}",
                self.bind(Bind::Small(codec::state_code(s))),
                partial(s)
            ));
        }
        if let Some(after) = query.after {
            conds.push(format!("id > {}", self.bind(Bind::Id(*after.as_uuid()))));
        }
        if conds.is_empty() {
            "true".to_owned()
        } else {
            conds.join(" AND ")
        }
    }

    /// Adds a parameter; its placeholder.
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    /// The query, its parameters bound.
    pub fn query(self) -> Query<'static, Postgres, PgArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.sql));
        for b in self.binds {
            q = match b {
                Bind::Text(v) => q.bind(v),
                Bind::Small(v) => q.bind(v),
                Bind::Id(v) => q.bind(v),
                Bind::Big(v) => q.bind(v),
            };
        }
        q
    }
}

/// The predicate of the partial index that holds jobs in `state`.
fn partial(state: JobState) -> &'static str {
    match state {
        JobState::Scheduled | JobState::Available => "state < 2",
        JobState::Running => "state = 2",
        JobState::Completed | JobState::Dead | JobState::Cancelled => "state >= 3",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_only_the_filters_given() {
        let l = Listing::new("\"s\"", &ListQuery::new().queue("q").state(JobState::Dead));
        assert_eq!(
            l.sql,
            "SELECT * FROM \"s\".jobs WHERE queue = $1 AND state = $2 AND state >= 3 \
             ORDER BY id LIMIT $3"
        );
        let l = Listing::new("\"s\"", &ListQuery::new().queue("q").group("g"));
        assert!(l.sql.contains("state < 3") && l.sql.contains("state >= 3"));
        assert_eq!(l.binds.len(), 3);
        let l = Listing::new("\"s\"", &ListQuery::new());
        assert!(l.sql.contains("WHERE true ORDER BY id"));
    }
}
