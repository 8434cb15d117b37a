//! The server side of the Raft RPC: bincode in, bincode out. Errors of the Raft core travel
//! inside the body, so that the peer's openraft sees them as remote errors.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use super::AppState;
use crate::error::BusError;
use crate::metrics;
use crate::rpc_stream::{read_frame, write_frame, Kind, PROTOCOL};
use crate::types::{decode, encode, AppendBatch};

fn reply<T: Serialize>(value: &T) -> Response {
    octets(encode(value))
}

fn bad_body(e: bincode::Error) -> BusError {
    BusError::BadRequest(format!("not a Raft RPC body: {e}"))
}

/// What a call answers, the same over HTTP and over an RPC stream.
async fn call(state: &AppState, kind: Kind, body: &[u8]) -> Result<Vec<u8>, bincode::Error> {
    Ok(match kind {
        Kind::Append => encode(&state.raft.append_entries(decode(body)?).await),
        Kind::Propose => {
            let batches: Vec<AppendBatch> = decode(body)?;
            encode(&state.proposer.propose_forwarded(batches).await)
        }
    })
}

fn octets(bytes: Vec<u8>) -> Response {
    ([("content-type", "application/octet-stream")], bytes).into_response()
}

pub async fn append(State(state): State<AppState>, body: Bytes) -> Result<Response, BusError> {
    let answer = call(&state, Kind::Append, &body).await.map_err(bad_body)?;
    Ok(octets(answer))
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
    let answer = call(&state, Kind::Propose, &body).await.map_err(bad_body)?;
    Ok(octets(answer))
}

/// Turns the request into a long-lived RPC stream ([`crate::rpc_stream`]) served until the
/// peer closes it or the node stops.
pub async fn stream(State(state): State<AppState>, mut req: Request) -> Result<Response, BusError> {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
    if !asked {
        return Err(BusError::BadRequest(format!(
            "an RPC stream starts with `Connection: upgrade` and `Upgrade: {PROTOCOL}`"
        )));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve_stream(state, BufReader::new(TokioIo::new(io))).await,
            Err(e) => tracing::warn!(error = %e, "an RPC stream could not start"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .map_err(BusError::internal)
}

/// Answers the frames of one connection in order. A frame that cannot be read or decoded ends
/// the connection: the peer drops it on its side too and connects anew.
async fn serve_stream(state: AppState, mut io: impl AsyncRead + AsyncWrite + Unpin) {
    let appends = metrics::RPC_STREAM_CALLS.with_label_values(&["append"]);
    let proposes = metrics::RPC_STREAM_CALLS.with_label_values(&["propose"]);
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut io) => frame,
            _ = state.shutdown.cancelled() => return,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "RPC stream ended");
                return;
            }
        };
        let answer = match frame.split_first() {
            Some((&byte, body)) => match Kind::from_byte(byte) {
                Some(kind) => match call(&state, kind, body).await {
                    Ok(answer) => {
                        match kind {
                            Kind::Append => appends.inc(),
                            Kind::Propose => proposes.inc(),
                        }
                        Ok(answer)
                    }
                    Err(e) => Err(format!("undecodable {kind:?} call: {e}")),
                },
                None => Err(format!("unknown RPC kind {byte}")),
            },
            None => Err("an empty frame".to_string()),
        };
        match answer {
            Ok(answer) => {
                if let Err(e) = write_frame(&mut io, &answer).await {
                    tracing::debug!(error = %e, "RPC stream ended");
                    return;
                }
            }
            Err(why) => {
                tracing::warn!(reason = %why, "closing an RPC stream");
                return;
            }
        }
    }
}
