//! The durable Raft log (and vote) in segment files ([`crate::log_segments`]), with group
//! commit.
//!
//! `append` makes entries readable at once (an in-memory tail) and hands them to one writer
//! thread. The writer drains everything queued, appends it to the log in one write and pays
//! for one fsync, then reports every batch in it as flushed. So concurrent appends share an fsync,
//! and the Raft core never blocks on the disk. All writes, vote included, go through the same
//! queue, which keeps them in the order they were issued, as openraft requires.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogId, RaftLogReader, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::log_segments::{Record, Segments};
use crate::metrics;
use crate::types::{decode, Entry, LogId, StorageError, TypeConfig, Vote};

/// Entries converted per write from the first format.
const CONVERT_SLICE: usize = 1024;
/// The log's first format, a redb file: converted at open.
const OLD_LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const OLD_META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

/// How long a purge waits for the state machine to hold its range durably (a snapshot install).
const PURGE_WAIT: Duration = Duration::from_secs(300);

/// Recently written entries kept in memory, for replication to read without the disk.
const RECENT_BYTES: usize = 8 << 20;

/// State that must be visible before the disk has it.
#[derive(Default)]
struct Memory {
    /// Appended entries the writer has not committed yet.
    tail: BTreeMap<u64, Entry>,
    /// Committed entries still cached, at most `RECENT_BYTES` of them.
    recent: BTreeMap<u64, (Entry, usize)>,
    recent_bytes: usize,
    last_log_id: Option<LogId>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// The run of entries this log holds on its own, `first..=last` (appended, not truncated,
    /// not purged); unlike `last_log_id`, a purge past the log's end (a snapshot received)
    /// does not move it but empties it, and the next append starts a new run.
    held: Option<(u64, u64)>,
}

impl Memory {
    fn remember(&mut self, idx: u64, entry: Entry) {
        let weight = crate::types::entry_weight(&entry);
        if let Some((_, old)) = self.recent.insert(idx, (entry, weight)) {
            self.recent_bytes -= old;
        }
        self.recent_bytes += weight;
        while self.recent_bytes > RECENT_BYTES {
            match self.recent.pop_first() {
                Some((_, (_, w))) => self.recent_bytes -= w,
                None => break,
            }
        }
    }

    fn forget(&mut self, keep: impl Fn(u64) -> bool) {
        let before = std::mem::take(&mut self.recent);
        for (idx, (entry, w)) in before {
            if keep(idx) {
                self.recent.insert(idx, (entry, w));
            } else {
                self.recent_bytes -= w;
            }
        }
    }
}

struct Shared {
    disk: Segments,
    mem: Mutex<Memory>,
}

enum Op {
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    Vote(Vote, oneshot::Sender<Result<(), String>>),
    Committed(Option<LogId>),
    Truncate(u64, oneshot::Sender<Result<(), String>>),
    Purge(LogId, oneshot::Sender<Result<(), String>>),
}

#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
    /// One past the last index the state machine holds durably (see `purging_up_to`).
    durable_applied: Option<Arc<AtomicU64>>,
}

/// Reads entries for replication; cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens (or creates) the log in the directory `dir` and starts its writer thread. A log
    /// of the first format (`dir` + `.redb`) is converted first.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        convert_redb_log(&dir.with_extension("redb"), dir)?;
        let (disk, meta) = Segments::open(dir)?;
        let mem = Memory {
            vote: meta.vote,
            committed: meta.committed,
            last_purged: meta.purged,
            last_log_id: disk.last_log_id().or(meta.purged),
            held: disk.held(),
            ..Memory::default()
        };
        let shared = Arc::new(Shared {
            disk,
            mem: Mutex::new(mem),
        });
        let (tx, rx) = mpsc::channel();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run_writer(writer, rx))?;
        Ok(LogStore {
            shared,
            ops: tx,
            durable_applied: None,
        })
    }

    /// Purges only entries the state machine holds durably (`durable_applied` is one past
    /// that index). openraft 0.9 issues the purge of a received snapshot's range at once, while
    /// the state machine is still installing the snapshot: a crash in between would leave a
    /// state machine behind a log that no longer has the entries to catch it up, a node that
    /// can never start again (found by the fault suite). Such a purge waits for the install.
    pub fn purging_up_to(mut self, durable_applied: Arc<AtomicU64>) -> Self {
        self.durable_applied = Some(durable_applied);
        self
    }

    async fn wait_durably_applied(&self, index: u64) -> Result<(), StorageError> {
        let Some(durable) = &self.durable_applied else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + PURGE_WAIT;
        while durable.load(Ordering::SeqCst) <= index {
            if std::time::Instant::now() > deadline {
                return Err(write_err(format!(
                    "purge up to {index}: the state machine did not hold it within {PURGE_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn send(&self, op: Op) -> Result<(), StorageError> {
        self.ops
            .send(op)
            .map_err(|_| write_err("the log writer thread has stopped"))
    }

    async fn send_and_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await
            .map_err(|_| write_err("the log writer thread has stopped"))?
            .map_err(write_err)
    }
}

/// The writer thread: drain the queue, one transaction, one fsync, then report.
fn run_writer(shared: Arc<Shared>, rx: mpsc::Receiver<Op>) {
    // The commit index alone is not worth an fsync (losing it costs only re-learning it
    // from the leader): it waits for the next write that is.
    let mut committed: Option<Op> = None;
    while let Ok(first) = rx.recv() {
        let mut batch: Vec<Op> = committed.take().into_iter().collect();
        batch.push(first);
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if batch.iter().all(|op| matches!(op, Op::Committed(_))) {
            committed = batch.pop();
            continue;
        }
        let started = std::time::Instant::now();
        let result = write_batch(&shared.disk, &batch).map_err(|e| e.to_string());
        metrics::LOG_FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            // Committed entries move from the tail to the cache of recent entries, unless a
            // truncate already replaced them with entries of another term.
            let mut mem = shared.mem.lock().expect("log memory lock");
            for op in &batch {
                if let Op::Append(entries, _) = op {
                    for e in entries {
                        let idx = e.get_log_id().index;
                        if mem.tail.get(&idx).map(|t| t.get_log_id()) == Some(e.get_log_id()) {
                            if let Some(entry) = mem.tail.remove(&idx) {
                                mem.remember(idx, entry);
                            }
                        }
                    }
                }
            }
        }
        for op in batch {
            match op {
                Op::Append(_, cb) => cb.log_io_completed(
                    result
                        .clone()
                        .map_err(|e| std::io::Error::other(e.to_string())),
                ),
                Op::Vote(_, done) | Op::Truncate(_, done) | Op::Purge(_, done) => {
                    let _ = done.send(result.clone());
                }
                Op::Committed(_) => {}
            }
        }
    }
}

fn write_batch(disk: &Segments, batch: &[Op]) -> anyhow::Result<()> {
    let mut records = Vec::with_capacity(batch.len());
    for op in batch {
        match op {
            Op::Append(entries, _) => records.extend(entries.iter().cloned().map(Record::Entry)),
            Op::Vote(v, _) => records.push(Record::Vote(*v)),
            Op::Committed(c) => records.push(Record::Committed(*c)),
            Op::Truncate(from, _) => records.push(Record::Truncate(*from)),
            Op::Purge(upto, _) => records.push(Record::Purge(*upto)),
        }
    }
    disk.write(&records)
}

/// Rewrites a log of the first format (a redb file at `old`) as segments in `dir`: into a
/// temporary dir, renamed into place once durable, then the old file goes.
fn convert_redb_log(old: &Path, dir: &Path) -> anyhow::Result<()> {
    if !old.exists() {
        return Ok(());
    }
    if !dir.exists() {
        let db = Database::open(old)?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(OLD_META)?;
        let get = |k: &str| -> anyhow::Result<Option<Vec<u8>>> {
            Ok(meta.get(k)?.map(|v| v.value().to_vec()))
        };
        let converting = dir.with_extension("converting");
        if converting.exists() {
            std::fs::remove_dir_all(&converting)?;
        }
        let (segments, _) = Segments::open(&converting)?;
        segments.write(&[Record::State {
            vote: get("vote")?.map(|b| decode(&b)).transpose()?,
            committed: match get("committed")? {
                Some(b) => decode(&b)?,
                None => None,
            },
            purged: get("last_purged")?.map(|b| decode(&b)).transpose()?,
        }])?;
        // A slice at a time: a log of 100,000 entries need not be in memory at once.
        let mut entries = 0;
        let mut slice = Vec::with_capacity(CONVERT_SLICE);
        for row in txn.open_table(OLD_LOGS)?.iter()? {
            slice.push(Record::Entry(decode(row?.1.value())?));
            if slice.len() == CONVERT_SLICE {
                entries += slice.len();
                segments.write(&std::mem::take(&mut slice))?;
            }
        }
        entries += slice.len();
        segments.write(&slice)?;
        drop(segments);
        std::fs::rename(&converting, dir)?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        tracing::info!(entries, "converted the Raft log to segment files");
    }
    std::fs::remove_file(old)?;
    Ok(())
}

/// Turns any range into `start..end`.
fn bounds(range: impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl LogReader {
    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(range);
        self.read_between(start, end)
    }

    fn read_between(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        // Copy the tail and the cache before reading the disk: an entry leaves the tail only
        // after it is on disk, so it is always in one of them.
        let tail: BTreeMap<u64, Entry> = {
            let mem = self.shared.mem.lock().expect("log memory lock");
            let mut found: BTreeMap<u64, Entry> = mem
                .recent
                .range(start..end)
                .map(|(k, (v, _))| (*k, v.clone()))
                .collect();
            found.extend(mem.tail.range(start..end).map(|(k, v)| (*k, v.clone())));
            found
        };
        // Served from memory when the range starts there (the usual case for replication).
        if tail.keys().next() == Some(&start) && tail.len() as u64 == end.saturating_sub(start) {
            return Ok(tail.into_values().collect());
        }
        let mut merged = tail;
        for entry in self.shared.disk.read(start, end).map_err(read_err)? {
            merged.entry(entry.get_log_id().index).or_insert(entry);
        }
        // Return the run of consecutive entries from the first one present.
        let mut out: Vec<Entry> = Vec::with_capacity(merged.len());
        for (idx, entry) in merged {
            if out
                .last()
                .is_some_and(|prev| prev.get_log_id().index + 1 != idx)
            {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let reader = self.clone();
        let (start, end) = bounds(range);
        tokio::task::spawn_blocking(move || reader.read_between(start, end))
            .await
            .map_err(read_err)?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        LogReader {
            shared: self.shared.clone(),
        }
        .try_get_log_entries(range)
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.shared.mem.lock().expect("log memory lock");
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let v = *vote;
        self.send_and_wait(|done| Op::Vote(v, done)).await?;
        self.shared.mem.lock().expect("log memory lock").vote = Some(v);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.mem.lock().expect("log memory lock").vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not waited for: losing it only means re-learning the commit index from the leader.
        // Stored only while this log holds every entry from the state machine's durable point
        // up to it (a snapshot being installed moves it past them): at start, openraft
        // re-applies that range from this log.
        let durable = self
            .durable_applied
            .as_ref()
            .map(|d| d.load(Ordering::SeqCst));
        let store = {
            let mut mem = self.shared.mem.lock().expect("log memory lock");
            mem.committed = committed;
            match (committed, durable) {
                (None, _) | (_, None) => true,
                (Some(c), Some(next)) => {
                    c.index < next
                        || mem
                            .held
                            .is_some_and(|(first, last)| first <= next && c.index <= last)
                }
            }
        };
        if store {
            self.send(Op::Committed(committed))
        } else {
            Ok(())
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.mem.lock().expect("log memory lock").committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut mem = self.shared.mem.lock().expect("log memory lock");
            for e in &entries {
                mem.tail.insert(e.get_log_id().index, e.clone());
            }
            if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                mem.last_log_id = Some(*last.get_log_id());
                let start = mem.held.map_or(first.get_log_id().index, |(f, _)| f);
                mem.held = Some((start, last.get_log_id().index));
            }
        }
        self.send(Op::Append(entries, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut mem = self.shared.mem.lock().expect("log memory lock");
            let _ = mem.tail.split_off(&log_id.index);
            let from = log_id.index;
            mem.forget(|idx| idx < from);
        }
        self.send_and_wait(|done| Op::Truncate(log_id.index, done))
            .await?;
        // The new last log id is whatever precedes the truncated index.
        let prev = if log_id.index == 0 {
            Vec::new()
        } else {
            self.get_log_reader()
                .await
                .read_range(log_id.index - 1..log_id.index)?
        };
        let mut mem = self.shared.mem.lock().expect("log memory lock");
        mem.last_log_id = match prev.last() {
            Some(e) => Some(*e.get_log_id()),
            None => mem.last_purged,
        };
        mem.held = match (mem.held, mem.last_log_id) {
            (Some((first, _)), Some(last)) if last.index >= first => Some((first, last.index)),
            _ => None,
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wait_durably_applied(log_id.index).await?;
        {
            let mut mem = self.shared.mem.lock().expect("log memory lock");
            mem.last_purged = Some(log_id);
            if mem.last_log_id < Some(log_id) {
                mem.last_log_id = Some(log_id);
            }
            mem.tail.retain(|idx, _| *idx > log_id.index);
            let upto = log_id.index;
            mem.forget(|idx| idx > upto);
            mem.held = match mem.held {
                Some((_, last)) if last <= upto => None,
                Some((first, last)) => Some((first.max(upto + 1), last)),
                None => None,
            };
        }
        self.send_and_wait(|done| Op::Purge(log_id, done)).await
    }
}

impl LogStore {
    /// The last committed log id this node knows of.
    pub fn committed(&self) -> Option<LogId> {
        self.shared.mem.lock().expect("log memory lock").committed
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::encode;

    #[tokio::test]
    async fn a_log_of_the_first_format_is_converted_at_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("raft-log");
        let old = path.with_extension("redb");
        let entry = |i: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), i),
            payload: EntryPayload::Blank,
        };
        let vote = Vote::new(2, 1);
        {
            // As the first format's code wrote it.
            let db = Database::create(&old)?;
            let txn = db.begin_write()?;
            {
                let mut logs = txn.open_table(OLD_LOGS)?;
                // More than two slices of the conversion.
                for i in 6..=2100 {
                    logs.insert(i, encode(&entry(i)).as_slice())?;
                }
                let mut meta = txn.open_table(OLD_META)?;
                meta.insert("vote", encode(&vote).as_slice())?;
                meta.insert("last_purged", encode(&entry(5).log_id).as_slice())?;
                meta.insert("committed", encode(&Some(entry(18).log_id)).as_slice())?;
            }
            txn.commit()?;
        }
        let mut log = LogStore::open(&path)?;
        assert!(!old.exists());
        let state = log.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(entry(5).log_id));
        assert_eq!(state.last_log_id, Some(entry(2100).log_id));
        assert_eq!(log.read_vote().await?, Some(vote));
        assert_eq!(log.read_committed().await?, Some(entry(18).log_id));
        let entries = log.try_get_log_entries(6..=2100).await?;
        assert_eq!(entries.len(), 2095);
        assert!(entries
            .iter()
            .zip(6..)
            .all(|(e, i)| e.log_id == entry(i).log_id));
        Ok(())
    }
}
