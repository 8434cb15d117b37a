//! The HTTP surface of a node: the client API (`/v1`), the Raft RPC (`/raft`), `/metrics`
//! and `/health`, all on one listener.

mod cluster;
mod commands;
pub(crate) mod events;
pub(crate) mod openapi;
mod ops;
mod raft_rpc;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use service_kit::Admission;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::command_router::CommandRouter;
use crate::config::Config;
use crate::error::{BusError, Refusal};
use crate::event_store::EventStore;
use crate::log_store::LogStore;
use crate::metrics;
use crate::proposer::Proposer;
use crate::rights::{Action, Caller};
use crate::types::Raft;

/// Marks a request a follower forwarded to the leader, so it is forwarded at most once (and
/// not admitted twice). It grants no right: with credentials it carries the forwarding node's
/// peer secret, and the original client's `Authorization` is checked again on the leader.
pub(crate) const FORWARDED_HEADER: &str = "x-raft-bus-forwarded";

/// Raft RPC bodies carry batches of entries and snapshot chunks: larger than client bodies,
/// the same limit as a frame of an RPC stream (which carries the same calls).
const RAFT_BODY_LIMIT: usize = crate::rpc_stream::MAX_FRAME;

/// Shared by every request: cloning it per request is one reference count.
pub type AppState = Arc<AppContext>;

pub struct AppContext {
    pub config: Arc<Config>,
    /// Who may call what: open, `--token` or `--credentials`.
    pub access: Arc<Access>,
    pub raft: Raft,
    pub store: EventStore,
    pub log: LogStore,
    /// Forwards writes from a follower to the leader.
    pub http: reqwest::Client,
    /// Relays handler streams from the leader: no overall timeout.
    pub http_stream: reqwest::Client,
    pub router: CommandRouter,
    pub proposer: Proposer,
    pub subscribers: Arc<Semaphore>,
    /// Cancelled on shutdown, so live subscriptions end and the server can stop.
    pub shutdown: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    // Every route names what it does; `authorize` checks the caller's role for it.
    let may = |action| middleware::from_fn_with_state(action, authorize);
    let guarded = |routes: Vec<(&'static str, MethodRouter<AppState>, Action)>| {
        (routes.into_iter()).fold(Router::new(), |router, (path, handler, action)| {
            router.route(path, handler.route_layer(may(action)))
        })
    };
    let requests = guarded(vec![
        ("/v1/append", post(events::append), Action::Append),
        ("/v1/events", get(events::read_events), Action::Read),
        (
            "/v1/streams/{stream}",
            get(events::read_stream),
            Action::Read,
        ),
        ("/v1/commands", post(commands::send), Action::SendCommand),
        (
            "/v1/commands/{id}/result",
            post(commands::result),
            Action::AnswerCommand,
        ),
        ("/v1/cluster", get(cluster::info), Action::Cluster),
        (
            "/v1/cluster/learners",
            post(cluster::add_learner),
            Action::Membership,
        ),
        (
            "/v1/cluster/membership",
            post(cluster::change_membership),
            Action::Membership,
        ),
    ])
    .route_layer(middleware::from_fn_with_state(
        admission(&state.config),
        service_kit::http::admit,
    ));
    // Long-lived: limited by --max-subscribers and the handler registry, not by admission.
    let streams = guarded(vec![
        ("/v1/subscribe", get(events::subscribe), Action::Read),
        (
            "/v1/handlers/subscribe",
            get(commands::subscribe_handler),
            Action::HandleCommands,
        ),
    ]);
    let client_api = requests
        .merge(streams)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));
    let raft_rpc = Router::new()
        .route("/raft/append", post(raft_rpc::append))
        .route("/raft/vote", post(raft_rpc::vote))
        .route("/raft/snapshot", post(raft_rpc::snapshot))
        .route("/raft/propose", post(raft_rpc::propose))
        .route("/raft/stream", post(raft_rpc::stream))
        .route_layer(may(Action::RaftRpc))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT));
    let protected = client_api
        .merge(raft_rpc)
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(protected)
        .merge(service_kit::health_routes(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .fallback(|| async {
            BusError::NotFound("no such route; see the API in the README".into())
        })
        .layer(middleware::from_fn_with_state(
            metrics::requests(),
            service_kit::http::track,
        ))
        .with_state(state)
}

/// 401 unless the request names a known caller; the caller goes on as a request extension.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let caller = state.access.authenticate(
        headers.get(header::AUTHORIZATION),
        headers.get(FORWARDED_HEADER),
    );
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// 403 unless the caller's role may do `action`. Every refusal this node decides, here or in
/// the handler (a stream, a routing key), is counted by role and logged at debug: a flood of
/// refused requests must not flood the log.
async fn authorize(State(action): State<Action>, req: Request, next: Next) -> Response {
    let caller = match caller_of(req.extensions()) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = match caller.may(action) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    if let Some(Refusal(why)) = resp.extensions().get::<Refusal>() {
        metrics::FORBIDDEN
            .with_label_values(&[caller.role_label()])
            .inc();
        let route = route.as_ref().map_or("", MatchedPath::as_str);
        tracing::debug!(client = caller.name(), route, reason = %why, "refused");
    }
    resp
}

/// Load shedding: a request past `--max-concurrent-requests` is answered `busy` at once rather
/// than queued, so memory and latency stay bounded under a flood and clients try another node.
/// A request is counted once, where the client sent it: forwarded ones were admitted there.
fn admission(config: &Config) -> Admission {
    Admission::new(config.max_concurrent_requests as usize, || {
        BusError::Busy.into_response()
    })
    .exempt_with(HeaderName::from_static(FORWARDED_HEADER))
}

/// The caller `authenticate` found; every protected route has one.
fn caller_of(extensions: &Extensions) -> Result<Caller, BusError> {
    (extensions.get::<Caller>().cloned())
        .ok_or_else(|| BusError::Internal("a route without authentication".into()))
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = BusError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, BusError> {
        caller_of(&parts.extensions)
    }
}

/// A JSON body whose every rejection is answered in the project's error format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = BusError;

    async fn from_request(req: Request, state: &S) -> Result<Self, BusError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(BusError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(r))
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(BusError::PayloadTooLarge)
            }
            Err(r) => Err(BusError::InvalidJson(r.body_text())),
        }
    }
}

/// Query parameters whose rejection is answered in the project's error format.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = BusError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BusError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| BusError::BadRequest(r.body_text()))
    }
}
