//! One open task as the task API answers it (`GET /api/v1/tasks/{application}/{taskId}`, the
//! list, an action's result, the task stream): the task, who may see it, and where the bus
//! recorded its last change.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::tasks::Task;

// Borrowed when the server writes it (from its view, without a copy), owned when a client
// reads it. Named `TaskView` in the OpenAPI document, as it always was.
/// One open task as the view holds it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = TaskView))]
#[serde(rename_all = "camelCase")]
pub struct TaskBody<'a> {
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Task))]
    pub task: Cow<'a, Task>,
    /// Who may see the task: `user:{assignee}`, `user:{candidate}`, `group:{candidate group}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub authorized_principals: Cow<'a, [String]>,
    /// Global bus position of the last event applied to this task.
    pub position: u64,
    /// Version of the task's stream after that event.
    pub version: u64,
    /// When the bus recorded that event (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub changed: Cow<'a, str>,
}
