//! Command calls. The leader routes (see `command_router`); every other node forwards the call
//! to the leader, and proxies a handler's stream from it, so senders and handlers may use any node.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use taskpool_api::client::percent_encode;
use taskpool_api::commands::{
    CommandRequest, CommandResponse, CommandResult, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};
use taskpool_api::error::ErrorBody;
use taskpool_api::trace::{self, Traceparent};
use uuid::Uuid;

use super::{cluster, events::check_name, ApiJson, ApiQuery, AppState, FORWARDED_HEADER};
use crate::command_router::{Outcome, ResultRefused};
use crate::error::BusError;
use crate::proposer::{self, Leader};
use crate::rights::Caller;

/// Heartbeats on handler streams: a handler that died is noticed at the next write.
const HANDLER_HEARTBEAT: Duration = Duration::from_secs(1);

/// Where to send a command call this node cannot route itself (never a call that was
/// forwarded here already).
fn leader_addr(state: &AppState, headers: &HeaderMap) -> Result<String, BusError> {
    match proposer::leader(&state.raft) {
        Leader::At(addr) if !headers.contains_key(FORWARDED_HEADER) => Ok(addr),
        _ => Err(BusError::NoLeader(
            "no leader routes commands right now; retry".into(),
        )),
    }
}

/// The command's trace context: the body's `traceparent`, else the HTTP header's. An invalid
/// one is ignored, as W3C says: it counts as none.
fn trace_context(req: &CommandRequest, headers: &HeaderMap) -> Option<Traceparent> {
    (req.traceparent.as_deref().and_then(Traceparent::parse)).or_else(|| {
        (headers.get(trace::HEADER))
            .and_then(|v| v.to_str().ok())
            .and_then(Traceparent::parse)
    })
}

fn outcome_response(id: Uuid, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Ok(result) => Json(CommandResponse { id, result }).into_response(),
        Outcome::Failed {
            status,
            code,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, Json(ErrorBody::new(code, message))).into_response()
        }
    }
}

#[utoipa::path(post, path = "/v1/commands", tag = "commands", request_body = taskpool_api::commands::CommandRequest,
    responses((status = 200, body = taskpool_api::commands::CommandResponse), (status = 400, body = super::openapi::ErrorSchema),
        (status = 401, body = super::openapi::ErrorSchema), (status = 403, body = super::openapi::ErrorSchema), (status = 503, description = "no handler for the type and routing key, or no leader", body = super::openapi::ErrorSchema),
        (status = 504, description = "no answer within the command's timeout", body = super::openapi::ErrorSchema)))]
#[tracing::instrument(skip_all, fields(
    command_id = %req.id,
    command_type = ?req.command_type,
    routing_key = ?req.routing_key,
    trace_id = tracing::field::Empty,
))]
pub async fn send(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(mut req): ApiJson<CommandRequest>,
) -> Result<Response, BusError> {
    // In the request before it is routed or forwarded: the handler's message carries it.
    let context = trace_context(&req, &headers);
    if let Some(context) = &context {
        tracing::Span::current().record("trace_id", context.trace_id());
    }
    req.traceparent = context.map(|c| c.to_string());
    check_name("type", &req.command_type)?;
    check_name("routingKey", &req.routing_key)?;
    let timeout_ms = req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(BusError::BadRequest(format!(
            "`timeoutMs` {timeout_ms} is out of range: use 1 to {MAX_TIMEOUT_MS}"
        )));
    }
    let timeout = Duration::from_millis(timeout_ms);
    if state.router.is_leading() {
        let id = req.id;
        let outcome = state.router.send(req, timeout).await;
        tracing::debug!(outcome = outcome.label(), "command answered");
        return Ok(outcome_response(id, outcome));
    }
    let leader = leader_addr(&state, &headers)?;
    // The context goes on as a header, not in the body: a leader of an older version, during a
    // rolling upgrade, knows no `traceparent` field.
    let mut headers = headers;
    match req.traceparent.take().map(HeaderValue::try_from) {
        Some(Ok(value)) => headers.insert(trace::HEADER, value),
        _ => headers.remove(trace::HEADER),
    };
    cluster::forward(
        &state,
        &headers,
        &leader,
        "/v1/commands",
        &req,
        timeout + Duration::from_secs(2),
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscribeQuery {
    handler_id: String,
    types: String,
    routing_keys: String,
}

fn split_list(what: &str, list: &str) -> Result<HashSet<String>, BusError> {
    let items: HashSet<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        return Err(BusError::BadRequest(format!(
            "`{what}` names no entry: give a comma-separated list"
        )));
    }
    for item in &items {
        check_name(what, item)?;
    }
    Ok(items)
}

#[utoipa::path(get, path = "/v1/handlers/subscribe", tag = "commands",
    params(("handlerId" = String, Query), ("types" = String, Query, description = "Comma-separated command types"),
        ("routingKeys" = String, Query, description = "Comma-separated routing keys")),
    responses((status = 200, description = "text/event-stream of the commands given to this handler"),
        (status = 400, body = super::openapi::ErrorSchema), (status = 401, body = super::openapi::ErrorSchema),
        (status = 403, body = super::openapi::ErrorSchema)))]
#[tracing::instrument(skip_all, fields(
    handler_id = ?q.handler_id,
    types = ?q.types,
    routing_keys = ?q.routing_keys,
    client = caller.name(),
))]
pub async fn subscribe_handler(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<SubscribeQuery>,
) -> Result<Response, BusError> {
    check_name("handlerId", &q.handler_id)?;
    let types = split_list("types", &q.types)?;
    let keys = split_list("routingKeys", &q.routing_keys)?;
    // Here, on a follower before it relays, and on the leader again.
    caller.may_handle(&keys)?;
    let registration =
        state
            .router
            .register(q.handler_id.clone(), caller.owner().to_owned(), types, keys);
    if let Some((registration, mut rx)) = registration {
        tracing::info!("command handler connected");
        let shutdown = state.shutdown.clone();
        let access = state.access.clone();
        let stream = async_stream::stream! {
            let _registration = registration;
            let revoked = access.revoked(&caller);
            tokio::pin!(revoked);
            loop {
                tokio::select! {
                    // Its credential was removed or changed: the handler reconnects with the
                    // current one, or not at all.
                    _ = &mut revoked => break,
                    msg = rx.recv() => match msg {
                        Some(msg) => match serde_json::to_string(&*msg) {
                            Ok(json) => yield Ok::<_, Infallible>(Event::default().data(json)),
                            Err(e) => tracing::error!(error = %e, "command not encodable"),
                        },
                        // Replaced by a newer connection, or leadership moved: end the stream.
                        None => break,
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        return Ok(Sse::new(stream)
            .keep_alive(
                KeepAlive::new()
                    .interval(HANDLER_HEARTBEAT)
                    .text("heartbeat"),
            )
            .into_response());
    }
    // Not the leader: relay the leader's stream. When the leader goes, the stream ends and the
    // handler reconnects, to be relayed to the new leader.
    let leader = leader_addr(&state, &headers)?;
    tracing::debug!(leader = %leader, "relaying the handler stream from the leader");
    let url = format!(
        "http://{leader}/v1/handlers/subscribe?handlerId={}&types={}&routingKeys={}",
        percent_encode(&q.handler_id),
        percent_encode(&q.types),
        percent_encode(&q.routing_keys)
    );
    let upstream = cluster::to_leader(&state, &headers, state.http_stream.get(&url))
        .send()
        .await
        .map_err(|e| {
            BusError::NoLeader(format!(
                "the leader at {leader} is unreachable ({e}); retry"
            ))
        })?;
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/event-stream")
        .to_owned();
    Ok((
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache".into()),
        ],
        Body::from_stream(until_revoked(&state, caller, upstream.bytes_stream())),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/commands/{id}/result", tag = "commands", request_body = taskpool_api::commands::CommandResult,
    params(("id" = String, Path, description = "Command id (UUID)")),
    responses((status = 204, description = "taken"), (status = 400, body = super::openapi::ErrorSchema),
        (status = 401, body = super::openapi::ErrorSchema), (status = 403, body = super::openapi::ErrorSchema), (status = 404, body = super::openapi::ErrorSchema),
        (status = 409, body = super::openapi::ErrorSchema)))]
#[tracing::instrument(skip_all, fields(command_id = %id, handler_id = ?body.handler_id, ok = body.ok))]
pub async fn result(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CommandResult>,
) -> Result<Response, BusError> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        BusError::BadRequest(format!("command id `{}` is not a UUID", id.escape_debug()))
    })?;
    check_name("handlerId", &body.handler_id)?;
    let outcome = if body.ok {
        Outcome::Ok(body.result.clone().unwrap_or(serde_json::Value::Null))
    } else {
        let status = body
            .status
            .filter(|s| (400..=599).contains(s))
            .ok_or_else(|| {
                BusError::BadRequest("a failed result needs `status` between 400 and 599".into())
            })?;
        let error = body.error.clone().ok_or_else(|| {
            BusError::BadRequest("a failed result needs `error` with `code` and `message`".into())
        })?;
        Outcome::Failed {
            status,
            code: error.code,
            message: error.message,
        }
    };
    if !state.router.is_leading() {
        let leader = leader_addr(&state, &headers)?;
        let path = format!("/v1/commands/{id}/result");
        let timeout = Duration::from_secs(10);
        return cluster::forward(&state, &headers, &leader, &path, &body, timeout).await;
    }
    // Only the leader knows the command's routing key: the rights check is its.
    let answer = state
        .router
        .complete(id, &body.handler_id, caller.owner(), outcome, |key| {
            caller.handles(key)
        });
    match answer {
        Err(ResultRefused::NotYourKey(key)) => Err(caller.may_not_answer(id, &key)),
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(ResultRefused::Unknown) => Err(BusError::NotFound(format!(
            "no command {id} is waiting for a result (it may have timed out)"
        ))),
        Err(ResultRefused::AlreadyAnswered) => Err(BusError::Conflict {
            code: "already_answered",
            message: format!("command {id} was answered already"),
        }),
        Err(ResultRefused::Expired) => Err(BusError::Conflict {
            code: "expired",
            message: format!("the sender of command {id} stopped waiting; a resend with the same id will ask again"),
        }),
        Err(ResultRefused::NotYours) => Err(BusError::Conflict {
            code: "not_chosen",
            message: format!("command {id} was not given to handler {}", body.handler_id),
        }),
    }
}

/// A relayed stream that ends when its caller's credential is no longer in force.
fn until_revoked<S: futures::Stream + Send + 'static>(
    state: &AppState,
    caller: Caller,
    stream: S,
) -> impl futures::Stream<Item = S::Item> + Send + 'static {
    use futures::StreamExt;
    let access = state.access.clone();
    stream.take_until(Box::pin(async move { access.revoked(&caller).await }))
}
