//! Where a stream's events are: its versions as runs of consecutive positions.
//!
//! A stream's index is kept as segments, each a row of the stream table keyed by
//! `(stream, first version)` and holding runs of consecutive positions for consecutive
//! versions:
//!
//! ```text
//! [first position: u64 LE, events: u64 LE] per run
//! ```
//!
//! A batch of 100 events to one stream is one run; single appends to a busy stream are a run
//! each, but the runs of one flush (about a second of appends) share a row, so the index
//! costs a row per stream per flush instead of a row per append.

use anyhow::ensure;

/// Runs in one segment row at most (16 KiB).
pub const MAX_RUNS: usize = 1024;
const RUN_BYTES: usize = 16;

/// Events of one stream at consecutive positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first_position: u64,
    pub len: u64,
}

/// Consecutive versions of one stream, from `first_version`, as runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs {
    pub first_version: u64,
    runs: Vec<Run>,
    len: u64,
}

impl Runs {
    pub fn starting_at(first_version: u64) -> Self {
        Runs {
            first_version,
            ..Runs::default()
        }
    }

    /// A single run from `first_version`.
    pub fn from_run(first_version: u64, run: Run) -> Self {
        let mut runs = Runs::starting_at(first_version);
        runs.push_run(run);
        runs
    }

    /// Reads a segment row.
    pub fn decode(first_version: u64, bytes: &[u8]) -> anyhow::Result<Self> {
        ensure!(
            bytes.len().is_multiple_of(RUN_BYTES),
            "a stream segment of {} bytes is not whole runs",
            bytes.len()
        );
        let mut runs = Runs::starting_at(first_version);
        for run in bytes.chunks_exact(RUN_BYTES) {
            let (position, len) = run.split_at(8);
            runs.push_run(Run {
                first_position: u64::from_le_bytes(position.try_into()?),
                len: u64::from_le_bytes(len.try_into()?),
            });
        }
        Ok(runs)
    }

    /// One past the last version.
    pub fn end(&self) -> u64 {
        self.first_version + self.len
    }

    /// Adds the next version's position.
    pub fn push(&mut self, position: u64) {
        match self.runs.last_mut() {
            Some(last) if last.first_position + last.len == position => {
                last.len += 1;
                self.len += 1;
            }
            _ => self.push_run(Run {
                first_position: position,
                len: 1,
            }),
        }
    }

    fn push_run(&mut self, run: Run) {
        self.len += run.len;
        self.runs.push(run);
    }

    /// Adds the runs that follow these (`next.first_version == self.end()`).
    pub fn extend(&mut self, next: &Runs) {
        debug_assert_eq!(next.first_version, self.end());
        for run in &next.runs {
            match self.runs.last_mut() {
                Some(last) if last.first_position + last.len == run.first_position => {
                    last.len += run.len;
                    self.len += run.len;
                }
                _ => self.push_run(*run),
            }
        }
    }

    /// The positions of versions `from_version..` (those these runs hold), at most `limit`,
    /// appended to `out`.
    pub fn positions_into(&self, from_version: u64, limit: usize, out: &mut Vec<u64>) {
        let mut version = self.first_version;
        for run in &self.runs {
            let skip = from_version.saturating_sub(version).min(run.len);
            for i in skip..run.len {
                if out.len() >= limit {
                    return;
                }
                out.push(run.first_position + i);
            }
            version += run.len;
        }
    }

    /// The segment rows of these runs: `(first version, bytes)`, at most [`MAX_RUNS`] each.
    pub fn segments(&self) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
        let mut version = self.first_version;
        self.runs.chunks(MAX_RUNS).map(move |runs| {
            let first = version;
            let mut bytes = Vec::with_capacity(runs.len() * RUN_BYTES);
            for run in runs {
                bytes.extend_from_slice(&run.first_position.to_le_bytes());
                bytes.extend_from_slice(&run.len.to_le_bytes());
                version += run.len;
            }
            (first, bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_consecutive_positions_and_round_trip_through_segments() -> anyhow::Result<()> {
        let mut runs = Runs::starting_at(5);
        for p in [10, 11, 12, 20, 30, 31] {
            runs.push(p);
        }
        let mut next = Runs::starting_at(runs.end());
        next.push(32);
        next.push(40);
        runs.extend(&next);
        assert_eq!(runs.end(), 13);
        let mut all = Vec::new();
        runs.positions_into(0, 100, &mut all);
        assert_eq!(all, vec![10, 11, 12, 20, 30, 31, 32, 40]);
        let mut some = Vec::new();
        runs.positions_into(7, 3, &mut some);
        assert_eq!(some, vec![12, 20, 30]);

        let rows: Vec<_> = runs.segments().collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(Runs::decode(rows[0].0, &rows[0].1)?, runs);
        assert!(Runs::decode(0, &[1, 2, 3]).is_err());
        Ok(())
    }

    #[test]
    fn long_runs_split_into_segments_at_the_right_versions() -> anyhow::Result<()> {
        let mut runs = Runs::starting_at(0);
        for p in 0..(MAX_RUNS as u64 * 2 + 10) {
            runs.push(p * 2); // never consecutive: a run per version
        }
        let rows: Vec<_> = runs.segments().collect();
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, MAX_RUNS as u64, 2 * MAX_RUNS as u64]
        );
        let mut back = Runs::starting_at(0);
        for (first, bytes) in &rows {
            back.extend(&Runs::decode(*first, bytes)?);
        }
        assert_eq!(back, runs);
        Ok(())
    }
}
