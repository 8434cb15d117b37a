//! The engine's REST DTOs the collector reads. Field names follow Camunda's; only what the
//! collector uses is declared.

use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use taskpool_api::tasks::FormRef;

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
    /// Operaton renamed Camunda's field; CIB seven kept it.
    #[serde(default, alias = "operatonFormRef")]
    pub camunda_form_ref: Option<FormRef>,
    pub tenant_id: Option<String>,
    pub case_instance_id: Option<String>,
    pub parent_task_id: Option<String>,
    /// Its process instance or definition is suspended.
    #[serde(default)]
    pub suspended: bool,
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
            camunda_form_ref: None,
            tenant_id: h.tenant_id.clone(),
            case_instance_id: None,
            parent_task_id: None,
            suspended: false,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartForm {
    pub key: Option<String>,
    #[serde(default, alias = "operatonFormRef")]
    pub camunda_form_ref: Option<FormRef>,
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

/// Contract tests: each engine's task and form JSON as its REST DTOs (`TaskDto`, `FormDto`)
/// write them: Camunda 7.24, Operaton (which renamed `camundaFormRef` to `operatonFormRef`)
/// and CIB seven (which kept Camunda's names). Their artifacts cannot be run here; the
/// field lists follow their published DTO sources.
#[cfg(test)]
mod contract {
    use super::*;
    use serde_json::json;

    /// Every field of the products' `TaskDto`, with the form reference under `form_field`.
    fn task_json(form_field: &str) -> Value {
        let mut t = json!({
            "id": "t1", "name": "Approve", "assignee": null, "created": "2026-01-02T03:04:05.678+0000",
            "due": null, "followUp": null, "lastUpdated": null, "delegationState": null,
            "description": null, "executionId": "e1", "owner": null, "parentTaskId": null,
            "priority": 50, "processDefinitionId": "p:1:x", "processInstanceId": "i1",
            "taskDefinitionKey": "approve", "caseExecutionId": null, "caseInstanceId": null,
            "caseDefinitionId": null, "suspended": false, "formKey": null, "tenantId": null,
            "taskState": "Created"
        });
        t[form_field] = json!({"key": "invoiceApproval", "binding": "version", "version": 3});
        t
    }

    fn expected() -> Option<FormRef> {
        Some(FormRef {
            key: "invoiceApproval".into(),
            binding: Some("version".into()),
            version: Some(3),
        })
    }

    #[test]
    fn camunda_and_cib_seven_tasks_name_their_form_camunda_form_ref() {
        let t: EngineTask =
            serde_json::from_value(task_json("camundaFormRef")).expect("the DTO parses");
        assert_eq!(t.camunda_form_ref, expected());
        assert_eq!(t.priority, 50);
        assert_eq!(t.process_instance_id.as_deref(), Some("i1"));
    }

    #[test]
    fn operaton_tasks_name_their_form_operaton_form_ref() {
        let t: EngineTask =
            serde_json::from_value(task_json("operatonFormRef")).expect("the DTO parses");
        assert_eq!(t.camunda_form_ref, expected());
    }

    #[test]
    fn a_task_without_a_form_reference_has_none() {
        let mut json = task_json("camundaFormRef");
        json["camundaFormRef"] = Value::Null;
        let t: EngineTask = serde_json::from_value(json).expect("the DTO parses");
        assert_eq!(t.camunda_form_ref, None);
        let mut json = task_json("x");
        json.as_object_mut().expect("an object").remove("x");
        let t: EngineTask = serde_json::from_value(json).expect("the DTO parses");
        assert_eq!(t.camunda_form_ref, None);
    }

    #[test]
    fn start_forms_of_every_product_are_read() {
        for field in ["camundaFormRef", "operatonFormRef"] {
            let mut form = json!({"key": null, "contextPath": "/app"});
            form[field] = json!({"key": "invoiceApproval", "binding": "version", "version": 3});
            let f: StartForm = serde_json::from_value(form).expect("the DTO parses");
            assert_eq!(f.camunda_form_ref, expected(), "{field}");
        }
        let f: StartForm = serde_json::from_value(json!({"key": "embedded:app:start.html"}))
            .expect("the DTO parses");
        assert_eq!(f.key.as_deref(), Some("embedded:app:start.html"));
    }

    #[test]
    fn the_version_answer_of_every_product_is_read() {
        for version in ["7.24.0", "1.0.0", "2.1.0"] {
            let v: super::super::probe::EngineVersion =
                serde_json::from_value(json!({ "version": version })).expect("the DTO parses");
            assert_eq!(v.version, version);
        }
    }
}
