//! openraft's own storage test suite, run on the segment log store and the event-store state
//! machine, each time on fresh files.

use openraft::testing::{StoreBuilder, Suite};

use crate::event_store::EventStore;
use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::types::{StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let io = |e: anyhow::Error| -> StorageError {
            openraft::StorageIOError::write(openraft::AnyError::error(e.to_string())).into()
        };
        let dir = tempfile::tempdir().map_err(|e| io(e.into()))?;
        let log = LogStore::open(&dir.path().join("log")).map_err(io)?;
        let store = EventStore::open(&dir.path().join("events.redb")).map_err(io)?;
        let sm = StateMachine::new(store, dir.path().join("snapshots")).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn passes_openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}
