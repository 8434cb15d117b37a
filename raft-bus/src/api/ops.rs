//! Health and metrics: open, no token, for load balancers and Prometheus.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::error::BusError;
use crate::metrics;

/// Ready = a member of a cluster that has a leader.
pub async fn ready(State(state): State<AppState>) -> Response {
    let m = state.raft.metrics().borrow().clone();
    let member = m
        .membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == m.id);
    match (member, m.current_leader) {
        (true, Some(leader)) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "leaderId": leader})),
        )
            .into_response(),
        (false, _) => BusError::Unavailable("this node is not a member of a cluster yet".into())
            .into_response(),
        (true, None) => {
            BusError::NoLeader("the cluster has no leader right now".into()).into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> String {
    let m = state.raft.metrics().borrow().clone();
    metrics::TERM.set(m.current_term as i64);
    metrics::LEADER_ID.set(m.current_leader.unwrap_or(0) as i64);
    metrics::IS_LEADER.set(i64::from(m.current_leader == Some(m.id)));
    metrics::COMMIT_INDEX.set(state.log.committed().map(|l| l.index as i64).unwrap_or(0));
    metrics::APPLIED_INDEX.set(m.last_applied.map(|l| l.index as i64).unwrap_or(0));
    metrics::HEAD_POSITION.set(state.store.head() as i64);
    metrics::render()
}
