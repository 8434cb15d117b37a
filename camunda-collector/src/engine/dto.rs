//! The engine's REST DTOs the collector reads. Field names follow Camunda's; only what the
//! collector uses is declared.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /task`, `GET /task/{id}`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineTask {
    pub id: String,
    pub name: Option<String>,
    pub assignee: Option<String>,
    pub owner: Option<String>,
    pub created: String,
    pub due: Option<String>,
    pub follow_up: Option<String>,
    pub last_updated: Option<String>,
    pub description: Option<String>,
    pub execution_id: Option<String>,
    pub priority: i64,
    pub process_definition_id: Option<String>,
    pub process_instance_id: Option<String>,
    pub task_definition_key: Option<String>,
    pub form_key: Option<String>,
    pub tenant_id: Option<String>,
    pub case_instance_id: Option<String>,
    pub parent_task_id: Option<String>,
}

impl EngineTask {
    /// When the task last changed as far as the engine says: `lastUpdated`, or `created`
    /// for a task nobody touched (Camunda leaves `lastUpdated` null then).
    pub fn changed_at(&self) -> &str {
        self.last_updated.as_deref().unwrap_or(&self.created)
    }
}

/// `GET /task/{id}/identity-links`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityLink {
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    #[serde(rename = "type")]
    pub link_type: String,
}

/// `GET /history/task`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoricTask {
    pub id: String,
    pub process_definition_id: Option<String>,
    pub process_instance_id: Option<String>,
    pub execution_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub delete_reason: Option<String>,
    pub owner: Option<String>,
    pub assignee: Option<String>,
    pub start_time: String,
    pub end_time: Option<String>,
    pub task_definition_key: Option<String>,
    #[serde(default)]
    pub priority: i64,
    pub due: Option<String>,
    pub follow_up: Option<String>,
    pub tenant_id: Option<String>,
}

impl From<&HistoricTask> for EngineTask {
    /// An ended task as it last was, in the form of an open one (what history does not keep,
    /// such as the form key, is absent).
    fn from(h: &HistoricTask) -> EngineTask {
        EngineTask {
            id: h.id.clone(),
            name: h.name.clone(),
            assignee: h.assignee.clone(),
            owner: h.owner.clone(),
            created: h.start_time.clone(),
            due: h.due.clone(),
            follow_up: h.follow_up.clone(),
            last_updated: None,
            description: h.description.clone(),
            execution_id: h.execution_id.clone(),
            priority: h.priority,
            process_definition_id: h.process_definition_id.clone(),
            process_instance_id: h.process_instance_id.clone(),
            task_definition_key: h.task_definition_key.clone(),
            form_key: None,
            tenant_id: h.tenant_id.clone(),
            case_instance_id: None,
            parent_task_id: None,
        }
    }
}

/// `GET /history/identity-link-log`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityLinkLog {
    pub time: String,
    #[serde(rename = "type")]
    pub link_type: Option<String>,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub task_id: Option<String>,
    pub operation_type: Option<String>,
}

/// `GET /process-definition`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDefinition {
    pub id: String,
    pub key: String,
    pub name: Option<String>,
    pub version: i64,
    pub version_tag: Option<String>,
    #[serde(default)]
    pub startable_in_tasklist: bool,
    #[serde(default)]
    pub suspended: bool,
    pub tenant_id: Option<String>,
}

/// `GET /history/process-instance/{id}` (also finds instances that ended).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoricProcessInstance {
    pub business_key: Option<String>,
}

/// A typed variable value as the REST API shows it with `deserializeValues=false`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableValue {
    #[serde(rename = "type", default)]
    pub value_type: Option<String>,
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_info: Option<Value>,
}

/// `GET /variable-instance`: one variable of one scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableInstance {
    pub name: String,
    #[serde(flatten)]
    pub value: VariableValue,
    pub process_instance_id: Option<String>,
    pub execution_id: Option<String>,
    pub task_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineUser {
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EngineGroup {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StartedInstance {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartForm {
    pub key: Option<String>,
}

/// `GET /process-definition/{id}/xml`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionXml {
    pub bpmn20_xml: Option<String>,
}

/// `GET /authorization/check`
#[derive(Debug, Clone, Deserialize)]
pub struct AuthorizationCheck {
    pub authorized: bool,
}

/// `GET /history/user-operation`: one property one operation changed (written for
/// authenticated REST calls).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOperation {
    pub operation_id: String,
    pub operation_type: String,
    pub user_id: Option<String>,
    pub property: Option<String>,
    pub org_value: Option<String>,
    pub new_value: Option<String>,
}
