//! Errors as the API answers them: a status and a JSON body naming the
//! field at fault, never a panic and never a 5xx for bad input.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: `{"error": {"code", "message", "field", "index"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

/// The body of an error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, as a word: `invalid`, `not_found`, `unauthorized`,
    /// `forbidden`, `conflict`, `bad_request`, `unavailable`.
    pub code: &'static str,
    /// For a person.
    pub message: String,
    /// The input field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// Which job of a batch, when the input was a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                field: None,
                index: None,
            },
        }
    }

    /// Locates the refusal at job `index` of a batch.
    pub fn set_index(&mut self, index: usize) {
        self.body.index = Some(index);
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 401: no token, or not one of ours.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required: Authorization: Bearer <token>",
        )
    }

    /// 403: the token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the job's state does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 405: the path exists, not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path takes another method",
        )
    }

    /// 400: a body, path or query that could not be read.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: a value refused, naming its field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
        e.body.field = Some(field);
        e
    }
}

impl From<wq::ValidationError> for ApiError {
    fn from(v: wq::ValidationError) -> Self {
        let status = if v.is_unknown_queue() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let code = if v.is_unknown_queue() {
            "not_found"
        } else {
            "invalid"
        };
        let mut e = Self::new(status, code, v.reason.clone());
        e.body.field = Some(v.field);
        e.body.index = v.index;
        e
    }
}

impl From<wq::Error> for ApiError {
    fn from(e: wq::Error) -> Self {
        match e {
            wq::Error::Invalid(v) => v.into(),
            wq::Error::Store(s) => s.into(),
            other => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                other.to_string(),
            ),
        }
    }
}

impl From<wq::StoreError> for ApiError {
    fn from(e: wq::StoreError) -> Self {
        match e {
            wq::StoreError::UnknownQueue(q) => {
                wq::ValidationError::unknown_queue(q.as_str()).into()
            }
            wq::StoreError::NotFound(id) => Self::not_found(format!("no job {id}")),
            wq::StoreError::InvalidState { .. } => Self::conflict(e.to_string()),
            wq::StoreError::Invalid(v) => v.into(),
            other => {
                // The store's own words may name hosts or schemas: they go
                // to the log, the caller learns only that it is unavailable.
                tracing::warn!(error = %other, "store call failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store did not answer; try again",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::invalid("body", e.body_text()),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid("query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::invalid("path", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(Envelope { error: &self.body })).into_response()
    }
}

/// A JSON body whose refusal is an [`ApiError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// A query string whose refusal is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters whose refusal is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
