//! Command routing, on the leader only, in memory.
//!
//! Every node forwards command calls to the leader, so one router sees every handler and every
//! command. Commands are not written to the Raft log (as in Axon Server): a command lives
//! while its sender waits. What makes this safe:
//! - a sender retries with the same id after any failure (leader lost, node killed, 503);
//! - the router answers a repeated id from its recent results, or joins the waiting sender;
//! - a handler that disconnects hands its unanswered commands to another handler of the key;
//! - handlers dedupe by command id, so a command delivered twice is executed once.
//!
//! When this node stops being the leader (or loses its quorum), the router drops every handler
//! connection and fails every waiting sender with `no_leader`: both retry, and find the new
//! leader through the node they talk to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use taskpool_api::commands::{CommandMessage, CommandRequest};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::metrics;

/// How long answered commands are remembered for senders that retry.
const RESULT_TTL: Duration = Duration::from_secs(600);
const MAX_RESULTS: usize = 100_000;
/// Commands waiting at once; beyond this a sender gets `overloaded`.
const MAX_PENDING: usize = 100_000;

/// How a command ended, as its sender sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(Value),
    Failed {
        status: u16,
        code: String,
        message: String,
    },
}

impl Outcome {
    fn failed(status: u16, code: &str, message: impl Into<String>) -> Self {
        Outcome::Failed {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub(crate) fn label(&self) -> &str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Failed { code, .. } => code,
        }
    }
}

/// Why a handler's answer was refused.
#[derive(Debug, PartialEq)]
pub enum ResultRefused {
    Unknown,
    AlreadyAnswered,
    Expired,
    NotYours,
    /// The caller may not answer commands of this routing key.
    NotYourKey(String),
}

/// A handler's identity: the bus client that connected it (empty without `--credentials`) and
/// the handler id it chose. Ids are per client, so one client cannot take over another's.
type HandlerKey = (String, String);

/// A handler connection: `types` × `routing_keys` it serves, and the queue of its SSE stream.
struct Handler {
    key: HandlerKey,
    types: HashSet<String>,
    keys: HashSet<String>,
    tx: mpsc::UnboundedSender<Arc<CommandMessage>>,
    in_flight: usize,
}

struct Pending {
    message: Arc<CommandMessage>,
    deadline: Instant,
    assigned: Option<u64>,
    /// Every handler the command was given to: each may answer it.
    offered: HashSet<HandlerKey>,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

#[derive(Default)]
struct State {
    leading: bool,
    next_conn: u64,
    handlers: HashMap<u64, Handler>,
    pending: HashMap<Uuid, Pending>,
    answered: HashMap<Uuid, Outcome>,
    /// Commands whose senders stopped waiting: a late result is refused, a resend runs anew.
    expired: HashSet<Uuid>,
    remembered: VecDeque<(Instant, Uuid)>,
}

#[derive(Clone, Default)]
pub struct CommandRouter {
    state: Arc<Mutex<State>>,
}

/// Unregisters its handler connection when the SSE stream is dropped.
pub struct Registration {
    router: CommandRouter,
    conn: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.router.unregister(self.conn);
    }
}

impl State {
    /// Gives a command to the least busy live handler of its type and key.
    fn dispatch(&mut self, id: Uuid) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let message = p.message.clone();
        loop {
            let choice = self
                .handlers
                .iter()
                .filter(|(_, h)| {
                    h.types.contains(&message.command_type) && h.keys.contains(&message.routing_key)
                })
                .min_by_key(|(conn, h)| (h.in_flight, **conn))
                .map(|(conn, _)| *conn);
            let Some(conn) = choice else { return };
            let handler = self.handlers.get_mut(&conn).expect("chosen handler exists");
            if handler.tx.send(message.clone()).is_err() {
                // Its stream is gone; forget it and try the next one.
                self.handlers.remove(&conn);
                continue;
            }
            handler.in_flight += 1;
            let handler_key = handler.key.clone();
            metrics::COMMANDS_ROUTED.inc();
            let p = self.pending.get_mut(&id).expect("pending");
            p.assigned = Some(conn);
            p.offered.insert(handler_key);
            return;
        }
    }

    /// Ends a waiting command: frees its handler's slot and answers everyone waiting on it.
    fn end(&mut self, id: Uuid, outcome: &Outcome) {
        if let Some(p) = self.pending.remove(&id) {
            if let Some(h) = p.assigned.and_then(|c| self.handlers.get_mut(&c)) {
                h.in_flight = h.in_flight.saturating_sub(1);
            }
            for w in p.waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    /// Hands the command back to the dispatcher: its handler left or was replaced.
    fn release(&mut self, ids: Vec<Uuid>) {
        for id in ids {
            if let Some(p) = self.pending.get_mut(&id) {
                p.assigned = None;
            }
            self.dispatch(id);
        }
    }

    fn finish(&mut self, id: Uuid, outcome: Outcome) {
        self.end(id, &outcome);
        self.expired.remove(&id);
        self.answered.insert(id, outcome);
        self.remember(id);
    }

    /// Keeps `id` among the recent answers or expiries, forgetting the oldest ones.
    fn remember(&mut self, id: Uuid) {
        let now = Instant::now();
        while let Some((at, old)) = self.remembered.front() {
            if self.remembered.len() < MAX_RESULTS && now.duration_since(*at) < RESULT_TTL {
                break;
            }
            self.answered.remove(old);
            self.expired.remove(old);
            self.remembered.pop_front();
        }
        self.remembered.push_back((now, id));
    }

    fn handler_gauges(&self) {
        metrics::COMMAND_HANDLERS.reset();
        for h in self.handlers.values() {
            for k in &h.keys {
                metrics::COMMAND_HANDLERS.with_label_values(&[k]).inc();
            }
        }
    }
}

impl CommandRouter {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("router lock")
    }

    /// Whether this node routes commands (it leads, with a quorum behind it).
    pub fn is_leading(&self) -> bool {
        self.lock().leading
    }

    /// Called when leadership changes: a router that stops leading lets go of everything.
    pub fn set_leading(&self, leading: bool) {
        let mut st = self.lock();
        if st.leading == leading {
            return;
        }
        st.leading = leading;
        if !leading {
            st.handlers.clear();
            for (_, p) in st.pending.drain() {
                for w in p.waiters {
                    let _ = w.send(Outcome::failed(
                        503,
                        "no_leader",
                        "the bus leader changed while the command waited; retry with the same id",
                    ));
                }
            }
            st.handler_gauges();
        }
    }

    /// Sends a command and waits for its result until its deadline.
    pub async fn send(&self, req: CommandRequest, timeout: Duration) -> Outcome {
        let started = Instant::now();
        let rx = {
            let mut st = self.lock();
            if !st.leading {
                return Outcome::failed(
                    503,
                    "no_leader",
                    "this node does not route commands now; retry",
                );
            }
            if let Some(done) = st.answered.get(&req.id) {
                return done.clone();
            }
            let (tx, rx) = oneshot::channel();
            if let Some(p) = st.pending.get_mut(&req.id) {
                // The same command sent again while it runs: wait for the one result.
                p.waiters.push(tx);
            } else {
                if st.pending.len() >= MAX_PENDING {
                    return Outcome::failed(
                        503,
                        "overloaded",
                        "too many commands waiting; retry later",
                    );
                }
                let deadline = SystemTime::now() + timeout;
                let message = CommandMessage {
                    id: req.id,
                    command_type: req.command_type,
                    routing_key: req.routing_key,
                    payload: req.payload,
                    deadline: humantime::format_rfc3339_millis(deadline).to_string(),
                    traceparent: req.traceparent,
                };
                st.pending.insert(
                    req.id,
                    Pending {
                        message: Arc::new(message),
                        deadline: Instant::now() + timeout,
                        assigned: None,
                        offered: HashSet::new(),
                        waiters: vec![tx],
                    },
                );
                metrics::COMMANDS_SENT.inc();
                st.dispatch(req.id);
            }
            rx
        };
        let outcome = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::failed(
                503,
                "no_leader",
                "the router stopped; retry with the same id",
            ),
            Err(_) => self.expire(req.id),
        };
        metrics::COMMANDS_DONE
            .with_label_values(&[outcome.label()])
            .inc();
        metrics::COMMAND_SECONDS.observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// A sender's wait ran out: the command ends as `no_handler` or `timeout` for everyone
    /// waiting on it once its own deadline has passed.
    fn expire(&self, id: Uuid) -> Outcome {
        let mut st = self.lock();
        if let Some(done) = st.answered.get(&id) {
            return done.clone();
        }
        let Some(p) = st.pending.get(&id) else {
            return Outcome::failed(504, "timeout", "no result before the deadline");
        };
        let outcome = if !p.offered.is_empty() {
            Outcome::failed(
                504,
                "timeout",
                "the handler did not answer before the deadline",
            )
        } else {
            Outcome::failed(
                503,
                "no_handler",
                "no handler is subscribed for this command type and routing key",
            )
        };
        if p.deadline <= Instant::now() {
            st.end(id, &outcome);
            st.expired.insert(id);
            st.remember(id);
        }
        outcome
    }

    /// Connects a handler of client `owner`. A connection with the same owner and handler id
    /// replaces the older one, whose commands move to the new connection (or another handler).
    pub fn register(
        &self,
        handler_id: String,
        owner: String,
        types: HashSet<String>,
        keys: HashSet<String>,
    ) -> Option<(Registration, mpsc::UnboundedReceiver<Arc<CommandMessage>>)> {
        let mut st = self.lock();
        if !st.leading {
            return None;
        }
        let key = (owner, handler_id);
        let stale: Vec<u64> = st
            .handlers
            .iter()
            .filter(|(_, h)| h.key == key)
            .map(|(c, _)| *c)
            .collect();
        for c in &stale {
            st.handlers.remove(c);
        }
        st.next_conn += 1;
        let conn = st.next_conn;
        let (tx, rx) = mpsc::unbounded_channel();
        st.handlers.insert(
            conn,
            Handler {
                key,
                types,
                keys,
                tx,
                in_flight: 0,
            },
        );
        let waiting: Vec<Uuid> = st
            .pending
            .iter()
            .filter(|(_, p)| p.assigned.is_none_or(|c| stale.contains(&c)))
            .map(|(id, _)| *id)
            .collect();
        st.release(waiting);
        st.handler_gauges();
        Some((
            Registration {
                router: self.clone(),
                conn,
            },
            rx,
        ))
    }

    fn unregister(&self, conn: u64) {
        let mut st = self.lock();
        if st.handlers.remove(&conn).is_none() {
            return;
        }
        let orphans: Vec<Uuid> = st
            .pending
            .iter()
            .filter(|(_, p)| p.assigned == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        st.release(orphans);
        st.handler_gauges();
    }

    /// A handler's answer; accepted from any handler the command was given to (one that lost
    /// its connection may still have executed it), refused from any other, and from a caller
    /// `may_answer` refuses for the command's routing key.
    pub fn complete(
        &self,
        id: Uuid,
        handler_id: &str,
        owner: &str,
        outcome: Outcome,
        may_answer: impl FnOnce(&str) -> bool,
    ) -> Result<(), ResultRefused> {
        let mut st = self.lock();
        let Some(p) = st.pending.get(&id) else {
            return Err(if st.answered.contains_key(&id) {
                ResultRefused::AlreadyAnswered
            } else if st.expired.contains(&id) {
                ResultRefused::Expired
            } else {
                ResultRefused::Unknown
            });
        };
        if !may_answer(&p.message.routing_key) {
            return Err(ResultRefused::NotYourKey(p.message.routing_key.clone()));
        }
        if !p
            .offered
            .contains(&(owner.to_owned(), handler_id.to_owned()))
        {
            return Err(ResultRefused::NotYours);
        }
        st.finish(id, outcome);
        Ok(())
    }
}
