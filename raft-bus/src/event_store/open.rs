//! Opening the store: its tables, the applied state a restart recovers, and the conversion
//! of earlier formats, each in the opening transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use redb::{Database, Durability, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use tokio::sync::watch;

use super::writer::write_runs;
use super::{
    next_index, AppliedState, EventStore, Inner, Recent, WriteState, Writer, CHUNKS, KEY_APPLIED,
    KEY_HEAD, KEY_MEMBERSHIP, META, STREAM_SEGMENTS,
};
use crate::id_filter::IdFilter;
use crate::id_runs::{IdRuns, ID_RUNS, MAX_MERGED};
use crate::stream_runs::{Run, Runs};
use crate::types::decode;

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
                writing: Mutex::new(WriteState { batch_ids, id_runs }),
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

pub(super) fn create_tables(txn: &WriteTransaction) -> anyhow::Result<()> {
    txn.open_table(CHUNKS)?;
    txn.open_table(STREAM_SEGMENTS)?;
    txn.open_table(ID_RUNS)?;
    txn.open_table(META)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use redb::{Database, ReadableDatabase, TableHandle};
    use uuid::Uuid;

    use super::super::test_support::{appended, batch, entry};
    use super::*;
    use crate::event_chunk::ChunkBuilder;
    use crate::types::{encode, AppendBatch, ApplyOutcome, ProposedEvent, StoredEvent};

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
