//! Jobs: enqueue one or a batch, read, list, locate and cancel.
//!
//! A tenant's token stores jobs under its tenant and sees only them: a job
//! of another tenant answers 404, as if it did not exist.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use wq::validate::MAX_LIST;
use wq::{Backend, Enqueue, Enqueued, Job, JobId, ListQuery, Payload};

use crate::auth::{Caller, Scope};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::AppState;
use crate::view::{
    BatchBody, EnqueueBody, EnqueuedView, JobPage, JobView, ListParams, PositionView, parse_state,
};

/// The page size when none is asked for.
const DEFAULT_PAGE: usize = 50;

/// Stores one job.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = EnqueueBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "The job's idempotency key")),
    responses((status = 201, body = EnqueuedView, description = "Stored"),
               (status = 200, body = EnqueuedView, description = "Its idempotency key named a job stored before"),
               (status = 404, body = crate::error::ErrorBody, description = "Unknown queue"),
               (status = 422, body = crate::error::ErrorBody, description = "A field refused")))]
pub async fn enqueue<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    headers: HeaderMap,
    Json(body): Json<EnqueueBody>,
) -> Result<(StatusCode, axum::Json<EnqueuedView>), ApiError> {
    let header_key = idempotency_header(&headers)?;
    let job = build(body, &scope, header_key)?;
    Ok(answer(&st.client().enqueue(job).await?))
}

/// A stored job as answered: 201 when this call stored it, 200 when its
/// idempotency key named a job stored before.
pub(crate) fn answer(stored: &Enqueued) -> (StatusCode, axum::Json<EnqueuedView>) {
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        axum::Json(EnqueuedView {
            created: stored.created,
            job: JobView::from(&stored.job),
        }),
    )
}

/// Stores jobs, all or none: one refused job refuses the batch, naming its
/// index and field.
#[utoipa::path(post, path = "/api/jobs/batch", tag = "jobs", request_body = BatchBody,
    responses((status = 201, body = [EnqueuedView], description = "Stored, in order"),
               (status = 404, body = crate::error::ErrorBody, description = "Unknown queue"),
               (status = 422, body = crate::error::ErrorBody, description = "A job refused; nothing stored")))]
pub async fn enqueue_batch<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Json(body): Json<BatchBody>,
) -> Result<(StatusCode, axum::Json<Vec<EnqueuedView>>), ApiError> {
    if body.jobs.len() > wq::validate::MAX_BATCH {
        return Err(ApiError::invalid(
            "jobs",
            format!("at most {} jobs in a batch", wq::validate::MAX_BATCH),
        ));
    }
    let jobs = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, b)| build(b, &scope, None).map_err(|e| e.at(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = st.client().enqueue_many(jobs).await?;
    let views = stored
        .iter()
        .map(|e| EnqueuedView {
            created: e.created,
            job: JobView::from(&e.job),
        })
        .collect();
    Ok((StatusCode::CREATED, axum::Json(views)))
}

/// One job, with its runs.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = visible(&st, &scope, &id).await?;
    Ok(axum::Json(JobView::from(&job)))
}

/// Where a waiting job stands in its group and its queue.
#[utoipa::path(get, path = "/api/jobs/{id}/position", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = PositionView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn position<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<PositionView>, ApiError> {
    let job = visible(&st, &scope, &id).await?;
    let pos = st
        .client()
        .position(job.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} is not waiting")))?;
    Ok(axum::Json(PositionView {
        in_group: pos.in_group,
        in_queue: pos.in_queue,
    }))
}

/// Cancels a job: at once if it waits; a running one ends when its handler
/// hears of it.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody),
               (status = 409, body = crate::error::ErrorBody, description = "It has finished")))]
pub async fn cancel<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = visible(&st, &scope, &id).await?;
    let job = st.client().cancel(job.id).await?;
    Ok(axum::Json(JobView::from(&job)))
}

/// Jobs by queue, state, group, tenant or idempotency key, in id order, a
/// page at a time.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListParams),
    responses((status = 200, body = JobPage), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<JobPage>, ApiError> {
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit >= MAX_LIST {
        return Err(ApiError::invalid("limit", format!("from 1 to {MAX_LIST}")));
    }
    // One more than the page: whether a next page exists.
    let mut q = ListQuery::new().limit(limit + 1);
    if let Some(v) = p.queue {
        q = q.queue(v.as_str());
    }
    if let Some(v) = p.state {
        q = q.state(parse_state("state", &v)?);
    }
    if let Some(v) = p.group {
        q = q.group(v.as_str());
    }
    if let Some(v) = p.idempotency_key {
        q = q.idempotency_key(v);
    }
    if let Some(v) = p.after {
        q = q.after(parse_id("after", &v)?);
    }
    if let Some(tenant) = own_tenant(&scope, p.tenant.as_deref())? {
        q = q.tenant(tenant);
    }
    let mut jobs = st.client().list(q).await?;
    let next = (jobs.len() > limit)
        .then(|| {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id.to_string())
        })
        .flatten();
    Ok(axum::Json(JobPage {
        jobs: jobs.iter().map(JobView::from).collect(),
        next,
    }))
}

/// The tenant a listing is confined to: the caller's own for a tenant's
/// token (asking for another is refused), else what was asked.
pub(crate) fn own_tenant<'a>(
    scope: &'a Scope,
    asked: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    match (scope.tenant(), asked) {
        (Some(own), Some(asked)) if own != asked => Err(ApiError::forbidden(
            "a tenant's token sees its own tenant's jobs only",
        )),
        (Some(own), _) => Ok(Some(own)),
        (None, asked) => Ok(asked),
    }
}

/// The job `id` names, if the caller may see it.
pub(crate) async fn visible<B: Backend>(
    st: &AppState<B>,
    scope: &Scope,
    id: &str,
) -> Result<Job, ApiError> {
    let id = parse_id("id", id)?;
    let job = st.client().get(id).await?;
    job.filter(|j| may_see(scope, j))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// Whether `scope` may see `job`.
pub(crate) fn may_see(scope: &Scope, job: &Job) -> bool {
    scope
        .tenant()
        .is_none_or(|own| job.tenant.as_deref() == Some(own))
}

/// A job id, or a refusal naming `field`.
pub(crate) fn parse_id(field: &'static str, s: &str) -> Result<JobId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::invalid(field, "not a job id (a UUID)"))
}

/// The `Idempotency-Key` header, if sent.
pub(crate) fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("Idempotency-Key", "not visible ASCII"))
        })
        .transpose()
}

/// The job a body describes, under the caller's tenant.
fn build(body: EnqueueBody, scope: &Scope, header_key: Option<String>) -> Result<Enqueue, Refusal> {
    let key = match (header_key, body.idempotency_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(Refusal::Invalid(
                "idempotency_key",
                "differs from the Idempotency-Key header",
            ));
        }
        (h, b) => h.or(b),
    };
    let tenant = match (scope.tenant(), body.tenant) {
        (Some(own), Some(asked)) if own != asked => return Err(Refusal::OtherTenant),
        (Some(own), _) => Some(own.to_owned()),
        (None, asked) => asked,
    };
    // The body was parsed as JSON: its text is JSON.
    let mut job = Enqueue::raw(
        body.queue.as_str(),
        Payload::from_trusted(body.payload.get()),
    );
    if let Some(v) = body.group {
        job = job.group(v.as_str());
    }
    if let Some(v) = body.session {
        job = job.session(v.as_str());
    }
    if let Some(v) = tenant {
        job = job.tenant(v);
    }
    if let Some(v) = body.priority {
        job = job.priority(v);
    }
    if let Some(v) = body.delay_ms {
        job = job.delay(Duration::from_millis(v));
    }
    if let Some(v) = body.max_attempts {
        job = job.max_attempts(v);
    }
    if let Some(v) = key {
        job = job.idempotency_key(v);
    }
    Ok(job)
}

/// Why a body cannot become a job, before the client sees it.
enum Refusal {
    Invalid(&'static str, &'static str),
    OtherTenant,
}

impl Refusal {
    /// As the refusal of job `index` of a batch.
    fn at(self, index: usize) -> ApiError {
        let mut e = ApiError::from(self);
        e.set_index(index);
        e
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(field, why) => ApiError::invalid(field, why),
            Refusal::OtherTenant => {
                ApiError::forbidden("a tenant's token stores jobs of its own tenant only")
            }
        }
    }
}
