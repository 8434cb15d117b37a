//! The Raft log on disk: append-only segment files of framed records.
//!
//! A log write was a redb commit (B-tree pages, checksums, a header) before its fsync; the
//! log writers took a sixth of all CPU under single appends. Here a write is the records of
//! one batch appended to the active segment in one `write`, then one `fdatasync`.
//!
//! ```text
//! [payload length: u32 LE] [CRC-32 of the payload: u32 LE] [payload: a bincode Record]
//! ```
//!
//! Replaying the records in order gives the log: entries, truncations, purges, the vote and
//! the commit index. A segment starts with the state the earlier ones held, so once a purge
//! has passed every entry of the oldest segments they are deleted. A record cut short by a
//! crash can only be at the end of the last segment: it was never acknowledged, and opening
//! cuts it off.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context};
use openraft::RaftLogId;
use serde::{Deserialize, Serialize};

use crate::types::{decode, encode, Entry, LogId, Vote};

/// A segment is closed once it reaches this size.
const SEGMENT_BYTES: u64 = 64 << 20;
const FRAME_HEAD: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
pub enum Record {
    /// First record of every segment: what the earlier segments said.
    State {
        vote: Option<Vote>,
        committed: Option<LogId>,
        purged: Option<LogId>,
    },
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this id are gone.
    Purge(LogId),
}

/// The log's state besides its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogMeta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

/// Where an entry's record is.
#[derive(Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

struct Segment {
    file: Arc<File>,
    /// The highest entry index ever written to it (truncated ones included): it may be
    /// deleted once the log is purged past it.
    max_index: Option<u64>,
}

/// What readers need: each entry's place, and the open segments.
#[derive(Default)]
struct Index {
    entries: BTreeMap<u64, Loc>,
    segments: BTreeMap<u64, Segment>,
}

impl Index {
    /// Replays one record, framed at `offset` of `segment` with a payload of `len` bytes, on
    /// the index and on `meta`: the same at open as after a write. The segment is open.
    fn apply(&mut self, meta: &mut LogMeta, record: &Record, segment: u64, offset: u64, len: u32) {
        match record {
            Record::State {
                vote,
                committed,
                purged,
            } => {
                *meta = LogMeta {
                    vote: *vote,
                    committed: *committed,
                    purged: *purged,
                }
            }
            Record::Entry(e) => {
                let log_id = *e.get_log_id();
                self.entries.insert(
                    log_id.index,
                    Loc {
                        segment,
                        offset,
                        len,
                        log_id,
                    },
                );
                let seg = self
                    .segments
                    .get_mut(&segment)
                    .expect("the record's segment is open");
                seg.max_index = seg.max_index.max(Some(log_id.index));
            }
            Record::Vote(v) => meta.vote = Some(*v),
            Record::Committed(c) => meta.committed = *c,
            Record::Truncate(from) => drop(self.entries.split_off(from)),
            Record::Purge(upto) => {
                meta.purged = Some(*upto);
                self.entries = self.entries.split_off(&(upto.index + 1));
            }
        }
    }
}

/// The segment files of one log. One writer; readers from any thread.
pub struct Segments {
    dir: PathBuf,
    /// A segment is closed once it reaches this size.
    segment_bytes: u64,
    index: Mutex<Index>,
    /// The writer's own state (only `write` takes it).
    writer: Mutex<Writer>,
}

struct Writer {
    active: u64,
    file: Arc<File>,
    len: u64,
    meta: LogMeta,
}

impl Segments {
    /// Opens the log in `dir` (created if missing), replays it and cuts off a torn tail.
    pub fn open(dir: &Path) -> anyhow::Result<(Segments, LogMeta)> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> anyhow::Result<(Segments, LogMeta)> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut index = Index::default();
        let mut meta = LogMeta::default();
        let mut active_len = 0;
        for (i, &id) in ids.iter().enumerate() {
            let last = i + 1 == ids.len();
            let path = segment_path(dir, id);
            let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
            index.segments.insert(
                id,
                Segment {
                    file: file.clone(),
                    max_index: None,
                },
            );
            let bytes = std::fs::read(&path)?;
            let mut at = 0usize;
            while let Some((payload, next)) = frame(&bytes, at) {
                let record: Record = decode(payload)
                    .with_context(|| format!("{}: record at {at}", path.display()))?;
                let len = (next - at - FRAME_HEAD) as u32;
                index.apply(&mut meta, &record, id, at as u64, len);
                at = next;
            }
            if at < bytes.len() {
                ensure!(
                    last,
                    "{}: damaged record at {at} in a segment that is not the last",
                    path.display()
                );
                tracing::warn!(
                    segment = %path.display(),
                    at,
                    "cutting off a record torn by a crash (never acknowledged)"
                );
                file.set_len(at as u64)?;
                file.sync_all()?;
            }
            if last {
                active_len = at as u64;
            }
        }
        let (active, file, len) = match ids.last() {
            Some(&id) => (id, index.segments[&id].file.clone(), active_len),
            None => {
                let (file, len) = create_segment(dir, 1, &meta)?;
                index.segments.insert(
                    1,
                    Segment {
                        file: file.clone(),
                        max_index: None,
                    },
                );
                (1, file, len)
            }
        };
        let segments = Segments {
            dir: dir.to_path_buf(),
            segment_bytes,
            index: Mutex::new(index),
            writer: Mutex::new(Writer {
                active,
                file,
                len,
                meta,
            }),
        };
        Ok((segments, meta))
    }

    /// The last entry's id, if the log holds any.
    pub fn last_log_id(&self) -> Option<LogId> {
        let index = self.index.lock().expect("log index lock");
        index.entries.values().next_back().map(|l| l.log_id)
    }

    /// The first and last index the log holds.
    pub fn held(&self) -> Option<(u64, u64)> {
        let index = self.index.lock().expect("log index lock");
        Some((
            *index.entries.keys().next()?,
            *index.entries.keys().next_back()?,
        ))
    }

    /// Appends the records, makes them durable, and then shows them to readers.
    pub fn write(&self, records: &[Record]) -> anyhow::Result<()> {
        let mut w = self.writer.lock().expect("log writer lock");
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(records.len());
        for record in records {
            let at = w.len + buf.len() as u64;
            placed.push((at, push_frame(&mut buf, record)?));
        }
        w.file.write_all_at(&buf, w.len)?;
        w.file.sync_data()?;
        w.len += buf.len() as u64;
        let (active, purged_before) = (w.active, w.meta.purged);
        {
            let mut index = self.index.lock().expect("log index lock");
            for (record, (offset, len)) in records.iter().zip(placed) {
                index.apply(&mut w.meta, record, active, offset, len);
            }
        }
        if w.len >= self.segment_bytes {
            self.start_segment(&mut w, active + 1)?;
        }
        if let Some(purged) = w.meta.purged.filter(|_| w.meta.purged != purged_before) {
            self.delete_purged(purged.index, w.active)?;
        }
        Ok(())
    }

    /// Starts segment `id` with the current state and makes it the active one.
    fn start_segment(&self, w: &mut Writer, id: u64) -> anyhow::Result<()> {
        let (file, len) = create_segment(&self.dir, id, &w.meta)?;
        self.index.lock().expect("log index lock").segments.insert(
            id,
            Segment {
                file: file.clone(),
                max_index: None,
            },
        );
        (w.active, w.file, w.len) = (id, file, len);
        Ok(())
    }

    /// Deletes the oldest segments whose entries are all purged (never the active one, and
    /// only a prefix: a later segment may hold the truncation of an earlier one's entries).
    fn delete_purged(&self, upto: u64, active: u64) -> anyhow::Result<()> {
        let mut doomed = Vec::new();
        {
            let mut index = self.index.lock().expect("log index lock");
            while let Some((&id, seg)) = index.segments.first_key_value() {
                if id == active || seg.max_index.is_some_and(|m| m > upto) {
                    break;
                }
                index.segments.remove(&id);
                doomed.push(id);
            }
        }
        for id in doomed {
            // Readers that hold the file keep reading it; the name goes now.
            std::fs::remove_file(segment_path(&self.dir, id))?;
        }
        Ok(())
    }

    /// The stored entries of `start..end` (those the log holds), in order.
    pub fn read(&self, start: u64, end: u64) -> anyhow::Result<Vec<Entry>> {
        let places: Vec<(Loc, Arc<File>)> = {
            let index = self.index.lock().expect("log index lock");
            index
                .entries
                .range(start..end)
                .map(|(_, loc)| {
                    let seg = index
                        .segments
                        .get(&loc.segment)
                        .expect("an entry's segment is open");
                    (*loc, seg.file.clone())
                })
                .collect()
        };
        let mut out = Vec::with_capacity(places.len());
        for (loc, file) in places {
            let mut payload = vec![0u8; loc.len as usize];
            file.read_exact_at(&mut payload, loc.offset + FRAME_HEAD as u64)?;
            match decode::<Record>(&payload)? {
                Record::Entry(e) => out.push(e),
                other => bail!("expected the entry {:?}, found {other:?}", loc.log_id),
            }
        }
        Ok(out)
    }
}

/// A new, durable segment file holding only the state record.
fn create_segment(dir: &Path, id: u64, meta: &LogMeta) -> anyhow::Result<(Arc<File>, u64)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, id))?;
    let mut buf = Vec::new();
    push_frame(
        &mut buf,
        &Record::State {
            vote: meta.vote,
            committed: meta.committed,
            purged: meta.purged,
        },
    )?;
    file.write_all(&buf)?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?; // the new name too
    Ok((Arc::new(file), buf.len() as u64))
}

/// Appends `record`, framed, to `buf`; returns the payload's length.
fn push_frame(buf: &mut Vec<u8>, record: &Record) -> anyhow::Result<u32> {
    let payload = encode(record);
    let len = u32::try_from(payload.len())?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(len)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

/// The payload of the whole, intact record at `at`, and where the next one starts.
fn frame(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + FRAME_HEAD)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    let payload = bytes.get(at + FRAME_HEAD..at + FRAME_HEAD + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + FRAME_HEAD + len))
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn segment_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        Ok(files)
    }

    #[test]
    fn the_log_reads_back_as_written_after_truncation_purge_and_reopening() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        let vote = Vote::new(3, 2);
        let expected = {
            let (log, _) = Segments::open_with(&path, 2048)?;
            for batch in (1..=50u64).collect::<Vec<_>>().chunks(7) {
                let records: Vec<Record> =
                    batch.iter().map(|i| Record::Entry(entry(1, *i))).collect();
                log.write(&records)?;
            }
            log.write(&[
                Record::Vote(vote),
                Record::Truncate(40),
                Record::Entry(entry(3, 40)),
                Record::Entry(entry(3, 41)),
                Record::Committed(Some(entry(3, 41).log_id)),
            ])?;
            log.write(&[Record::Purge(entry(1, 10).log_id)])?;
            assert!(segment_files(&path)?.len() > 1, "small segments roll");
            let read = log.read(0, 100)?;
            assert_eq!(read.len(), 31); // 11..=39 of term 1, then 40 and 41 of term 3
            assert_eq!(ids(&read[29..]), vec![(3, 40), (3, 41)]);
            assert_eq!(log.held(), Some((11, 41)));
            ids(&read)
        };
        let (log, meta) = Segments::open_with(&path, 2048)?;
        assert_eq!(
            meta,
            LogMeta {
                vote: Some(vote),
                committed: Some(entry(3, 41).log_id),
                purged: Some(entry(1, 10).log_id),
            }
        );
        assert_eq!(ids(&log.read(0, 100)?), expected);
        assert_eq!(log.last_log_id(), Some(entry(3, 41).log_id));
        assert_eq!(ids(&log.read(20, 22)?), vec![(1, 20), (1, 21)]);
        Ok(())
    }

    #[test]
    fn purged_segments_are_deleted_and_a_torn_tail_is_cut_off() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        {
            let (log, _) = Segments::open_with(&path, 1024)?;
            for i in 1..=100 {
                log.write(&[Record::Entry(entry(1, i))])?;
            }
            let before = segment_files(&path)?.len();
            log.write(&[Record::Purge(entry(1, 60).log_id)])?;
            let after = segment_files(&path)?.len();
            assert!(
                after < before,
                "{before} segments before the purge, {after} after"
            );
            assert_eq!(log.held(), Some((61, 100)));
        }
        // A crash in the middle of a write: half a record at the end of the last segment.
        let last = segment_files(&path)?.pop().expect("a segment");
        let mut torn = Vec::new();
        push_frame(&mut torn, &Record::Entry(entry(1, 101)))?;
        torn.truncate(torn.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(&last)?
            .write_all(&torn)?;
        {
            let (log, meta) = Segments::open_with(&path, 1024)?;
            assert_eq!(meta.purged, Some(entry(1, 60).log_id));
            assert_eq!(log.last_log_id(), Some(entry(1, 100).log_id));
            log.write(&[Record::Entry(entry(1, 101))])?;
        }
        let (log, _) = Segments::open_with(&path, 1024)?;
        assert_eq!(log.read(61, 200)?.len(), 41);
        drop(log);
        // Damage anywhere but at the end is not a crash: opening refuses.
        let first = segment_files(&path)?.remove(0);
        let mut bytes = std::fs::read(&first)?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&first, bytes)?;
        assert!(Segments::open_with(&path, 1024).is_err());
        Ok(())
    }
}
