//! The one error shape of the API and the one place where failures become HTTP statuses.
//! 5xx bodies are opaque; their cause is logged.

use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::{IntoResponse, Response};
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::domain::FieldError;
use crate::lifecycle::StoreError;

/// Every error response of the API.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`.
    pub code: String,
    /// What went wrong, for a human.
    pub message: String,
    /// The request field at fault: a body property (dotted path), a query or path parameter,
    /// or a header name.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
}

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        ErrorBody {
            code: "validation_failed".to_owned(),
            message: "must be between 1 and 10000".to_owned(),
            field: Some("steps".to_owned()),
        }
    }
}

/// Errors an operation can return.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed: invalid JSON, or an invalid query, path or header value.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No API key, or an unknown or revoked one.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer realm="jobq"`
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The key's role does not allow this operation.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such job (or route).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state (e.g. an Idempotency-Key reused with a
    /// different request).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body is larger than this endpoint accepts, or it asks for more work than
    /// this server allows (a hash job's total input; `field` names it).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The JSON is well-formed but a field is missing, of the wrong type or out of range.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// The key's enqueue rate limit is spent; retry after the given seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds to wait before the next enqueue.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// An unexpected server error; details are in the server log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is unreachable; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(code: &str, message: impl Into<String>, field: Option<&str>) -> Json<ErrorBody> {
    Json(ErrorBody {
        code: code.to_owned(),
        message: message.into(),
        field: field.map(str::to_owned),
    })
}

impl ApiError {
    pub fn bad_request(code: &str, message: impl Into<String>, field: Option<&str>) -> Self {
        Self::BadRequest(body(code, message, field))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(
            body("unauthorized", message, Some("Authorization")),
            r#"Bearer realm="jobq""#.to_owned(),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(body("forbidden", message, None))
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::TooManyRequests(
            body(
                "rate_limited",
                format!("enqueue rate limit reached; retry in {retry_after_secs} s"),
                None,
            ),
            retry_after_secs,
        )
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Unprocessable(body("validation_failed", message, Some(field)))
    }

    pub fn not_found(what: &str, field: &str) -> Self {
        Self::NotFound(body("not_found", format!("{what} not found"), Some(field)))
    }

    pub fn conflict(code: &str, message: impl Into<String>, field: Option<&str>) -> Self {
        Self::Conflict(body(code, message, field))
    }

    /// A well-formed request for more work than this server allows (a hash job's total input).
    pub fn input_too_large(field: &str, message: impl Into<String>) -> Self {
        Self::PayloadTooLarge(body("input_too_large", message, Some(field)))
    }

    pub fn too_large(limit: usize) -> Self {
        Self::PayloadTooLarge(body(
            "payload_too_large",
            format!("the request body must be at most {limit} bytes"),
            None,
        ))
    }

    /// A server-side failure: logged with its cause, answered without it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::Internal(body("internal", "internal server error", None))
    }

    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "database unavailable");
        Self::Unavailable(body(
            "unavailable",
            "the database is unavailable; retry later",
            None,
        ))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::validation(&e.field, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Self::unavailable(&e)
        } else {
            Self::internal(&e)
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// Turns any error that reached the router (a parameter poem-openapi could not parse, an
/// unknown route, a wrong method) into the API's error shape. Errors that already are one of
/// our responses pass through unchanged.
pub fn into_response(err: poem::Error, path: &str, allowed: Option<&str>) -> Response {
    // Keep the operation for the request metrics.
    let operation = err.data::<poem_openapi::OperationId>().copied();
    let mut resp = response_of(err, path, allowed);
    if let Some(op) = operation {
        resp.set_data(op);
    }
    resp
}

fn response_of(err: poem::Error, path: &str, allowed: Option<&str>) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let api = if let Some(e) = err.downcast_ref::<ParsePathError>() {
        let name = path_parameter_name(e.name, path);
        let message = format!("invalid {name}: {}", e.reason);
        ApiError::bad_request("invalid_parameter", message, Some(name))
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        ApiError::bad_request("invalid_parameter", e.to_string(), Some(e.name))
    } else if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        ApiError::UnsupportedMediaType(body(
            "unsupported_media_type",
            e.to_string(),
            Some("Content-Type"),
        ))
    } else if err.is::<AuthorizationError>() {
        ApiError::unauthorized("an API key is required: Authorization: Bearer <key>")
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        ApiError::bad_request("invalid_body", e.to_string(), None)
    } else if err.is::<NotFoundError>() {
        ApiError::NotFound(body("route_not_found", "no such route", None))
    } else if err.is::<MethodNotAllowedError>() {
        let mut resp = plain(
            err.status(),
            "method_not_allowed",
            &match allowed {
                Some(methods) => format!("method not allowed for this route; it allows {methods}"),
                None => "method not allowed for this route".to_owned(),
            },
        );
        if let Some(methods) = allowed.and_then(|m| m.parse().ok()) {
            resp.headers_mut()
                .insert(poem::http::header::ALLOW, methods);
        }
        return resp;
    } else if err.status() == poem::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(body("payload_too_large", err.to_string(), None))
    } else if err.status().is_client_error() {
        return plain(err.status(), "bad_request", &err.to_string());
    } else {
        ApiError::internal(&err)
    };
    api.into_response()
}

/// poem-openapi names path parameters `param0`, `param1`, ... by position when it reports them.
/// Every path of this API has at most one parameter: a queue's `kind`, or an `id`.
fn path_parameter_name<'a>(internal: &'a str, path: &str) -> &'a str {
    match internal {
        "param0" if path.starts_with("/v1/queues/") => "kind",
        "param0" => "id",
        other => other,
    }
}

/// An error body with a status outside [`ApiError`] (only for routing errors).
fn plain(status: poem::http::StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message });
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}
