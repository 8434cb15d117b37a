//! The task commands: what taskpool-core sends over the bus to a task's application (routing
//! key: the application's name) and what the collector that executes them answers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Task command types (routing key: the collector's application name).
pub const CLAIM_TASK: &str = "ClaimTask";
pub const UNCLAIM_TASK: &str = "UnclaimTask";
pub const ASSIGN_TASK: &str = "AssignTask";
pub const COMPLETE_TASK: &str = "CompleteTask";
pub const DEFER_TASK: &str = "DeferTask";
pub const UNDEFER_TASK: &str = "UndeferTask";
pub const START_PROCESS: &str = "StartProcess";
/// A question, not a change: which of some definitions the actor may start.
pub const STARTABLE_PROCESSES: &str = "StartableProcesses";
pub const TASK_COMMAND_TYPES: [&str; 8] = [
    CLAIM_TASK,
    UNCLAIM_TASK,
    ASSIGN_TASK,
    COMPLETE_TASK,
    DEFER_TASK,
    UNDEFER_TASK,
    START_PROCESS,
    STARTABLE_PROCESSES,
];

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
