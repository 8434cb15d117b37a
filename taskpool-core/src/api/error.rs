//! The API's one error type: a status, a stable code and a message, as
//! `{"error":{"code","message"}}`. 5xx are logged once here; internals never reach the client.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use taskpool_api::error::ErrorBody;
use taskpool_api::ClientError;

use crate::identity::IdentityError;
use crate::query::QueryError;

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    /// Boxed: handlers return `Result<_, AppError>` everywhere, and the Ok side is small.
    pub body: Box<ErrorBody>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            body: Box::new(ErrorBody::new(code, message)),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The same answer for a task that does not exist and one the user may not see.
    pub fn task_not_found(application: &str, id: &str) -> AppError {
        AppError::new(
            StatusCode::NOT_FOUND,
            "task_not_found",
            format!("no open task {id} of application {application} that you may see"),
        )
    }

    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> AppError {
        self.body = Box::new(self.body.with(key, value));
        self
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = %self.body.error.code, message = %self.body.error.message, "request failed");
        }
        (self.status, Json(self.body)).into_response()
    }
}

impl From<QueryError> for AppError {
    fn from(e: QueryError) -> AppError {
        AppError::bad_request(e.code(), e.to_string())
    }
}

impl From<IdentityError> for AppError {
    fn from(e: IdentityError) -> AppError {
        AppError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for AppError {
    fn from(e: JsonRejection) -> AppError {
        let status = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_body",
        };
        AppError::new(status, code, e.body_text())
    }
}

/// Errors of a command sent through the bus: the handler's own answers (404, 409, 422 …)
/// pass through with their code; a bus that cannot be reached is 503.
impl From<ClientError> for AppError {
    fn from(e: ClientError) -> AppError {
        match e {
            ClientError::Api { status, body } => AppError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body: Box::new(body),
            },
            ClientError::Unavailable(m) => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                format!("the bus cannot be reached: {m}"),
            ),
            ClientError::Decode(m) => AppError::new(
                StatusCode::BAD_GATEWAY,
                "bad_command_result",
                format!("the command's result could not be read: {m}"),
            ),
        }
    }
}
