//! The raft-bus client API: events, appends, reads and the cluster view.
//!
//! JSON is camelCase. Event `data` and `metadata` are kept as raw JSON text so the bus
//! never re-encodes (or reorders) what a writer sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// How many bytes `value` takes as JSON: what an event's data, or a part of it, adds to an
/// append (for the size limits of their writers).
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// Expected version meaning "the stream must not exist yet".
pub const NO_STREAM: i64 = -1;

/// One event as a writer proposes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewEvent {
    pub stream: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Box<RawValue>>,
    /// Makes the append idempotent: a retried id is not appended twice.
    pub id: Uuid,
}

impl NewEvent {
    /// An event with a fresh id from any serializable payload.
    pub fn new(
        stream: impl Into<String>,
        event_type: impl Into<String>,
        data: &impl Serialize,
    ) -> serde_json::Result<Self> {
        Ok(NewEvent {
            stream: stream.into(),
            event_type: event_type.into(),
            data: serde_json::value::to_raw_value(data)?,
            metadata: None,
            id: Uuid::new_v4(),
        })
    }
}

/// `POST /v1/append`: the batch is atomic.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendRequest {
    pub events: Vec<NewEvent>,
    /// Per stream, the version the stream must be at before this batch (-1: must not exist).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expected_versions: BTreeMap<String, i64>,
}

/// Where one appended event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendedEvent {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendResponse {
    pub events: Vec<AppendedEvent>,
}

/// A committed event as readers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordedEvent {
    /// Global, dense, starting at 1.
    pub position: u64,
    pub stream: String,
    /// Per stream, dense, starting at 0.
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Box<RawValue>>,
    pub id: Uuid,
    /// RFC 3339, set by the leader that accepted the append.
    pub timestamp: String,
}

impl RecordedEvent {
    /// Decodes `data` into a typed payload.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.data.get())
    }
}

/// `GET /v1/events`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsPage {
    pub events: Vec<RecordedEvent>,
    /// The last committed position this node has applied (0: empty store).
    pub head: u64,
}

/// `GET /v1/streams/{stream}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamPage {
    pub events: Vec<RecordedEvent>,
    /// The stream's current version; -1 when the stream does not exist.
    pub version: i64,
}

/// `GET /v1/cluster`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterInfo {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// Voters: node id → address.
    pub members: BTreeMap<String, String>,
    pub learners: BTreeMap<String, String>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub head_position: u64,
}

/// `POST /v1/cluster/learners`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddLearnerRequest {
    pub node_id: u64,
    pub addr: String,
}

/// `POST /v1/cluster/membership`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeMembershipRequest {
    pub members: Vec<u64>,
}
