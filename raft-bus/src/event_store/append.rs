//! The append rule: idempotency by the batch's first id, then optimistic concurrency, then
//! dense positions and versions.

use super::Writer;
use crate::types::{AppendBatch, Appended, BatchOutcome, StoredEvent};

impl Writer<'_, '_> {
    /// When the batch's first event id was appended before: the original batch's positions if
    /// this is a retry of it (same ids, same order), else a refusal.
    fn earlier_batch(&self, cmd: &AppendBatch) -> anyhow::Result<Option<BatchOutcome>> {
        let Some(first) = cmd.events.first() else {
            return Ok(None);
        };
        let Some(start) = self.batch_at(first.id.as_u128())? else {
            return Ok(None);
        };
        let reused = Ok(Some(BatchOutcome::IdReused { id: first.id }));
        let mut original = Vec::with_capacity(cmd.events.len());
        for (offset, e) in cmd.events.iter().enumerate() {
            let position = start + offset as u64;
            let Some(stored) = self.event(position)? else {
                return reused;
            };
            let same_batch = if offset == 0 {
                stored.batch_len as usize == cmd.events.len()
            } else {
                stored.batch_len == 0
            };
            if !same_batch || stored.id != e.id {
                return reused;
            }
            original.push(Appended {
                position,
                stream: stored.stream,
                version: stored.version,
                id: stored.id,
            });
        }
        Ok(Some(BatchOutcome::Appended(original)))
    }

    /// The business rule of the bus: idempotency by id, then optimistic concurrency, then
    /// dense positions and versions. Every node runs it on the same entries in the same order.
    pub(super) fn append(
        &mut self,
        cmd: &AppendBatch,
        timestamp_ms: u64,
    ) -> anyhow::Result<BatchOutcome> {
        if let Some(original) = self.earlier_batch(cmd)? {
            return Ok(original);
        }
        for (stream, expected) in &cmd.expected_versions {
            let current = self.stream_count(stream)? as i64 - 1;
            if current != *expected {
                return Ok(BatchOutcome::WrongExpectedVersion {
                    stream: stream.clone(),
                    current_version: current,
                });
            }
        }
        let mut appended = Vec::with_capacity(cmd.events.len());
        for (i, e) in cmd.events.iter().enumerate() {
            let version = self.stream_count(&e.stream)?;
            let stored = StoredEvent {
                position: self.head + 1,
                stream: e.stream.clone(),
                version,
                event_type: e.event_type.clone(),
                data: e.data.clone(),
                metadata: e.metadata.clone(),
                id: e.id,
                timestamp_ms,
                batch_len: if i == 0 { cmd.events.len() as u32 } else { 0 },
            };
            self.insert(&stored)?;
            appended.push(Appended {
                position: stored.position,
                stream: stored.stream,
                version,
                id: e.id,
            });
        }
        Ok(BatchOutcome::Appended(appended))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{appended, batch, entry};
    use crate::event_store::EventStore;
    use crate::types::{AppendBatch, ApplyOutcome, BatchOutcome};

    #[test]
    fn batches_of_one_entry_see_each_other_and_fail_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = EventStore::open(&dir.path().join("events.redb"))?;
        let first = batch("s", 2, Some(-1));
        let outcomes = store.apply(&[entry(
            1,
            vec![
                first.clone(),
                batch("s", 1, Some(1)),
                batch("s", 1, Some(1)),
                batch("other", 1, None),
                first.clone(),
            ],
        )])?;
        let ApplyOutcome::Batches(b) = &outcomes[0] else {
            panic!("batches")
        };
        assert_eq!(appended(&b[0]), vec![(1, 0), (2, 1)]);
        assert_eq!(appended(&b[1]), vec![(3, 2)]);
        assert_eq!(
            b[2],
            BatchOutcome::WrongExpectedVersion {
                stream: "s".into(),
                current_version: 2
            }
        );
        assert_eq!(appended(&b[3]), vec![(4, 0)]);
        // The retry inside the same entry answers the original positions.
        assert_eq!(appended(&b[4]), vec![(1, 0), (2, 1)]);
        assert_eq!(store.head(), 4);

        // The versions written at the end of the transaction are what the next one sees.
        let next = store.apply(&[entry(2, vec![batch("s", 1, Some(2))])])?;
        let ApplyOutcome::Batches(b) = &next[0] else {
            panic!("batches")
        };
        assert_eq!(appended(&b[0]), vec![(5, 3)]);
        let (events, version) = store.read_stream("s", 0, 100)?;
        assert_eq!(version, 3);

        // The first id of an earlier batch with other events after it is not a retry.
        let mut shorter = first.clone();
        shorter.events.truncate(1);
        let mut longer = first.clone();
        longer.events.push(batch("s", 1, None).events.remove(0));
        let refused = store.apply(&[entry(3, vec![shorter, longer])])?;
        let ApplyOutcome::Batches(b) = &refused[0] else {
            panic!("batches")
        };
        let reused = BatchOutcome::IdReused {
            id: first.events[0].id,
        };
        assert_eq!(b, &vec![reused.clone(), reused]);
        assert_eq!(store.head(), 5);
        let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![1, 2, 3, 5]);
        Ok(())
    }

    /// A store replaced by a snapshot's events knows their batch ids: the id filter is
    /// rebuilt with the tables, so a retry is still an answer, not a second append.
    #[test]
    fn retries_are_recognised_after_a_snapshot_replaced_the_store() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let source = EventStore::open(&dir.path().join("source.redb"))?;
        let batches: Vec<AppendBatch> = (0..50).map(|i| batch(&format!("s{i}"), 2, None)).collect();
        source.apply(&[entry(1, batches.clone())])?;
        let target = EventStore::open(&dir.path().join("target.redb"))?;
        target.apply(&[entry(1, vec![batch("old", 3, None)])])?;
        target.replace(
            &source.applied_state()?,
            source.read(1, 1_000)?.into_iter().map(Ok),
        )?;
        let retried = target.apply(&[entry(2, batches)])?;
        let ApplyOutcome::Batches(b) = &retried[0] else {
            panic!("batches")
        };
        for (i, outcome) in b.iter().enumerate() {
            let p = 2 * i as u64 + 1;
            assert_eq!(appended(outcome), vec![(p, 0), (p + 1, 1)]);
        }
        assert_eq!(target.head(), 100);
        Ok(())
    }
}
