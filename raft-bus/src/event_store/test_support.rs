//! What the store's unit tests build: batches, entries, and the positions an append answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::{CommittedLeaderId, EntryPayload};
use uuid::Uuid;

use crate::types::{AppendBatch, AppendCommand, BatchOutcome, Entry, LogId, ProposedEvent};

pub(super) fn batch(stream: &str, n: usize, expected: Option<i64>) -> AppendBatch {
    AppendBatch {
        events: (0..n)
            .map(|i| ProposedEvent {
                stream: stream.into(),
                event_type: "T".into(),
                data: format!("{{\"i\":{i}}}"),
                metadata: None,
                id: Uuid::new_v4(),
            })
            .collect(),
        expected_versions: expected
            .map(|v| BTreeMap::from([(stream.to_string(), v)]))
            .unwrap_or_default(),
    }
}

pub(super) fn entry(index: u64, batches: Vec<AppendBatch>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(AppendCommand {
            batches: Arc::new(batches),
            timestamp_ms: 1,
        }),
    }
}

pub(super) fn appended(outcome: &BatchOutcome) -> Vec<(u64, u64)> {
    match outcome {
        BatchOutcome::Appended(a) => a.iter().map(|e| (e.position, e.version)).collect(),
        other => panic!("expected an append, got {other:?}"),
    }
}
