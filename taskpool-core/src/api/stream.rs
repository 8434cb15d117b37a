//! `GET /api/v1/tasks/stream`: server-sent events of changes to the tasks you may see.
//!
//! Events: `ready` (`{"position"}`, the view position when the stream began), then `task` for
//! every change of a task you could see before or after it (`{"position","type","application",
//! "taskId","task"}`; `task` is null when it left your list). A reader too slow for the change buffer
//! gets `reset` and the stream ends: reload the list, then reconnect.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use taskpool_api::task_body::TaskBody;

use super::openapi::ErrorSchema;
use super::{AppError, Shared, User};
use crate::view::TaskView;

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskChangeEvent<'a> {
    pub position: u64,
    /// The bus event type, e.g. `TaskAssigned`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The task's application: with `taskId`, its key.
    pub application: String,
    pub task_id: String,
    /// The task now, or null when you can no longer see it (completed, deleted, reassigned).
    pub task: Option<TaskBody<'a>>,
}

/// Live changes to your tasks, as server-sent events.
#[utoipa::path(get, path = "/api/v1/tasks/stream", tag = "tasks",
    responses((status = 200, description = "text/event-stream of `ready`, `task` (TaskChangeEvent) and `reset` events", body = TaskChangeEvent),
        (status = 401, body = ErrorSchema), (status = 503, body = ErrorSchema)))]
pub async fn tasks(
    State(state): State<Shared>,
    User(id): User,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let permit = state
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::TooManyStreams)?;
    let mut changes = state.projection.changes.subscribe();
    let (principals, position) = {
        let view = state.projection.read();
        (id.principals(&view), view.position())
    };
    let metrics = state.metrics.clone();
    let mut stop = state.stop.clone();
    metrics.stream_subscribers.inc();
    let stream = async_stream::stream! {
        let _permit = permit;
        let _gauge = GaugeGuard(metrics);
        yield Ok(Event::default().event("ready").data(format!("{{\"position\":{position}}}")));
        loop {
            let next = tokio::select! {
                next = changes.recv() => next,
                _ = stop.wait_for(|s| *s) => break,
            };
            match next {
                Ok(change) => {
                    if change.position <= position || !change.concerns(&principals) {
                        continue;
                    }
                    let task = change
                        .after
                        .clone()
                        .filter(|t| principals.allows(&change.application, &t.authorized_principals));
                    let body = TaskChangeEvent {
                        position: change.position,
                        event_type: change.event_type.clone(),
                        application: change.application.clone(),
                        task_id: change.task_id.clone(),
                        task: task.as_deref().map(TaskView::body),
                    };
                    match serde_json::to_string(&body) {
                        Ok(json) => yield Ok(Event::default().event("task").id(change.position.to_string()).data(json)),
                        Err(e) => tracing::warn!(error = %e, "task change not encodable"),
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    yield Ok(Event::default().event("reset").data(format!("{{\"missed\":{missed}}}")));
                    break;
                }
                Err(RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct GaugeGuard(crate::metrics::Metrics);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.stream_subscribers.dec();
    }
}
