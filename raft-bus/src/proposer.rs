//! Gathers concurrent appends into one Raft log entry, and carries a follower's appends to
//! the leader in one request.
//!
//! Every entry costs RPCs, transactions and fsyncs on three nodes, so the fewer entries carry
//! the appends, the more appends a second. On the leader, while an entry is being written,
//! replicated and applied, new appends queue up and the next entry carries all of them; a
//! group overlaps with the one in flight only once it is full. Under load an entry carries
//! hundreds of appends; alone, an append still goes out at once. On a follower appends are
//! gathered the same way and travel to the leader as one internal request (`/raft/propose`),
//! where they join the leader's own queue: followers never forward appends one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::rpc_stream::{CallError, Connections, Kind};
use crate::types::{decode, encode, AppendBatch, AppendCommand, ApplyOutcome, BatchOutcome, Raft};

/// Groups the leader commits at once. A group that is not full waits while another is being
/// committed and gathers what arrives (forwarded groups included): under load entries are
/// few and large, so per-entry costs (RPCs, transactions, fsyncs) are shared by many appends,
/// and only full groups overlap. Measured against fixed limits in docs/BENCHMARKS.md.
const COMMITTING: usize = 4;
/// Groups a follower has on their way to the leader at once. They do not wait for each
/// other: a forward stuck on a leader that was cut off must not hold the next one.
const FORWARDING: usize = 4;
/// How often a waiting group looks whether it has filled.
const GATHER_CHECK: Duration = Duration::from_millis(1);
/// Appends gathered into one entry at most.
const MAX_BATCHES: usize = 1024;
/// Events gathered into one entry at most.
const MAX_EVENTS: usize = 5_000;
/// An entry stops gathering at about this many bytes, which keeps AppendEntries RPCs and
/// applies short.
const MAX_ENTRY_BYTES: usize = 250 << 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProposeError {
    /// No leader to take the append right now; the client retries.
    NoLeader,
    /// Not committed in time: it may still be; the client retries with the same ids.
    Timeout,
    Unavailable(String),
}

struct Job {
    batch: AppendBatch,
    /// Jobs that came from another node are not forwarded again.
    forwardable: bool,
    reply: oneshot::Sender<Result<BatchOutcome, ProposeError>>,
}

/// How to reach the leader from a follower.
#[derive(Clone)]
pub struct Forwarding {
    http: reqwest::Client,
    token: Option<String>,
    /// RPC streams by node address ([`crate::rpc_stream`]).
    streams: Arc<Mutex<HashMap<String, Arc<Connections>>>>,
}

impl Forwarding {
    pub fn new(http: reqwest::Client, token: Option<String>) -> Self {
        Forwarding {
            http,
            token,
            streams: Arc::default(),
        }
    }

    fn stream(&self, addr: &str) -> Arc<Connections> {
        let mut streams = self.streams.lock().expect("streams lock");
        if let Some(c) = streams.get(addr) {
            return c.clone();
        }
        let c = Arc::new(Connections::new(
            self.http.clone(),
            self.token.clone(),
            addr.to_string(),
        ));
        streams.insert(addr.to_string(), c.clone());
        c
    }
}

#[derive(Clone)]
pub struct Proposer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Proposer {
    pub fn start(raft: Raft, forwarding: Forwarding, commit_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, forwarding, rx, commit_timeout));
        Proposer { jobs: tx }
    }

    /// Appends one client's batch, on this node or through the leader.
    pub async fn propose(&self, batch: AppendBatch) -> Result<BatchOutcome, ProposeError> {
        self.submit(batch, true).await
    }

    /// Appends batches a follower forwarded; never forwards them again.
    pub async fn propose_forwarded(
        &self,
        batches: Vec<AppendBatch>,
    ) -> Vec<Result<BatchOutcome, ProposeError>> {
        let pending: Vec<_> = batches.into_iter().map(|b| self.submit(b, false)).collect();
        futures::future::join_all(pending).await
    }

    async fn submit(
        &self,
        batch: AppendBatch,
        forwardable: bool,
    ) -> Result<BatchOutcome, ProposeError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || ProposeError::Unavailable("the proposer has stopped".into());
        self.jobs
            .send(Job {
                batch,
                forwardable,
                reply,
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Appends gathered into one entry, or one forward.
struct Group {
    jobs: Vec<Job>,
    events: usize,
    bytes: usize,
}

impl Group {
    fn new(first: Job) -> Self {
        let mut group = Group {
            jobs: Vec::new(),
            events: 0,
            bytes: 0,
        };
        group.add(first);
        group
    }

    fn add(&mut self, job: Job) {
        self.events += job.batch.events.len();
        self.bytes += job.batch.weight();
        self.jobs.push(job);
    }

    fn is_full(&self) -> bool {
        self.jobs.len() >= MAX_BATCHES || self.events >= MAX_EVENTS || self.bytes >= MAX_ENTRY_BYTES
    }

    /// Takes what is queued, up to full.
    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<Job>) {
        while !self.is_full() {
            match rx.try_recv() {
                Ok(job) => self.add(job),
                Err(_) => break,
            }
        }
    }
}

async fn run(
    raft: Raft,
    forwarding: Forwarding,
    mut rx: mpsc::UnboundedReceiver<Job>,
    commit_timeout: Duration,
) {
    let committing = Arc::new(Semaphore::new(COMMITTING));
    let forwarding_slots = Arc::new(Semaphore::new(FORWARDING));
    let committed = Arc::new(Notify::new());
    while let Some(first) = rx.recv().await {
        let on_leader = !matches!(leader(&raft), Leader::At(_));
        let slots = if on_leader {
            &committing
        } else {
            &forwarding_slots
        };
        // Wait for a free slot first: appends arriving meanwhile join this group.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut group = Group::new(first);
        group.drain(&mut rx);
        while on_leader && !group.is_full() {
            let one_done = committed.notified();
            tokio::pin!(one_done);
            one_done.as_mut().enable();
            if committing.available_permits() + 1 == COMMITTING {
                break; // nothing else is being committed
            }
            // Woken when a commit ends, or to look whether the group has filled meanwhile.
            let _ = tokio::time::timeout(GATHER_CHECK, &mut one_done).await;
            group.drain(&mut rx);
        }
        let (raft, forwarding, committed) = (raft.clone(), forwarding.clone(), committed.clone());
        tokio::spawn(async move {
            let jobs = group.jobs;
            match leader(&raft) {
                Leader::Me => commit(&raft, &forwarding, jobs, commit_timeout).await,
                Leader::At(addr) => forward(&forwarding, &addr, jobs, commit_timeout).await,
                Leader::Unknown => answer_all(jobs, ProposeError::NoLeader),
            }
            drop(slot);
            committed.notify_waiters();
        });
    }
}

/// Who leads, as this node's Raft core knows it.
pub(crate) enum Leader {
    Me,
    At(String),
    Unknown,
}

pub(crate) fn leader(raft: &Raft) -> Leader {
    let m = raft.metrics().borrow().clone();
    match m.current_leader {
        Some(l) if l == m.id => Leader::Me,
        Some(l) => match m.membership_config.membership().get_node(&l) {
            Some(node) => Leader::At(node.addr.clone()),
            None => Leader::Unknown,
        },
        None => Leader::Unknown,
    }
}

fn answer_all(jobs: Vec<Job>, error: ProposeError) {
    for job in jobs {
        let _ = job.reply.send(Err(error.clone()));
    }
}

async fn commit(raft: &Raft, forwarding: &Forwarding, jobs: Vec<Job>, commit_timeout: Duration) {
    let mut batches = Vec::with_capacity(jobs.len());
    let mut waiting = Vec::with_capacity(jobs.len());
    for job in jobs {
        batches.push(job.batch);
        waiting.push((job.forwardable, job.reply));
    }
    let batches = Arc::new(batches);
    let command = AppendCommand {
        batches: batches.clone(),
        timestamp_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let error = match tokio::time::timeout(commit_timeout, raft.client_write(command)).await {
        Err(_) => ProposeError::Timeout,
        Ok(Ok(resp)) => match resp.data {
            ApplyOutcome::Batches(outcomes) if outcomes.len() == waiting.len() => {
                for ((_, reply), outcome) in waiting.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                return;
            }
            other => ProposeError::Unavailable(format!(
                "the state machine answered {other:?} for {} appends",
                waiting.len()
            )),
        },
        // Leadership moved since the group was gathered.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => match f.leader_node {
            Some(node) => {
                let jobs = waiting
                    .into_iter()
                    .zip(batches.iter().cloned())
                    .map(|((forwardable, reply), batch)| Job {
                        batch,
                        forwardable,
                        reply,
                    })
                    .collect();
                return forward(forwarding, &node.addr, jobs, commit_timeout).await;
            }
            None => ProposeError::NoLeader,
        },
        Ok(Err(e)) => ProposeError::Unavailable(e.to_string()),
    };
    for (_, reply) in waiting {
        let _ = reply.send(Err(error.clone()));
    }
}

/// Sends a group to the leader's `/raft/propose`; jobs that came from another node are not
/// sent on, so an append crosses at most one hop.
#[tracing::instrument(level = "debug", skip_all, fields(leader = addr, appends = jobs.len()))]
async fn forward(forwarding: &Forwarding, addr: &str, jobs: Vec<Job>, commit_timeout: Duration) {
    let (jobs, local): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.forwardable);
    answer_all(local, ProposeError::NoLeader);
    if jobs.is_empty() {
        return;
    }
    let batches: Vec<&AppendBatch> = jobs.iter().map(|j| &j.batch).collect();
    let body = encode(&batches);
    let ttl = commit_timeout + Duration::from_secs(2);
    // A failed send may still have been committed: the client retries with the same ids.
    let bytes = match forwarding
        .stream(addr)
        .call(Kind::Propose, &body, ttl)
        .await
    {
        Ok(bytes) => Ok(bytes),
        Err(CallError::NotSupported) => forward_over_http(forwarding, addr, body, ttl).await,
        Err(CallError::Unreachable(_) | CallError::Failed(_)) => Err(ProposeError::NoLeader),
    };
    let outcomes = bytes.and_then(|bytes| {
        decode::<Vec<Result<BatchOutcome, ProposeError>>>(&bytes)
            .map_err(|e| ProposeError::Unavailable(format!("undecodable answer from {addr}: {e}")))
    });
    match outcomes {
        Ok(outcomes) if outcomes.len() == jobs.len() => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
        }
        Ok(_) => answer_all(
            jobs,
            ProposeError::Unavailable(
                "the leader answered for a different number of appends".into(),
            ),
        ),
        Err(e) => answer_all(jobs, e),
    }
}

/// The group to `/raft/propose` of a leader without RPC streams.
async fn forward_over_http(
    forwarding: &Forwarding,
    addr: &str,
    body: Vec<u8>,
    ttl: Duration,
) -> Result<Vec<u8>, ProposeError> {
    let mut req = forwarding
        .http
        .post(format!("http://{addr}/raft/propose"))
        .timeout(ttl)
        .body(body);
    if let Some(token) = &forwarding.token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|_| ProposeError::NoLeader)?;
    if !resp.status().is_success() {
        return Err(ProposeError::Unavailable(format!(
            "the leader at {addr} answered {}",
            resp.status()
        )));
    }
    let bytes = resp.bytes().await.map_err(|_| ProposeError::NoLeader)?;
    Ok(bytes.to_vec())
}
