//! The clients of a fault run and their history: appenders (each event with its own id, to one
//! of a few streams, retried with the same id across nodes) and command senders, with two
//! handlers sharing one dedupe store that count every execution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, value::RawValue};
use taskpool_api::bus::{AppendRequest, NewEvent};
use taskpool_api::commands::{CommandRequest, CommandResult};
use taskpool_api::handler::{self, HandlerConfig, MemoryDedupe};
use taskpool_api::{BusClient, ClientConfig, ClientError};
use tokio::sync::watch;
use uuid::Uuid;

pub const STREAMS: usize = 8;
pub const COMMAND_TYPE: &str = "FaultProbe";
pub const ROUTING_KEY: &str = "faults";

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Acknowledged: an append at this position, or a command answered ok.
    Ok(u64),
    /// Refused for sure (nothing written or executed).
    Failed(String),
    /// No answer: it may or may not have happened (at most once).
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub kind: &'static str,
    pub id: Uuid,
    pub outcome: Outcome,
}

#[derive(Default)]
pub struct History {
    pub ops: Mutex<Vec<Op>>,
    /// Executions per command id, counted by the handlers.
    pub executions: Mutex<HashMap<Uuid, u32>>,
}

impl History {
    fn record(&self, kind: &'static str, id: Uuid, outcome: Outcome) {
        self.ops
            .lock()
            .expect("history")
            .push(Op { kind, id, outcome });
    }
}

pub fn client(nodes: Vec<String>, token: &str) -> BusClient {
    let mut config = ClientConfig::new(nodes, Some(token.to_owned()));
    config.request_timeout = Duration::from_secs(2);
    config.retry_for = Duration::from_secs(6);
    config.idle_timeout = Duration::from_secs(4);
    BusClient::new(config).expect("bus client")
}

/// Appends one event at a time until `stop`.
pub async fn appender(bus: BusClient, history: Arc<History>, mut stop: watch::Receiver<bool>) {
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let (id, request) = probe(n);
        let outcome = tokio::select! {
            o = append(&bus, &request) => o,
            _ = stop.changed() => Outcome::Unknown("stopped".into()),
        };
        history.record("append", id, outcome);
    }
}

/// A one-event append to a random probe stream, and its event id.
fn probe(n: u64) -> (Uuid, AppendRequest) {
    let id = Uuid::new_v4();
    let data = RawValue::from_string(json!({ "n": n }).to_string()).expect("json");
    let request = AppendRequest {
        events: vec![NewEvent {
            stream: format!("probe-{}", rand::random::<usize>() % STREAMS),
            event_type: "Probe".into(),
            data,
            metadata: None,
            id,
        }],
        expected_versions: Default::default(),
    };
    (id, request)
}

async fn append(bus: &BusClient, request: &AppendRequest) -> Outcome {
    match bus.append(request).await {
        Ok(r) => Outcome::Ok(r.events[0].position),
        // A 4xx is a refusal of the request itself; anything else may have been written
        // before the answer was lost.
        Err(
            e @ ClientError::Api {
                status: 400..=499, ..
            },
        ) => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

/// After the faults, one more append that must be acknowledged: committed in the current
/// leader's term, it commits every entry before it, so once all nodes have applied it nothing
/// written during the faults can still arrive. Returns its position.
pub async fn barrier(bus: &BusClient, history: &History) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (id, request) = probe(0);
        let outcome = append(bus, &request).await;
        history.record("append", id, outcome.clone());
        if let Outcome::Ok(position) = outcome {
            return Ok(position);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("no append was acknowledged within 60 s after the faults healed");
        }
    }
}

/// Sends one command at a time until `stop`.
pub async fn sender(bus: BusClient, history: Arc<History>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let id = Uuid::new_v4();
        let command = CommandRequest {
            id,
            command_type: COMMAND_TYPE.into(),
            routing_key: ROUTING_KEY.into(),
            payload: json!({}),
            timeout_ms: Some(5_000),
            traceparent: None,
        };
        let outcome = tokio::select! {
            r = bus.send_command(&command) => match r {
                // A failure would be an error answer: this is the handler's result.
                Ok(r) if r.result["executed"] == true => Outcome::Ok(0),
                Ok(r) => Outcome::Unknown(format!("answered {}", r.result)),
                Err(e) => Outcome::Unknown(e.to_string()),
            },
            _ = stop.changed() => Outcome::Unknown("stopped".into()),
        };
        history.record("command", id, outcome);
    }
}

/// Two handlers of the probe commands sharing one dedupe store, as two collectors of one
/// application share theirs; each execution is counted.
pub fn handlers(
    bus: &BusClient,
    history: &Arc<History>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let dedupe = Arc::new(MemoryDedupe::new(1_000_000));
    (1..=2)
        .map(|h| {
            let config = HandlerConfig {
                handler_id: format!("probe-handler-{h}"),
                types: vec![COMMAND_TYPE.into()],
                routing_keys: vec![ROUTING_KEY.into()],
                concurrency: 8,
            };
            let history = history.clone();
            let execute = move |command: taskpool_api::commands::CommandMessage| {
                let history = history.clone();
                async move {
                    *history
                        .executions
                        .lock()
                        .expect("executions")
                        .entry(command.id)
                        .or_default() += 1;
                    CommandResult::success("", json!({ "executed": true }))
                }
            };
            tokio::spawn(handler::run(
                bus.clone(),
                config,
                dedupe.clone(),
                execute,
                stop.clone(),
            ))
        })
        .collect()
}
