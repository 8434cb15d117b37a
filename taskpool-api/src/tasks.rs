//! Task events (what the collector appends, what taskpool-core projects). One stream per task:
//! `task/{application}/{taskId}` (see [`crate::streams`]; engine ids are unique only within one
//! engine, so every key carries its application).
//!
//! Dates are RFC 3339 in UTC with milliseconds (`2026-11-23T20:40:05.123Z`), so they sort as
//! text. The state of a task is the fold of its stream ([`Task::apply`]).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::bus::RecordedEvent;
pub use crate::identity::{IdentityPart, IdentitySynced, IdentityUser};
pub use crate::task_fold::TaskFold;

pub const TASK_CREATED: &str = "TaskCreated";
pub const TASK_ASSIGNED: &str = "TaskAssigned";
pub const TASK_CANDIDATES_CHANGED: &str = "TaskCandidatesChanged";
pub const TASK_UPDATED: &str = "TaskUpdated";
pub const TASK_COMPLETED: &str = "TaskCompleted";
pub const TASK_DELETED: &str = "TaskDeleted";
pub const PROCESS_DEFINITION_REGISTERED: &str = "ProcessDefinitionRegistered";
pub const IDENTITY_SYNCED: &str = "IdentitySynced";

/// A task's key across the platform: its application and its id in that application's engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskKey {
    pub application: String,
    pub task_id: String,
}

impl TaskKey {
    pub fn new(application: impl Into<String>, task_id: impl Into<String>) -> TaskKey {
        TaskKey {
            application: application.into(),
            task_id: task_id.into(),
        }
    }
}

/// `application/taskId`: unambiguous, because an application name holds no `/`.
impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.application, self.task_id)
    }
}

/// Where a task comes from; every task event carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SourceReference {
    pub application: String,
    pub engine: String,
    pub process_definition_key: Option<String>,
    pub process_definition_id: Option<String>,
    pub process_instance_id: Option<String>,
    pub execution_id: Option<String>,
    pub process_name: Option<String>,
    pub business_key: Option<String>,
    pub tenant_id: Option<String>,
}

impl SourceReference {
    /// `other` names another process definition: the task was migrated. Nothing else of a
    /// source changes while a task lives.
    pub fn moved_to(&self, other: &SourceReference) -> bool {
        self.process_definition_id != other.process_definition_id
            || self.process_definition_key != other.process_definition_key
    }
}

/// The Camunda Form a task opens (`camunda:formRef` in the model): Camunda's REST API calls
/// it `camundaFormRef`, Operaton's `operatonFormRef`. `binding` is latest, deployment, version
/// or versionTag; `version` goes with the binding `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FormRef {
    pub key: String,
    #[serde(default)]
    pub binding: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// A whole task: the data of `TaskCreated`, and the fold of a task stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub task_definition_key: Option<String>,
    pub priority: i64,
    pub created: String,
    pub due: Option<String>,
    pub follow_up: Option<String>,
    pub assignee: Option<String>,
    pub owner: Option<String>,
    pub candidate_users: Vec<String>,
    pub candidate_groups: Vec<String>,
    pub form_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_ref: Option<FormRef>,
    /// Process variables as plain JSON, filtered by the collector's include/exclude lists.
    pub payload: Map<String, Value>,
    /// Variables left out of `payload` because the task would not fit the collector's event
    /// size limit (the largest first), by name; absent when nothing was left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_truncated: Vec<String>,
    /// Its process instance (or definition) is suspended: the engine refuses every action on
    /// it until it is activated again.
    #[serde(default)]
    pub suspended: bool,
    pub source: SourceReference,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssigned {
    pub task_id: String,
    /// `None`: unclaimed.
    pub assignee: Option<String>,
    pub source: SourceReference,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCandidatesChanged {
    pub task_id: String,
    pub candidate_users: Vec<String>,
    pub candidate_groups: Vec<String>,
    pub source: SourceReference,
}

/// Only the attributes that changed are present; `null` means the attribute was cleared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUpdated {
    pub task_id: String,
    pub source: SourceReference,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub name: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub description: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub task_definition_key: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub due: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub follow_up: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub owner: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub form_key: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub form_ref: Option<Option<FormRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    /// The names left out of the payload, when they changed (empty: none any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_truncated: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
    /// `source` moved to another process definition (a migration): the event's `source`
    /// replaces the task's. Absent: the task's source stays as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub definition_changed: bool,
}

impl TaskUpdated {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.priority.is_none()
            && self.due.is_none()
            && self.follow_up.is_none()
            && self.owner.is_none()
            && self.form_key.is_none()
            && self.form_ref.is_none()
            && self.payload.is_none()
            && self.payload_truncated.is_none()
            && self.suspended.is_none()
            && self.task_definition_key.is_none()
            && !self.definition_changed
    }
}

/// The data of an event of type `event_type`, read as `T`.
pub(crate) fn decode_data<T: serde::de::DeserializeOwned>(
    event_type: &str,
    data: &str,
) -> Result<T, DecodeError> {
    serde_json::from_str(data).map_err(|source| DecodeError::Data {
        event_type: event_type.to_owned(),
        source,
    })
}

/// A field that is present in the JSON (even as `null`) becomes `Some(..)`.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCompleted {
    pub task_id: String,
    /// The assignee when the task was completed.
    pub completed_by: Option<String>,
    pub source: SourceReference,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDeleted {
    pub task_id: String,
    pub delete_reason: Option<String>,
    pub source: SourceReference,
}

/// One event of a task stream.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Created(Task),
    Assigned(TaskAssigned),
    CandidatesChanged(TaskCandidatesChanged),
    Updated(TaskUpdated),
    Completed(TaskCompleted),
    Deleted(TaskDeleted),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event type {0} is not one of this stream's")]
    UnknownType(String),
    #[error("bad {event_type} data: {source}")]
    Data {
        event_type: String,
        source: serde_json::Error,
    },
}

impl TaskEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Created(_) => TASK_CREATED,
            TaskEvent::Assigned(_) => TASK_ASSIGNED,
            TaskEvent::CandidatesChanged(_) => TASK_CANDIDATES_CHANGED,
            TaskEvent::Updated(_) => TASK_UPDATED,
            TaskEvent::Completed(_) => TASK_COMPLETED,
            TaskEvent::Deleted(_) => TASK_DELETED,
        }
    }

    pub fn task_id(&self) -> &str {
        match self {
            TaskEvent::Created(e) => &e.task_id,
            TaskEvent::Assigned(e) => &e.task_id,
            TaskEvent::CandidatesChanged(e) => &e.task_id,
            TaskEvent::Updated(e) => &e.task_id,
            TaskEvent::Completed(e) => &e.task_id,
            TaskEvent::Deleted(e) => &e.task_id,
        }
    }

    pub fn source(&self) -> &SourceReference {
        match self {
            TaskEvent::Created(e) => &e.source,
            TaskEvent::Assigned(e) => &e.source,
            TaskEvent::CandidatesChanged(e) => &e.source,
            TaskEvent::Updated(e) => &e.source,
            TaskEvent::Completed(e) => &e.source,
            TaskEvent::Deleted(e) => &e.source,
        }
    }

    /// Completed or deleted: nothing follows in the stream.
    pub fn is_final(&self) -> bool {
        matches!(self, TaskEvent::Completed(_) | TaskEvent::Deleted(_))
    }

    pub fn to_json(&self) -> serde_json::Result<Box<serde_json::value::RawValue>> {
        use serde_json::value::to_raw_value;
        match self {
            TaskEvent::Created(e) => to_raw_value(e),
            TaskEvent::Assigned(e) => to_raw_value(e),
            TaskEvent::CandidatesChanged(e) => to_raw_value(e),
            TaskEvent::Updated(e) => to_raw_value(e),
            TaskEvent::Completed(e) => to_raw_value(e),
            TaskEvent::Deleted(e) => to_raw_value(e),
        }
    }

    pub fn decode(event_type: &str, data: &str) -> Result<TaskEvent, DecodeError> {
        Ok(match event_type {
            TASK_CREATED => TaskEvent::Created(decode_data(event_type, data)?),
            TASK_ASSIGNED => TaskEvent::Assigned(decode_data(event_type, data)?),
            TASK_CANDIDATES_CHANGED => TaskEvent::CandidatesChanged(decode_data(event_type, data)?),
            TASK_UPDATED => TaskEvent::Updated(decode_data(event_type, data)?),
            TASK_COMPLETED => TaskEvent::Completed(decode_data(event_type, data)?),
            TASK_DELETED => TaskEvent::Deleted(decode_data(event_type, data)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }

    pub fn from_recorded(event: &RecordedEvent) -> Result<TaskEvent, DecodeError> {
        TaskEvent::decode(&event.event_type, event.data.get())
    }
}

/// `ProcessDefinitionRegistered`, stream `process-definition/{application}/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProcessDefinitionRegistered {
    pub application: String,
    pub key: String,
    pub id: String,
    pub version: i64,
    pub name: Option<String>,
    pub version_tag: Option<String>,
    pub startable_in_tasklist: bool,
    pub candidate_starter_users: Vec<String>,
    pub candidate_starter_groups: Vec<String>,
    pub form_key: Option<String>,
    /// The start event's Camunda Form, when it opens one by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_ref: Option<FormRef>,
    pub tenant_id: Option<String>,
}
