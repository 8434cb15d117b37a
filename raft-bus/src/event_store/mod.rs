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
//!
//! By concern: [`open`] (opening, recovery of the applied state, conversion of earlier
//! formats), [`writer`] (the open tables of one write transaction), [`append`] (the append
//! rule), [`recent`] (the in-memory index additions), [`reads`] (by position and by stream);
//! this file has the handle and its writes (apply, flush, replace).

mod append;
mod open;
mod reads;
mod recent;
#[cfg(test)]
mod test_support;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::{EntryPayload, RaftLogId};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use tokio::sync::watch;

use crate::id_filter::IdFilter;
use crate::id_runs::{IdRuns, ID_RUNS};
use crate::types::{encode, ApplyOutcome, Entry, LogId, StoredEvent, StoredMembership};

use open::create_tables;
pub(crate) use open::read_applied;
use recent::Recent;
use writer::Writer;

/// First position of a chunk → the chunk ([`crate::event_chunk`]).
const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_chunks");
/// (stream, first version of a segment) → the segment's runs ([`crate::stream_runs`]). A
/// stream's last segment gives its version.
const STREAM_SEGMENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("stream_segments");
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
    /// agrees with it, so no write's additions are flushed or dropped by another's. It also
    /// holds what only writes use.
    writing: Mutex<WriteState>,
}

/// What only writes read and change, under the write lock.
struct WriteState {
    /// Every batch id in the tables and in `recent` (and perhaps some of a failed apply).
    batch_ids: IdFilter,
    /// The runs of the id table, as of the last commit.
    id_runs: IdRuns,
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
        let mut writing = self.inner.writing.lock().expect("write lock");
        let writing = &mut *writing;
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
            let id_runs = writing.id_runs.clone();
            let batch_ids = &mut writing.batch_ids;
            let mut w = Writer::open(&txn, &recent, known, durable, batch_ids, id_runs)?;
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
        writing.id_runs = runs_after;
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
        let mut writing = self.inner.writing.lock().expect("write lock");
        let writing = &mut *writing;
        let applied = self.applied_state()?.last_applied;
        let runs_after;
        let mut txn = self.inner.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let recent = self.inner.recent.read().expect("recent lock");
            let id_runs = writing.id_runs.clone();
            let batch_ids = &mut writing.batch_ids;
            let mut w = Writer::open(&txn, &recent, HashMap::new(), true, batch_ids, id_runs)?;
            w.finish()?;
            runs_after = w.id_runs;
        }
        txn.commit()?;
        writing.id_runs = runs_after;
        *self.inner.recent.write().expect("recent lock") = Recent::default();
        self.inner
            .durable_applied
            .fetch_max(next_index(applied), Ordering::SeqCst);
        *self.inner.last_flush.lock().expect("flush lock") = Instant::now();
        Ok(())
    }
    /// Replaces the whole state with the events of a snapshot, in one durable transaction.
    pub fn replace(
        &self,
        state: &AppliedState,
        events: impl Iterator<Item = anyhow::Result<StoredEvent>>,
    ) -> anyhow::Result<()> {
        let mut writing = self.inner.writing.lock().expect("write lock");
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
        *writing = WriteState { batch_ids, id_runs };
        // A snapshot may also take the state back (an older one over a newer state).
        self.inner
            .durable_applied
            .store(next_index(state.last_applied), Ordering::SeqCst);
        self.publish_head(state.head);
        Ok(())
    }
}
