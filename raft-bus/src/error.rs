//! The bus's errors and their one mapping to HTTP: a status and a stable code.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use taskpool_api::error::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("request body is larger than this node accepts (see --max-body-bytes)")]
    PayloadTooLarge,
    #[error("send the body as JSON with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated, but the caller's role or application does not cover the call.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("stream {stream} is at version {current_version}, not at the expected one")]
    WrongExpectedVersion {
        stream: String,
        current_version: i64,
    },
    #[error("event id {id} was appended before in another batch; a retry must resend the whole original batch")]
    IdReused { id: uuid::Uuid },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    NoLeader(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("this node has as many requests in flight as it takes (--max-concurrent-requests); retry shortly or on another node")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

/// On a 403 this node decided (not one relayed from the leader): why.
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

impl BusError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            BusError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            BusError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            BusError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            BusError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            BusError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            BusError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            BusError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            BusError::WrongExpectedVersion { .. } => {
                (StatusCode::CONFLICT, "wrong_expected_version")
            }
            BusError::IdReused { .. } => (StatusCode::CONFLICT, "event_id_reused"),
            BusError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            BusError::NoLeader(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            BusError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BusError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            BusError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        BusError::Internal(e.to_string())
    }
}

impl IntoResponse for BusError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            BusError::Internal(detail) => {
                // Logged once here; the client gets no internals.
                tracing::error!(error = %detail, "internal error");
                ErrorBody::new(code, "internal error; see the node's log")
            }
            BusError::WrongExpectedVersion {
                stream,
                current_version,
            } => ErrorBody::new(code, self.to_string())
                .with("stream", stream.clone())
                .with("currentVersion", *current_version),
            BusError::IdReused { id } => {
                ErrorBody::new(code, self.to_string()).with("id", id.to_string())
            }
            _ => ErrorBody::new(code, self.to_string()),
        };
        if matches!(self, BusError::Busy) {
            return (status, [(header::RETRY_AFTER, "1")], Json(body)).into_response();
        }
        let mut resp = (status, Json(body)).into_response();
        if let BusError::Forbidden(why) = self {
            // Counted and logged where the caller is known (`api::authorize`).
            resp.extensions_mut().insert(Refusal(why));
        }
        resp
    }
}
