//! The projection: bus events → the in-memory view → MongoDB.
//!
//! It subscribes from the position after the stored view, applies each batch of events to the
//! in-memory index (readers see it at once), publishes the new position and the task changes,
//! and then writes the batch to MongoDB before it takes the next batch. While MongoDB is down
//! it keeps retrying that write and reads nothing more, so memory is never more than one batch
//! ahead of the stored view; a restart loads the stored view and replays from its position,
//! and the per-document positions make the replay harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::StreamExt;
use taskpool_api::bus::RecordedEvent;
use taskpool_api::identity::IdentityPart;
use taskpool_api::BusClient;
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;
use crate::store::{Changes, IdentityWrite, Store};
use crate::view::{Applied, TaskChange, View};

/// Events applied and written together at most (when catching up).
const MAX_BATCH: usize = 2_000;
/// A batch ends when no further event arrives within this time...
const BATCH_GAP: Duration = Duration::from_millis(2);
/// ...or when it has been collecting for this long.
const MAX_BATCH_WAIT: Duration = Duration::from_millis(50);
/// Task changes kept for slow SSE readers before they are told to reload.
pub const CHANGE_BUFFER: usize = 4_096;

pub type SharedView = Arc<RwLock<View>>;

/// What the rest of the service sees of the projection.
#[derive(Clone)]
pub struct Projection {
    pub view: SharedView,
    /// The view position readers can rely on; waiters use it for read-your-writes.
    pub position: watch::Receiver<u64>,
    pub changes: broadcast::Sender<Arc<TaskChange>>,
}

impl Projection {
    /// The view as readers see it now. A poisoned lock is read anyway, as everywhere in the
    /// service: a panic in the projection must not take the API down with it.
    pub fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the view has applied `position`; false when `timeout` passed first.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.position.clone();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The writing side, owned by the projection task.
pub struct Projector {
    view: SharedView,
    store: Store,
    bus: BusClient,
    metrics: Metrics,
    position: watch::Sender<u64>,
    changes: broadcast::Sender<Arc<TaskChange>>,
    /// The position MongoDB holds.
    stored: u64,
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub events: usize,
    pub applied: usize,
    pub position: u64,
}

impl Projector {
    /// Loads the stored view into memory; the projection resumes after its position.
    pub async fn load(
        store: Store,
        bus: BusClient,
        metrics: Metrics,
        realms: crate::view::Realms,
    ) -> Result<(Projector, Projection), crate::store::StoreError> {
        let mut view = View::new(realms);
        let stored = store.load(&mut view).await?;
        tracing::info!(
            position = stored,
            open_tasks = view.open_tasks(),
            "stored view loaded"
        );
        metrics.view_position.set(stored as i64);
        metrics.open_tasks.set(view.open_tasks() as i64);
        let view = Arc::new(RwLock::new(view));
        let (position, position_rx) = watch::channel(stored);
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let projection = Projection {
            view: view.clone(),
            position: position_rx,
            changes: changes.clone(),
        };
        Ok((
            Projector {
                view,
                store,
                bus,
                metrics,
                position,
                changes,
                stored,
            },
            projection,
        ))
    }

    /// Follows the bus until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut since_purge = 0usize;
        loop {
            let from = self.position.borrow().saturating_add(1);
            tracing::info!(from, "subscribing to the bus");
            let mut events = self.bus.subscribe(from);
            loop {
                let first = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    next = events.next() => next,
                };
                let mut batch = match first {
                    Some(Ok(event)) => vec![event],
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "bus subscription failed; subscribing again");
                        break;
                    }
                    None => break,
                };
                // Take what follows at once, so catching up writes in large batches; a pause
                // of BATCH_GAP ends the batch, so a live change waits no longer than that.
                let until = tokio::time::Instant::now() + MAX_BATCH_WAIT;
                while batch.len() < MAX_BATCH {
                    let gap = (tokio::time::Instant::now() + BATCH_GAP).min(until);
                    match tokio::time::timeout_at(gap, events.next()).await {
                        Ok(Some(Ok(event))) => batch.push(event),
                        Ok(Some(Err(e))) => {
                            tracing::warn!(error = %e, "bus subscription failed after a partial batch");
                            break;
                        }
                        _ => break,
                    }
                }
                let changes = self.apply(&batch);
                if !self.write(&changes, &mut stop).await {
                    return;
                }
                since_purge += batch.len();
                if since_purge >= 10_000 {
                    since_purge = 0;
                    self.purge_tombstones().await;
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Applies a batch to memory and publishes it; returns what MongoDB must be told.
    #[tracing::instrument(skip_all, fields(events = batch.len(), from = batch.first().map(|e| e.position), to = batch.last().map(|e| e.position)))]
    pub fn apply(&mut self, batch: &[RecordedEvent]) -> Changes {
        let mut tasks = BTreeSet::new();
        let mut new_tasks = std::collections::HashSet::new();
        let mut definitions = BTreeSet::new();
        // Per application: the user-id ranges the batch changed (`None`: all of them).
        let mut identities: BTreeMap<String, Option<Vec<IdentityPart>>> = BTreeMap::new();
        let mut published = Vec::new();
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        for event in batch {
            match view.apply(event) {
                Ok(Applied::Skipped) => continue,
                Ok(Applied::Task(change)) => {
                    let key = change.key();
                    if change.new {
                        new_tasks.insert(key.clone());
                    }
                    tasks.insert(key);
                    published.push(Arc::new(change));
                }
                Ok(Applied::Definition(id)) => {
                    definitions.insert(id);
                }
                Ok(Applied::Identity(application, part)) => {
                    let ranges = identities.entry(application).or_insert(Some(Vec::new()));
                    match (ranges, part) {
                        (Some(ranges), Some(part)) => ranges.push(part),
                        (ranges, _) => *ranges = None,
                    }
                }
                Err(e) => {
                    self.metrics.bad_events.inc();
                    tracing::warn!(error = %e, "event skipped");
                    continue;
                }
            }
            self.metrics
                .events_applied
                .with_label_values(&[&event.event_type])
                .inc();
        }
        let changes = Changes {
            tasks: tasks
                .iter()
                .filter_map(|id| Changes::record(&view, id))
                .collect(),
            new_tasks,
            definitions: definitions
                .iter()
                .filter_map(|id| view.definition(id).cloned())
                .collect(),
            identities: identities
                .into_iter()
                .filter_map(|(app, ranges)| {
                    Some(IdentityWrite {
                        view: view.identity(&app)?.clone(),
                        ranges,
                    })
                })
                .collect(),
            position: view.position(),
        };
        self.metrics.open_tasks.set(view.open_tasks() as i64);
        drop(view);
        self.metrics.view_position.set(changes.position as i64);
        self.position.send_replace(changes.position);
        for change in published {
            // No receiver is fine: nobody streams.
            let _ = self.changes.send(change);
        }
        changes
    }

    /// Writes until MongoDB takes it; false when stopped first.
    async fn write(&mut self, changes: &Changes, stop: &mut watch::Receiver<bool>) -> bool {
        let mut pause = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            match self.store.write(changes).await {
                Ok(()) => {
                    self.metrics
                        .store_write_seconds
                        .with_label_values(&["ok"])
                        .observe(started.elapsed().as_secs_f64());
                    self.stored = changes.position;
                    return true;
                }
                Err(e) => {
                    self.metrics
                        .store_write_seconds
                        .with_label_values(&["error"])
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .store_errors
                        .with_label_values(&["write"])
                        .inc();
                    tracing::warn!(error = %e, position = changes.position, "view write failed; retrying");
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return false,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn purge_tombstones(&mut self) {
        match self.store.purge_tombstones(self.stored).await {
            Ok(n) => {
                self.view
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget_tombstones(self.stored);
                tracing::debug!(removed = n, upto = self.stored, "tombstones purged");
            }
            Err(e) => {
                self.metrics
                    .store_errors
                    .with_label_values(&["purge"])
                    .inc();
                tracing::warn!(error = %e, "tombstone purge failed");
            }
        }
    }
}

/// Keeps the lag gauges true: compares the view with the bus head every `every`.
pub async fn watch_lag(
    projection: Projection,
    bus: BusClient,
    metrics: Metrics,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut behind_since: Option<(u64, std::time::Instant)> = None;
    loop {
        if let Ok(cluster) = bus.cluster().await {
            let position = *projection.position.borrow();
            let lag = cluster.head_position.saturating_sub(position);
            metrics.view_lag_positions.set(lag as i64);
            // The age of the oldest missing event, approximated by how long the view has
            // been behind a head it had not reached.
            let seconds = match behind_since {
                Some((target, since)) if lag > 0 && position < target => since.elapsed().as_secs(),
                _ if lag > 0 => {
                    behind_since = Some((cluster.head_position, std::time::Instant::now()));
                    0
                }
                _ => {
                    behind_since = None;
                    0
                }
            };
            metrics.view_lag_seconds.set(seconds as i64);
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
