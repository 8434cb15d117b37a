//! A Bloom filter of the batch ids the event store holds: nearly every append brings new ids,
//! and looking a new id up in the id table (a miss deep in a B-tree larger than the cache)
//! cost a fifth of an apply. The filter answers "certainly not there" for almost all of them;
//! only a "maybe" goes on to the table, so a false positive costs what every lookup cost
//! before and a correct answer never depends on the filter.
//!
//! Blocked: all probes of an id fall in one 64-byte block, one cache miss per layer. Layers
//! double in capacity as ids arrive, so the filter needs no rebuild while the store grows and
//! costs about 1.5 bytes per id.

/// Ids the first layer is sized for.
const FIRST_CAPACITY: usize = 1 << 16;
/// 12 bits per id and 8 probes in a 512-bit block: under 1 % false positives in a full layer.
const BITS_PER_ID: usize = 12;
const PROBES: u32 = 8;
const BLOCK_WORDS: usize = 8;

#[derive(Default)]
pub struct IdFilter {
    layers: Vec<Layer>,
}

struct Layer {
    blocks: Vec<[u64; BLOCK_WORDS]>,
    capacity: usize,
    len: usize,
}

impl Layer {
    fn new(capacity: usize) -> Self {
        let blocks = (capacity * BITS_PER_ID).div_ceil(BLOCK_WORDS * 64);
        Layer {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
            capacity,
            len: 0,
        }
    }

    /// The block and the bit of each probe.
    fn probes(&self, id: u128) -> (usize, impl Iterator<Item = usize>) {
        let (a, b) = hashes(id);
        // Multiply-shift maps the hash onto the blocks without a division.
        let block = ((u128::from(a) * self.blocks.len() as u128) >> 64) as usize;
        // Nine bits a probe: seven from `b`, the last from `a`'s low bits (the block took
        // its high ones).
        let bits = (0..PROBES).map(move |i| {
            let h = if i < 7 { b >> (9 * i) } else { a };
            (h & 511) as usize
        });
        (block, bits)
    }

    fn insert(&mut self, id: u128) {
        let (block, bits) = self.probes(id);
        let words = &mut self.blocks[block];
        for bit in bits {
            words[bit / 64] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    fn may_contain(&self, id: u128) -> bool {
        let (block, mut bits) = self.probes(id);
        let words = &self.blocks[block];
        bits.all(|bit| words[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

impl IdFilter {
    pub fn insert(&mut self, id: u128) {
        let full = self.layers.last().is_none_or(|l| l.len >= l.capacity);
        if full {
            let capacity = self
                .layers
                .last()
                .map_or(FIRST_CAPACITY, |l| l.capacity * 2);
            self.layers.push(Layer::new(capacity));
        }
        if let Some(layer) = self.layers.last_mut() {
            layer.insert(id);
        }
    }

    /// False only for ids never inserted.
    pub fn may_contain(&self, id: u128) -> bool {
        self.layers.iter().rev().any(|l| l.may_contain(id))
    }

    /// Ids inserted.
    pub fn len(&self) -> usize {
        self.layers.iter().map(|l| l.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Two independent 64-bit hashes of an id. Ids need not be random (a UUIDv7 is mostly a
/// clock), so both halves are mixed (splitmix64's finaliser).
fn hashes(id: u128) -> (u64, u64) {
    let a = mix((id as u64) ^ mix((id >> 64) as u64));
    (a, mix(a ^ 0x9e37_79b9_7f4a_7c15))
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_id_is_found_across_layers() {
        let mut f = IdFilter::default();
        assert!(!f.may_contain(7));
        let ids: Vec<u128> = (0..300_000u128).map(|i| i * 0x1_0000_0001 + 3).collect();
        for id in &ids {
            f.insert(*id);
        }
        assert_eq!(f.len(), ids.len());
        assert!(f.layers.len() >= 3, "300,000 ids span several layers");
        assert!(ids.iter().all(|id| f.may_contain(*id)));
    }

    #[test]
    fn few_other_ids_look_present() {
        let mut f = IdFilter::default();
        // Ids like UUIDv7s, mostly a clock: far from random bits.
        for i in 0..200_000u128 {
            f.insert((1_700_000_000_000u128 + i) << 80 | i);
        }
        let other = (0..100_000)
            .filter(|_| f.may_contain(uuid::Uuid::new_v4().as_u128()))
            .count();
        // Three layers, each under 1 %: a broken hash would be far above.
        assert!(
            other < 3_000,
            "{other} of 100,000 unknown ids looked present"
        );
    }
}
