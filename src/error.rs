//! One error type for the whole HTTP surface, rendered as RFC 9457 problem+json.
//!
//! Handlers return `Result<_, ApiError>`; every variant documents the status it maps to.
//! Database and other unexpected failures become an opaque 500 whose cause is logged, never
//! shown to the client.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// `Retry-After` (seconds) on every 503.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 1;

/// One invalid field of a request, named the way the client spelled it (`location.lat`).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of every error answer (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` style tags under `/problems/`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body or query could not be parsed at all.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or one that is unknown, revoked, expired or forged.
    #[error("authentication required")]
    Unauthorized,
    /// 403: authenticated, but the role does not allow this call.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such object, *or* an object that belongs to someone else.
    #[error("{0}")]
    NotFound(String),
    /// 404 naming the field that held an id matching nothing (`service_id`).
    #[error("{}: {}", .0.field, .0.message)]
    FieldNotFound(FieldError),
    /// 405: the path exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the object is in a state that forbids this (illegal transition, taken offer, reused key).
    #[error("{0}")]
    Conflict(String),
    /// 409 naming the field whose value is already taken (`phone`, `email`).
    #[error("{}: {}", .0.field, .0.message)]
    FieldConflict(FieldError),
    /// 408: the request body did not arrive within the deadline.
    #[error("the request body did not arrive within {limit_s} s")]
    RequestTimeout { limit_s: u64 },
    /// 409: the customer already has `limit` bookings waiting (for a therapist, or for a store
    /// to confirm).
    #[error("you already have {limit} bookings waiting to be taken (by a therapist, or confirmed by a store); cancel one or wait")]
    TooManyPendingBookings { limit: u32 },
    /// 413: the body is larger than the configured cap.
    #[error("request body too large (limit {limit} bytes)")]
    PayloadTooLarge { limit: usize },
    /// 415: a body that is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid; each bad field is named.
    #[error("{detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 429: rate limited; the client may retry after this many seconds.
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503: a dependency the answer needs is down.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the server is at capacity for this kind of work; retry after this many seconds.
    #[error("{detail}")]
    Overloaded {
        detail: String,
        retry_after_secs: u64,
    },
    /// 500: anything unexpected. The cause is logged, the client sees an opaque message.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    /// A 422 for a single field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        Self::Validation {
            detail: format!("{}: {}", error.field, error.message),
            errors: vec![error],
        }
    }

    /// A 422 for several fields at once, or `Ok(())` when the list is empty.
    pub fn check(errors: Vec<FieldError>) -> Result<(), Self> {
        if errors.is_empty() {
            return Ok(());
        }
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Self::Validation { detail, errors })
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) | Self::FieldNotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) | Self::FieldConflict(_) => "conflict",
            Self::RequestTimeout { .. } => "request-timeout",
            Self::TooManyPendingBookings { .. } => "too-many-pending-bookings",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Validation { .. } => "validation",
            Self::TooManyRequests { .. } => "rate-limited",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded { .. } => "overloaded",
            Self::Internal(_) => "internal",
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let detail = match self {
            Self::Internal(_) => "an unexpected error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors: match self {
                Self::Validation { errors, .. } => errors.clone(),
                Self::FieldNotFound(error) | Self::FieldConflict(error) => vec![error.clone()],
                _ => Vec::new(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::FieldNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::FieldConflict(_) => StatusCode::CONFLICT,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyPendingBookings { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = ?cause, "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Self::TooManyRequests { retry_after_secs }
        | Self::Overloaded {
            retry_after_secs, ..
        } = self
        {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
        }
        if let Self::RequestTimeout { .. } = self {
            // The rest of the body may still be on its way: do not read it as the next request.
            response.insert_header((header::CONNECTION, "close"));
        }
        if let Self::Unavailable(_) = self {
            // Overload and outages both pass: a client retries after a second, not at once.
            response.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_S.to_string()));
        }
        if let Self::Unauthorized = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                if matches!(error, sqlx::Error::PoolTimedOut) {
                    metrics::counter!("hilot_requests_shed_total", "reason" => "database_pool")
                        .increment(1);
                }
                tracing::warn!(%error, "database unavailable");
                Self::Unavailable("the database is unavailable, try again shortly".into())
            }
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(database_went_away) => {
                tracing::warn!(%error, "database unavailable");
                Self::Unavailable("the database is unavailable, try again shortly".into())
            }
            _ => Self::Internal(anyhow::Error::new(error)),
        }
    }
}

/// SQLSTATEs of a database that is restarting, shutting down or out of connections: class 08
/// (connection exceptions), 57P01–57P03 (shutdown, crash recovery) and 53300 (too many
/// connections). They pass; the client is told to retry.
fn database_went_away(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Adds "while doing X" to an unexpected error, so logs say which operation failed.
pub trait Context<T> {
    fn context(self, what: &'static str) -> Result<T, ApiError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, what: &'static str) -> Result<T, ApiError> {
        self.map_err(|e| match ApiError::from(e) {
            ApiError::Internal(cause) => ApiError::Internal(cause.context(what)),
            other => other,
        })
    }
}

/// The unique-constraint name of a database error, if it is a unique violation.
pub fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}

/// The constraint name of a database error, if it is an exclusion violation (two rows whose
/// ranges may not overlap).
pub fn exclusion_violation(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23P01") => db.constraint(),
        _ => None,
    }
}
