//! The replicated state: events by global position, stream runs and the event-id index,
//! in one redb file. Only the state machine writes here; the HTTP readers read.
//!
//! Events are stored in chunks of consecutive positions ([`crate::event_chunk`]) and a
//! stream's positions as runs ([`crate::stream_runs`]), so an apply writes a few rows per
//! entry instead of two per event.
//!
//! Applies commit without fsync (the Raft log already has every applied entry on disk) and
//! at most once a second, and before every snapshot, a commit pays for the fsync. After a
//! crash the state falls back to its last durable commit and openraft re-applies the rest
//! from the log, deterministically, so the same events land at the same positions.
//!
//! Since a crash loses the commits between durable ones anyway, their additions to the
//! stream and id indexes stay in memory ([`Recent`]) and only the durable commit writes
//! them: a row per stream and a sorted run of ids a second, instead of random inserts in
//! every apply (a third of an apply under single appends). Readers consult both.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::{EntryPayload, RaftLogId};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};
use tokio::sync::watch;

use crate::event_chunk::{Chunk, ChunkBuilder};
use crate::id_filter::IdFilter;
use crate::id_runs::{IdRuns, Pair, ID_RUNS, MAX_MERGED};
use crate::stream_runs::{Run, Runs};
use crate::types::{
    decode, encode, AppendBatch, Appended, ApplyOutcome, BatchOutcome, Entry, LogId, StoredEvent,
    StoredMembership,
};

/// First position of a chunk → the chunk ([`crate::event_chunk`]).
const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_chunks");
/// (stream, first version of a segment) → the segment's runs ([`crate::stream_runs`]). A
/// stream's last segment gives its version.
const STREAM_SEGMENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("stream_segments");
/// The second format's stream index: a row per run. Converted at open.
const OLD_STREAM_RUNS: TableDefinition<(&str, u64), (u64, u64)> =
    TableDefinition::new("stream_runs");
/// The first format's tables: one row per event and per stream version, and each stream's
/// count. Converted at open.
const OLD_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const OLD_STREAM_EVENTS: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_events");
const OLD_STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");
/// First event id of each appended batch → its position, for idempotent retries.
/// The id index of the formats before sorted runs ([`crate::id_runs`]): a B-tree by id.
const OLD_IDS: TableDefinition<u128, u64> = TableDefinition::new("ids");
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
    /// The index additions of the commits since the last durable one.
    recent: RwLock<Recent>,
    /// Held by each write (apply, flush, replace) from its transaction until `recent`
    /// agrees with it, so no write's additions are flushed or dropped by another's.
    writing: Mutex<()>,
    /// Every batch id in the tables and in `recent` (and perhaps some of a failed apply).
    batch_ids: Mutex<IdFilter>,
    /// The runs of the id table, as of the last commit.
    id_runs: Mutex<IdRuns>,
}

/// What the commits since the last durable one added to the stream and id indexes; the
/// next durable commit writes it to the tables.
#[derive(Default)]
struct Recent {
    /// Each stream's runs from its last stored version on.
    runs: HashMap<String, Runs>,
    /// First event id of each batch → its position.
    ids: HashMap<u128, u64>,
}

impl Recent {
    fn absorb(&mut self, runs: HashMap<String, Runs>, ids: HashMap<u128, u64>) {
        for (stream, new) in runs {
            match self.runs.get_mut(&stream) {
                Some(r) => r.extend(&new),
                None => {
                    self.runs.insert(stream, new);
                }
            }
        }
        self.ids.extend(ids);
    }
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
        if tables.iter().any(|t| t == OLD_STREAM_RUNS.name()) {
            txn.set_durability(Durability::Immediate)?;
            convert_stream_runs(&txn)?;
        }
        if tables.iter().any(|t| t == OLD_STREAMS.name()) {
            txn.delete_table(OLD_STREAMS)?;
        }
        if txn.list_tables()?.any(|t| t.name() == OLD_IDS.name()) {
            txn.set_durability(Durability::Immediate)?;
            convert_old_ids(&txn)?;
        }
        let started = Instant::now();
        let mut batch_ids = IdFilter::default();
        let id_runs = IdRuns::load(&txn.open_table(ID_RUNS)?, |(id, _)| batch_ids.insert(id))?;
        if batch_ids.len() > 100_000 {
            tracing::info!(ids = batch_ids.len(), took = ?started.elapsed(), "loaded the batch id index");
        }
        txn.commit()?;
        let store = EventStore {
            inner: Arc::new(Inner {
                db,
                head: watch::channel(0).0,
                last_flush: Mutex::new(Instant::now()),
                versions: Mutex::default(),
                durable_applied: Arc::default(),
                recent: RwLock::default(),
                writing: Mutex::default(),
                batch_ids: Mutex::new(batch_ids),
                id_runs: Mutex::new(id_runs),
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
        let _writing = self.inner.writing.lock().expect("write lock");
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
        let added;
        let runs_after;
        {
            let known = std::mem::take(&mut *self.inner.versions.lock().expect("versions lock"));
            let recent = self.inner.recent.read().expect("recent lock");
            let mut batch_ids = self.inner.batch_ids.lock().expect("batch id lock");
            let id_runs = self.inner.id_runs.lock().expect("id runs lock").clone();
            let mut w = Writer::open(&txn, &recent, known, durable, &mut batch_ids, id_runs)?;
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
            added = (w.new_runs, w.new_ids);
            runs_after = w.id_runs;
        }
        txn.commit()?;
        *self.inner.id_runs.lock().expect("id runs lock") = runs_after;
        {
            let mut recent = self.inner.recent.write().expect("recent lock");
            if durable {
                *recent = Recent::default(); // all of it is in the tables now
            } else {
                recent.absorb(added.0, added.1);
            }
        }
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
        let _writing = self.inner.writing.lock().expect("write lock");
        let applied = self.applied_state()?.last_applied;
        let runs_after;
        let mut txn = self.inner.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let recent = self.inner.recent.read().expect("recent lock");
            let mut batch_ids = self.inner.batch_ids.lock().expect("batch id lock");
            let id_runs = self.inner.id_runs.lock().expect("id runs lock").clone();
            let mut w = Writer::open(&txn, &recent, HashMap::new(), true, &mut batch_ids, id_runs)?;
            w.finish()?;
            runs_after = w.id_runs;
        }
        txn.commit()?;
        *self.inner.id_runs.lock().expect("id runs lock") = runs_after;
        *self.inner.recent.write().expect("recent lock") = Recent::default();
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
        // Recent runs first, then the transaction: it sees every event they name. A durable
        // commit in between may have stored some of them too.
        let recent = self
            .inner
            .recent
            .read()
            .expect("recent lock")
            .runs
            .get(stream)
            .cloned();
        let txn = self.inner.db.begin_read()?;
        let segments = txn.open_table(STREAM_SEGMENTS)?;
        let stored = stream_end(&segments, stream)?;
        if stored.is_none() && recent.is_none() {
            return Ok((Vec::new(), -1));
        }
        let stored = stored.unwrap_or(0);
        let mut positions = Vec::new();
        if from_version < stored {
            // The segment holding `from_version` starts at or before it.
            let start = match segments
                .range((stream, 0)..=(stream, from_version))?
                .next_back()
            {
                Some(row) => row?.0.value().1,
                None => from_version,
            };
            for row in segments.range((stream, start)..(stream, stored))? {
                let (key, bytes) = row?;
                Runs::decode(key.value().1, bytes.value())?.positions_into(
                    from_version,
                    limit,
                    &mut positions,
                );
                if positions.len() >= limit {
                    break;
                }
            }
        }
        let mut count = stored;
        if let Some(recent) = recent.filter(|r| r.end() > stored) {
            anyhow::ensure!(
                recent.first_version <= stored,
                "stream {stream}: recent versions from {} but {stored} stored",
                recent.first_version
            );
            recent.positions_into(from_version.max(stored), limit, &mut positions);
            count = recent.end();
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
        let _writing = self.inner.writing.lock().expect("write lock");
        // Dropped first: readers meanwhile see the old tables alone, an earlier state.
        *self.inner.recent.write().expect("recent lock") = Recent::default();
        let mut txn = self.inner.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.delete_table(CHUNKS)?;
        txn.delete_table(STREAM_SEGMENTS)?;
        txn.delete_table(ID_RUNS)?;
        txn.delete_table(META)?;
        create_tables(&txn)?;
        let mut batch_ids = IdFilter::default();
        let id_runs;
        {
            self.inner.versions.lock().expect("versions lock").clear();
            let none = Recent::default();
            let mut w = Writer::open(
                &txn,
                &none,
                HashMap::new(),
                true,
                &mut batch_ids,
                IdRuns::default(),
            )?;
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
            id_runs = w.id_runs;
        }
        txn.commit()?;
        *self.inner.batch_ids.lock().expect("batch id lock") = batch_ids;
        *self.inner.id_runs.lock().expect("id runs lock") = id_runs;
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
    txn.open_table(STREAM_SEGMENTS)?;
    txn.open_table(ID_RUNS)?;
    txn.open_table(META)?;
    Ok(())
}

/// How many events of `stream` the table holds (its next version), from its last segment;
/// None: none.
fn stream_end(
    segments: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    stream: &str,
) -> anyhow::Result<Option<u64>> {
    Ok(
        match segments
            .range((stream, 0)..=(stream, u64::MAX))?
            .next_back()
        {
            Some(row) => {
                let (key, bytes) = row?;
                Some(Runs::decode(key.value().1, bytes.value())?.end())
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

/// Moves the ids of the B-tree index into runs, in slices of the merge limit (the table is in
/// id order, so the slices need no merging) and deletes the old table.
fn convert_old_ids(txn: &WriteTransaction) -> anyhow::Result<()> {
    {
        let old = txn.open_table(OLD_IDS)?;
        let mut table = txn.open_table(ID_RUNS)?;
        let mut runs = IdRuns::load(&table, |_| {})?;
        let mut slice = Vec::with_capacity(MAX_MERGED);
        for row in old.iter()? {
            let (id, position) = row?;
            slice.push((id.value(), position.value()));
            if slice.len() == MAX_MERGED {
                runs.add(&mut table, std::mem::take(&mut slice))?;
            }
        }
        runs.add(&mut table, slice)?;
    }
    txn.delete_table(OLD_IDS)?;
    tracing::info!("converted the event-id index to sorted runs");
    Ok(())
}

/// Rewrites a store of the first format (a row per event, a row per stream version) in
/// chunks and runs, in the caller's transaction. Its stream counts are dropped by `open`.
fn convert_first_format(txn: &WriteTransaction) -> anyhow::Result<()> {
    {
        let old = txn.open_table(OLD_EVENTS)?;
        let none = Recent::default();
        // The ids go to the table; `open` loads the filter from it afterwards.
        let mut ids = IdFilter::default();
        let runs = IdRuns::load(&txn.open_table(ID_RUNS)?, |_| {})?;
        let mut w = Writer::open(txn, &none, HashMap::new(), true, &mut ids, runs)?;
        for row in old.iter()? {
            w.insert(&decode(row?.1.value())?)?;
        }
        w.finish()?;
    }
    txn.delete_table(OLD_EVENTS)?;
    txn.delete_table(OLD_STREAM_EVENTS)?;
    txn.delete_table(OLD_IDS)?; // indexed anew from the events
    tracing::info!("converted the event store to chunked events and stream runs");
    Ok(())
}

/// Rewrites the second format's stream index (a row per run) as segments of one run each,
/// in the caller's transaction.
fn convert_stream_runs(txn: &WriteTransaction) -> anyhow::Result<()> {
    {
        let old = txn.open_table(OLD_STREAM_RUNS)?;
        let mut segments = txn.open_table(STREAM_SEGMENTS)?;
        for row in old.iter()? {
            let (key, run) = row?;
            let ((stream, first_version), (first_position, len)) = (key.value(), run.value());
            let runs = Runs::from_run(
                first_version,
                Run {
                    first_position,
                    len,
                },
            );
            write_runs(&mut segments, stream, &runs)?;
        }
    }
    txn.delete_table(OLD_STREAM_RUNS)?;
    tracing::info!("converted the stream index to segments");
    Ok(())
}

fn write_runs(
    segments: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    stream: &str,
    runs: &Runs,
) -> anyhow::Result<()> {
    for (first_version, bytes) in runs.segments() {
        segments.insert((stream, first_version), bytes.as_slice())?;
    }
    Ok(())
}

/// The open tables of one write transaction.
struct Writer<'t, 'r> {
    chunks: redb::Table<'t, u64, &'static [u8]>,
    segments: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    id_table: redb::Table<'t, (u64, u128), &'static [u8]>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    head: u64,
    /// Events not yet written as a chunk.
    chunk: ChunkBuilder,
    /// What earlier commits since the last durable one added to the indexes.
    recent: &'r Recent,
    /// A durable commit writes `recent` and this transaction's additions to the tables;
    /// the others leave theirs in `new_runs` and `new_ids`, for `recent`.
    durable: bool,
    /// This transaction's runs of each stream it appended to.
    new_runs: HashMap<String, Runs>,
    new_ids: HashMap<u128, u64>,
    /// Versions known from earlier transactions (the store's cache); `finish` adds this
    /// transaction's.
    known: HashMap<String, u64>,
    /// Every batch id stored; `insert` adds to it.
    batch_ids: &'r mut IdFilter,
    /// The runs of `id_table`, kept current by this transaction's writes.
    id_runs: IdRuns,
}

impl<'t, 'r> Writer<'t, 'r> {
    fn open(
        txn: &'t WriteTransaction,
        recent: &'r Recent,
        known: HashMap<String, u64>,
        durable: bool,
        batch_ids: &'r mut IdFilter,
        id_runs: IdRuns,
    ) -> anyhow::Result<Self> {
        let meta = txn.open_table(META)?;
        let head = match meta.get(KEY_HEAD)? {
            Some(v) => decode(v.value())?,
            None => 0,
        };
        Ok(Writer {
            chunks: txn.open_table(CHUNKS)?,
            segments: txn.open_table(STREAM_SEGMENTS)?,
            id_table: txn.open_table(ID_RUNS)?,
            meta,
            head,
            chunk: ChunkBuilder::default(),
            recent,
            durable,
            new_runs: HashMap::new(),
            new_ids: HashMap::new(),
            known,
            batch_ids,
            id_runs,
        })
    }

    fn stream_count(&self, stream: &str) -> anyhow::Result<u64> {
        if let Some(runs) = self.new_runs.get(stream) {
            return Ok(runs.end());
        }
        if let Some(runs) = self.recent.runs.get(stream) {
            return Ok(runs.end());
        }
        if let Some(version) = self.known.get(stream) {
            return Ok(*version);
        }
        Ok(stream_end(&self.segments, stream)?.unwrap_or(0))
    }

    /// The position of the batch whose first event has this id, if appended.
    fn batch_at(&self, id: u128) -> anyhow::Result<Option<u64>> {
        if !self.batch_ids.may_contain(id) {
            return Ok(None);
        }
        if let Some(p) = self.new_ids.get(&id).or_else(|| self.recent.ids.get(&id)) {
            return Ok(Some(*p));
        }
        self.id_runs.get(&self.id_table, id)
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

    /// Writes what this transaction holds back: the last chunk and the head, and for a
    /// durable commit the indexes' recent additions.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.write_chunk()?;
        if self.durable {
            let ids: Vec<Pair> = (self.recent.ids.iter())
                .chain(&self.new_ids)
                .map(|(i, p)| (*i, *p))
                .collect();
            self.new_ids.clear();
            self.id_runs.add(&mut self.id_table, ids)?;
            for (stream, recent) in &self.recent.runs {
                let mut runs = recent.clone();
                if let Some(new) = self.new_runs.remove(stream) {
                    runs.extend(&new);
                }
                write_runs(&mut self.segments, stream, &runs)?;
                self.known.insert(stream.clone(), runs.end());
            }
            for (stream, runs) in self.new_runs.drain() {
                write_runs(&mut self.segments, &stream, &runs)?;
                self.known.insert(stream, runs.end());
            }
        } else {
            for (stream, runs) in &self.new_runs {
                self.known.insert(stream.clone(), runs.end());
            }
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
        match self.new_runs.get_mut(e.stream.as_str()) {
            Some(runs) => runs.push(e.position),
            None => {
                let mut runs = Runs::starting_at(e.version);
                runs.push(e.position);
                self.new_runs.insert(e.stream.clone(), runs);
            }
        }
        if e.batch_len > 0 {
            self.batch_ids.insert(e.id.as_u128());
            self.new_ids.insert(e.id.as_u128(), e.position);
            // A snapshot's or a conversion's ids go out in runs as they come, not all at the end.
            if self.durable && self.new_ids.len() >= MAX_MERGED {
                let ids = self.new_ids.drain().collect();
                self.id_runs.add(&mut self.id_table, ids)?;
            }
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever the entries, batches and streams, reads by position and by stream answer
        /// what a plain list of the appended events says, across chunks, runs, entries and
        /// durable commits (which move the recent index into the tables), and again after
        /// the store is opened anew; retries are recognised wherever their batch is indexed.
        #[test]
        fn reads_match_a_plain_list_of_the_events(
            entries in proptest::collection::vec(
                (proptest::collection::vec((0usize..4, 1usize..40), 1..12), proptest::bool::ANY),
                1..8),
            from in 1u64..600,
            from_version in 0u64..200,
            limit in 1usize..700,
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("events.redb");
            let mut store = EventStore::open(&path).expect("open");
            let mut all: Vec<(String, String)> = Vec::new();
            let mut firsts = Vec::new();
            for (i, (batches, flush)) in entries.iter().enumerate() {
                let batches: Vec<AppendBatch> = batches
                    .iter()
                    .map(|&(s, n)| batch(&format!("s{s}"), n, None))
                    .collect();
                for b in &batches {
                    all.extend(b.events.iter().map(|e| (e.stream.clone(), e.data.clone())));
                }
                firsts.push(batches[0].clone());
                store.apply(&[entry(i as u64 + 1, batches)]).expect("apply");
                if *flush {
                    store.flush().expect("flush");
                }
            }
            check_reads(&store, &all, from, from_version, limit)?;
            store.flush().expect("flush");
            drop(store);
            store = EventStore::open(&path).expect("open again");
            check_reads(&store, &all, from, from_version, limit)?;
            let retries = store
                .apply(&[entry(entries.len() as u64 + 1, firsts)])
                .expect("apply retries");
            let ApplyOutcome::Batches(b) = &retries[0] else {
                panic!("batches")
            };
            proptest::prop_assert!(b.iter().all(|o| matches!(o, BatchOutcome::Appended(_))));
            proptest::prop_assert_eq!(store.head(), all.len() as u64);
        }
    }

    fn check_reads(
        store: &EventStore,
        all: &[(String, String)],
        from: u64,
        from_version: u64,
        limit: usize,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        {
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
                let (events, version) = store
                    .read_stream(&name, from_version, limit)
                    .expect("read stream");
                proptest::prop_assert_eq!(version, positions.len() as i64 - 1);
                let want: Vec<u64> = positions
                    .iter()
                    .copied()
                    .skip(from_version as usize)
                    .take(limit)
                    .collect();
                let got: Vec<u64> = events.iter().map(|e| e.position).collect();
                proptest::prop_assert_eq!(got, want);
                for (k, e) in events.iter().enumerate() {
                    proptest::prop_assert_eq!(e.version, from_version + k as u64);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_store_with_a_row_per_stream_run_is_converted_at_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.redb");
        let ids: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
        {
            // The second format: chunks as now, a row per run of a stream.
            let db = Database::create(&path)?;
            let txn = db.begin_write()?;
            {
                let mut chunk = ChunkBuilder::default();
                let mut runs = txn.open_table(OLD_STREAM_RUNS)?;
                let mut id_index = txn.open_table(OLD_IDS)?;
                for (i, id) in ids.iter().enumerate() {
                    let p = i as u64 + 1;
                    // s0 at positions 1-5 (one run), s1 at 6-10 in runs of one
                    let (stream, version) = if p <= 5 { ("s0", p - 1) } else { ("s1", p - 6) };
                    chunk.push(&StoredEvent {
                        position: p,
                        stream: stream.into(),
                        version,
                        event_type: "T".into(),
                        data: "{}".into(),
                        metadata: None,
                        id: *id,
                        timestamp_ms: 1,
                        batch_len: 1,
                    })?;
                    id_index.insert(id.as_u128(), p)?;
                    if p > 5 {
                        runs.insert(("s1", version), (p, 1))?;
                    }
                }
                runs.insert(("s0", 0), (1, 5))?;
                let (first, bytes) = chunk.take().expect("a chunk");
                txn.open_table(CHUNKS)?.insert(first, bytes.as_slice())?;
                txn.open_table(META)?
                    .insert(KEY_HEAD, encode(&10u64).as_slice())?;
            }
            txn.commit()?;
        }
        let store = EventStore::open(&path)?;
        let (s0, v0) = store.read_stream("s0", 2, 100)?;
        assert_eq!(v0, 4);
        assert_eq!(s0.iter().map(|e| e.position).collect::<Vec<_>>(), [3, 4, 5]);
        let (s1, v1) = store.read_stream("s1", 0, 100)?;
        assert_eq!(v1, 4);
        assert_eq!(
            s1.iter().map(|e| e.position).collect::<Vec<_>>(),
            [6, 7, 8, 9, 10]
        );
        // New appends continue each stream's versions.
        let out = store.apply(&[entry(1, vec![batch("s1", 2, Some(4))])])?;
        let ApplyOutcome::Batches(b) = &out[0] else {
            panic!("batches")
        };
        assert_eq!(appended(&b[0]), vec![(11, 5), (12, 6)]);
        // The old id table became runs: a retry of a converted batch is an answer.
        let retry = AppendBatch {
            events: vec![ProposedEvent {
                stream: "s1".into(),
                event_type: "T".into(),
                data: "{}".into(),
                metadata: None,
                id: ids[7],
            }],
            expected_versions: BTreeMap::new(),
        };
        let out = store.apply(&[entry(2, vec![retry])])?;
        let ApplyOutcome::Batches(b) = &out[0] else {
            panic!("batches")
        };
        assert_eq!(appended(&b[0]), vec![(8, 2)]);
        let txn = store.db().begin_read()?;
        assert!(!txn.list_tables()?.any(|t| t.name() == OLD_IDS.name()));
        Ok(())
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
                let mut ids = txn.open_table(OLD_IDS)?;
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
