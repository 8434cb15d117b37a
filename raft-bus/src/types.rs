//! What the Raft log carries, and the openraft type configuration.
//!
//! Log entries are encoded with bincode, so raw JSON payloads travel as strings here; the
//! HTTP types in `taskpool-api` are converted at the edge.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event inside a proposed append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedEvent {
    pub stream: String,
    pub event_type: String,
    /// JSON text.
    pub data: String,
    /// JSON text.
    pub metadata: Option<String>,
    pub id: Uuid,
}

/// One client's atomic append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendBatch {
    pub events: Vec<ProposedEvent>,
    pub expected_versions: BTreeMap<String, i64>,
}

/// The application data of a log entry: the appends of many clients, gathered while the
/// previous entries were being written (see `proposer`). Each batch succeeds or fails alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendCommand {
    /// Shared, so the copies openraft makes of an entry (for replication, for the state
    /// machine) cost a pointer, not the events.
    pub batches: Arc<Vec<AppendBatch>>,
    /// Milliseconds since the epoch, stamped by the leader so every node records the same time.
    pub timestamp_ms: u64,
}

/// An event as the state machine stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub data: String,
    pub metadata: Option<String>,
    pub id: Uuid,
    pub timestamp_ms: u64,
    /// On the first event of an appended batch, the batch's size; 0 on the others. The id
    /// index holds first events only: a retry is recognised by its first id.
    pub batch_len: u32,
}

/// What applying one log entry produced: one outcome per batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    /// Blank and membership entries.
    Nothing,
    Batches(Vec<BatchOutcome>),
}

/// What became of one client's append. Rejections are decided by the state machine, so
/// every node decides the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchOutcome {
    Appended(Vec<Appended>),
    WrongExpectedVersion {
        stream: String,
        current_version: i64,
    },
    /// Some, not all, ids of the batch were appended before: not a retry of one batch.
    IdReused {
        id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appended {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub id: Uuid,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = AppendCommand,
        R = ApplyOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Encodes with bincode; only our own types go through here, so it cannot fail in practice.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("bincode encodes every type of this crate")
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

impl AppendBatch {
    /// About its encoded size: the strings plus the length prefixes, id and tags around them.
    pub fn weight(&self) -> usize {
        self.events
            .iter()
            .map(|e| {
                e.data.len()
                    + e.metadata.as_ref().map_or(0, String::len)
                    + e.stream.len()
                    + e.event_type.len()
                    + 64
            })
            .sum::<usize>()
            + 16
    }
}

/// Roughly how many bytes an entry holds, to bound the log store's cache of recent entries.
pub fn entry_weight(entry: &Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(cmd) => {
            cmd.batches.iter().map(AppendBatch::weight).sum::<usize>() + 64
        }
        _ => 256,
    }
}
