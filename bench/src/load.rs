//! Closed-loop load: each connection sends one request, waits for the answer, sends the next.
//! One generator drives every benchmark: an [`Op`] says what one request is; [`Http`] is
//! the append / put of the bus benchmark, where etcd and raft-bus differ only in body and path.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::Kind;
use crate::raw_http::Connection;

/// A request not answered in this time counts as an error (and its connection is dropped).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send and where.
#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    pub urls: Vec<String>,
    pub token: Option<String>,
    /// Events (bus) or puts in one txn (etcd) per request.
    pub batch: usize,
    pub payload_bytes: usize,
    pub connections: usize,
}

const NONE: u64 = u64::MAX;

/// State shared by the workers of one run; times are nanoseconds since `origin`.
struct Shared {
    origin: Instant,
    /// Requests completing from here on are recorded (NONE: never).
    record_from: AtomicU64,
    acked_events: AtomicU64,
    /// Failover: the killed node, and when it was known dead.
    killed_node: AtomicUsize,
    dead_at: AtomicU64,
    /// Failover: completion time of the first 2xx sent after `dead_at` to a surviving node.
    first_ack: AtomicU64,
    cancel: CancellationToken,
}

impl Shared {
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.duration_since(self.origin).as_nanos()).unwrap_or(NONE - 1)
    }
}

#[derive(Default)]
pub struct Stats {
    /// 2xx answers inside the measured window.
    pub ok: u64,
    pub events: u64,
    /// Non-2xx status codes and transport errors, by kind.
    pub errors: BTreeMap<String, u64>,
    pub window: Duration,
    latencies_us: Vec<u64>,
}

impl Stats {
    pub fn requests_per_sec(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.window.as_secs_f64()
    }

    /// Latency percentile in milliseconds (q in 0..=1); sorted on merge.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let idx = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Some(self.latencies_us[idx] as f64 / 1000.0)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn error_summary(&self) -> String {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        parts.join(", ")
    }

    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.events += other.events;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies_us.extend(other.latencies_us);
    }
}

/// A load run in progress; `finish` stops it and returns the merged stats.
pub struct Running {
    shared: Arc<Shared>,
    workers: JoinSet<Stats>,
}

/// One request of a closed loop.
pub trait Op: Send + Sync + 'static {
    /// Sends request `seq` of loop `conn` and waits for its answer. Returns the node it went
    /// to (for the failover gap) and `Err` with a short label that groups errors in the report.
    fn call(
        &self,
        conn: usize,
        seq: u64,
    ) -> impl Future<Output = (usize, Result<(), String>)> + Send;
}

/// Starts the bus benchmark's appends (or etcd puts) on `target.connections` connections.
pub fn start(target: &Target) -> anyhow::Result<Running> {
    let http = Http::new(target)?;
    Ok(start_op(
        Arc::new(http),
        target.connections,
        target.batch as u64,
    ))
}

/// Starts `loops` closed loops of `op`; each answered request counts `events`.
pub fn start_op<O: Op>(op: Arc<O>, loops: usize, events: u64) -> Running {
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        record_from: AtomicU64::new(NONE),
        acked_events: AtomicU64::new(0),
        killed_node: AtomicUsize::new(usize::MAX),
        dead_at: AtomicU64::new(NONE),
        first_ack: AtomicU64::new(NONE),
        cancel: CancellationToken::new(),
    });
    let mut workers = JoinSet::new();
    for conn in 0..loops {
        workers.spawn(worker(op.clone(), conn, events, shared.clone()));
    }
    Running { shared, workers }
}

/// Warm-up, then a measured window. The sleeps set the window; they synchronise nothing.
pub async fn measure(run: Running, warmup: Duration, duration: Duration) -> Stats {
    tokio::time::sleep(warmup).await;
    run.record_from_now();
    tokio::time::sleep(duration).await;
    run.finish().await
}

impl Running {
    /// Record requests that complete from now on.
    pub fn record_from_now(&self) {
        let now = self.shared.nanos(Instant::now());
        self.shared.record_from.store(now, Ordering::SeqCst);
    }

    pub fn acked_events(&self) -> u64 {
        self.shared.acked_events.load(Ordering::Relaxed)
    }

    /// From now on, a 2xx for a request sent to any node but `node` ends the failover gap.
    pub fn mark_dead(&self, node: usize) {
        self.shared.killed_node.store(node, Ordering::SeqCst);
        let now = self.shared.nanos(Instant::now());
        self.shared.dead_at.store(now, Ordering::SeqCst);
    }

    /// When the first acknowledged request after `mark_dead` completed.
    pub fn first_ack_after_kill(&self) -> Option<Instant> {
        let ns = self.shared.first_ack.load(Ordering::SeqCst);
        (ns != NONE).then(|| self.shared.origin + Duration::from_nanos(ns))
    }

    pub async fn finish(mut self) -> Stats {
        let end = Instant::now();
        self.shared.cancel.cancel();
        let mut total = Stats::default();
        while let Some(res) = self.workers.join_next().await {
            if let Ok(stats) = res {
                total.merge(stats);
            }
        }
        let from = self.shared.record_from.load(Ordering::SeqCst);
        if from != NONE {
            total.window = end.duration_since(self.shared.origin + Duration::from_nanos(from));
        }
        total.latencies_us.sort_unstable();
        total
    }
}

async fn worker<O: Op>(op: Arc<O>, conn: usize, events: u64, shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::default();
    for seq in 0u64.. {
        let sent = Instant::now();
        let (node, result) = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            r = op.call(conn, seq) => r,
        };
        let done = Instant::now();
        let ok = result.is_ok();
        if ok {
            shared.acked_events.fetch_add(events, Ordering::Relaxed);
            let dead_at = shared.dead_at.load(Ordering::Relaxed);
            if dead_at != NONE
                && shared.nanos(sent) >= dead_at
                && shared.killed_node.load(Ordering::Relaxed) != node
            {
                shared
                    .first_ack
                    .fetch_min(shared.nanos(done), Ordering::SeqCst);
            }
        }
        if shared.nanos(done) >= shared.record_from.load(Ordering::Relaxed) {
            match result {
                Ok(()) => {
                    stats.ok += 1;
                    stats.events += events;
                    let us = u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(0);
                    stats.latencies_us.push(us);
                }
                Err(ref e) => *stats.errors.entry(e.clone()).or_default() += 1,
            }
        }
        if !ok {
            // Keeps a connection to a dead or leaderless node from spinning; 1 ms bounds
            // how much this can add to a measured failover gap.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stats
}

/// Appends to raft-bus or puts to etcd over plain HTTP, one keep-alive connection per loop.
struct Http {
    target: Target,
    /// Loop `i`'s connection, to node `i % nodes`; only its loop locks it.
    conns: Vec<tokio::sync::Mutex<Connection>>,
    /// Random once per run, as a JSON string: the benchmark measures the servers, not the
    /// payload generator.
    payload: String,
    /// A fresh key prefix per run keeps etcd keys unique across phases.
    run_id: u32,
}

impl Http {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let payload = match target.kind {
            Kind::Bus => Alphanumeric.sample_string(&mut rand::thread_rng(), target.payload_bytes),
            Kind::Etcd => {
                let mut raw = vec![0u8; target.payload_bytes];
                rand::thread_rng().fill_bytes(&mut raw);
                B64.encode(raw)
            }
        };
        let path = match target.kind {
            Kind::Bus => "/v1/append",
            Kind::Etcd if target.batch == 1 => "/v3/kv/put",
            Kind::Etcd => "/v3/kv/txn",
        };
        let conns = (0..target.connections)
            .map(|i| {
                let url = &target.urls[i % target.urls.len()];
                Connection::new(url, path, target.token.as_deref(), REQUEST_TIMEOUT)
                    .map(tokio::sync::Mutex::new)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Http {
            target: target.clone(),
            conns,
            payload: serde_json::to_string(&payload)?,
            run_id: rand::thread_rng().next_u32(),
        })
    }
}

impl Op for Http {
    async fn call(&self, conn: usize, seq: u64) -> (usize, Result<(), String>) {
        let node = conn % self.target.urls.len();
        let body = body(&self.target, conn, self.run_id, seq, &self.payload);
        let result = match self.conns[conn].lock().await.post(&body).await {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(format!("HTTP {status}")),
            Err(label) => Err(label),
        };
        (node, result)
    }
}

/// The request body, written directly: building `serde_json::Value` trees cost the load
/// generator a fifth of the machine in the batched phase, CPU both systems lost alike.
/// `payload` is already a JSON string.
fn body(target: &Target, conn: usize, run_id: u32, seq: u64, payload: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(target.batch * (payload.len() + 128) + 32);
    match target.kind {
        Kind::Bus => {
            out.push_str(r#"{"events":["#);
            for i in 0..target.batch {
                let sep = if i == 0 { "" } else { "," };
                let id = uuid::Uuid::new_v4();
                let _ = write!(
                    out,
                    r#"{sep}{{"stream":"bench-{conn}","type":"BenchEvent","data":{{"p":{payload}}},"id":"{id}"}}"#
                );
            }
            out.push_str("]}");
        }
        Kind::Etcd => {
            let put = |out: &mut String, i: usize| {
                let key = B64.encode(format!("bench/{run_id:08x}/{conn}/{seq}/{i}"));
                let _ = write!(out, r#"{{"key":"{key}","value":{payload}}}"#);
            };
            if target.batch == 1 {
                put(&mut out, 0);
            } else {
                out.push_str(r#"{"success":["#);
                for i in 0..target.batch {
                    out.push_str(if i == 0 {
                        r#"{"requestPut":"#
                    } else {
                        r#",{"requestPut":"#
                    });
                    put(&mut out, i);
                    out.push('}');
                }
                out.push_str("]}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn target(kind: Kind, batch: usize) -> Target {
        Target {
            kind,
            urls: vec!["http://127.0.0.1:1".into()],
            token: None,
            batch,
            payload_bytes: 8,
            connections: 1,
        }
    }

    #[test]
    fn bodies_are_the_json_each_system_expects() -> anyhow::Result<()> {
        let payload = serde_json::to_string("abc\"d")?;
        let bus: Value = serde_json::from_str(&body(&target(Kind::Bus, 3), 7, 1, 2, &payload))?;
        let events = bus["events"].as_array().expect("events");
        assert_eq!(events.len(), 3);
        assert_eq!(events[2]["stream"], "bench-7");
        assert_eq!(events[2]["data"]["p"], "abc\"d");
        assert!(uuid::Uuid::parse_str(events[0]["id"].as_str().expect("id")).is_ok());
        assert_ne!(events[0]["id"], events[1]["id"]);

        let put: Value = serde_json::from_str(&body(&target(Kind::Etcd, 1), 7, 1, 2, &payload))?;
        assert_eq!(put["value"], "abc\"d");
        assert_eq!(
            B64.decode(put["key"].as_str().expect("key"))?,
            b"bench/00000001/7/2/0"
        );
        let txn: Value = serde_json::from_str(&body(&target(Kind::Etcd, 2), 7, 1, 2, &payload))?;
        let ops = txn["success"].as_array().expect("success");
        assert_eq!(ops.len(), 2);
        assert_eq!(
            B64.decode(ops[1]["requestPut"]["key"].as_str().expect("key"))?,
            b"bench/00000001/7/2/1"
        );
        Ok(())
    }
}
