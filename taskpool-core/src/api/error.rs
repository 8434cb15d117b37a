//! The API's errors and their one mapping to HTTP: a status, a stable code and a message, as
//! `{"error":{"code","message",…}}`. 5xx are logged once here; internals never reach the client.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use taskpool_api::error::ErrorBody;
use taskpool_api::ClientError;

use crate::identity::IdentityError;
use crate::query::QueryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The same answer for a task that does not exist and one the user may not see.
    #[error("no open task {task} of application {application} that you may see")]
    TaskNotFound { application: String, task: String },
    #[error("task {task} is assigned to {assignee}")]
    HeldByOther { task: String, assignee: String },
    #[error("no process {key:?} that you may start")]
    ProcessNotFound { key: String },
    #[error("process {key:?} exists in {}; name one: POST /api/v1/processes/{{application}}/{key}/start", .applications.join(", "))]
    AmbiguousProcess {
        key: String,
        applications: Vec<String>,
    },
    /// A parameter or body field this API does not take: `code` says which kind.
    #[error("{message}")]
    BadInput { code: &'static str, message: String },
    #[error(transparent)]
    BadQuery(#[from] QueryError),
    /// A body that is no JSON of the expected shape, too large, or not sent as JSON.
    #[error("{}", .0.body_text())]
    BadBody(#[from] JsonRejection),
    #[error(transparent)]
    Unauthenticated(#[from] IdentityError),
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    #[error("taskpool-core has as many requests in flight as it takes (--max-concurrent-requests); retry shortly")]
    Busy,
    #[error("the server has as many task streams open as it allows; retry later")]
    TooManyStreams,
    #[error("the view store does not answer: {0}")]
    StoreUnavailable(StoreError),
    /// A command sent through the bus: the handler's own answers (404, 409, 422 …) pass
    /// through with their status and code; a bus that cannot be reached is 503.
    /// Boxed: the handler's error body would make every `Result<_, AppError>` large.
    #[error(transparent)]
    Bus(Box<ClientError>),
    #[error(
        "the collector of {application} answered something else than a result of its task command"
    )]
    BadCommandResult { application: String },
}

impl AppError {
    /// A 400 that says what was wrong with the input.
    pub fn bad_input(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::BadInput {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::TaskNotFound { .. }
            | AppError::ProcessNotFound { .. }
            | AppError::NoSuchEndpoint => StatusCode::NOT_FOUND,
            AppError::HeldByOther { .. } | AppError::AmbiguousProcess { .. } => {
                StatusCode::CONFLICT
            }
            AppError::BadInput { .. } | AppError::BadQuery(_) => StatusCode::BAD_REQUEST,
            AppError::BadBody(e) => match e.status() {
                s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
                _ => StatusCode::BAD_REQUEST,
            },
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Busy | AppError::TooManyStreams | AppError::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Bus(e) => match **e {
                ClientError::Api { status, .. } => {
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)
                }
                ClientError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                ClientError::Decode(_) => StatusCode::BAD_GATEWAY,
            },
            AppError::BadCommandResult { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable code of the error body (and the outcome label of a failed command).
    pub fn code(&self) -> &str {
        match self {
            AppError::TaskNotFound { .. } => "task_not_found",
            AppError::HeldByOther { .. } => "held_by_other",
            AppError::ProcessNotFound { .. } => "process_not_found",
            AppError::AmbiguousProcess { .. } => "ambiguous_process",
            AppError::BadInput { code, .. } => code,
            AppError::BadQuery(e) => e.code(),
            AppError::BadBody(_) => match self.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ => "bad_body",
            },
            AppError::Unauthenticated(e) => e.code(),
            AppError::NoSuchEndpoint => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Busy => "busy",
            AppError::TooManyStreams => "too_many_streams",
            AppError::StoreUnavailable(_) => "store_unavailable",
            AppError::Bus(e) => match &**e {
                ClientError::Api { body, .. } => &body.error.code,
                ClientError::Unavailable(_) => "bus_unavailable",
                ClientError::Decode(_) => "bad_command_result",
            },
            AppError::BadCommandResult { .. } => "bad_command_result",
        }
    }

    /// The body the client gets: no internals (driver errors, node addresses) in it.
    fn body(&self) -> ErrorBody {
        let message = match self {
            AppError::StoreUnavailable(_) => {
                "the view store does not answer; see taskpool-core's log".to_owned()
            }
            AppError::Bus(e) => match &**e {
                ClientError::Api { body, .. } => return body.clone(),
                ClientError::Unavailable(_) => {
                    "the bus cannot be reached; retry shortly".to_owned()
                }
                ClientError::Decode(_) => {
                    "the command's result could not be read; see taskpool-core's log".to_owned()
                }
            },
            _ => self.to_string(),
        };
        let body = ErrorBody::new(self.code(), message);
        match self {
            AppError::HeldByOther { assignee, .. } => body.with("assignee", assignee.clone()),
            _ => body,
        }
    }
}

impl From<ClientError> for AppError {
    fn from(e: ClientError) -> AppError {
        AppError::Bus(Box::new(e))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Busy is not logged: a flood would flood the log; the request counter shows it.
        if status.is_server_error() && !matches!(self, AppError::Busy) {
            tracing::warn!(%status, code = self.code(), error = %self, "request failed");
        }
        let body = Json(self.body());
        match self {
            AppError::Busy => (status, [(header::RETRY_AFTER, "1")], body).into_response(),
            _ => (status, body).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: AppError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = e.into_response();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let status = response.status();
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
            .expect("body");
        (status, retry, serde_json::from_slice(&body).expect("json"))
    }

    #[test]
    fn each_error_has_its_status_code_and_fields() {
        let (status, _, body) = answer(AppError::HeldByOther {
            task: "t1".into(),
            assignee: "piggy".into(),
        });
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "held_by_other",
                "message": "task t1 is assigned to piggy", "assignee": "piggy"}})
        );
        let (status, retry, body) = answer(AppError::Busy);
        assert_eq!(
            (status, retry.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        assert_eq!(body["error"]["code"], "busy");
        let handler = ErrorBody::new("refused", "the engine says no");
        let (status, _, body) = answer(AppError::from(ClientError::Api {
            status: 422,
            body: handler.clone(),
        }));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body, serde_json::to_value(handler).expect("json"));
    }

    #[test]
    fn internals_stay_in_the_log() {
        let (status, _, body) = answer(AppError::from(ClientError::Unavailable(
            "http://10.0.0.7:7101: connection refused".into(),
        )));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "bus_unavailable");
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");
        let (status, _, body) = answer(AppError::StoreUnavailable(StoreError::Unavailable(
            "ping: 10.0.0.8:27017".into(),
        )));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "store_unavailable");
        assert!(!body.to_string().contains("10.0.0.8"), "{body}");
    }
}
