//! The replicated state: events by global position, stream versions and the event-id index,
//! in one redb file. Only the state machine writes here; the HTTP readers read.
//!
//! Applies commit without fsync (the Raft log already has every applied entry on disk) and
//! at most once a second, and before every snapshot, a commit pays for the fsync. After a
//! crash the state falls back to its last durable commit and openraft re-applies the rest
//! from the log, deterministically, so the same events land at the same positions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{EntryPayload, RaftLogId};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::watch;

use crate::types::{
    decode, encode, AppendBatch, Appended, ApplyOutcome, BatchOutcome, Entry, LogId, StoredEvent,
    StoredMembership,
};

pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Stream name → number of events in it (the next version).
pub(crate) const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");
/// (stream, version) → position.
pub(crate) const STREAM_EVENTS: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("stream_events");
/// First event id of each appended batch → its position, for idempotent retries.
pub(crate) const IDS: TableDefinition<u128, u64> = TableDefinition::new("ids");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "membership";
const KEY_HEAD: &str = "head";

const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A cheap, cloneable handle on the event store.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    head: watch::Sender<u64>,
    last_flush: Mutex<Instant>,
    /// One past the last log index whose effect is on disk (0: none): what a crash keeps.
    durable_applied: Arc<AtomicU64>,
}

/// One past a log id's index; 0 for none.
fn next_index(log_id: Option<LogId>) -> u64 {
    log_id.map_or(0, |l| l.index + 1)
}

/// The applied state that openraft asks for at start.
#[derive(Debug, Clone, Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub head: u64,
}

impl EventStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Database::builder().set_cache_size(8 << 20).create(path)?;
        let txn = db.begin_write()?;
        create_tables(&txn)?;
        txn.commit()?;
        let store = EventStore {
            inner: Arc::new(Inner {
                db,
                head: watch::channel(0).0,
                last_flush: Mutex::new(Instant::now()),
                durable_applied: Arc::default(),
            }),
        };
        let state = store.applied_state()?;
        store.inner.head.send_replace(state.head);
        store
            .inner
            .durable_applied
            .store(next_index(state.last_applied), Ordering::SeqCst);
        Ok(store)
    }

    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// One past the last log index applied durably, kept current: the log store purges no
    /// entry a crash would make the state machine need again.
    pub fn durable_applied(&self) -> Arc<AtomicU64> {
        self.inner.durable_applied.clone()
    }

    /// The last applied position; 0 for an empty store.
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// Wakes whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    pub(crate) fn publish_head(&self, head: u64) {
        self.inner.head.send_replace(head);
    }

    pub fn applied_state(&self) -> anyhow::Result<AppliedState> {
        read_applied(&self.inner.db.begin_read()?)
    }

    /// Applies committed entries in one transaction and returns one outcome per entry.
    pub fn apply(&self, entries: &[Entry]) -> anyhow::Result<Vec<ApplyOutcome>> {
        let mut txn = self.inner.db.begin_write()?;
        let durable = {
            let mut last = self.inner.last_flush.lock().expect("flush lock");
            if last.elapsed() >= FLUSH_EVERY {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut outcomes = Vec::with_capacity(entries.len());
        let head;
        {
            let mut w = Writer::open(&txn)?;
            for entry in entries {
                let outcome = match &entry.payload {
                    EntryPayload::Blank => ApplyOutcome::Nothing,
                    EntryPayload::Normal(cmd) => ApplyOutcome::Batches(
                        cmd.batches
                            .iter()
                            .map(|b| w.append(b, cmd.timestamp_ms))
                            .collect::<anyhow::Result<_>>()?,
                    ),
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(*entry.get_log_id()), m.clone());
                        w.meta.insert(KEY_MEMBERSHIP, encode(&stored).as_slice())?;
                        ApplyOutcome::Nothing
                    }
                };
                outcomes.push(outcome);
            }
            if let Some(last) = entries.last() {
                w.meta
                    .insert(KEY_APPLIED, encode(&Some(*last.get_log_id())).as_slice())?;
            }
            w.finish()?;
            head = w.head;
        }
        txn.commit()?;
        if durable {
            let last = entries.last().map(|e| *e.get_log_id());
            self.inner
                .durable_applied
                .fetch_max(next_index(last), Ordering::SeqCst);
        }
        self.publish_head(head);
        Ok(outcomes)
    }

    /// Makes every applied entry durable.
    pub fn flush(&self) -> anyhow::Result<()> {
        // Read first: the durable commit below keeps at least what was applied by now.
        let applied = self.applied_state()?.last_applied;
        let mut txn = self.inner.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        self.inner
            .durable_applied
            .fetch_max(next_index(applied), Ordering::SeqCst);
        *self.inner.last_flush.lock().expect("flush lock") = Instant::now();
        Ok(())
    }

    /// Events from `from` (inclusive), at most `limit`.
    pub fn read(&self, from: u64, limit: usize) -> anyhow::Result<Vec<StoredEvent>> {
        let txn = self.inner.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in events.range(from..)?.take(limit) {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// A stream's events from `from_version`, at most `limit`, and its current version
    /// (-1: no such stream).
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> anyhow::Result<(Vec<StoredEvent>, i64)> {
        let txn = self.inner.db.begin_read()?;
        let streams = txn.open_table(STREAMS)?;
        let Some(count) = streams.get(stream)?.map(|v| v.value()) else {
            return Ok((Vec::new(), -1));
        };
        let index = txn.open_table(STREAM_EVENTS)?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in index
            .range((stream, from_version)..(stream, count))?
            .take(limit)
        {
            let (_, pos) = row?;
            if let Some(v) = events.get(pos.value())? {
                out.push(decode(v.value())?);
            }
        }
        Ok((out, count as i64 - 1))
    }

    /// Replaces the whole state with the events of a snapshot, in one durable transaction.
    pub fn replace(
        &self,
        state: &AppliedState,
        events: impl Iterator<Item = anyhow::Result<StoredEvent>>,
    ) -> anyhow::Result<()> {
        let mut txn = self.inner.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.delete_table(EVENTS)?;
        txn.delete_table(STREAMS)?;
        txn.delete_table(STREAM_EVENTS)?;
        txn.delete_table(IDS)?;
        txn.delete_table(META)?;
        create_tables(&txn)?;
        {
            let mut w = Writer::open(&txn)?;
            for event in events {
                w.insert(&event?)?;
            }
            anyhow::ensure!(
                w.head == state.head,
                "snapshot holds events up to position {} but says {}",
                w.head,
                state.head
            );
            w.meta
                .insert(KEY_APPLIED, encode(&state.last_applied).as_slice())?;
            w.meta
                .insert(KEY_MEMBERSHIP, encode(&state.membership).as_slice())?;
            w.finish()?;
        }
        txn.commit()?;
        // A snapshot may also take the state back (an older one over a newer state).
        self.inner
            .durable_applied
            .store(next_index(state.last_applied), Ordering::SeqCst);
        self.publish_head(state.head);
        Ok(())
    }
}

/// The applied state as one read transaction sees it.
pub(crate) fn read_applied(txn: &redb::ReadTransaction) -> anyhow::Result<AppliedState> {
    let meta = txn.open_table(META)?;
    let mut state = AppliedState::default();
    if let Some(v) = meta.get(KEY_APPLIED)? {
        state.last_applied = decode(v.value())?;
    }
    if let Some(v) = meta.get(KEY_MEMBERSHIP)? {
        state.membership = decode(v.value())?;
    }
    if let Some(v) = meta.get(KEY_HEAD)? {
        state.head = decode(v.value())?;
    }
    Ok(state)
}

fn create_tables(txn: &WriteTransaction) -> anyhow::Result<()> {
    txn.open_table(EVENTS)?;
    txn.open_table(STREAMS)?;
    txn.open_table(STREAM_EVENTS)?;
    txn.open_table(IDS)?;
    txn.open_table(META)?;
    Ok(())
}

/// The open tables of one write transaction.
struct Writer<'t> {
    events: redb::Table<'t, u64, &'static [u8]>,
    streams: redb::Table<'t, &'static str, u64>,
    stream_events: redb::Table<'t, (&'static str, u64), u64>,
    ids: redb::Table<'t, u128, u64>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    head: u64,
    /// Stream versions changed in this transaction, written once each by `finish`.
    stream_counts: HashMap<String, u64>,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction) -> anyhow::Result<Self> {
        let meta = txn.open_table(META)?;
        let head = match meta.get(KEY_HEAD)? {
            Some(v) => decode(v.value())?,
            None => 0,
        };
        Ok(Writer {
            events: txn.open_table(EVENTS)?,
            streams: txn.open_table(STREAMS)?,
            stream_events: txn.open_table(STREAM_EVENTS)?,
            ids: txn.open_table(IDS)?,
            meta,
            head,
            stream_counts: HashMap::new(),
        })
    }

    fn stream_count(&self, stream: &str) -> anyhow::Result<u64> {
        if let Some(n) = self.stream_counts.get(stream) {
            return Ok(*n);
        }
        Ok(self.streams.get(stream)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Writes the stream versions and the head this transaction moved.
    fn finish(&mut self) -> anyhow::Result<()> {
        for (stream, count) in &self.stream_counts {
            self.streams.insert(stream.as_str(), *count)?;
        }
        self.meta.insert(KEY_HEAD, encode(&self.head).as_slice())?;
        Ok(())
    }

    /// When the batch's first event id was appended before: the original batch's positions if
    /// this is a retry of it (same ids, same order), else a refusal.
    fn earlier_batch(&self, cmd: &AppendBatch) -> anyhow::Result<Option<BatchOutcome>> {
        let Some(first) = cmd.events.first() else {
            return Ok(None);
        };
        let Some(start) = self.ids.get(first.id.as_u128())?.map(|v| v.value()) else {
            return Ok(None);
        };
        let reused = Ok(Some(BatchOutcome::IdReused { id: first.id }));
        let mut original = Vec::with_capacity(cmd.events.len());
        for (offset, e) in cmd.events.iter().enumerate() {
            let position = start + offset as u64;
            let stored: StoredEvent = match self.events.get(position)? {
                Some(v) => decode(v.value())?,
                None => return reused,
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
    fn append(&mut self, cmd: &AppendBatch, timestamp_ms: u64) -> anyhow::Result<BatchOutcome> {
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

    fn insert(&mut self, e: &StoredEvent) -> anyhow::Result<()> {
        self.events.insert(e.position, encode(e).as_slice())?;
        self.stream_events
            .insert((e.stream.as_str(), e.version), e.position)?;
        match self.stream_counts.get_mut(e.stream.as_str()) {
            Some(n) => *n = e.version + 1,
            None => {
                self.stream_counts.insert(e.stream.clone(), e.version + 1);
            }
        }
        if e.batch_len > 0 {
            self.ids.insert(e.id.as_u128(), e.position)?;
        }
        self.head = e.position;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use uuid::Uuid;

    use super::*;
    use crate::types::{AppendCommand, ProposedEvent};

    fn batch(stream: &str, n: usize, expected: Option<i64>) -> AppendBatch {
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

    fn entry(index: u64, batches: Vec<AppendBatch>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(AppendCommand {
                batches: Arc::new(batches),
                timestamp_ms: 1,
            }),
        }
    }

    fn appended(outcome: &BatchOutcome) -> Vec<(u64, u64)> {
        match outcome {
            BatchOutcome::Appended(a) => a.iter().map(|e| (e.position, e.version)).collect(),
            other => panic!("expected an append, got {other:?}"),
        }
    }

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
}
