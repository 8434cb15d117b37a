//! The Rust client of the raft-bus HTTP API.
//!
//! Every node accepts every call, so the client keeps a list of nodes, sticks to the one that
//! answered last, and moves on to the next when a node is down, paused or without a leader.
//! Appends are idempotent by event id, so retrying them on another node is safe.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::bus::{
    AppendRequest, AppendResponse, ClusterInfo, EventsPage, RecordedEvent, StreamPage,
};
use crate::error::ErrorBody;
use crate::sse::SseParser;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URLs of the bus nodes, e.g. `http://127.0.0.1:7101`.
    pub nodes: Vec<String>,
    /// Bearer token, when the bus runs with `--token`.
    pub token: Option<String>,
    /// Limit for one HTTP request to one node.
    pub request_timeout: Duration,
    /// How long a call keeps trying other nodes before it gives up.
    pub retry_for: Duration,
    /// A subscription that hears nothing, not even a heartbeat, for this long reconnects.
    pub idle_timeout: Duration,
}

impl ClientConfig {
    pub fn new(nodes: Vec<String>, token: Option<String>) -> Self {
        ClientConfig {
            nodes,
            token,
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bus answered with an error that retrying elsewhere would not change.
    #[error("bus answered {status}: {} ({})", body.error.message, body.error.code)]
    Api { status: u16, body: ErrorBody },
    /// No node gave a usable answer before the retry deadline.
    #[error("no bus node answered: {0}")]
    Unavailable(String),
    #[error("unexpected answer from the bus: {0}")]
    Decode(String),
}

impl ClientError {
    /// The stable error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct BusClient {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    preferred: Arc<AtomicUsize>,
}

enum Attempt<T> {
    Done(Result<T, ClientError>),
    Retry(String),
}

impl BusClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.nodes.is_empty() {
            return Err(ClientError::Unavailable("no bus nodes configured".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        Ok(BusClient {
            http,
            config: Arc::new(config),
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub async fn append(&self, request: &AppendRequest) -> Result<AppendResponse, ClientError> {
        self.call(Method::POST, "/v1/append", Some(request)).await
    }

    pub async fn events(&self, from: u64, limit: u32) -> Result<EventsPage, ClientError> {
        let path = format!("/v1/events?from={from}&limit={limit}");
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<StreamPage, ClientError> {
        let path = format!(
            "/v1/streams/{}?fromVersion={from_version}&limit={limit}",
            percent_encode(stream)
        );
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Sends a command and waits for its result. Retrying with the same id (as this does across
    /// nodes and leader changes) never executes it twice.
    pub async fn send_command(
        &self,
        command: &crate::commands::CommandRequest,
    ) -> Result<crate::commands::CommandResponse, ClientError> {
        // The trace context as a header, not in the body: a bus of an older version knows no
        // `traceparent` field and would refuse the command.
        let mut body = command.clone();
        let context = body.traceparent.take();
        let header = context.as_deref().map(|c| (crate::trace::HEADER, c));
        self.call_with(Method::POST, "/v1/commands", Some(&body), header)
            .await
    }

    pub async fn cluster(&self) -> Result<ClusterInfo, ClientError> {
        self.call(Method::GET, "/v1/cluster", None::<&()>).await
    }

    /// One call, retried on other nodes while they are unreachable or leaderless.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        self.call_with(method, path, body, None).await
    }

    /// `call` with one more request header.
    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        header: Option<(&str, &str)>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + self.config.retry_for;
        let mut backoff = Duration::from_millis(20);
        let n = self.config.nodes.len();
        let mut attempt = 0usize;
        loop {
            let index = (self.preferred.load(Ordering::Relaxed) + attempt) % n;
            let url = format!("{}{}", self.config.nodes[index], path);
            match self.try_once(method.clone(), &url, body, header).await {
                Attempt::Done(result) => {
                    if result.is_ok() {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return result;
                }
                Attempt::Retry(why) => {
                    attempt += 1;
                    if Instant::now() >= deadline {
                        return Err(ClientError::Unavailable(why));
                    }
                    tracing::debug!(%url, %why, "bus node unusable, trying the next");
                    // Walk the whole list once quickly, then back off between rounds.
                    if attempt.is_multiple_of(n) {
                        tokio::time::sleep(backoff.min(deadline - Instant::now())).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
    }

    async fn try_once<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&impl Serialize>,
        header: Option<(&str, &str)>,
    ) -> Attempt<T> {
        let mut req = self
            .http
            .request(method, url)
            .timeout(self.config.request_timeout);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        if let Some(token) = &self.config.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("{url}: {e}")),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(format!("{url}: {e}")),
        };
        if status.is_success() {
            // 204 and other empty answers read as JSON `null`.
            let json: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return Attempt::Done(
                serde_json::from_slice(json).map_err(|e| ClientError::Decode(e.to_string())),
            );
        }
        let error = api_error(status, &bytes);
        if is_retryable(status, error.code()) {
            return Attempt::Retry(format!("{url}: {error}"));
        }
        Attempt::Done(Err(error))
    }

    /// Opens a long-lived GET (an SSE stream) on the node `attempt` steps after the preferred
    /// one; `None` when that node does not answer with success.
    pub async fn open_stream(&self, path: &str, attempt: usize) -> Option<reqwest::Response> {
        let n = self.config.nodes.len();
        let index = (self.preferred.load(Ordering::Relaxed) + attempt) % n;
        let url = format!("{}{}", self.config.nodes[index], path);
        let mut req = self.http.get(&url).header("accept", "text/event-stream");
        if let Some(token) = &self.config.token {
            req = req.bearer_auth(token);
        }
        match tokio::time::timeout(self.config.request_timeout, req.send()).await {
            Ok(Ok(resp)) if resp.status().is_success() => Some(resp),
            Ok(Ok(resp)) => {
                tracing::debug!(%url, status = %resp.status(), "stream refused");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(%url, error = %e, "stream failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Every committed event from `from` on, in order, each exactly once, following the live
    /// tail; reconnects to the next node (resuming after the last event seen) when a node fails.
    /// Ends only on an error that retrying would not fix.
    pub fn subscribe(
        &self,
        from: u64,
    ) -> Pin<Box<dyn Stream<Item = Result<RecordedEvent, ClientError>> + Send>> {
        let client = self.clone();
        Box::pin(async_stream::stream! {
            let mut next = from.max(1);
            let mut attempt = 0usize;
            let mut backoff = Duration::from_millis(20);
            loop {
                let n = client.config.nodes.len();
                let index = (client.preferred.load(Ordering::Relaxed) + attempt) % n;
                let url = format!("{}/v1/subscribe?from={next}", client.config.nodes[index]);
                let mut req = client.http.get(&url).header("accept", "text/event-stream");
                if let Some(token) = &client.config.token {
                    req = req.bearer_auth(token);
                }
                let resp = match tokio::time::timeout(client.config.request_timeout, req.send()).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => { tracing::debug!(%url, error = %e, "subscribe failed"); attempt += 1; tokio::time::sleep(backoff).await; backoff = (backoff * 2).min(Duration::from_millis(500)); continue; }
                    Err(_) => { attempt += 1; continue; }
                };
                let status = resp.status();
                if !status.is_success() {
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let error = api_error(status, &bytes);
                    if is_retryable(status, error.code()) {
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    yield Err(error);
                    return;
                }
                backoff = Duration::from_millis(20);
                let mut parser = SseParser::new();
                let mut body = resp.bytes_stream();
                loop {
                    let chunk = match tokio::time::timeout(client.config.idle_timeout, body.next()).await {
                        Ok(Some(Ok(c))) => c,
                        Ok(Some(Err(e))) => { tracing::debug!(%url, error = %e, "subscription broke"); break; }
                        Ok(None) => break,
                        Err(_) => { tracing::debug!(%url, "subscription idle past its timeout"); break; }
                    };
                    for msg in parser.feed(&chunk) {
                        let event: RecordedEvent = match serde_json::from_str(&msg.data) {
                            Ok(e) => e,
                            Err(e) => { yield Err(ClientError::Decode(e.to_string())); return; }
                        };
                        if event.position < next {
                            continue;
                        }
                        if event.position > next {
                            yield Err(ClientError::Decode(format!("gap in subscription: expected position {next}, got {}", event.position)));
                            return;
                        }
                        next += 1;
                        yield Ok(event);
                    }
                }
                // This node went away or stalled: resume on the next one.
                attempt += 1;
            }
        })
    }
}

/// Worth trying again, on this or another node: the cluster is between leaders or a node is
/// going away. Not a command's own `no_handler` or `timeout`, which already waited their time.
fn is_retryable(status: StatusCode, code: Option<&str>) -> bool {
    match status {
        StatusCode::BAD_GATEWAY => true,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            !matches!(code, Some("no_handler" | "timeout" | "overloaded"))
        }
        _ => false,
    }
}

fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| {
        ErrorBody::new(
            "unexpected_answer",
            String::from_utf8_lossy(bytes).into_owned(),
        )
    });
    ClientError::Api {
        status: status.as_u16(),
        body,
    }
}

/// Percent-encodes a value for use as one path segment or query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
