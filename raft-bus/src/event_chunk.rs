//! Consecutive events stored as one row of the event table.
//!
//! A row per event cost a B-tree insert per event, and with it most of the state machine's
//! time under load (a batch of 100 events was 100 inserts). A chunk holds consecutive events
//! of one apply, at most [`MAX_EVENTS`] or about [`MAX_BYTES`], keyed by its first position:
//!
//! ```text
//! [count: u32 LE] [end offset of each event in the body: u32 LE, count of them] [body]
//! ```
//!
//! The body is each event bincode-encoded, so one event is read without decoding the others.

use anyhow::{bail, ensure};

use crate::types::{decode, StoredEvent};

/// Events in one chunk at most.
pub const MAX_EVENTS: usize = 256;
/// A chunk is closed once its body reaches this size: redb rounds a large row up to a
/// power-of-two run of pages and writes all of it, so a chunk aims just under 64 KiB.
pub const MAX_BYTES: usize = 56 << 10;

/// The chunk being filled by one write transaction.
#[derive(Default)]
pub struct ChunkBuilder {
    first: u64,
    ends: Vec<u32>,
    body: Vec<u8>,
}

impl ChunkBuilder {
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.ends.len() >= MAX_EVENTS || self.body.len() >= MAX_BYTES
    }

    /// Adds the next event; its position must follow the previous one's.
    pub fn push(&mut self, event: &StoredEvent) -> anyhow::Result<()> {
        if self.is_empty() {
            self.first = event.position;
        } else {
            ensure!(
                event.position == self.first + self.ends.len() as u64,
                "event at position {} does not follow the chunk from {} with {} events",
                event.position,
                self.first,
                self.ends.len()
            );
        }
        bincode::serialize_into(&mut self.body, event)?;
        self.ends.push(u32::try_from(self.body.len())?);
        Ok(())
    }

    /// An event added but not yet taken.
    pub fn get(&self, position: u64) -> Option<&[u8]> {
        let i = usize::try_from(position.checked_sub(self.first)?).ok()?;
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.body[start..end])
    }

    /// The finished chunk, its first position and its encoding; the builder is empty after.
    pub fn take(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(4 + 4 * self.ends.len() + self.body.len());
        out.extend_from_slice(&(self.ends.len() as u32).to_le_bytes());
        for end in &self.ends {
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&self.body);
        self.ends.clear();
        self.body.clear();
        Some((self.first, out))
    }
}

/// A stored chunk, read in place.
pub struct Chunk<'a> {
    ends: &'a [u8],
    body: &'a [u8],
}

impl<'a> Chunk<'a> {
    pub fn parse(bytes: &'a [u8]) -> anyhow::Result<Self> {
        let Some((count, rest)) = bytes.split_first_chunk::<4>() else {
            bail!("event chunk of {} bytes has no header", bytes.len());
        };
        let count = u32::from_le_bytes(*count) as usize;
        ensure!(
            rest.len() >= count * 4,
            "event chunk says {count} events but holds {} bytes",
            bytes.len()
        );
        let (ends, body) = rest.split_at(count * 4);
        let chunk = Chunk { ends, body };
        ensure!(
            chunk.end(count.saturating_sub(1)) <= body.len(),
            "event chunk ends past its body"
        );
        Ok(chunk)
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn end(&self, i: usize) -> usize {
        self.ends
            .get(i * 4..i * 4 + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// The encoded event at offset `i` from the chunk's first position.
    pub fn event_bytes(&self, i: usize) -> anyhow::Result<&'a [u8]> {
        ensure!(i < self.len(), "offset {i} past a chunk of {}", self.len());
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let end = self.end(i);
        ensure!(
            start <= end && end <= self.body.len(),
            "corrupt event chunk"
        );
        Ok(&self.body[start..end])
    }

    pub fn event(&self, i: usize) -> anyhow::Result<StoredEvent> {
        Ok(decode(self.event_bytes(i)?)?)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn event(position: u64, data: &str) -> StoredEvent {
        StoredEvent {
            position,
            stream: "s".into(),
            version: position,
            event_type: "T".into(),
            data: data.into(),
            metadata: None,
            id: Uuid::new_v4(),
            timestamp_ms: 1,
            batch_len: 1,
        }
    }

    #[test]
    fn events_come_back_one_by_one_and_gaps_are_refused() -> anyhow::Result<()> {
        let mut b = ChunkBuilder::default();
        let events: Vec<_> = (7..12).map(|p| event(p, &"x".repeat(p as usize))).collect();
        for e in &events {
            b.push(e)?;
        }
        assert!(b.push(&event(13, "gap")).is_err());
        assert_eq!(
            decode::<StoredEvent>(b.get(9).expect("pending"))?,
            events[2]
        );
        assert!(b.get(12).is_none() && b.get(6).is_none());
        let (first, bytes) = b.take().expect("a chunk");
        assert_eq!(first, 7);
        assert!(b.is_empty() && b.take().is_none());
        let chunk = Chunk::parse(&bytes)?;
        assert_eq!(chunk.len(), 5);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(&chunk.event(i)?, e);
        }
        assert!(chunk.event(5).is_err());
        // Damaged rows are errors, not panics.
        assert!(Chunk::parse(&bytes[..2]).is_err());
        assert!(Chunk::parse(&bytes[..10]).is_err());
        assert!(Chunk::parse(&bytes[..bytes.len() - 1]).is_err());
        Ok(())
    }
}
