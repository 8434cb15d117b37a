//! The cluster view, membership changes, and forwarding to the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::Serialize;
use taskpool_api::bus::{AddLearnerRequest, ChangeMembershipRequest, ClusterInfo};

use super::{ApiJson, AppState, FORWARDED_HEADER};
use crate::error::BusError;

pub fn cluster_info(state: &AppState) -> ClusterInfo {
    let m = state.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut members = BTreeMap::new();
    let mut learners = BTreeMap::new();
    for (id, node) in membership.nodes() {
        let target = if voters.contains(id) {
            &mut members
        } else {
            &mut learners
        };
        target.insert(id.to_string(), node.addr.clone());
    }
    ClusterInfo {
        node_id: m.id,
        leader_id: m.current_leader,
        term: m.current_term,
        members,
        learners,
        commit_index: state.log.committed().map(|l| l.index),
        applied_index: m.last_applied.map(|l| l.index),
        head_position: state.store.head(),
    }
}

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, body = taskpool_api::bus::ClusterInfo), (status = 401, body = super::openapi::ErrorSchema),
        (status = 403, body = super::openapi::ErrorSchema)))]
pub async fn info(State(state): State<AppState>) -> Json<ClusterInfo> {
    Json(cluster_info(&state))
}

fn check_addr(addr: &str) -> Result<(), BusError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(BusError::BadRequest(format!(
            "address `{addr}` is not HOST:PORT"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/cluster/learners", tag = "cluster", request_body = taskpool_api::bus::AddLearnerRequest,
    responses((status = 200, body = taskpool_api::bus::ClusterInfo), (status = 400, body = super::openapi::ErrorSchema),
        (status = 401, body = super::openapi::ErrorSchema), (status = 403, body = super::openapi::ErrorSchema),
        (status = 503, body = super::openapi::ErrorSchema)))]
pub async fn add_learner(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AddLearnerRequest>,
) -> Result<Response, BusError> {
    if req.node_id == 0 {
        return Err(BusError::BadRequest("`nodeId` must be > 0".into()));
    }
    check_addr(&req.addr)?;
    let node = BasicNode::new(req.addr.clone());
    match state.raft.add_learner(req.node_id, node, true).await {
        Ok(_) => Ok(Json(cluster_info(&state)).into_response()),
        Err(e) => membership_error(&state, &headers, "/v1/cluster/learners", &req, e).await,
    }
}

#[utoipa::path(post, path = "/v1/cluster/membership", tag = "cluster", request_body = taskpool_api::bus::ChangeMembershipRequest,
    responses((status = 200, body = taskpool_api::bus::ClusterInfo), (status = 400, body = super::openapi::ErrorSchema),
        (status = 401, body = super::openapi::ErrorSchema), (status = 403, body = super::openapi::ErrorSchema),
        (status = 503, body = super::openapi::ErrorSchema)))]
pub async fn change_membership(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChangeMembershipRequest>,
) -> Result<Response, BusError> {
    let members: BTreeSet<u64> = req.members.iter().copied().collect();
    if members.is_empty() {
        return Err(BusError::BadRequest(
            "`members` is empty: a cluster needs at least one voter".into(),
        ));
    }
    match state.raft.change_membership(members, false).await {
        Ok(_) => Ok(Json(cluster_info(&state)).into_response()),
        Err(e) => membership_error(&state, &headers, "/v1/cluster/membership", &req, e).await,
    }
}

async fn membership_error(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    body: &impl Serialize,
    e: RaftError<u64, ClientWriteError<u64, BasicNode>>,
) -> Result<Response, BusError> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            match (f.leader_node, headers.contains_key(FORWARDED_HEADER)) {
                (Some(leader), false) => {
                    let timeout = Duration::from_secs(60);
                    forward(state, headers, &leader.addr, path, body, timeout).await
                }
                _ => Err(BusError::NoLeader(
                    "no leader to change membership; retry shortly".into(),
                )),
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Err(
            BusError::BadRequest(format!("membership change refused: {e}")),
        ),
        RaftError::Fatal(e) => Err(BusError::Unavailable(e.to_string())),
    }
}

/// Marks a request to the leader as forwarded (so it is not forwarded again) and passes the
/// original client's `Authorization` on: the leader checks the same credential again, so a
/// forward never carries more rights than its client has.
pub fn to_leader(
    state: &AppState,
    client: &HeaderMap,
    req: reqwest::RequestBuilder,
) -> reqwest::RequestBuilder {
    let mut req = req.header(FORWARDED_HEADER, state.access.forwarded_marker());
    for name in [header::AUTHORIZATION.as_str(), taskpool_api::trace::HEADER] {
        if let Some(value) = client.get(name) {
            req = req.header(name, value);
        }
    }
    req
}

/// Sends a write to the leader and relays its answer as it is.
#[tracing::instrument(skip_all, fields(leader = leader_addr, path = path))]
pub async fn forward(
    state: &AppState,
    client: &HeaderMap,
    leader_addr: &str,
    path: &str,
    body: &impl Serialize,
    timeout: Duration,
) -> Result<Response, BusError> {
    let url = format!("http://{leader_addr}{path}");
    let req = state.http.post(&url).timeout(timeout).json(body);
    let resp = to_leader(state, client, req).send().await.map_err(|e| {
        BusError::NoLeader(format!(
            "the leader at {leader_addr} is unreachable ({e}); retry"
        ))
    })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = resp.bytes().await.map_err(|e| {
        BusError::NoLeader(format!(
            "the leader at {leader_addr} broke off ({e}); retry"
        ))
    })?;
    if bytes.is_empty() {
        return Ok(status.into_response());
    }
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response())
}
