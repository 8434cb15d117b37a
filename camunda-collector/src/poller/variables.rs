//! The fourth incremental query: variable changes (set, changed or removed by REST, delegates,
//! listeners, Cockpit, message correlation), which leave the task's timestamp alone. A task
//! is looked at again for a change unless the state emitted for it is at least as new as the
//! change (the same rule as for identity-link changes): so the tasks an instance starts with,
//! whose variables were written in the transaction that created them, are not read twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::TryStreamExt;

use super::{pages, PollError, Poller, TASKS, VARIABLES};
use crate::dates;

/// Variable updates already looked at, by detail id, so the overlap window does not make
/// every change cost a look per cycle. Kept a while longer than the window reaches back.
#[derive(Default)]
pub struct SeenUpdates(std::sync::Mutex<HashMap<String, Instant>>);

impl SeenUpdates {
    /// Keeps the ids not yet seen, and remembers them.
    fn fresh(&self, ids: Vec<String>, keep: Duration) -> HashSet<String> {
        let mut seen = self.0.lock().expect("seen updates lock");
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < keep);
        ids.into_iter()
            .filter(|id| seen.insert(id.clone(), now).is_none())
            .collect()
    }
}

/// Whether a task needs a look for a variable change at `at` (event time), given what was
/// emitted for it: emitted at an older engine time, or never emitted and not `listed` by the
/// task query (one changed or created since that query's watermark looks at it anyway, so a
/// burst of new tasks with variables is not looked at twice).
fn needs_look(emitted: Option<&Option<String>>, at: &str, listed: bool) -> bool {
    match emitted {
        None => !listed,
        // Ended: nothing to look at.
        Some(None) => false,
        Some(Some(emitted)) => emitted.as_str() < at,
    }
}

/// Keeps the later of two event times in `slot`.
fn latest(slot: &mut String, at: String) {
    if at > *slot {
        *slot = at;
    }
}

impl Poller {
    pub(super) async fn variable_changes(&self) -> Result<usize, PollError> {
        let (engine, page) = (self.snapshots.engine(), self.config.page_size);
        let since = self.since(VARIABLES).await?;
        let mut updates = Vec::new();
        let mut logged = std::pin::pin!(pages(page, Vec::len, |first| {
            engine.variable_updates_after(&since, first, page)
        }));
        while let Some(found) = logged.try_next().await? {
            updates.extend(found);
        }
        let keep = self.config.overlap * 2 + Duration::from_secs(60);
        let fresh = self
            .seen_updates
            .fresh(updates.iter().map(|u| u.id.clone()).collect(), keep);
        // The latest change per process instance, and per task for task-local variables.
        let mut instances: BTreeMap<String, String> = BTreeMap::new();
        let mut own: BTreeMap<String, String> = BTreeMap::new();
        for u in updates.into_iter().filter(|u| fresh.contains(&u.id)) {
            let at = dates::to_event(&u.time);
            match (u.task_id, u.process_instance_id) {
                (Some(task), _) => latest(own.entry(task).or_default(), at),
                (None, Some(instance)) => latest(instances.entry(instance).or_default(), at),
                (None, None) => {}
            }
        }
        let ids: Vec<String> = instances.keys().cloned().collect();
        // The task query of this cycle lists every task changed since this (it ran first).
        let tasks_since = dates::parse(&self.since(TASKS).await?);
        let listed = |t: &crate::engine::EngineTask| {
            tasks_since
                .is_some_and(|since| dates::parse(t.changed_at()).is_some_and(|at| at >= since))
        };
        let mut looked_at = 0;
        for chunk in ids.chunks(50) {
            let mut open = std::pin::pin!(pages(page, Vec::len, |first| {
                engine.tasks_of_instances(chunk, first, page)
            }));
            while let Some(tasks) = open.try_next().await? {
                let task_ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
                let emitted = self.emitter.store().changed_at_of(&task_ids).await?;
                let mut stale = Vec::new();
                for t in tasks {
                    let mut at = own.remove(&t.id).unwrap_or_default();
                    if let Some(i) = t
                        .process_instance_id
                        .as_ref()
                        .and_then(|i| instances.get(i))
                    {
                        latest(&mut at, i.clone());
                    }
                    if needs_look(emitted.get(&t.id), &at, listed(&t)) {
                        stale.push(t);
                    }
                }
                looked_at += self.look_at_open(&stale, "poll").await?;
            }
        }
        let own_ids: Vec<String> = own.keys().cloned().collect();
        let emitted: HashMap<String, Option<String>> =
            self.emitter.store().changed_at_of(&own_ids).await?;
        let own: Vec<String> = own
            .into_iter()
            .filter(|(id, at)| needs_look(emitted.get(id), at, false))
            .map(|(id, _)| id)
            .collect();
        Ok(looked_at + self.look_at_ids(own, "poll").await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_looked_at_unless_its_emitted_state_is_as_new_as_the_change() {
        let at = "2026-12-04T10:00:00.500Z";
        assert!(needs_look(None, at, false), "never emitted");
        assert!(
            !needs_look(None, at, true),
            "never emitted, listed by the task query"
        );
        assert!(!needs_look(Some(&None), at, false), "ended");
        let older = Some("2026-12-04T10:00:00.499Z".to_owned());
        assert!(
            needs_look(Some(&older), at, false),
            "emitted before the change"
        );
        let same = Some(at.to_owned());
        assert!(
            !needs_look(Some(&same), at, false),
            "created with those variables"
        );
    }
}
