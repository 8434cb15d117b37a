//! Appends, reads and subscriptions.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;
use taskpool_api::bus::{
    AppendRequest, AppendResponse, AppendedEvent, EventsPage, RecordedEvent, StreamPage,
};

use super::{ApiJson, ApiQuery, AppState};
use crate::error::BusError;
use crate::metrics;
use crate::proposer::ProposeError;
use crate::rights::Caller;
use crate::types::{AppendBatch, BatchOutcome, ProposedEvent, StoredEvent};

/// How long an append waits to be committed before the client is told to retry.
pub(crate) const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_NAME_BYTES: usize = 256;
const MAX_READ_LIMIT: u32 = 10_000;
/// Events read from disk per step of a subscription: bounds a subscriber's memory.
const SUBSCRIBE_PAGE: usize = 256;

#[utoipa::path(post, path = "/v1/append", tag = "events", request_body = taskpool_api::bus::AppendRequest,
    responses((status = 200, body = taskpool_api::bus::AppendResponse), (status = 400, body = super::openapi::ErrorSchema),
        (status = 401, body = super::openapi::ErrorSchema), (status = 403, body = super::openapi::ErrorSchema),
        (status = 409, body = super::openapi::ErrorSchema),
        (status = 413, body = super::openapi::ErrorSchema), (status = 503, body = super::openapi::ErrorSchema)))]
// At debug: an append is the hot path, and its span costs only when asked for.
#[tracing::instrument(level = "debug", skip_all, fields(
    events = request.events.len(),
    streams = tracing::field::Empty,
))]
pub async fn append(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<AppendRequest>,
) -> Result<Response, BusError> {
    let started = Instant::now();
    let batch = validate(&request, state.config.max_batch)?;
    let span = tracing::Span::current();
    if !span.is_disabled() {
        let streams: HashSet<&str> = request.events.iter().map(|e| e.stream.as_str()).collect();
        span.record("streams", streams.len());
    }
    // At the edge, before anything is queued: the leader takes forwarded groups as peer
    // traffic and does not look again.
    caller.may_append(&request)?;
    let outcome = match state.proposer.propose(batch).await {
        Ok(outcome) => outcome,
        Err(ProposeError::NoLeader) => {
            return Err(BusError::NoLeader("no leader elected yet; retry shortly".into()))
        }
        Err(ProposeError::Timeout) => {
            return Err(BusError::Unavailable(format!(
                "the append was not committed within {}s (no quorum?); it may still be: retry with the same event ids",
                COMMIT_TIMEOUT.as_secs()
            )))
        }
        Err(ProposeError::Unavailable(why)) => return Err(BusError::Unavailable(why)),
    };
    let resp = outcome_response(outcome)?;
    metrics::EVENTS_APPENDED.inc_by(resp.events.len() as u64);
    metrics::APPEND_SECONDS.observe(started.elapsed().as_secs_f64());
    Ok(Json(resp).into_response())
}

fn outcome_response(outcome: BatchOutcome) -> Result<AppendResponse, BusError> {
    match outcome {
        BatchOutcome::Appended(events) => Ok(AppendResponse {
            events: events
                .into_iter()
                .map(|a| AppendedEvent {
                    position: a.position,
                    stream: a.stream,
                    version: a.version,
                    id: a.id,
                })
                .collect(),
        }),
        BatchOutcome::WrongExpectedVersion {
            stream,
            current_version,
        } => Err(BusError::WrongExpectedVersion {
            stream,
            current_version,
        }),
        BatchOutcome::IdReused { id } => Err(BusError::IdReused { id }),
    }
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), BusError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(BusError::BadRequest(format!(
            "{what} `{}` must be 1 to {MAX_NAME_BYTES} bytes without control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Parses the request into the command the log carries; rejects what the bus cannot accept.
fn validate(request: &AppendRequest, max_batch: usize) -> Result<AppendBatch, BusError> {
    if request.events.is_empty() {
        return Err(BusError::BadRequest(
            "`events` is empty: send at least one event".into(),
        ));
    }
    if request.events.len() > max_batch {
        return Err(BusError::BadRequest(format!(
            "{} events in one append; the limit is {max_batch}",
            request.events.len()
        )));
    }
    let mut ids = HashSet::with_capacity(request.events.len());
    for e in &request.events {
        check_name("stream", &e.stream)?;
        check_name("type", &e.event_type)?;
        if !ids.insert(e.id) {
            return Err(BusError::BadRequest(format!(
                "event id {} appears twice in the batch",
                e.id
            )));
        }
    }
    for (stream, version) in &request.expected_versions {
        check_name("stream", stream)?;
        if *version < -1 {
            return Err(BusError::BadRequest(format!(
                "expected version {version} of `{stream}` is invalid: use -1 (no stream yet) or a version >= 0"
            )));
        }
    }
    Ok(AppendBatch {
        events: request
            .events
            .iter()
            .map(|e| ProposedEvent {
                stream: e.stream.clone(),
                event_type: e.event_type.clone(),
                data: e.data.get().to_owned(),
                metadata: e.metadata.as_ref().map(|m| m.get().to_owned()),
                id: e.id,
            })
            .collect(),
        expected_versions: request.expected_versions.clone(),
    })
}

pub(crate) fn recorded(e: StoredEvent) -> Result<RecordedEvent, BusError> {
    let raw = |s: String| RawValue::from_string(s).map_err(BusError::internal);
    let timestamp =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(e.timestamp_ms));
    Ok(RecordedEvent {
        position: e.position,
        stream: e.stream,
        version: e.version,
        event_type: e.event_type,
        data: raw(e.data)?,
        metadata: e.metadata.map(raw).transpose()?,
        id: e.id,
        timestamp: timestamp.to_string(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    from: Option<u64>,
    limit: Option<u32>,
}

fn check_from(from: u64) -> Result<u64, BusError> {
    if from == 0 {
        return Err(BusError::BadRequest(
            "`from` is a position; positions start at 1".into(),
        ));
    }
    Ok(from)
}

/// Where a subscription starts: a reconnecting EventSource sends the last id it saw
/// (`Last-Event-ID`), so resume right after it; otherwise at `from` (default 1).
fn start_position(last_event_id: Option<&[u8]>, from: Option<u64>) -> Result<u64, BusError> {
    match last_event_id {
        Some(v) => {
            let last: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    BusError::BadRequest("`Last-Event-ID` must be an event position".into())
                })?;
            last.checked_add(1)
                .ok_or_else(|| BusError::BadRequest("`Last-Event-ID` is out of range".into()))
        }
        None => check_from(from.unwrap_or(1)),
    }
}

fn check_limit(limit: Option<u32>) -> Result<usize, BusError> {
    match limit.unwrap_or(100) {
        l @ 1..=MAX_READ_LIMIT => Ok(l as usize),
        l => Err(BusError::BadRequest(format!(
            "`limit` {l} is out of range: use 1 to {MAX_READ_LIMIT}"
        ))),
    }
}

#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("from" = Option<u64>, Query, description = "First position (default 1)"),
        ("limit" = Option<u32>, Query, description = "At most this many, 1 to 10000 (default 100)")),
    responses((status = 200, body = taskpool_api::bus::EventsPage), (status = 400, body = super::openapi::ErrorSchema),
        (status = 401, body = super::openapi::ErrorSchema), (status = 403, body = super::openapi::ErrorSchema)))]
pub async fn read_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, BusError> {
    let from = check_from(q.from.unwrap_or(1))?;
    let limit = check_limit(q.limit)?;
    // The head is read before the events, so `head` never promises less than is returned.
    let store = state.store.clone();
    let (head, events) = read_store(move || {
        let events = store.read(from, limit)?;
        let head = events
            .last()
            .map(|e| e.position)
            .unwrap_or(0)
            .max(store.head());
        Ok((head, events))
    })
    .await?;
    Ok(Json(EventsPage {
        events: recorded_all(events)?,
        head,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamQuery {
    from_version: Option<u64>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/streams/{stream}", tag = "events",
    params(("stream" = String, Path, description = "Stream name"),
        ("fromVersion" = Option<u64>, Query, description = "First version (default 0)"),
        ("limit" = Option<u32>, Query, description = "At most this many, 1 to 10000 (default 100)")),
    responses((status = 200, body = taskpool_api::bus::StreamPage), (status = 400, body = super::openapi::ErrorSchema),
        (status = 401, body = super::openapi::ErrorSchema), (status = 403, body = super::openapi::ErrorSchema)))]
pub async fn read_stream(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Json<StreamPage>, BusError> {
    check_name("stream", &stream)?;
    let limit = check_limit(q.limit)?;
    let store = state.store.clone();
    let from_version = q.from_version.unwrap_or(0);
    let (events, version) =
        read_store(move || store.read_stream(&stream, from_version, limit)).await?;
    Ok(Json(StreamPage {
        events: recorded_all(events)?,
        version,
    }))
}

/// Runs a read of the store on the blocking pool; a failed read (or a panic in it) is a 500.
async fn read_store<T: Send + 'static>(
    read: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(BusError::internal)?
        .map_err(BusError::internal)
}

fn recorded_all(events: Vec<StoredEvent>) -> Result<Vec<RecordedEvent>, BusError> {
    events.into_iter().map(recorded).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeQuery {
    from: Option<u64>,
}

/// Counts a live subscription for as long as it exists.
struct SubscriberGuard(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl SubscriberGuard {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics::SUBSCRIBERS.inc();
        SubscriberGuard(permit)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        metrics::SUBSCRIBERS.dec();
    }
}

#[utoipa::path(get, path = "/v1/subscribe", tag = "events",
    params(("from" = Option<u64>, Query, description = "First position (default 1); a `Last-Event-ID` header resumes after it")),
    responses((status = 200, description = "text/event-stream of `event` (a RecordedEvent, id = position) and heartbeats", body = taskpool_api::bus::RecordedEvent),
        (status = 400, body = super::openapi::ErrorSchema), (status = 401, body = super::openapi::ErrorSchema),
        (status = 403, body = super::openapi::ErrorSchema), (status = 503, body = super::openapi::ErrorSchema)))]
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<SubscribeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, BusError> {
    let from = start_position(headers.get("last-event-id").map(|v| v.as_bytes()), q.from)?;
    let permit = state.subscribers.clone().try_acquire_owned().map_err(|_| {
        BusError::Unavailable(format!(
            "this node already serves {} subscriptions (--max-subscribers); try another node",
            state.config.max_subscribers
        ))
    })?;
    let store = state.store.clone();
    let shutdown = state.shutdown.clone();
    let access = state.access.clone();
    let stream = async_stream::stream! {
        let _guard = SubscriberGuard::new(permit);
        // A subscription ends with its caller's credential (removed or changed).
        let revoked = access.revoked(&caller);
        tokio::pin!(revoked);
        let mut head = store.watch_head();
        let mut next = from;
        loop {
            let current = *head.borrow_and_update();
            if next <= current {
                let s = store.clone();
                let page = match read_store(move || s.read(next, SUBSCRIBE_PAGE)).await {
                    Ok(page) => page,
                    Err(e) => { tracing::error!(error = %e, "subscription read failed"); break; }
                };
                if page.is_empty() {
                    // The store was replaced by an older snapshot view; wait for it to grow.
                    tokio::select! {
                        _ = head.changed() => {},
                        _ = shutdown.cancelled() => break,
                        _ = &mut revoked => break,
                    }
                    continue;
                }
                for e in page {
                    let position = e.position;
                    next = position + 1;
                    let Ok(event) = recorded(e) else { break };
                    let Ok(json) = serde_json::to_string(&event) else { break };
                    yield Ok(Event::default().id(position.to_string()).data(json));
                }
            } else {
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { break },
                    _ = shutdown.cancelled() => break,
                    _ = &mut revoked => break,
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(state.config.sse_heartbeat_secs.max(1)))
            .text("heartbeat"),
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any `Last-Event-ID` bytes: a start after that position, or a 400; never a panic.
        #[test]
        fn any_resume_id_resumes_after_it_or_is_refused(
            id in proptest::collection::vec(any::<u8>(), 0..30),
            from in proptest::option::of(any::<u64>()),
        ) {
            match start_position(Some(&id), from) {
                Ok(start) => {
                    let last: u64 = std::str::from_utf8(&id).expect("utf-8").trim().parse().expect("number");
                    prop_assert_eq!(start, last + 1);
                }
                Err(e) => prop_assert!(matches!(e, BusError::BadRequest(_))),
            }
        }

        #[test]
        fn a_resume_id_is_a_position(last in 0..u64::MAX, from in proptest::option::of(any::<u64>())) {
            let id = format!(" {last} ");
            prop_assert_eq!(start_position(Some(id.as_bytes()), from).ok(), Some(last + 1));
        }

        #[test]
        fn without_a_resume_id_from_decides(from in proptest::option::of(any::<u64>())) {
            let r = start_position(None, from);
            match from {
                Some(0) => prop_assert!(r.is_err()),
                Some(f) => prop_assert_eq!(r.ok(), Some(f)),
                None => prop_assert_eq!(r.ok(), Some(1)),
            }
        }
    }

    #[test]
    fn the_last_position_there_is_cannot_be_resumed_after() {
        assert!(start_position(Some(u64::MAX.to_string().as_bytes()), None).is_err());
    }
}
