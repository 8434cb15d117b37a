//! Observation → task events on the bus. The one place that writes task streams.
//!
//! Each task's stream is written with `expectedVersions`, so two writers (poller and hook,
//! or two collectors during a takeover) can never interleave: the loser re-reads the stream,
//! folds it, and diffs again. The stream on the bus is the truth; the Postgres row is a cache
//! of its fold, so a collector killed between append and save emits nothing twice.

use std::collections::BTreeMap;
use std::time::Duration;

use taskpool_api::bus::{AppendRequest, NewEvent, NO_STREAM};
use taskpool_api::streams::task_stream;
use taskpool_api::tasks::{TaskCompleted, TaskDeleted, TaskEvent, TaskFold};
use taskpool_api::BusClient;
use tokio::sync::{Mutex, MutexGuard};

use crate::dates;
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::payload;
use crate::snapshot::Observation;
use crate::store::{Store, Stored};

/// Where a task stream stands after an observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub stream: String,
    pub version: u64,
    pub position: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("bus: {0}")]
    Bus(#[from] taskpool_api::ClientError),
    #[error("state store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("task stream {0} holds an event this collector cannot read: {1}")]
    Corrupt(String, String),
    #[error("this collector is not the active one")]
    NotActive,
    #[error("another collector took the lease; this one's writes are refused")]
    Fenced,
}

const STRIPES: usize = 1024;

pub struct Emitter {
    bus: BusClient,
    store: Store,
    metrics: Metrics,
    application: String,
    /// The largest event written (`--max-event-bytes`): see `payload::fit`.
    max_event_bytes: usize,
    /// Guards every append with this collector's lease (`lease.rs`).
    fence: Fence,
    /// Observations of one task run one at a time.
    stripes: Vec<Mutex<()>>,
}

/// The events that take a task from `current` to what `obs` saw, and the state after them.
/// `None`: nothing to emit (no change, a stale look, or the task already ended).
fn plan(current: Option<&Stored>, obs: &Observation) -> Option<(Vec<TaskEvent>, Stored)> {
    let finished_events = |task: &taskpool_api::tasks::Task, reason: &Option<String>| {
        let source = task.source.clone();
        let task_id = task.task_id.clone();
        match reason.as_deref() {
            Some("completed") => TaskEvent::Completed(TaskCompleted {
                task_id,
                completed_by: task.assignee.clone(),
                source,
            }),
            other => TaskEvent::Deleted(TaskDeleted {
                task_id,
                delete_reason: other.map(str::to_owned),
                source,
            }),
        }
    };
    match (current, obs) {
        (Some(c), _) if c.finished => None,
        (None, Observation::Open { task, changed_at }) => Some((
            vec![TaskEvent::Created(task.clone())],
            Stored {
                version: 0,
                position: 0,
                changed_at: changed_at.clone(),
                finished: false,
                task: task.clone(),
            },
        )),
        (
            None,
            Observation::Finished {
                task,
                delete_reason,
            },
        ) => Some((
            vec![
                TaskEvent::Created(task.clone()),
                finished_events(task, delete_reason),
            ],
            Stored {
                version: 0,
                position: 0,
                changed_at: String::new(),
                finished: true,
                task: task.clone(),
            },
        )),
        (Some(c), Observation::Open { task, changed_at }) => {
            if *changed_at < c.changed_at {
                return None;
            }
            let mut task = task.clone();
            // Where a task came from changes only by a migration; otherwise keep what was
            // announced (the paths may differ in what they read, e.g. a business key).
            if !c.task.source.moved_to(&task.source) {
                task.source = c.task.source.clone();
            }
            let events = c.task.changes_to(&task);
            let next = Stored {
                changed_at: changed_at.clone(),
                task,
                ..c.clone()
            };
            if events.is_empty() {
                // Remember the newer timestamp anyway (only worth a write when it moved).
                return (next.changed_at != c.changed_at).then_some((events, next));
            }
            Some((events, next))
        }
        (
            Some(c),
            Observation::Finished {
                task,
                delete_reason,
            },
        ) => Some((
            // The engine's record of the end names who held the task last (a completion
            // through the platform claims a free task first, unseen in between).
            vec![finished_events(
                &taskpool_api::tasks::Task {
                    assignee: task.assignee.clone().or_else(|| c.task.assignee.clone()),
                    ..c.task.clone()
                },
                delete_reason,
            )],
            Stored {
                finished: true,
                ..c.clone()
            },
        )),
    }
}

impl Emitter {
    pub fn new(
        bus: BusClient,
        store: Store,
        metrics: Metrics,
        application: &str,
        max_event_bytes: usize,
        fence: Fence,
    ) -> Emitter {
        Emitter {
            bus,
            store,
            metrics,
            application: application.to_owned(),
            max_event_bytes,
            fence,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn lock(&self, task_id: &str) -> MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        task_id.hash(&mut h);
        self.stripes[(h.finish() as usize) % STRIPES].lock().await
    }

    /// Brings the task's stream up to what `obs` saw. Returns the stream's head (`None` when
    /// the stream does not exist and nothing was emitted).
    #[tracing::instrument(skip_all, fields(task_id = %obs.task().task_id, via = via))]
    pub async fn observe(
        &self,
        obs: &Observation,
        via: &'static str,
    ) -> Result<Option<Head>, EmitError> {
        let fitted = self.fitted(obs);
        let obs = fitted.as_ref().unwrap_or(obs);
        let task_id = obs.task().task_id.as_str();
        let stream = task_stream(&self.application, task_id);
        let _guard = self.lock(task_id).await;
        let mut current = self.store.load(task_id).await?;
        let mut refolded = false;
        for _ in 0..10 {
            let head = |s: &Stored| Head {
                stream: stream.clone(),
                version: s.version,
                position: s.position,
            };
            let Some((events, mut next)) = plan(current.as_ref(), obs) else {
                // Nothing to add; a state folded from the bus after a conflict replaces the
                // stale row, or every later look would conflict again.
                if let (true, Some(folded)) = (refolded, &current) {
                    self.store.save(task_id, folded).await?;
                }
                return Ok(current.as_ref().map(head));
            };
            if events.is_empty() {
                self.store.save(task_id, &next).await?;
                return Ok(Some(head(&next)));
            }
            let expected = current.as_ref().map_or(NO_STREAM, |c| c.version as i64);
            let request = self.request(&stream, &events, expected, obs.changed_at(), via);
            match self.fence.append(&self.bus, request).await {
                Ok(resp) => {
                    let last = resp.events.last().expect("the bus answers every event");
                    next.version = last.version;
                    next.position = last.position;
                    self.store.save(task_id, &next).await?;
                    self.count(&events, obs.changed_at(), via);
                    return Ok(Some(head(&next)));
                }
                Err(EmitError::Bus(e)) if e.code() == Some("wrong_expected_version") => {
                    tracing::debug!(task_id, error = %e, "task stream moved on; folding it again");
                    current = self.fold_to(&stream, current_version(&e)).await?;
                    refolded = true;
                }
                Err(e) => return Err(e),
            }
        }
        Err(EmitError::Corrupt(
            stream,
            "the stream kept changing under this collector".into(),
        ))
    }

    /// The observation with its payload cut to fit `--max-event-bytes`, when it does not.
    fn fitted(&self, obs: &Observation) -> Option<Observation> {
        if taskpool_api::bus::json_len(obs.task()) <= self.max_event_bytes {
            return None;
        }
        let mut fitted = obs.clone();
        let task = fitted.task_mut();
        payload::fit(task, self.max_event_bytes);
        self.metrics.payloads_truncated.inc();
        tracing::warn!(
            task_id = %task.task_id,
            left_out = ?task.payload_truncated,
            max_event_bytes = self.max_event_bytes,
            "task too large for one event: its largest variables are left out of the payload"
        );
        Some(fitted)
    }

    fn request(
        &self,
        stream: &str,
        events: &[TaskEvent],
        expected: i64,
        changed_at: Option<&str>,
        via: &str,
    ) -> AppendRequest {
        let metadata = serde_json::json!({
            "application": self.application,
            "via": via,
            "engineChangedAt": changed_at,
        });
        let metadata = serde_json::value::to_raw_value(&metadata).ok();
        let events = events
            .iter()
            .map(|e| NewEvent {
                stream: stream.to_owned(),
                event_type: e.event_type().to_owned(),
                data: e.to_json().expect("task events serialize"),
                metadata: metadata.clone(),
                id: uuid::Uuid::new_v4(),
            })
            .collect();
        AppendRequest {
            events,
            expected_versions: BTreeMap::from([(stream.to_owned(), expected)]),
        }
    }

    fn count(&self, events: &[TaskEvent], changed_at: Option<&str>, via: &'static str) {
        for e in events {
            self.metrics
                .events_emitted
                .with_label_values(&[e.event_type(), via])
                .inc();
        }
        if let Some(at) = changed_at.and_then(dates::parse) {
            let lag = (chrono::Utc::now() - at).to_std().unwrap_or(Duration::ZERO);
            self.metrics
                .change_to_event_seconds
                .with_label_values(&[via])
                .observe(lag.as_secs_f64());
        }
    }

    /// The stream folded as far as `at_least` (the version the bus named in a conflict): a
    /// node that lags behind the leader is read again until it has caught up, so that the
    /// next append does not meet the same conflict.
    async fn fold_to(
        &self,
        stream: &str,
        at_least: Option<i64>,
    ) -> Result<Option<Stored>, EmitError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let folded = self.fold(stream).await?;
            let version = folded.as_ref().map_or(-1, |s| s.version as i64);
            if at_least.is_none_or(|v| version >= v) || std::time::Instant::now() > deadline {
                return Ok(folded);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The task as its stream on the bus says, to start over after a conflict.
    async fn fold(&self, stream: &str) -> Result<Option<Stored>, EmitError> {
        let mut fold = TaskFold::default();
        let mut from = 0u64;
        let mut last = None;
        let mut changed_at = String::new();
        loop {
            let page = self.bus.stream(stream, from, 1000).await?;
            if page.events.is_empty() {
                break;
            }
            for e in &page.events {
                let event = TaskEvent::from_recorded(e)
                    .map_err(|err| EmitError::Corrupt(stream.to_owned(), err.to_string()))?;
                fold.apply(&event);
                if let Some(at) = e
                    .metadata
                    .as_ref()
                    .and_then(|m| serde_json::from_str::<serde_json::Value>(m.get()).ok())
                    .and_then(|m| m.get("engineChangedAt")?.as_str().map(str::to_owned))
                {
                    changed_at = at;
                }
                last = Some((e.version, e.position));
                from = e.version + 1;
            }
        }
        Ok(match (fold, last) {
            (TaskFold::Open(task), Some((version, position))) => Some(Stored {
                version,
                position,
                changed_at,
                finished: false,
                task,
            }),
            (TaskFold::Finished(task), Some((version, position))) => Some(Stored {
                version,
                position,
                changed_at,
                finished: true,
                task,
            }),
            _ => None,
        })
    }
}

/// The version a conflict says the stream is at.
fn current_version(e: &taskpool_api::ClientError) -> Option<i64> {
    match e {
        taskpool_api::ClientError::Api { body, .. } => {
            body.error.extra.get("currentVersion")?.as_i64()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskpool_api::tasks::Task;

    fn open(assignee: Option<&str>, at: &str) -> Observation {
        Observation::Open {
            task: Task {
                task_id: "t".into(),
                assignee: assignee.map(str::to_owned),
                ..Default::default()
            },
            changed_at: at.into(),
        }
    }

    fn stored(obs: &Observation) -> Stored {
        Stored {
            version: 0,
            position: 7,
            changed_at: obs.changed_at().unwrap_or_default().into(),
            finished: false,
            task: obs.task().clone(),
        }
    }

    #[test]
    fn a_stale_look_emits_nothing() {
        let now = stored(&open(Some("a"), "2026-01-01T00:00:02.000Z"));
        assert!(plan(Some(&now), &open(None, "2026-01-01T00:00:01.000Z")).is_none());
        let (events, _) = plan(Some(&now), &open(None, "2026-01-01T00:00:03.000Z")).expect("newer");
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn an_unknown_task_that_ended_is_created_and_ended() {
        let obs = Observation::Finished {
            task: open(None, "").task().clone(),
            delete_reason: Some("completed".into()),
        };
        let (events, next) = plan(None, &obs).expect("events");
        let types: Vec<_> = events.iter().map(TaskEvent::event_type).collect();
        assert_eq!(types, ["TaskCreated", "TaskCompleted"]);
        assert!(next.finished);
        assert!(plan(Some(&next), &open(Some("x"), "9")).is_none());
    }
}
