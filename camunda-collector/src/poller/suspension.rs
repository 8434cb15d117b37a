//! The fifth incremental query: suspension and activation of process instances and
//! definitions, which leave every task's timestamp alone. One count per cycle notices that
//! the set of suspended tasks changed; only then are the suspended tasks listed and compared
//! with what was emitted. A change the count cannot see (as many suspended as activated
//! between two cycles) the reconciliation finds, which compares every open task's state.

use std::collections::HashSet;

use futures::TryStreamExt;

use super::{pages, PollError, Poller};

/// The engine's count of suspended tasks when the emitted state last agreed with it.
#[derive(Default)]
pub struct SeenSuspended(std::sync::Mutex<Option<u64>>);

impl SeenSuspended {
    fn get(&self) -> Option<u64> {
        *self.0.lock().expect("suspended count lock")
    }

    fn set(&self, count: u64) {
        *self.0.lock().expect("suspended count lock") = Some(count);
    }
}

impl Poller {
    pub(super) async fn suspension_changes(&self) -> Result<usize, PollError> {
        let (engine, page) = (self.snapshots.engine(), self.config.page_size);
        let count = engine.suspended_task_count().await?;
        if self.seen_suspended.get() == Some(count) {
            return Ok(0);
        }
        let believed: HashSet<String> = self
            .emitter
            .store()
            .suspended_task_ids()
            .await?
            .into_iter()
            .collect();
        let mut still = HashSet::new();
        let mut looked_at = 0;
        let mut listed = std::pin::pin!(pages(page, Vec::len, |first| {
            engine.suspended_tasks_page(first, page)
        }));
        while let Some(tasks) = listed.try_next().await? {
            let (known, fresh): (Vec<_>, Vec<_>) =
                tasks.into_iter().partition(|t| believed.contains(&t.id));
            still.extend(known.into_iter().map(|t| t.id));
            looked_at += self.look_at_open(&fresh, "poll").await?;
        }
        let activated: Vec<String> = believed.difference(&still).cloned().collect();
        looked_at += self.look_at_ids(activated, "poll").await?;
        self.seen_suspended.set(count);
        Ok(looked_at)
    }
}
