//! Poll mode: incremental queries on watermarks with an overlap window, and a periodic full
//! reconciliation of open tasks, so that no change is missed.
//!
//! Camunda stamps a change before its transaction commits, so a change can become visible
//! with a timestamp older than the watermark: each query starts `overlap` before it, and the
//! emitter's diff makes seeing a change twice harmless. What even the overlap misses (a very
//! long transaction, a variable change, a suspension) the reconciliation finds.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{stream, Stream, StreamExt, TryStreamExt};
use tokio::sync::watch;

use crate::dates;
use crate::emitter::{EmitError, Emitter};
use crate::engine::{EngineError, EngineTask, HistoricTask};
use crate::engine_health::{backoff, EngineHealth};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::snapshot::{Observation, Snapshots};
use serde_json::{Map, Value};
use taskpool_api::tasks::Task;

mod suspension;
mod variables;
pub use suspension::SeenSuspended;
pub use variables::SeenUpdates;

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub interval: Duration,
    pub overlap: Duration,
    pub reconcile_interval: Duration,
    pub page_size: u32,
    /// Tasks looked at concurrently.
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error("state store: {0}")]
    Store(#[from] sqlx::Error),
}

pub struct Poller {
    pub snapshots: Arc<Snapshots>,
    pub emitter: Arc<Emitter>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    pub config: PollConfig,
    pub seen_updates: SeenUpdates,
    pub seen_suspended: SeenSuspended,
    pub health: Arc<EngineHealth>,
}

/// The two kinds of poll cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Incremental,
    Reconcile,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Incremental => "incremental",
            Kind::Reconcile => "reconcile",
        }
    }
}

/// What one poll cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cycle {
    /// Tasks it looked at in the engine (those whose state may have changed).
    pub looked_at: usize,
}

const TASKS: &str = "tasks_updated";
const LINKS: &str = "identity_links";
const FINISHED: &str = "tasks_finished";
const VARIABLES: &str = "variable_updates";
const WATERMARKS: [&str; 4] = [TASKS, LINKS, FINISHED, VARIABLES];

/// The delete reason of a task that ended without a trace in the engine.
pub const VANISHED: &str = "vanished";
/// More tasks than this vanishing at once from an engine with no open task is not believed.
const VANISHED_WITHOUT_DOUBT: usize = 10;

/// The pages of a list query, `size` at a time, until one comes back short; `len` counts
/// the entries of a page.
fn pages<'a, P: 'a, Fut>(
    size: u32,
    len: fn(&P) -> usize,
    mut fetch: impl FnMut(u32) -> Fut + 'a,
) -> impl Stream<Item = Result<P, PollError>> + 'a
where
    Fut: Future<Output = Result<P, EngineError>> + 'a,
{
    stream::try_unfold(Some(0u32), move |first| {
        let page = first.map(|first| (first, fetch(first)));
        async move {
            let Some((first, page)) = page else {
                return Ok(None);
            };
            let page = page.await?;
            let next = (len(&page) >= size as usize).then_some(first + size);
            Ok(Some((page, next)))
        }
    })
}

impl Poller {
    /// Polls until `stop` turns true. Reconciliation runs beside the incremental polls, so a
    /// long one (a first import of many open tasks) does not delay fresh changes; observations
    /// of one task are serialised by the emitter.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let reconciling = tokio::spawn(self.clone().repeat(Kind::Reconcile, stop.clone()));
        self.repeat(Kind::Incremental, stop).await;
        let _ = reconciling.await;
    }

    /// Cycles of `kind` until `stop`: each followed by its pause.
    async fn repeat(self: Arc<Self>, kind: Kind, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        while !*stop.borrow() {
            let started = Instant::now();
            // Shutdown does not wait for a long cycle: an observation cut short is safe, the
            // next collector folds the task's stream and goes on.
            let result = tokio::select! {
                r = self.cycle(kind) => r,
                _ = stop.changed() => return,
            };
            let pause = self.pause_after(kind, &result, started, &mut failures);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One cycle of `kind`, timed and counted.
    #[tracing::instrument(skip_all, fields(kind = kind.label()))]
    pub async fn cycle(&self, kind: Kind) -> Result<Cycle, PollError> {
        let started = Instant::now();
        let result = match kind {
            Kind::Incremental => self.incremental().await,
            Kind::Reconcile => self.reconcile().await,
        };
        let label = kind.label();
        self.metrics
            .poll_cycle_seconds
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .poll_cycles
            .with_label_values(&[label, outcome])
            .inc();
        result
    }

    /// Cycles start every interval of their kind (a long one is followed by the next at once);
    /// failures back off with jitter (the incremental polls up to 15 s, so that changes flow
    /// soon after the engine is back; the heavier reconciliation up to a minute).
    fn pause_after(
        &self,
        kind: Kind,
        result: &Result<Cycle, PollError>,
        started: Instant,
        failures: &mut u32,
    ) -> Duration {
        let (every, floor, cap) = match kind {
            Kind::Incremental => (
                self.config.interval,
                self.config.interval,
                Duration::from_secs(15),
            ),
            Kind::Reconcile => (
                self.config.reconcile_interval,
                Duration::from_secs(1),
                Duration::from_secs(60),
            ),
        };
        match result {
            Ok(_) => {
                *failures = 0;
                self.health.cycle_ok(kind);
                every.saturating_sub(started.elapsed())
            }
            Err(e) => {
                *failures += 1;
                let pause = backoff(*failures, floor, cap);
                tracing::warn!(kind = kind.label(), error = %e, failures = *failures, retry_in = ?pause, "poll cycle failed");
                self.health.cycle_failed(kind, &e.to_string(), pause);
                pause
            }
        }
    }

    /// Where an incremental query starts: `overlap` before the engine's clock at the start of
    /// the last successful cycle (a change stamped earlier than that had `overlap` to commit).
    async fn since(&self, name: &str) -> Result<String, PollError> {
        let overlap = chrono::Duration::from_std(self.config.overlap).unwrap_or_default();
        let mark = match self.emitter.store().watermark(name).await?.as_deref() {
            Some(m) => match dates::parse(m) {
                Some(m) => m,
                None => self.snapshots.engine().clock().await?,
            },
            // Never polled: the first reconciliation covers everything up to its start.
            None => self.snapshots.engine().clock().await?,
        };
        Ok(dates::to_engine(mark - overlap))
    }

    async fn advance(&self, name: &str, to: DateTime<Utc>) -> Result<(), PollError> {
        let old = self.emitter.store().watermark(name).await?;
        if old.as_deref().and_then(dates::parse).is_none_or(|o| to > o) {
            let value = to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            self.emitter.store().set_watermark(name, &value).await?;
        }
        if name == TASKS {
            let lag = (Utc::now() + self.health.clock_offset() - to)
                .num_seconds()
                .max(0);
            self.metrics.watermark_lag_seconds.set(lag);
        }
        Ok(())
    }

    /// The tasks whose engine timestamp differs from what was last emitted for them: only
    /// those need the per-task calls (a task seen again in the overlap window does not).
    async fn changed_since_emitted(
        &self,
        tasks: &[EngineTask],
    ) -> Result<Vec<EngineTask>, PollError> {
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let known = self.emitter.store().changed_at_of(&ids).await?;
        Ok(tasks
            .iter()
            .filter(|t| {
                let at = dates::to_event(t.changed_at());
                known
                    .get(&t.id)
                    .is_none_or(|k| k.as_deref() != Some(at.as_str()))
            })
            .cloned()
            .collect())
    }

    /// Looks at the tasks of a page and emits what changed (several at once); returns how
    /// many it looked at.
    async fn look_at_open(
        &self,
        tasks: &[EngineTask],
        via: &'static str,
    ) -> Result<usize, PollError> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let seen = self
            .snapshots
            .open_page(tasks, self.config.concurrency)
            .await?;
        self.each(seen, |obs| async move {
            self.emitter.observe(&obs, via).await?;
            Ok(())
        })
        .await?;
        Ok(tasks.len())
    }

    /// Looks at tasks by id (open, ended, or gone).
    async fn look_at_ids(&self, ids: Vec<String>, via: &'static str) -> Result<usize, PollError> {
        self.each(ids, |id| async move {
            match self.snapshots.current(&id).await? {
                Some(obs) => {
                    self.emitter.observe(&obs, via).await?;
                }
                None => tracing::debug!(task_id = %id, "task unknown to the engine"),
            }
            Ok(())
        })
        .await
    }

    /// Looks at tasks believed open that the engine no longer lists. One the engine knows
    /// nothing of, not even in history (history level `none`, history cleaned up, the row
    /// removed), ended unseen: it is reported deleted with reason `vanished` — unless the
    /// engine lists no open task at all while many were believed open, which looks like the
    /// wrong engine (or a restored database) rather than an end; then nothing is removed.
    async fn look_at_gone(&self, ids: Vec<String>, engine_empty: bool) -> Result<usize, PollError> {
        let vanished = std::sync::Mutex::new(Vec::new());
        let n = self
            .each(ids, |id| {
                let vanished = &vanished;
                async move {
                    match self.snapshots.current(&id).await? {
                        Some(obs) => {
                            self.emitter.observe(&obs, "reconcile").await?;
                        }
                        None => vanished.lock().expect("vanished lock").push(id),
                    }
                    Ok(())
                }
            })
            .await?;
        let vanished = vanished.into_inner().expect("vanished lock");
        if engine_empty && vanished.len() > VANISHED_WITHOUT_DOUBT {
            tracing::error!(
                tasks = vanished.len(),
                "the engine lists no open task and knows none of the tasks believed open; \
                 is --engine-url this application's engine? Nothing removed"
            );
            return Ok(n);
        }
        for id in vanished {
            let Some(stored) = self.emitter.store().load(&id).await? else {
                continue;
            };
            tracing::info!(task_id = %id, "the engine knows the task no more, not even in history: reported deleted");
            let obs = Observation::Finished {
                task: stored.task,
                delete_reason: Some(VANISHED.into()),
            };
            self.emitter.observe(&obs, "reconcile").await?;
        }
        Ok(n)
    }

    /// Runs `look` for every item, `concurrency` at once; returns how many there were.
    async fn each<T, Fut>(&self, items: Vec<T>, look: impl Fn(T) -> Fut) -> Result<usize, PollError>
    where
        Fut: Future<Output = Result<(), PollError>>,
    {
        let n = items.len();
        stream::iter(items)
            .map(look)
            .buffer_unordered(self.config.concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(n)
    }

    /// One incremental cycle: four list queries and a count when nothing happened. The
    /// engine's clock at the first answer becomes every watermark once the whole cycle went
    /// through.
    pub async fn incremental(&self) -> Result<Cycle, PollError> {
        let updated = self.updated_tasks().await?;
        let linked = self.linked_tasks(&updated.seen).await?;
        let finished = self.finished_tasks().await?;
        let variables = self.variable_changes().await?;
        let suspensions = self.suspension_changes().await?;
        // Without the engine's clock (no Date header), this collector's clock less a second.
        let to = updated
            .cycle_start
            .unwrap_or_else(|| Utc::now() - chrono::Duration::seconds(1));
        for name in WATERMARKS {
            self.advance(name, to).await?;
        }
        Ok(Cycle {
            looked_at: updated.looked_at + linked + finished + variables + suspensions,
        })
    }

    /// The first query: created or changed tasks.
    async fn updated_tasks(&self) -> Result<Updated, PollError> {
        let (engine, page) = (self.snapshots.engine(), self.config.page_size);
        let since = self.since(TASKS).await?;
        let mut out = Updated::default();
        let mut pages = std::pin::pin!(pages(
            page,
            |p: &(Vec<EngineTask>, _)| p.0.len(),
            |first| engine.tasks_updated_after(&since, first, page),
        ));
        while let Some((tasks, date)) = pages.try_next().await? {
            // The engine's Date header has whole seconds.
            if out.cycle_start.is_none() {
                if let Some(d) = date {
                    self.health.engine_clock(d);
                }
            }
            out.cycle_start = out
                .cycle_start
                .or(date.map(|d| d - chrono::Duration::seconds(1)));
            let changed = self.changed_since_emitted(&tasks).await?;
            out.looked_at += self.look_at_open(&changed, "poll").await?;
            out.seen.extend(tasks.iter().map(|t| t.id.clone()));
        }
        Ok(out)
    }

    /// The second: candidate changes of the tasks the first did not see (also those made inside
    /// listeners, which may not touch the task).
    async fn linked_tasks(&self, seen: &HashSet<String>) -> Result<usize, PollError> {
        let (engine, page) = (self.snapshots.engine(), self.config.page_size);
        let since = self.since(LINKS).await?;
        // Per task: the time of its latest identity-link change.
        let mut latest: HashMap<String, String> = HashMap::new();
        let mut pages = std::pin::pin!(pages(page, Vec::len, |first| {
            engine.identity_link_log_after(&since, first, page)
        }));
        while let Some(log) = pages.try_next().await? {
            for entry in &log {
                if let Some(id) = entry.task_id.as_ref().filter(|id| !seen.contains(*id)) {
                    let at = dates::to_event(&entry.time);
                    let slot = latest.entry(id.clone()).or_default();
                    if at > *slot {
                        *slot = at;
                    }
                }
            }
        }
        // A task whose emitted state is as new as its change, or that ended, needs no look.
        let candidates: Vec<String> = latest.keys().cloned().collect();
        let known = self.emitter.store().changed_at_of(&candidates).await?;
        let ids: Vec<String> = latest
            .into_iter()
            .filter(|(id, at)| match known.get(id) {
                None => true,
                Some(None) => false,
                Some(Some(emitted)) => emitted < at,
            })
            .map(|(id, _)| id)
            .collect();
        self.look_at_ids(ids, "poll").await
    }

    /// The third: completed and deleted tasks, including those created and ended between polls.
    async fn finished_tasks(&self) -> Result<usize, PollError> {
        let (engine, page) = (self.snapshots.engine(), self.config.page_size);
        let since = self.since(FINISHED).await?;
        let mut looked_at = 0;
        let mut pages = std::pin::pin!(pages(page, Vec::len, |first| {
            engine.historic_tasks("finishedAfter", &since, "endTime", first, page)
        }));
        while let Some(done) = pages.try_next().await? {
            let ids: Vec<String> = done.iter().map(|h| h.id.clone()).collect();
            let known = self.emitter.store().changed_at_of(&ids).await?;
            let unfinished: Vec<HistoricTask> = done
                .into_iter()
                .filter(|h| known.get(&h.id).is_none_or(|k| k.is_some()))
                .collect();
            looked_at += self
                .each(unfinished, |h| async move {
                    let obs = self.snapshots.finished(&h).await?;
                    self.emitter.observe(&obs, "poll").await?;
                    Ok(())
                })
                .await?;
        }
        Ok(looked_at)
    }

    /// The tasks of a reconciliation page that differ from what was emitted for them: by
    /// their timestamp, or by what changes without one (a variable change the incremental
    /// queries missed, a suspension, a migration to another definition).
    /// The variables read here may be older than a look the incremental queries made since,
    /// so these tasks are looked at afresh, one by one, rather than from this read.
    async fn stale(&self, tasks: &[EngineTask]) -> Result<Vec<String>, PollError> {
        let mut stale: HashSet<String> = self
            .changed_since_emitted(tasks)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        // Only the others need their variables read: a stale task is looked at anyway.
        let fresh: Vec<EngineTask> = tasks
            .iter()
            .filter(|t| !stale.contains(&t.id))
            .cloned()
            .collect();
        let mut variables = self.snapshots.variables_of(&fresh).await?;
        let ids: Vec<String> = fresh.iter().map(|t| t.id.clone()).collect();
        let emitted = self.emitter.store().open_states_of(&ids).await?;
        for t in &fresh {
            let vars = variables.remove(&t.id).unwrap_or_default();
            let payload = self.snapshots.payload_of(t, &vars).await?;
            if emitted.get(&t.id).is_none_or(|e| differs(t, payload, e)) {
                stale.insert(t.id.clone());
            }
        }
        Ok(stale.into_iter().collect())
    }

    /// Compares every open task of the engine with what was emitted, and every task believed
    /// open with the engine; also announces process definitions and users.
    pub async fn reconcile(&self) -> Result<Cycle, PollError> {
        let (engine, page) = (self.snapshots.engine(), self.config.page_size);
        let started_at = engine.clock().await?;
        let mut open = HashSet::new();
        let mut looked_at = 0;
        let mut pages = std::pin::pin!(pages(page, Vec::len, |first| {
            engine.tasks_page(first, page)
        }));
        while let Some(tasks) = pages.try_next().await? {
            let stale = self.stale(&tasks).await?;
            looked_at += self.look_at_ids(stale, "reconcile").await?;
            open.extend(tasks.iter().map(|t| t.id.clone()));
        }
        let believed = self.emitter.store().open_task_ids().await?;
        let gone: Vec<String> = believed
            .into_iter()
            .filter(|id| !open.contains(id))
            .collect();
        looked_at += self.look_at_gone(gone, open.is_empty()).await?;
        self.metrics.open_tasks.set(open.len() as i64);
        // Everything before the reconciliation's start has been seen: the incremental
        // queries need not look further back (only matters the first time).
        for name in WATERMARKS {
            if self.emitter.store().watermark(name).await?.is_none() {
                self.advance(name, started_at).await?;
            }
        }
        self.registry.sync().await?;
        self.emitter
            .store()
            .prune(Duration::from_secs(24 * 3600))
            .await?;
        Ok(Cycle { looked_at })
    }
}

/// Whether an open task as the engine lists it (with `payload`, the variables it sees)
/// differs from `emitted` in anything the list shows. Candidates are not listed; variables
/// left out for size are not compared.
fn differs(t: &EngineTask, mut payload: Map<String, Value>, emitted: &Task) -> bool {
    payload.retain(|name, _| !emitted.payload_truncated.contains(name));
    let mut source = emitted.source.clone();
    source
        .process_definition_id
        .clone_from(&t.process_definition_id);
    let candidates = (
        emitted.candidate_users.clone(),
        emitted.candidate_groups.clone(),
    );
    let mut listed = Snapshots::task_from(t, candidates, payload, source)
        .task()
        .clone();
    listed
        .payload_truncated
        .clone_from(&emitted.payload_truncated);
    listed != *emitted
}

/// What the first query of an incremental cycle found.
#[derive(Default)]
struct Updated {
    /// Every task it listed (changed or not).
    seen: HashSet<String>,
    /// The engine's clock at its first answer, less a second.
    cycle_start: Option<DateTime<Utc>>,
    looked_at: usize,
}
