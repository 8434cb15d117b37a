//! The collector's errors and their one mapping to a status and a stable code: what a command's
//! sender gets in its failed `CommandResult`, and what the HTTP endpoints answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use taskpool_api::commands::CommandResult;
use taskpool_api::error::ErrorBody;
use taskpool_api::task_commands::ParseError;

use crate::emitter::EmitError;
use crate::engine::EngineError;
use crate::hooks::SignatureError;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// No such open task, or one the actor may not see (they answer alike).
    #[error("{0}")]
    TaskNotFound(String),
    /// No such process, or one the actor may not start.
    #[error("{0}")]
    ProcessNotFound(String),
    #[error("{0}")]
    HeldByOther(String),
    #[error("{0}")]
    AlreadyClaimed(String),
    /// The engine lost an optimistic lock to a concurrent change: a retry may succeed.
    #[error("the engine saw a concurrent change; retry: {0}")]
    ConcurrentChange(String),
    #[error("{0}")]
    Suspended(String),
    #[error("{0}")]
    RejectedByEngine(String),
    #[error("{0}")]
    ForbiddenByEngine(String),
    #[error("{0}")]
    EngineUnavailable(String),
    /// The engine failed in a way that names no cause the caller could act on.
    #[error("{0}")]
    Engine(String),
    #[error("{0}")]
    BadPayload(String),
    #[error("this collector does not handle {0}")]
    UnknownCommand(String),
    #[error("this collector serves application {serves}, not {asked}")]
    UnknownApplication { serves: String, asked: String },
    /// The engine did it (or a hook told it), but its event is not on the bus yet.
    #[error("{0}")]
    NotRecorded(String),
    #[error("this collector runs in poll mode; start it with --mode hook --hook-secret …")]
    HooksDisabled,
    #[error("hook bodies are limited to {0} bytes")]
    BodyTooLarge(usize),
    #[error(transparent)]
    BadSignature(#[from] SignatureError),
    #[error("hook body: {0}")]
    BadBody(String),
    #[error("this collector is on standby; the active one polls, and will find the change")]
    Standby,
    #[error("state store: {0}")]
    StoreUnavailable(String),
    #[error("no such endpoint")]
    NoSuchEndpoint,
}

impl CollectorError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use CollectorError::*;
        match self {
            TaskNotFound(_) => (StatusCode::NOT_FOUND, "task_not_found"),
            ProcessNotFound(_) => (StatusCode::NOT_FOUND, "process_not_found"),
            HeldByOther(_) => (StatusCode::CONFLICT, "held_by_other"),
            AlreadyClaimed(_) => (StatusCode::CONFLICT, "already_claimed"),
            ConcurrentChange(_) => (StatusCode::CONFLICT, "conflict"),
            Suspended(_) => (StatusCode::CONFLICT, "suspended"),
            RejectedByEngine(_) => (StatusCode::UNPROCESSABLE_ENTITY, "rejected_by_engine"),
            ForbiddenByEngine(_) => (StatusCode::FORBIDDEN, "forbidden_by_engine"),
            EngineUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable"),
            Engine(_) => (StatusCode::BAD_GATEWAY, "engine_error"),
            BadPayload(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_payload"),
            UnknownCommand(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_command"),
            UnknownApplication { .. } => (StatusCode::NOT_FOUND, "unknown_application"),
            NotRecorded(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_recorded"),
            HooksDisabled => (StatusCode::NOT_FOUND, "hooks_disabled"),
            BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            Standby => (StatusCode::SERVICE_UNAVAILABLE, "standby"),
            StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            NoSuchEndpoint => (StatusCode::NOT_FOUND, "not_found"),
        }
    }

    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The answer a command's sender gets (the handler id is filled in by the handler).
    pub fn to_result(&self) -> CommandResult {
        let (status, code) = self.status_and_code();
        CommandResult::failure(String::new(), status.as_u16(), code, self.to_string())
    }
}

impl IntoResponse for CollectorError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        (status, Json(ErrorBody::new(code, self.to_string()))).into_response()
    }
}

/// The one translation of the engine's errors. Camunda answers most failures with 500 and
/// says what happened in `type` and `message`.
impl From<EngineError> for CollectorError {
    fn from(e: EngineError) -> CollectorError {
        use CollectorError::*;
        match e {
            _ if e.is_not_found() => TaskNotFound(e.to_string()),
            EngineError::Api { kind, message, .. }
                if kind.contains("TaskAlreadyClaimed") || message.contains("already claimed") =>
            {
                AlreadyClaimed(message)
            }
            EngineError::Api {
                code: Some(1),
                message,
                ..
            } => ConcurrentChange(message),
            EngineError::Api {
                status: 400,
                message,
                ..
            } => RejectedByEngine(message),
            EngineError::Api {
                status: 403,
                message,
                ..
            } => ForbiddenByEngine(message),
            EngineError::Api { kind, message, .. }
                if (kind.contains("ProcessEngineException")
                    || kind.contains("SuspendedEntity"))
                    && message.contains("suspended") =>
            {
                Suspended(message)
            }
            EngineError::Unreachable(m) => EngineUnavailable(m),
            e @ (EngineError::Api { .. } | EngineError::Decode(_)) => Engine(e.to_string()),
        }
    }
}

impl From<EmitError> for CollectorError {
    fn from(e: EmitError) -> CollectorError {
        CollectorError::NotRecorded(format!(
            "the engine did it but its event is not on the bus yet (it will be): {e}"
        ))
    }
}

impl From<ParseError> for CollectorError {
    fn from(e: ParseError) -> CollectorError {
        match e {
            ParseError::UnknownType(t) => CollectorError::UnknownCommand(t),
            e @ ParseError::BadPayload { .. } => CollectorError::BadPayload(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, kind: &str, message: &str, code: Option<i64>) -> EngineError {
        EngineError::Api {
            status,
            kind: kind.into(),
            message: message.into(),
            code,
        }
    }

    #[test]
    fn engine_errors_keep_their_statuses_and_codes() {
        for (e, status, code) in [
            (api(404, "", "x", None), 404, "task_not_found"),
            (
                api(500, "", "Cannot find task", None),
                404,
                "task_not_found",
            ),
            (
                api(500, "TaskAlreadyClaimedException", "x", None),
                409,
                "already_claimed",
            ),
            (api(500, "OptimisticLocking", "x", Some(1)), 409, "conflict"),
            (api(400, "", "bad", None), 422, "rejected_by_engine"),
            (api(403, "", "no", None), 403, "forbidden_by_engine"),
            (
                api(500, "ProcessEngineException", "is suspended", None),
                409,
                "suspended",
            ),
            (
                EngineError::Unreachable("down".into()),
                503,
                "engine_unavailable",
            ),
            (api(500, "Other", "boom", None), 502, "engine_error"),
            (EngineError::Decode("?".into()), 502, "engine_error"),
        ] {
            let r = CollectorError::from(e).to_result();
            assert_eq!(
                (r.status, r.error.map(|d| d.code)),
                (Some(status), Some(code.to_owned()))
            );
        }
    }
}
