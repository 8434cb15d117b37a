//! Command routing over the bus: what a sender posts, what a handler receives and answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::ErrorDetail;

/// Default wait for a command's result when the sender names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Longest a sender may wait (Axon Server's default command timeout).
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// `POST /v1/commands`
#[derive(Debug, Clone, Serialize, Deserialize)]
// Unknown fields are welcome (DESIGN.md): a newer sender's fields must not break an older bus.
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandRequest {
    /// Sending the same id again never executes the command twice; it returns its one result.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub command_type: String,
    pub routing_key: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// W3C trace context of the action that sent it (`trace::HEADER`); the handler logs
    /// under the same trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The answer to a command that a handler executed successfully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandResponse {
    pub id: Uuid,
    pub result: Value,
}

/// One command as a handler receives it on `GET /v1/handlers/subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandMessage {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub command_type: String,
    pub routing_key: String,
    pub payload: Value,
    /// RFC 3339: the sender stops waiting then; later work is wasted.
    pub deadline: String,
    /// The sender's trace context, passed on as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `POST /v1/commands/{id}/result`: `{"ok":true,"result":…}` or
/// `{"ok":false,"status":409,"error":{"code","message"}}`, from the handler that was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandResult {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// HTTP status the sender gets for a failure (400-599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The handler answering; must be the one the command was given to.
    pub handler_id: String,
}

impl CommandResult {
    pub fn success(handler_id: impl Into<String>, result: Value) -> Self {
        CommandResult {
            ok: true,
            result: Some(result),
            status: None,
            error: None,
            handler_id: handler_id.into(),
        }
    }

    pub fn failure(
        handler_id: impl Into<String>,
        status: u16,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        CommandResult {
            ok: false,
            result: None,
            status: Some(status),
            error: Some(ErrorDetail {
                code: code.into(),
                message: message.into(),
                extra: Default::default(),
            }),
            handler_id: handler_id.into(),
        }
    }
}
