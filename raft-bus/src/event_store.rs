//! The replicated state: events by global position, stream runs and the event-id index,
//! in one redb file. Only the state machine writes here; the HTTP readers read.
//!
//! Events are stored in chunks of consecutive positions ([`crate::event_chunk`]) and a
//! stream's positions as runs (a batch of 100 events to one stream is one row), so an apply
//! writes a few rows per entry instead of two per event.
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
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};
use tokio::sync::watch;

use crate::event_chunk::{Chunk, ChunkBuilder};
use crate::types::{
    decode, encode, AppendBatch, Appended, ApplyOutcome, BatchOutcome, Entry, LogId, StoredEvent,
    StoredMembership,
};

/// First position of a chunk → the chunk ([`crate::event_chunk`]).
const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_chunks");
/// (stream, first version of a run) → (first position, events in the run): a run is events
/// of one stream at consecutive positions, written by one apply. A stream's last run gives
/// its version.
const STREAM_RUNS: TableDefinition<(&str, u64), (u64, u64)> = TableDefinition::new("stream_runs");
/// The first format's tables: one row per event and per stream version, and each stream's
/// count. Converted at open.
const OLD_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const OLD_STREAM_EVENTS: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_events");
const OLD_STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");
/// First event id of each appended batch → its position, for idempotent retries.
const IDS: TableDefinition<u128, u64> = TableDefinition::new("ids");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "membership";
const KEY_HEAD: &str = "head";

const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Stream versions kept in memory between applies, at most; past it the cache starts over.
const CACHED_VERSIONS: usize = 100_000;

/// A cheap, cloneable handle on the event store.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    head: watch::Sender<u64>,
    last_flush: Mutex<Instant>,
    /// The version of recently appended streams as of the last commit: looking a stream's
    /// last run up in the table was a tenth of an apply.
    versions: Mutex<HashMap<String, u64>>,
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
        let mut txn = db.begin_write()?;
        create_tables(&txn)?;
        let tables: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
        if tables.iter().any(|t| t == OLD_EVENTS.name()) {
            txn.set_durability(Durability::Immediate)?;
            convert_first_format(&txn)?;
        }
        if tables.iter().any(|t| t == OLD_STREAMS.name()) {
            txn.delete_table(OLD_STREAMS)?;
        }
        txn.commit()?;
        let store = EventStore {
            inner: Arc::new(Inner {
                db,
                head: watch::channel(0).0,
                last_flush: Mutex::new(Instant::now()),
                versions: Mutex::default(),
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
        let versions;
        {
            let known = std::mem::take(&mut *self.inner.versions.lock().expect("versions lock"));
            let mut w = Writer::open(&txn, known)?;
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
            versions = w.known;
        }
        txn.commit()?;
        // Only what was committed is cached; a failed apply leaves the cache empty.
        if versions.len() <= CACHED_VERSIONS {
            *self.inner.versions.lock().expect("versions lock") = versions;
        }
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
        let chunks = txn.open_table(CHUNKS)?;
        let start = match chunks.range(..=from)?.next_back() {
            Some(row) => row?.0.value(),
            None => from,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in chunks.range(start..)? {
            let (first, bytes) = row?;
            let chunk = Chunk::parse(bytes.value())?;
            let skip = from.saturating_sub(first.value()) as usize;
            for i in skip..chunk.len() {
                if out.len() == limit {
                    return Ok(out);
                }
                out.push(chunk.event(i)?);
            }
        }
        Ok(out)
    }

    /// Calls `f` with every stored event, encoded, in position order (for a snapshot).
    pub(crate) fn each_event(
        txn: &redb::ReadTransaction,
        mut f: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for row in txn.open_table(CHUNKS)?.iter()? {
            let (_, bytes) = row?;
            let chunk = Chunk::parse(bytes.value())?;
            for i in 0..chunk.len() {
                f(chunk.event_bytes(i)?)?;
            }
        }
        Ok(())
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
        let runs = txn.open_table(STREAM_RUNS)?;
        let Some(count) = stream_version_count(&runs, stream)? else {
            return Ok((Vec::new(), -1));
        };
        // The run holding `from_version` starts at or before it.
        let start = match runs
            .range((stream, 0)..=(stream, from_version))?
            .next_back()
        {
            Some(row) => row?.0.value().1,
            None => from_version,
        };
        let mut positions = Vec::new();
        'runs: for row in runs.range((stream, start)..(stream, count))? {
            let (key, run) = row?;
            let (first_version, (first_position, len)) = (key.value().1, run.value());
            for i in from_version.saturating_sub(first_version)..len {
                if positions.len() == limit {
                    break 'runs;
                }
                positions.push(first_position + i);
            }
        }
        let chunks = txn.open_table(CHUNKS)?;
        let out = positions
            .into_iter()
            .map(|p| event_at(&chunks, p)?.ok_or_else(|| anyhow::anyhow!("no event at {p}")))
            .collect::<anyhow::Result<_>>()?;
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
        txn.delete_table(CHUNKS)?;
        txn.delete_table(STREAM_RUNS)?;
        txn.delete_table(IDS)?;
        txn.delete_table(META)?;
        create_tables(&txn)?;
        {
            self.inner.versions.lock().expect("versions lock").clear();
            let mut w = Writer::open(&txn, HashMap::new())?;
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
    txn.open_table(CHUNKS)?;
    txn.open_table(STREAM_RUNS)?;
    txn.open_table(IDS)?;
    txn.open_table(META)?;
    Ok(())
}

/// How many events `stream` has (its next version), from its last run; None: no such stream.
fn stream_version_count(
    runs: &impl ReadableTable<(&'static str, u64), (u64, u64)>,
    stream: &str,
) -> anyhow::Result<Option<u64>> {
    Ok(
        match runs.range((stream, 0)..=(stream, u64::MAX))?.next_back() {
            Some(row) => {
                let (key, run) = row?;
                Some(key.value().1 + run.value().1)
            }
            None => None,
        },
    )
}

/// The event at `position`, if stored.
fn event_at(
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    position: u64,
) -> anyhow::Result<Option<StoredEvent>> {
    let Some(row) = chunks.range(..=position)?.next_back() else {
        return Ok(None);
    };
    let (first, bytes) = row?;
    let chunk = Chunk::parse(bytes.value())?;
    let offset = (position - first.value()) as usize;
    if offset >= chunk.len() {
        return Ok(None);
    }
    Ok(Some(chunk.event(offset)?))
}

/// Rewrites a store of the first format (a row per event, a row per stream version) in
/// chunks and runs, in the caller's transaction. Its stream counts are dropped by `open`.
fn convert_first_format(txn: &WriteTransaction) -> anyhow::Result<()> {
    {
        let old = txn.open_table(OLD_EVENTS)?;
        let mut w = Writer::open(txn, HashMap::new())?;
        for row in old.iter()? {
            w.insert(&decode(row?.1.value())?)?;
        }
        w.finish()?;
    }
    txn.delete_table(OLD_EVENTS)?;
    txn.delete_table(OLD_STREAM_EVENTS)?;
    tracing::info!("converted the event store to chunked events and stream runs");
    Ok(())
}

/// Events of one stream at consecutive positions, from one transaction.
struct Run {
    first_version: u64,
    first_position: u64,
    len: u64,
}

impl Run {
    fn starting_with(e: &StoredEvent) -> Self {
        Run {
            first_version: e.version,
            first_position: e.position,
            len: 1,
        }
    }

    /// The run's row in the `STREAM_RUNS` table.
    fn write_to(
        &self,
        runs: &mut redb::Table<'_, (&'static str, u64), (u64, u64)>,
        stream: &str,
    ) -> anyhow::Result<()> {
        runs.insert(
            (stream, self.first_version),
            (self.first_position, self.len),
        )?;
        Ok(())
    }
}

/// The open tables of one write transaction.
struct Writer<'t> {
    chunks: redb::Table<'t, u64, &'static [u8]>,
    runs: redb::Table<'t, (&'static str, u64), (u64, u64)>,
    ids: redb::Table<'t, u128, u64>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    head: u64,
    /// Events not yet written as a chunk.
    chunk: ChunkBuilder,
    /// The last run of each stream this transaction appended to; its end is the stream's
    /// next version. Runs are written once each, by `finish`.
    open_runs: HashMap<String, Run>,
    /// Versions known from earlier transactions (the store's cache); `finish` adds this
    /// transaction's.
    known: HashMap<String, u64>,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction, known: HashMap<String, u64>) -> anyhow::Result<Self> {
        let meta = txn.open_table(META)?;
        let head = match meta.get(KEY_HEAD)? {
            Some(v) => decode(v.value())?,
            None => 0,
        };
        Ok(Writer {
            chunks: txn.open_table(CHUNKS)?,
            runs: txn.open_table(STREAM_RUNS)?,
            ids: txn.open_table(IDS)?,
            meta,
            head,
            chunk: ChunkBuilder::default(),
            open_runs: HashMap::new(),
            known,
        })
    }

    fn stream_count(&self, stream: &str) -> anyhow::Result<u64> {
        if let Some(run) = self.open_runs.get(stream) {
            return Ok(run.first_version + run.len);
        }
        if let Some(version) = self.known.get(stream) {
            return Ok(*version);
        }
        Ok(stream_version_count(&self.runs, stream)?.unwrap_or(0))
    }

    fn event(&self, position: u64) -> anyhow::Result<Option<StoredEvent>> {
        if let Some(bytes) = self.chunk.get(position) {
            return Ok(Some(decode(bytes)?));
        }
        event_at(&self.chunks, position)
    }

    fn write_chunk(&mut self) -> anyhow::Result<()> {
        if let Some((first, bytes)) = self.chunk.take() {
            self.chunks.insert(first, bytes.as_slice())?;
        }
        Ok(())
    }

    /// Writes what this transaction holds back: the last chunk, the runs and the head.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.write_chunk()?;
        for (stream, run) in self.open_runs.drain() {
            run.write_to(&mut self.runs, &stream)?;
            self.known.insert(stream, run.first_version + run.len);
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
        self.chunk.push(e)?;
        if self.chunk.is_full() {
            self.write_chunk()?;
        }
        match self.open_runs.get_mut(e.stream.as_str()) {
            Some(run) if run.first_position + run.len == e.position => run.len += 1,
            Some(run) => {
                run.write_to(&mut self.runs, &e.stream)?;
                *run = Run::starting_with(e);
            }
            None => {
                self.open_runs
                    .insert(e.stream.clone(), Run::starting_with(e));
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever the entries, batches and streams, reads by position and by stream answer
        /// what a plain list of the appended events says, across chunks, runs and entries.
        #[test]
        fn reads_match_a_plain_list_of_the_events(
            entries in proptest::collection::vec(
                proptest::collection::vec((0usize..4, 1usize..40), 1..12), 1..8),
            from in 1u64..600,
            from_version in 0u64..200,
            limit in 1usize..700,
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = EventStore::open(&dir.path().join("events.redb")).expect("open");
            let mut all: Vec<(String, String)> = Vec::new();
            for (i, batches) in entries.iter().enumerate() {
                let batches: Vec<AppendBatch> = batches
                    .iter()
                    .map(|&(s, n)| batch(&format!("s{s}"), n, None))
                    .collect();
                for b in &batches {
                    all.extend(b.events.iter().map(|e| (e.stream.clone(), e.data.clone())));
                }
                store.apply(&[entry(i as u64 + 1, batches)]).expect("apply");
            }
            let read = store.read(from, limit).expect("read");
            let want: Vec<_> = all.iter().skip(from as usize - 1).take(limit).collect();
            proptest::prop_assert_eq!(read.len(), want.len());
            for (k, (e, w)) in read.iter().zip(&want).enumerate() {
                proptest::prop_assert_eq!(e.position, from + k as u64);
                proptest::prop_assert_eq!((&e.stream, &e.data), (&w.0, &w.1));
            }
            for s in 0..4 {
                let name = format!("s{s}");
                let positions: Vec<u64> = (1..=all.len() as u64)
                    .filter(|p| all[*p as usize - 1].0 == name)
                    .collect();
                let (events, version) = store.read_stream(&name, from_version, limit).expect("read stream");
                proptest::prop_assert_eq!(version, positions.len() as i64 - 1);
                let want: Vec<u64> =
                    positions.iter().copied().skip(from_version as usize).take(limit).collect();
                let got: Vec<u64> = events.iter().map(|e| e.position).collect();
                proptest::prop_assert_eq!(got, want);
                for (k, e) in events.iter().enumerate() {
                    proptest::prop_assert_eq!(e.version, from_version + k as u64);
                }
            }
        }
    }

    #[test]
    fn a_store_of_the_first_format_is_converted_at_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.redb");
        let written: Vec<StoredEvent> = (1..=600u64)
            .map(|p| StoredEvent {
                position: p,
                stream: format!("s{}", p % 3),
                version: 0, // counted per stream below
                event_type: "T".into(),
                data: format!("{{\"p\":{p}}}"),
                metadata: None,
                id: Uuid::new_v4(),
                timestamp_ms: 1,
                batch_len: 1,
            })
            .collect();
        {
            // The first format, written as its code did: a row per event and per version.
            let db = Database::create(&path)?;
            let txn = db.begin_write()?;
            {
                let mut events = txn.open_table(OLD_EVENTS)?;
                let mut index = txn.open_table(OLD_STREAM_EVENTS)?;
                let mut streams = txn.open_table(OLD_STREAMS)?;
                let mut ids = txn.open_table(IDS)?;
                let mut meta = txn.open_table(META)?;
                let mut counts: HashMap<String, u64> = HashMap::new();
                for e in &written {
                    let version = counts.entry(e.stream.clone()).or_default();
                    let mut e = e.clone();
                    e.version = *version;
                    *version += 1;
                    events.insert(e.position, encode(&e).as_slice())?;
                    index.insert((e.stream.as_str(), e.version), e.position)?;
                    ids.insert(e.id.as_u128(), e.position)?;
                }
                for (s, n) in &counts {
                    streams.insert(s.as_str(), *n)?;
                }
                meta.insert(KEY_HEAD, encode(&600u64).as_slice())?;
            }
            txn.commit()?;
        }
        let store = EventStore::open(&path)?;
        assert_eq!(store.head(), 600);
        let events = store.read(1, 1000)?;
        assert_eq!(events.len(), 600);
        assert!(events
            .iter()
            .zip(&written)
            .all(|(a, b)| a.id == b.id && a.data == b.data));
        let (s1, version) = store.read_stream("s1", 10, 1000)?;
        assert_eq!(version, 199);
        assert_eq!(s1.len(), 190);
        assert_eq!(s1[0].position, 31);
        // A retry of a converted batch is still recognised.
        let retry = AppendBatch {
            events: vec![ProposedEvent {
                stream: written[4].stream.clone(),
                event_type: "T".into(),
                data: "{}".into(),
                metadata: None,
                id: written[4].id,
            }],
            expected_versions: BTreeMap::new(),
        };
        let out = store.apply(&[entry(1, vec![retry])])?;
        let ApplyOutcome::Batches(b) = &out[0] else {
            panic!("batches")
        };
        assert_eq!(appended(&b[0]), vec![(5, 1)]);
        // Opened again, nothing is converted twice.
        drop(store);
        let store = EventStore::open(&path)?;
        assert_eq!(store.read(1, 1000)?.len(), 600);
        Ok(())
    }
}
