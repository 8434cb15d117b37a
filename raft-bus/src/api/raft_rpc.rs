//! The server side of the Raft RPC: bincode in, bincode out. Errors of the Raft core travel
//! inside the body, so that the peer's openraft sees them as remote errors.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::error::BusError;
use crate::types::{decode, encode};

fn reply<T: Serialize>(value: &T) -> Response {
    (
        [("content-type", "application/octet-stream")],
        encode(value),
    )
        .into_response()
}

fn bad_body(e: bincode::Error) -> BusError {
    BusError::BadRequest(format!("not a Raft RPC body: {e}"))
}

pub async fn append(State(state): State<AppState>, body: Bytes) -> Result<Response, BusError> {
    let req = decode(&body).map_err(bad_body)?;
    Ok(reply(&state.raft.append_entries(req).await))
}

pub async fn vote(State(state): State<AppState>, body: Bytes) -> Result<Response, BusError> {
    let req = decode(&body).map_err(bad_body)?;
    Ok(reply(&state.raft.vote(req).await))
}

pub async fn snapshot(State(state): State<AppState>, body: Bytes) -> Result<Response, BusError> {
    let req = decode(&body).map_err(bad_body)?;
    Ok(reply(&state.raft.install_snapshot(req).await))
}

/// A group of appends a follower gathered: answered one outcome per append.
pub async fn propose(State(state): State<AppState>, body: Bytes) -> Result<Response, BusError> {
    let batches: Vec<crate::types::AppendBatch> = decode(&body).map_err(bad_body)?;
    Ok(reply(&state.proposer.propose_forwarded(batches).await))
}
