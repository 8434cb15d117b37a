//! The Raft RPC client: openraft's messages, bincode-encoded, with the cluster token.
//! AppendEntries go over a long-lived RPC stream ([`crate::rpc_stream`]); votes and snapshots
//! (and AppendEntries to a node without streams) are HTTP requests to its `/raft/*` routes.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rpc_stream::{CallError, Connections, Kind};
use crate::types::{decode, encode, NodeId, TypeConfig};

const APPEND_TIMEOUT_FLOOR: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    token: Option<String>,
}

impl Network {
    pub fn new(token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(8)
            .build()?;
        Ok(Network { http, token })
    }
}

pub struct Peer {
    net: Network,
    target: NodeId,
    addr: String,
    stream: Arc<Connections>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
            stream: Arc::new(Connections::new(
                self.http.clone(),
                self.token.clone(),
                node.addr.clone(),
            )),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(&self, route: &str, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("http://{}/raft/{route}", self.addr);
        let mut builder = self.net.http.post(&url).timeout(ttl).body(encode(req));
        if let Some(token) = &self.net.token {
            builder = builder.bearer_auth(token);
        }
        let resp = builder.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let msg = format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(msg),
            )));
        }
        self.answer(&bytes)
    }

    /// AppendEntries over the RPC stream, or over HTTP to a node without streams.
    async fn append_on_stream<Req, Resp, E>(&self, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match self.stream.call(Kind::Append, &encode(req), ttl).await {
            Ok(bytes) => self.answer(&bytes),
            Err(CallError::NotSupported) => self.call("append", req, ttl).await,
            Err(e @ CallError::Unreachable(_)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e @ CallError::Failed(_)) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    /// The peer's answer: its Raft core's result, errors included.
    fn answer<Resp, E>(&self, bytes: &[u8]) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        // openraft gives AppendEntries one heartbeat interval; a batch that carries thousands
        // of events to a busy follower (which must fsync it) needs longer, or it is sent again
        // and again and a new leader cannot commit.
        let ttl = option.hard_ttl().max(APPEND_TIMEOUT_FLOOR);
        self.append_on_stream(&rpc, ttl).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}
