//! The task commands: what taskpool-core sends over the bus to a task's application (routing
//! key: the application's name) and what the collector that executes them answers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::commands::CommandRequest;

/// Declares [`TaskCommand`] with one variant per payload type, named as its command type.
macro_rules! task_commands {
    ($($(#[$doc:meta])* $variant:ident),* $(,)?) => {
        /// Every task command, typed: the command type is the variant's name, the payload its
        /// struct. Adding a command is one variant here, its engine call in the collector's
        /// dispatch, and its tests.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "payload")]
        pub enum TaskCommand {
            $($(#[$doc])* $variant($variant),)*
        }

        impl TaskCommand {
            /// Every command type, as a collector subscribes for them.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant)),*];

            /// The command type on the bus (`CommandRequest.type`).
            pub fn command_type(&self) -> &'static str {
                match self {
                    $(TaskCommand::$variant(_) => stringify!($variant),)*
                }
            }

            /// Who asks; `None`: the platform acting for itself.
            pub fn actor(&self) -> Option<&Actor> {
                match self {
                    $(TaskCommand::$variant(c) => c.actor.as_ref(),)*
                }
            }
        }
    };
}

task_commands!(
    ClaimTask,
    UnclaimTask,
    AssignTask,
    CompleteTask,
    DeferTask,
    UndeferTask,
    StartProcess,
    /// A question, not a change: which of some definitions the actor may start.
    StartableProcesses,
);

/// Why a command message is no task command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown task command type {0:?}")]
    UnknownType(String),
    #[error("payload of {command_type}: {message}")]
    BadPayload {
        command_type: String,
        message: String,
    },
}

impl TaskCommand {
    /// Reads a command as the bus carries it: its type and its JSON payload.
    pub fn parse(command_type: &str, payload: &Value) -> Result<TaskCommand, ParseError> {
        if !Self::TYPES.contains(&command_type) {
            return Err(ParseError::UnknownType(command_type.to_owned()));
        }
        let tagged = serde_json::json!({"type": command_type, "payload": payload});
        serde_json::from_value(tagged).map_err(|e| ParseError::BadPayload {
            command_type: command_type.to_owned(),
            message: e.to_string(),
        })
    }

    /// The JSON payload on the bus (`CommandRequest.payload`).
    pub fn payload(&self) -> Value {
        let tagged = serde_json::to_value(self).unwrap_or(Value::Null);
        match tagged {
            Value::Object(mut o) => o.remove("payload").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The task it acts on; `None` for the process commands.
    pub fn task_id(&self) -> Option<&str> {
        match self {
            TaskCommand::ClaimTask(c) => Some(&c.task_id),
            TaskCommand::UnclaimTask(c) => Some(&c.task_id),
            TaskCommand::AssignTask(c) => Some(&c.task_id),
            TaskCommand::CompleteTask(c) => Some(&c.task_id),
            TaskCommand::DeferTask(c) => Some(&c.task_id),
            TaskCommand::UndeferTask(c) => Some(&c.task_id),
            TaskCommand::StartProcess(_) | TaskCommand::StartableProcesses(_) => None,
        }
    }

    /// The bus request that sends it to `application`'s collector (a new command id).
    pub fn request(
        &self,
        application: &str,
        timeout_ms: u64,
        traceparent: Option<String>,
    ) -> CommandRequest {
        CommandRequest {
            id: Uuid::new_v4(),
            command_type: self.command_type().to_owned(),
            routing_key: application.to_owned(),
            payload: self.payload(),
            timeout_ms: Some(timeout_ms),
            traceparent,
        }
    }
}

/// Who asks for a command: the user, and the groups the platform counts for them in the
/// command's application (their credentials' groups and that application's identity realm).
/// The collector adds the groups the engine itself knows and lets the engine's current state
/// decide; a command without an actor is the platform acting for itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Actor {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimTask {
    pub task_id: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnclaimTask {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignTask {
    pub task_id: String,
    /// `None` unassigns.
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteTask {
    pub task_id: String,
    pub user: Option<String>,
    /// Plain JSON values; the collector converts them to Camunda typed values.
    #[serde(default)]
    pub variables: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeferTask {
    pub task_id: String,
    /// RFC 3339.
    pub follow_up: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UndeferTask {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartProcess {
    pub process_definition_key: String,
    pub business_key: Option<String>,
    #[serde(default)]
    pub variables: Map<String, Value>,
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// `StartableProcesses`: which of `keys` (definition keys of the application) the engine's
/// authorizations let the actor start. The candidate starters of each definition's BPMN are
/// not asked: the view knows them from `ProcessDefinitionRegistered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartableProcesses {
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// The answer to `StartableProcesses`: the keys the actor may start, in the order asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartableKeys {
    pub keys: Vec<String>,
}

/// What a task command answers: the event that records its effect, so the caller can wait
/// until a projection has reached `position` (read-your-writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCommandResult {
    /// The application whose collector executed the command.
    #[serde(default)]
    pub application: Option<String>,
    /// The task (for StartProcess: the first task of the new instance, if any).
    pub task_id: Option<String>,
    pub process_instance_id: Option<String>,
    /// Global position of the last event of the affected stream after the command.
    pub position: u64,
    pub stream: Option<String>,
    pub version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_crosses_the_bus_as_type_and_payload() {
        let command = TaskCommand::ClaimTask(ClaimTask {
            task_id: "t-1".into(),
            user: "kermit".into(),
            actor: None,
        });
        assert_eq!(command.command_type(), "ClaimTask");
        assert_eq!(
            command.payload(),
            serde_json::json!({"taskId": "t-1", "user": "kermit"})
        );
        let back = TaskCommand::parse("ClaimTask", &command.payload()).expect("parse");
        assert_eq!(back, command);
        assert_eq!(back.task_id(), Some("t-1"));
        let request = command.request("local", 5_000, None);
        assert_eq!(request.routing_key, "local");
        assert_eq!(request.command_type, "ClaimTask");
    }

    #[test]
    fn a_command_request_of_a_newer_sender_is_read() {
        let newer = serde_json::json!({"id": Uuid::new_v4(), "type": "ClaimTask",
            "routingKey": "local", "payload": {}, "priority": 3});
        let read: CommandRequest = serde_json::from_value(newer).expect("extra fields are welcome");
        assert_eq!(read.routing_key, "local");
    }

    #[test]
    fn an_unknown_type_or_a_bad_payload_is_told_apart() {
        assert_eq!(
            TaskCommand::parse("FlyTask", &serde_json::json!({})),
            Err(ParseError::UnknownType("FlyTask".into()))
        );
        let bad = TaskCommand::parse("ClaimTask", &serde_json::json!({"taskId": 7}));
        assert!(
            matches!(bad, Err(ParseError::BadPayload { ref command_type, .. }) if command_type == "ClaimTask"),
            "{bad:?}"
        );
        assert_eq!(TaskCommand::TYPES.len(), 8);
    }
}
