//! What the commits since the last durable one added to the indexes, kept in memory.

use std::collections::HashMap;

use crate::stream_runs::Runs;

/// What the commits since the last durable one added to the stream and id indexes; the
/// next durable commit writes it to the tables.
#[derive(Default)]
pub(super) struct Recent {
    /// Each stream's runs from its last stored version on.
    pub(super) runs: HashMap<String, Runs>,
    /// First event id of each batch → its position.
    pub(super) ids: HashMap<u128, u64>,
}

impl Recent {
    pub(super) fn absorb(&mut self, runs: HashMap<String, Runs>, ids: HashMap<u128, u64>) {
        for (stream, new) in runs {
            match self.runs.get_mut(&stream) {
                Some(r) => r.extend(&new),
                None => {
                    self.runs.insert(stream, new);
                }
            }
        }
        self.ids.extend(ids);
    }
}
