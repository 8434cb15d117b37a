//! AppendEntries and forwarded appends over long-lived connections between nodes, instead of an
//! HTTP request each.
//!
//! Under load every log entry costs each follower two AppendEntries RPCs (the entries, then the
//! commit index) and each follower forwards a group of appends per entry: thousands of small
//! RPCs a second, whose HTTP framing, routing and middleware on both sides cost more than the
//! bytes. A connection starts as `POST /raft/stream` with the cluster token and
//! `Upgrade: raft-bus-rpc`; after `101 Switching Protocols` both sides speak frames, one
//! request at a time per connection, answered in order:
//!
//! ```text
//! request:  [length u32 LE][kind u8][bincode body]    (length counts kind and body)
//! response: [length u32 LE][bincode body]
//! ```
//!
//! Votes and snapshots stay plain HTTP requests (rare, and a snapshot is large). A node that
//! does not know the upgrade (an older version, during a rolling upgrade) answers 404, and the
//! caller falls back to its HTTP route.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// The protocol name in the `Upgrade` header.
pub const PROTOCOL: &str = "raft-bus-rpc";
/// Largest frame accepted: AppendEntries carry up to 16 entries of up to 5,000 events.
pub const MAX_FRAME: usize = 256 << 20;
/// Connections kept open to one node when idle.
const MAX_IDLE: usize = 8;
const READ_BUFFER: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// openraft's AppendEntriesRequest.
    Append = 1,
    /// A follower's gathered appends (`Vec<AppendBatch>`).
    Propose = 2,
}

impl Kind {
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Append),
            2 => Some(Kind::Propose),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum CallError {
    /// No connection could be made: the node is down or cut off.
    Unreachable(String),
    /// The node does not speak this protocol: use its HTTP route.
    NotSupported,
    /// The call failed after the connection was made; it may have been executed.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::NotSupported => write!(f, "the node does not accept RPC streams"),
            CallError::Failed(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for CallError {}

type Conn = BufReader<reqwest::Upgraded>;

/// Connections to one node, made on demand and reused.
pub struct Connections {
    http: reqwest::Client,
    token: Option<String>,
    addr: String,
    idle: Mutex<Vec<Conn>>,
}

impl Connections {
    pub fn new(http: reqwest::Client, token: Option<String>, addr: String) -> Self {
        Connections {
            http,
            token,
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and waits for its answer, all within `ttl`. A connection that failed
    /// or timed out is dropped, so a late answer can never be read as the next call's.
    pub async fn call(&self, kind: Kind, body: &[u8], ttl: Duration) -> Result<Vec<u8>, CallError> {
        let idle = self.idle.lock().await.pop();
        let work = async {
            let mut conn = match idle {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            let answer = exchange(&mut conn, kind, body)
                .await
                .map_err(|e| CallError::Failed(format!("{}: {e}", self.addr)))?;
            Ok((conn, answer))
        };
        let (conn, answer) = tokio::time::timeout(ttl, work)
            .await
            .map_err(|_| CallError::Failed(format!("{}: no answer within {ttl:?}", self.addr)))??;
        let mut idle = self.idle.lock().await;
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(answer)
    }

    async fn connect(&self) -> Result<Conn, CallError> {
        let mut req = self
            .http
            .post(format!("http://{}/raft/stream", self.addr))
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, PROTOCOL);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                CallError::Unreachable(format!("{}: {e}", self.addr))
            } else {
                CallError::Failed(format!("{}: {e}", self.addr))
            }
        })?;
        match resp.status().as_u16() {
            101 => {}
            404 => return Err(CallError::NotSupported),
            status => {
                let body = resp.text().await.unwrap_or_default();
                return Err(CallError::Unreachable(format!(
                    "{} refused the RPC stream: {status} {body}",
                    self.addr
                )));
            }
        }
        let io = resp
            .upgrade()
            .await
            .map_err(|e| CallError::Failed(format!("{}: {e}", self.addr)))?;
        Ok(BufReader::with_capacity(READ_BUFFER, io))
    }
}

async fn exchange(conn: &mut Conn, kind: Kind, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u32::try_from(body.len() + 1).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.push(kind as u8);
    frame.extend_from_slice(body);
    conn.write_all(&frame).await?;
    conn.flush().await?;
    read_frame(conn)
        .await?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"))
}

/// Reads one frame's bytes (after its length); `None` at a clean end of the stream.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {MAX_FRAME}"),
        ));
    }
    let mut frame = vec![0; len];
    r.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

/// Writes one response frame.
pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() -> std::io::Result<()> {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, b"hello").await?;
        write_frame(&mut a, b"").await?;
        drop(a);
        assert_eq!(read_frame(&mut b).await?, Some(b"hello".to_vec()));
        assert_eq!(read_frame(&mut b).await?, Some(Vec::new()));
        assert_eq!(read_frame(&mut b).await?, None);

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(MAX_FRAME as u32 + 1).to_le_bytes()).await?;
        let err = read_frame(&mut b).await.expect_err("too large");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        Ok(())
    }
}
