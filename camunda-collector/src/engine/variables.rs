//! What the engine says about variables: the values a task sees, and the history of their
//! changes (which poll mode follows on its own watermark; a variable change does not touch
//! the task's `lastUpdated`).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{q, Engine, EngineError, EngineTask, VariableInstance};

/// `GET /history/detail?variableUpdates=true`: one set, change or removal of a variable
/// (a removal is logged as an update with a null value).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableUpdate {
    pub id: String,
    pub time: String,
    pub process_instance_id: Option<String>,
    /// Set for task-local variables.
    pub task_id: Option<String>,
}

impl Engine {
    /// The variables a task sees, as REST resolves them: its own, then each scope up to its
    /// process instance, the nearest winning. Untouched (typed, serialized).
    pub async fn task_variables(&self, task_id: &str) -> Result<Map<String, Value>, EngineError> {
        let path = format!("/task/{}/variables?deserializeValues=false", q(task_id));
        let vars = self.get_if_exists("task_variables", &path).await?;
        Ok(vars.unwrap_or_default())
    }

    /// Variables of many process instances (`processInstanceIdIn`, every scope of them) or
    /// tasks (`taskIdIn`) in one call.
    pub async fn variable_instances(
        &self,
        filter: &str,
        ids: &[String],
    ) -> Result<Vec<VariableInstance>, EngineError> {
        let path = format!(
            "/variable-instance?{filter}={}&deserializeValues=false",
            q(&ids.join(","))
        );
        self.get("variable_instance_list", &path).await
    }

    /// Variable changes logged after `after` (Camunda format), oldest first. Needs history
    /// level full.
    pub async fn variable_updates_after(
        &self,
        after: &str,
        first: u32,
        max: u32,
    ) -> Result<Vec<VariableUpdate>, EngineError> {
        let path = format!(
            "/history/detail?variableUpdates=true&occurredAfter={}&sortBy=time&sortOrder=asc\
             &deserializeValues=false&firstResult={first}&maxResults={max}",
            q(after)
        );
        self.get("history_detail_list", &path).await
    }

    /// The open tasks of some process instances, a page at a time.
    pub async fn tasks_of_instances(
        &self,
        instance_ids: &[String],
        first: u32,
        max: u32,
    ) -> Result<Vec<EngineTask>, EngineError> {
        let path = format!(
            "/task?processInstanceIdIn={}&sortBy=id&sortOrder=asc&firstResult={first}&maxResults={max}",
            q(&instance_ids.join(","))
        );
        self.get("task_list", &path).await
    }
}
