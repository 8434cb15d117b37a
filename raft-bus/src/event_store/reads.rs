//! Reads: events by position, a stream's events (its recent runs, then the tables), and
//! every event for a snapshot.

use redb::{ReadableDatabase, ReadableTable};

use super::{EventStore, CHUNKS, STREAM_SEGMENTS};
use crate::event_chunk::Chunk;
use crate::stream_runs::Runs;
use crate::types::StoredEvent;

impl EventStore {
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
}

/// How many events of `stream` the table holds (its next version), from its last segment;
/// None: none.
pub(super) fn stream_end(
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
pub(super) fn event_at(
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{batch, entry};
    use crate::event_store::EventStore;
    use crate::types::{AppendBatch, ApplyOutcome, BatchOutcome};

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
}
