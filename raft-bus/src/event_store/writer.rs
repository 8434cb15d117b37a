//! The open tables of one write transaction: inserting events into chunks and the indexes,
//! and writing back what the transaction holds.

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};

use super::reads::{event_at, stream_end};
use super::{Recent, CHUNKS, KEY_HEAD, META, STREAM_SEGMENTS};
use crate::event_chunk::ChunkBuilder;
use crate::id_filter::IdFilter;
use crate::id_runs::{IdRuns, Pair, ID_RUNS, MAX_MERGED};
use crate::stream_runs::Runs;
use crate::types::{decode, encode, StoredEvent};

pub(super) fn write_runs(
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
pub(super) struct Writer<'t, 'r> {
    pub(super) chunks: redb::Table<'t, u64, &'static [u8]>,
    pub(super) segments: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    pub(super) id_table: redb::Table<'t, (u64, u128), &'static [u8]>,
    pub(super) meta: redb::Table<'t, &'static str, &'static [u8]>,
    pub(super) head: u64,
    /// Events not yet written as a chunk.
    pub(super) chunk: ChunkBuilder,
    /// What earlier commits since the last durable one added to the indexes.
    pub(super) recent: &'r Recent,
    /// A durable commit writes `recent` and this transaction's additions to the tables;
    /// the others leave theirs in `new_runs` and `new_ids`, for `recent`.
    pub(super) durable: bool,
    /// This transaction's runs of each stream it appended to.
    pub(super) new_runs: HashMap<String, Runs>,
    pub(super) new_ids: HashMap<u128, u64>,
    /// Versions known from earlier transactions (the store's cache); `finish` adds this
    /// transaction's.
    pub(super) known: HashMap<String, u64>,
    /// Every batch id stored; `insert` adds to it.
    pub(super) batch_ids: &'r mut IdFilter,
    /// The runs of `id_table`, kept current by this transaction's writes.
    pub(super) id_runs: IdRuns,
}

impl<'t, 'r> Writer<'t, 'r> {
    pub(super) fn open(
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

    pub(super) fn stream_count(&self, stream: &str) -> anyhow::Result<u64> {
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
    pub(super) fn batch_at(&self, id: u128) -> anyhow::Result<Option<u64>> {
        if !self.batch_ids.may_contain(id) {
            return Ok(None);
        }
        if let Some(p) = self.new_ids.get(&id).or_else(|| self.recent.ids.get(&id)) {
            return Ok(Some(*p));
        }
        self.id_runs.get(&self.id_table, id)
    }

    pub(super) fn event(&self, position: u64) -> anyhow::Result<Option<StoredEvent>> {
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
    pub(super) fn finish(&mut self) -> anyhow::Result<()> {
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

    pub(super) fn insert(&mut self, e: &StoredEvent) -> anyhow::Result<()> {
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
