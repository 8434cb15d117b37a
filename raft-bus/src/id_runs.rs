//! The event-id index (the position of every appended batch by its first event id) as
//! sorted runs, the way an LSM tree keeps its keys.
//!
//! A B-tree keyed by random ids takes each durable commit's ids (about a second of appends)
//! all over the table: once the table outgrew the cache, a commit rewrote most of its leaves,
//! a write that grew with the store and stalled applies for tens of milliseconds a second.
//! Here each durable commit writes its ids as one new run, sorted, in rows of up to
//! [`ROW_IDS`] pairs keyed by `(run, first id of the row)`:
//!
//! ```text
//! [id: u128 LE, position: u64 LE] per pair, ascending ids
//! ```
//!
//! A run is merged with the one before it while that one is at most twice as large, so runs
//! shrink geometrically from oldest to newest and there are about log2(n) of them; a merge
//! never grows a run past [`MAX_MERGED`] ids, which bounds the work of one commit. A lookup
//! seeks one row per run, newest first; the in-memory filter ([`crate::id_filter`]) spares
//! nearly every new id even that.

use anyhow::{ensure, Context};
use redb::{ReadableTable, Table, TableDefinition};

/// `(run, first id of the row)` → pairs.
pub const ID_RUNS: TableDefinition<(u64, u128), &[u8]> = TableDefinition::new("id_runs");
/// Pairs in one row at most (24 KiB).
pub const ROW_IDS: usize = 1024;
/// Runs are merged up to this many ids (6 MiB); larger ones stay as they are.
pub const MAX_MERGED: usize = 1 << 18;
const PAIR_BYTES: usize = 24;

/// A batch's first id and the batch's position.
pub type Pair = (u128, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    number: u64,
    len: usize,
}

/// The runs of the table, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdRuns {
    runs: Vec<Run>,
}

impl IdRuns {
    /// Learns the runs from the table, handing every pair to `each` on the way (one pass
    /// over the table at open fills the id filter too).
    pub fn load(
        table: &impl ReadableTable<(u64, u128), &'static [u8]>,
        mut each: impl FnMut(Pair),
    ) -> anyhow::Result<Self> {
        let mut runs: Vec<Run> = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let number = key.value().0;
            let bytes = value.value();
            let len = pairs_in(bytes)?;
            decode(bytes, &mut each)?;
            match runs.last_mut() {
                Some(run) if run.number == number => run.len += len,
                _ => runs.push(Run { number, len }),
            }
        }
        Ok(IdRuns { runs })
    }

    /// Ids in all runs.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The position of the batch whose first id this is.
    pub fn get(
        &self,
        table: &impl ReadableTable<(u64, u128), &'static [u8]>,
        id: u128,
    ) -> anyhow::Result<Option<u64>> {
        for run in self.runs.iter().rev() {
            let Some(row) = table.range((run.number, 0)..=(run.number, id))?.next_back() else {
                continue;
            };
            if let Some(position) = find(row?.1.value(), id)? {
                return Ok(Some(position));
            }
        }
        Ok(None)
    }

    /// Writes `pairs` (any order, ids not in the index yet) as a new run, merged with the
    /// runs before it that are not more than twice its size.
    pub fn add(
        &mut self,
        table: &mut Table<(u64, u128), &'static [u8]>,
        mut pairs: Vec<Pair>,
    ) -> anyhow::Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        pairs.sort_unstable();
        let number = self.runs.last().map_or(0, |r| r.number + 1);
        while let Some(older) = self.runs.last().copied() {
            if older.len > 2 * pairs.len() || older.len + pairs.len() > MAX_MERGED {
                break;
            }
            pairs = merge(read_run(table, older.number)?, pairs);
            delete_run(table, older.number)?;
            self.runs.pop();
        }
        for row in pairs.chunks(ROW_IDS) {
            table.insert((number, row[0].0), encode(row).as_slice())?;
        }
        self.runs.push(Run {
            number,
            len: pairs.len(),
        });
        Ok(())
    }
}

fn read_run(table: &Table<(u64, u128), &'static [u8]>, number: u64) -> anyhow::Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for row in table.range((number, 0)..=(number, u128::MAX))? {
        decode(row?.1.value(), |p| pairs.push(p))?;
    }
    Ok(pairs)
}

fn delete_run(table: &mut Table<(u64, u128), &'static [u8]>, number: u64) -> anyhow::Result<()> {
    table.retain_in((number, 0)..=(number, u128::MAX), |_, _| false)?;
    Ok(())
}

/// Two sorted runs as one; an id in both (never written so) keeps the newer position.
fn merge(older: Vec<Pair>, newer: Vec<Pair>) -> Vec<Pair> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut a, mut b) = (older.into_iter().peekable(), newer.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => a.next(),
            (Some(x), Some(y)) if x.0 == y.0 => {
                a.next();
                b.next()
            }
            (Some(_), None) => a.next(),
            (_, Some(_)) => b.next(),
            (None, None) => return out,
        };
        out.extend(next);
    }
}

fn encode(pairs: &[Pair]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(pairs.len() * PAIR_BYTES);
    for (id, position) in pairs {
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&position.to_le_bytes());
    }
    bytes
}

fn pairs_in(bytes: &[u8]) -> anyhow::Result<usize> {
    ensure!(
        bytes.len().is_multiple_of(PAIR_BYTES) && !bytes.is_empty(),
        "an id row of {} bytes is not whole id/position pairs",
        bytes.len()
    );
    Ok(bytes.len() / PAIR_BYTES)
}

fn pair_at(bytes: &[u8], i: usize) -> Pair {
    let at = i * PAIR_BYTES;
    let id = u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"));
    let position = u64::from_le_bytes(bytes[at + 16..at + 24].try_into().expect("8 bytes"));
    (id, position)
}

fn decode(bytes: &[u8], mut f: impl FnMut(Pair)) -> anyhow::Result<()> {
    for i in 0..pairs_in(bytes)? {
        f(pair_at(bytes, i));
    }
    Ok(())
}

/// Binary search of one row.
fn find(bytes: &[u8], id: u128) -> anyhow::Result<Option<u64>> {
    let n = pairs_in(bytes).context("reading the id index")?;
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (at, position) = pair_at(bytes, mid);
        match at.cmp(&id) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(Some(position)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use redb::{Database, ReadableDatabase};

    use super::*;

    fn mixed(i: u64) -> u128 {
        // Spread like random ids, and reproducible.
        let x = (u128::from(i) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        x ^ (x >> 61)
    }

    /// Commits of growing and shrinking sizes: every id is found at its position, unknown
    /// ids are not, the runs stay few and shrink from oldest to newest, and a reopened
    /// table knows the same runs.
    #[test]
    fn every_id_is_found_through_merges_and_reopening() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Database::create(dir.path().join("ids.redb"))?;
        let mut runs = IdRuns::default();
        let mut all: HashMap<u128, u64> = HashMap::new();
        let mut next = 0u64;
        for commit in 0..60u64 {
            let n = [1, 700, 3_000, 40, 5_000][(commit % 5) as usize] as u64;
            let pairs: Vec<Pair> = (next..next + n).map(|i| (mixed(i), i + 1)).collect();
            next += n;
            all.extend(pairs.iter().copied());
            let txn = db.begin_write()?;
            runs.add(&mut txn.open_table(ID_RUNS)?, pairs)?;
            txn.commit()?;
        }
        assert_eq!(runs.len(), all.len());
        let sizes: Vec<usize> = runs.runs.iter().map(|r| r.len).collect();
        assert!(sizes.len() <= 12, "runs {sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] > w[1]), "runs {sizes:?}");
        let txn = db.begin_read()?;
        let table = txn.open_table(ID_RUNS)?;
        let mut seen = 0;
        let loaded = IdRuns::load(&table, |(id, position)| {
            assert_eq!(all.get(&id), Some(&position));
            seen += 1;
        })?;
        assert_eq!(loaded, runs);
        assert_eq!(seen, all.len());
        for (id, position) in &all {
            assert_eq!(runs.get(&table, *id)?, Some(*position));
        }
        for i in next..next + 1_000 {
            assert_eq!(runs.get(&table, mixed(i))?, None);
        }
        Ok(())
    }

    #[test]
    fn merges_stop_at_the_size_limit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Database::create(dir.path().join("ids.redb"))?;
        let mut runs = IdRuns::default();
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(ID_RUNS)?;
            for commit in 0..3u64 {
                let base = commit * MAX_MERGED as u64;
                let pairs = (base..base + MAX_MERGED as u64 / 2 + 1)
                    .map(|i| (mixed(i), i))
                    .collect();
                runs.add(&mut table, pairs)?;
            }
        }
        let sizes: Vec<usize> = runs.runs.iter().map(|r| r.len).collect();
        assert_eq!(sizes, vec![MAX_MERGED / 2 + 1; 3]);
        Ok(())
    }

    #[test]
    fn a_row_that_is_not_whole_pairs_is_an_error() {
        assert!(find(&[0; 23], 1).is_err());
        assert!(find(&[], 1).is_err());
        assert_eq!(find(&encode(&[(5, 9), (7, 11)]), 7).ok(), Some(Some(11)));
        assert_eq!(find(&encode(&[(5, 9), (7, 11)]), 6).ok(), Some(None));
    }
}
