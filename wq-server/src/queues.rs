//! Queues: counts, pause and resume, the dead-letter queue, sessions and
//! blocked groups.
//!
//! Views and actions on a whole queue are an admin's; a tenant's token may
//! retry and purge its own dead jobs, and see and unblock its own groups.

use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use wq::validate::{MAX_BATCH, MAX_LIST};
use wq::{Backend, DeadJobs, Job, JobId, JobState, ListQuery, OnDead};

use crate::auth::{Caller, Scope};
use crate::error::{ApiError, Path, Query};
use crate::jobs::{may_see, own_tenant, parse_id};
use crate::state::AppState;
use crate::view::{Affected, BlockedGroup, DeadSelection, JobView, QueueView, SessionView};

/// Every queue with its counts.
#[utoipa::path(get, path = "/api/queues", tag = "queues",
    responses((status = 200, body = [QueueView]), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
) -> Result<axum::Json<Vec<QueueView>>, ApiError> {
    scope.require_admin()?;
    let mut out = Vec::new();
    for info in st.client().queues().await? {
        let name = info.config.name.as_str();
        let counts = st.client().counts(name).await?;
        let wait = st.client().oldest_wait(name).await?;
        let rate = st.throughput.rate(name, counts.finished);
        out.push(QueueView::new(&info, counts, wait, rate));
    }
    Ok(axum::Json(out))
}

/// One queue with its counts.
#[utoipa::path(get, path = "/api/queues/{queue}", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, body = QueueView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(queue): Path<String>,
) -> Result<axum::Json<QueueView>, ApiError> {
    scope.require_admin()?;
    let info = st
        .client()
        .queue(&queue)
        .await?
        .ok_or_else(|| wq::ValidationError::unknown_queue(&queue))?;
    let counts = st.client().counts(&queue).await?;
    let wait = st.client().oldest_wait(&queue).await?;
    let rate = st.throughput.rate(&queue, counts.finished);
    Ok(axum::Json(QueueView::new(&info, counts, wait, rate)))
}

/// Stops workers from claiming from the queue; enqueueing goes on.
#[utoipa::path(post, path = "/api/queues/{queue}/pause", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn pause<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(queue): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    scope.require_admin()?;
    st.client().pause(&queue).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Lets workers claim from the queue again.
#[utoipa::path(post, path = "/api/queues/{queue}/resume", tag = "queues",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn resume<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(queue): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    scope.require_admin()?;
    st.client().resume(&queue).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Runs dead jobs again with fresh attempts: the ids given, those of a
/// group or tenant, or every dead job of the queue (a tenant's: every one
/// of its own). An empty body is
/// `{}`.
#[utoipa::path(post, path = "/api/queues/{queue}/dead/retry", tag = "dead letters",
    params(("queue" = String, Path, description = "The queue")), request_body = DeadSelection,
    responses((status = 200, body = Affected), (status = 404, body = crate::error::ErrorBody)))]
pub async fn retry_dead<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(queue): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Affected>, ApiError> {
    dead_action(&st, &scope, &queue, selection(&body)?, Action::Retry).await
}

/// Deletes dead jobs: the ids given, those of a group or tenant, or every
/// dead job of the queue (a tenant's: every one of its own). A group its
/// dead head held moves on.
#[utoipa::path(post, path = "/api/queues/{queue}/dead/purge", tag = "dead letters",
    params(("queue" = String, Path, description = "The queue")), request_body = DeadSelection,
    responses((status = 200, body = Affected), (status = 404, body = crate::error::ErrorBody)))]
pub async fn purge_dead<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(queue): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Affected>, ApiError> {
    dead_action(&st, &scope, &queue, selection(&body)?, Action::Purge).await
}

/// The dead jobs a body selects: none at all (an empty body) is every one.
fn selection(body: &[u8]) -> Result<DeadSelection, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeadSelection::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid("body", e.to_string())
        } else {
            ApiError::bad_request(format!("the body is not JSON: {e}"))
        }
    })
}

#[derive(Clone, Copy)]
enum Action {
    Retry,
    Purge,
}

async fn apply<B: Backend>(
    st: &AppState<B>,
    action: Action,
    which: DeadJobs,
) -> Result<u64, ApiError> {
    Ok(match action {
        Action::Retry => st.client().retry_dead(which).await?,
        Action::Purge => st.client().purge_dead(which).await?,
    })
}

async fn dead_action<B: Backend>(
    st: &AppState<B>,
    scope: &Scope,
    queue: &str,
    sel: DeadSelection,
    action: Action,
) -> Result<axum::Json<Affected>, ApiError> {
    st.client()
        .queue(queue)
        .await?
        .ok_or_else(|| wq::ValidationError::unknown_queue(queue))?;
    let tenant = own_tenant(scope, sel.tenant.as_deref())?;
    let affected = match (sel.ids, tenant, sel.group) {
        (Some(ids), _, _) => {
            if ids.len() > MAX_BATCH {
                return Err(ApiError::invalid("ids", format!("at most {MAX_BATCH}")));
            }
            // Only this queue's dead jobs the caller may see: an id of
            // another queue or tenant is skipped, as one that is not dead.
            let mut mine = Vec::with_capacity(ids.len());
            for id in &ids {
                let id = parse_id("ids", id)?;
                if let Some(job) = st.client().get(id).await?
                    && job.queue.as_str() == queue
                    && job.state == JobState::Dead
                    && may_see(scope, &job)
                {
                    mine.push(id);
                }
            }
            apply(st, action, DeadJobs::Ids(mine)).await?
        }
        (None, None, None) => apply(st, action, DeadJobs::All(queue.into())).await?,
        (None, tenant, group) => {
            let mut filter = ListQuery::new()
                .queue(queue)
                .state(JobState::Dead)
                .limit(MAX_BATCH);
            if let Some(t) = tenant {
                filter = filter.tenant(t);
            }
            if let Some(g) = group {
                filter = filter.group(g.as_str());
            }
            matching(st, action, filter).await?
        }
    };
    Ok(axum::Json(Affected { affected }))
}

/// Applies `action` to the dead jobs `filter` lists, a page at a time;
/// each page is one call, applied whole or not at all. Applied jobs leave
/// the dead state (or the store), so each page lists the next ones.
async fn matching<B: Backend>(
    st: &AppState<B>,
    action: Action,
    filter: ListQuery,
) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let page: Vec<JobId> = st
            .client()
            .list(filter.clone())
            .await?
            .iter()
            .map(|j| j.id)
            .collect();
        let n = page.len();
        if n == 0 {
            return Ok(total);
        }
        let applied = apply(st, action, DeadJobs::Ids(page)).await?;
        total += applied;
        // A short page was the last; a page nothing applied to (another
        // operator got there first) would come back the same.
        if n < MAX_BATCH || applied == 0 {
            return Ok(total);
        }
    }
}

/// A page of a queue's sessions, by key.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionParams {
    /// Sessions after this key.
    pub after: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
}

/// A queue's sessions (in WhatsApp: its sending numbers), by key.
#[utoipa::path(get, path = "/api/queues/{queue}/sessions", tag = "sessions",
    params(("queue" = String, Path, description = "The queue"), SessionParams),
    responses((status = 200, body = [SessionView]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn sessions<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(queue): Path<String>,
    Query(p): Query<SessionParams>,
) -> Result<axum::Json<Vec<SessionView>>, ApiError> {
    scope.require_admin()?;
    let list = st
        .client()
        .sessions(&queue, p.after.as_deref(), p.limit.unwrap_or(100))
        .await?;
    Ok(axum::Json(list.iter().map(SessionView::from).collect()))
}

/// Holds a session's jobs, as an operator: no pipeline lifts this pause.
#[utoipa::path(post, path = "/api/queues/{queue}/sessions/{session}/pause", tag = "sessions",
    params(("queue" = String, Path, description = "The queue"),
           ("session" = String, Path, description = "The session")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn pause_session<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path((queue, session)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    scope.require_admin()?;
    st.client().pause_session(&queue, &session).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Lifts a session's pause, whoever paused it.
#[utoipa::path(post, path = "/api/queues/{queue}/sessions/{session}/resume", tag = "sessions",
    params(("queue" = String, Path, description = "The queue"),
           ("session" = String, Path, description = "The session")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn resume_session<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path((queue, session)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    scope.require_admin()?;
    st.client().resume_session(&queue, &session).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// How many blocked groups to look for.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BlockedParams {
    /// Look at no more than this many candidate heads (default 100).
    pub limit: Option<usize>,
}

/// Groups held back by their head: a dead head in a queue that holds groups
/// on a dead head, or a head waiting to retry.
#[utoipa::path(get, path = "/api/queues/{queue}/groups/blocked", tag = "groups",
    params(("queue" = String, Path, description = "The queue"), BlockedParams),
    responses((status = 200, body = [BlockedGroup]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn blocked<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(queue): Path<String>,
    Query(p): Query<BlockedParams>,
) -> Result<axum::Json<Vec<BlockedGroup>>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::invalid("limit", format!("from 1 to {MAX_LIST}")));
    }
    let info = st
        .client()
        .queue(&queue)
        .await?
        .ok_or_else(|| wq::ValidationError::unknown_queue(&queue))?;
    let mut heads = Vec::new();
    if info.config.on_dead == OnDead::Hold {
        heads.extend(candidates(&st, &scope, &queue, JobState::Dead, limit).await?);
    }
    heads.extend(
        candidates(&st, &scope, &queue, JobState::Scheduled, limit)
            .await?
            .into_iter()
            .filter(|j| j.attempt > 0),
    );
    let mut out = Vec::new();
    for head in heads.into_iter().filter(|j| j.group.is_some()) {
        let group = head
            .group
            .clone()
            .map(|g| g.to_string())
            .unwrap_or_default();
        let line = line_of(&st, &queue, &group, info.config.on_dead == OnDead::Hold).await?;
        // A tenant counts only its own jobs behind the head.
        let behind = line
            .iter()
            .filter(|j| j.id != head.id && may_see(&scope, j))
            .count() as u64;
        out.push(BlockedGroup {
            group,
            head: JobView::from(&head),
            behind,
        });
    }
    Ok(axum::Json(out))
}

/// Runs a group's blocking head now: a dead head is retried in place.
#[utoipa::path(post, path = "/api/queues/{queue}/groups/{group}/unblock", tag = "groups",
    params(("queue" = String, Path, description = "The queue"),
           ("group" = String, Path, description = "The group")),
    responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "Its head is not dead")))]
pub async fn unblock<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path((queue, group)): Path<(String, String)>,
) -> Result<axum::Json<JobView>, ApiError> {
    let head = blocking_head(&st, &scope, &queue, &group).await?;
    if head.state != JobState::Dead {
        return Err(ApiError::conflict(
            "the head is waiting to retry: it runs at its time (or skip it)",
        ));
    }
    st.client().retry_dead(DeadJobs::Ids(vec![head.id])).await?;
    shown(&st, head.id).await
}

/// Moves a group past its blocking head: a dead head is purged, a head
/// waiting to retry is cancelled.
#[utoipa::path(post, path = "/api/queues/{queue}/groups/{group}/skip", tag = "groups",
    params(("queue" = String, Path, description = "The queue"),
           ("group" = String, Path, description = "The group")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn skip<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path((queue, group)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    let head = blocking_head(&st, &scope, &queue, &group).await?;
    if head.state == JobState::Dead {
        st.client().purge_dead(DeadJobs::Ids(vec![head.id])).await?;
    } else {
        st.client().cancel(head.id).await?;
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Up to `limit` jobs of `queue` in `state` the caller may see.
async fn candidates<B: Backend>(
    st: &AppState<B>,
    scope: &Scope,
    queue: &str,
    state: JobState,
    limit: usize,
) -> Result<Vec<Job>, ApiError> {
    let mut q = ListQuery::new().queue(queue).state(state).limit(limit);
    if let Some(t) = scope.tenant() {
        q = q.tenant(t);
    }
    Ok(st.client().list(q).await?)
}

/// A group's unfinished jobs, and its dead ones where a dead head holds the
/// group (`hold`), by sequence (at most a page).
async fn line_of<B: Backend>(
    st: &AppState<B>,
    queue: &str,
    group: &str,
    hold: bool,
) -> Result<Vec<Job>, ApiError> {
    let mut line: Vec<Job> = st
        .client()
        .list(ListQuery::new().queue(queue).group(group).limit(MAX_LIST))
        .await?
        .into_iter()
        .filter(|j| {
            j.state.is_waiting()
                || j.state == JobState::Running
                || (hold && j.state == JobState::Dead)
        })
        .collect();
    line.sort_by_key(|j| j.seq);
    Ok(line)
}

/// The head holding `group` back: its dead head, or a head waiting to
/// retry; 404 when the group is not blocked or not the caller's.
async fn blocking_head<B: Backend>(
    st: &AppState<B>,
    scope: &Scope,
    queue: &str,
    group: &str,
) -> Result<Job, ApiError> {
    let info = st
        .client()
        .queue(queue)
        .await?
        .ok_or_else(|| wq::ValidationError::unknown_queue(queue))?;
    let line = line_of(st, queue, group, info.config.on_dead == OnDead::Hold).await?;
    let head = line
        .into_iter()
        .next()
        .filter(|j| may_see(scope, j))
        .filter(|j| j.state == JobState::Dead || (j.state == JobState::Scheduled && j.attempt > 0));
    head.ok_or_else(|| ApiError::not_found(format!("group `{group}` is not blocked")))
}

async fn shown<B: Backend>(st: &AppState<B>, id: JobId) -> Result<axum::Json<JobView>, ApiError> {
    let job = st
        .client()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(axum::Json(JobView::from(&job)))
}
