//! Command routing across three real bus nodes, with handlers speaking HTTP to the nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use taskpool_api::commands::{CommandMessage, CommandRequest, CommandResult};
use taskpool_api::handler::{self, HandlerConfig, MemoryDedupe};
use taskpool_api::BusClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::harness::{wait_for, Cluster, TOKEN};

/// Executions per command id, shared by every handler of a test (as their store would be).
type Ledger = Arc<Mutex<HashMap<Uuid, Vec<String>>>>;

fn command(key: &str, n: u64, timeout_ms: u64) -> CommandRequest {
    CommandRequest {
        id: Uuid::new_v4(),
        command_type: "ClaimTask".into(),
        routing_key: key.into(),
        payload: json!({"taskId": format!("t-{n}"), "user": "alice"}),
        timeout_ms: Some(timeout_ms),
        traceparent: None,
    }
}

/// A handler of `ClaimTask` for one routing key.
fn claim_handler(id: &str, key: &str) -> HandlerConfig {
    HandlerConfig {
        handler_id: id.into(),
        types: vec!["ClaimTask".into()],
        routing_keys: vec![key.into()],
        concurrency: 4,
    }
}

struct TestHandler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TestHandler {
    /// A handler that records each execution in the ledger and answers with the payload;
    /// a payload with `"fail": true` is answered 409.
    fn start(
        client: BusClient,
        id: &str,
        key: &str,
        ledger: Ledger,
        dedupe: Arc<MemoryDedupe>,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let name = id.to_string();
        let config = HandlerConfig {
            concurrency: 16,
            ..claim_handler(id, key)
        };
        let task = tokio::spawn(handler::run(
            client,
            config,
            dedupe,
            move |cmd: CommandMessage| {
                let (ledger, name) = (ledger.clone(), name.clone());
                async move {
                    ledger
                        .lock()
                        .expect("ledger")
                        .entry(cmd.id)
                        .or_default()
                        .push(name.clone());
                    if cmd.payload["fail"] == json!(true) {
                        CommandResult::failure(
                            &name,
                            409,
                            "task_claimed",
                            "someone else holds the task",
                        )
                    } else {
                        CommandResult::success(&name, json!({"by": name, "echo": cmd.payload}))
                    }
                }
            },
            stop_rx,
        ));
        TestHandler { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Handlers `a` and `b` of `app-1`, connected to `nodes[0]` and `nodes[1]`, sharing the ledger
/// and the dedupe store; returns once the leader knows both.
async fn start_a_and_b(
    cluster: &Cluster,
    nodes: [&[u64]; 2],
    ledger: &Ledger,
    dedupe: &Arc<MemoryDedupe>,
) -> [TestHandler; 2] {
    let start = |nodes: &[u64], id: &str| {
        TestHandler::start(
            cluster.client(nodes),
            id,
            "app-1",
            ledger.clone(),
            dedupe.clone(),
        )
    };
    let handlers = [start(nodes[0], "a"), start(nodes[1], "b")];
    wait_handlers(cluster, "app-1", 2).await;
    handlers
}

pub(crate) async fn wait_handlers(cluster: &Cluster, key: &str, n: usize) {
    let http = cluster.http().clone();
    let urls: Vec<String> = cluster
        .running()
        .iter()
        .map(|id| cluster.node(*id).url())
        .collect();
    wait_for(
        &format!("{n} handlers of {key} on the leader"),
        Duration::from_secs(30),
        || {
            let (http, urls) = (http.clone(), urls.clone());
            async move {
                for url in urls {
                    let text = http
                        .get(format!("{url}/metrics"))
                        .send()
                        .await
                        .ok()?
                        .text()
                        .await
                        .ok()?;
                    let line = format!("raftbus_command_handlers{{routing_key=\"{key}\"}} {n}");
                    if text.lines().any(|l| l == line) {
                        return Some(());
                    }
                }
                None
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_round_trip_through_followers() {
    let cluster = Cluster::start(&[]).await;
    let (leader, follower) = cluster.leader_and_follower().await;
    let other = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader && *id != follower)
        .expect("two followers");
    let ledger = Ledger::default();
    let h = TestHandler::start(
        cluster.client(&[follower]),
        "h1",
        "app-1",
        ledger.clone(),
        Arc::new(MemoryDedupe::new(1000)),
    );
    wait_handlers(&cluster, "app-1", 1).await;

    let sender = cluster.client(&[other]);
    let cmd = command("app-1", 1, 10_000);
    let resp = sender.send_command(&cmd).await.expect("command result");
    assert_eq!(resp.id, cmd.id);
    assert_eq!(resp.result["by"], json!("h1"));
    assert_eq!(resp.result["echo"]["taskId"], json!("t-1"));

    // The same id again: the one result, no second execution.
    let again = sender.send_command(&cmd).await.expect("retry");
    assert_eq!(again, resp);
    assert_eq!(ledger.lock().expect("ledger")[&cmd.id].len(), 1);

    // A handler's error comes back with its status.
    let mut failing = command("app-1", 2, 10_000);
    failing.payload["fail"] = json!(true);
    let err = sender
        .send_command(&failing)
        .await
        .expect_err("handler error");
    let taskpool_api::ClientError::Api { status, body } = err else {
        panic!("api error")
    };
    assert_eq!(status, 409);
    assert_eq!(body.error.code, "task_claimed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handlers_of_one_key_share_the_load() {
    let cluster = Cluster::start(&[]).await;
    let ledger = Ledger::default();
    let dedupe = Arc::new(MemoryDedupe::new(1000));
    let handlers = start_a_and_b(&cluster, [&[1], &[2]], &ledger, &dedupe).await;
    let sender = cluster.client(&[3]);
    let sends = (0..40).map(|n| {
        let sender = sender.clone();
        tokio::spawn(async move { sender.send_command(&command("app-1", n, 10_000)).await })
    });
    for s in sends.collect::<Vec<_>>() {
        s.await.expect("task").expect("command");
    }
    let ledger = ledger.lock().expect("ledger").clone();
    assert_eq!(ledger.len(), 40);
    assert!(
        ledger.values().all(|by| by.len() == 1),
        "each command executed once"
    );
    let by_a = ledger.values().filter(|by| by[0] == "a").count();
    assert!(
        by_a > 0 && by_a < 40,
        "both handlers worked: a did {by_a} of 40"
    );
    for h in handlers {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handler_lost_while_holding_a_command_hands_it_to_another() {
    let cluster = Cluster::start(&[]).await;
    let ledger = Ledger::default();
    let dedupe = Arc::new(MemoryDedupe::new(1000));
    // `stuck` takes commands and never answers; its loss must not lose them.
    let received = Arc::new(AtomicUsize::new(0));
    let (stuck_stop, stuck_rx) = watch::channel(false);
    let counter = received.clone();
    let stuck = tokio::spawn(handler::run(
        cluster.client(&[1]),
        claim_handler("stuck", "app-1"),
        Arc::new(MemoryDedupe::new(10)),
        move |_cmd: CommandMessage| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<CommandResult>()
        },
        stuck_rx,
    ));
    wait_handlers(&cluster, "app-1", 1).await;
    let sender = cluster.client(&[2]);
    let cmd = command("app-1", 7, 20_000);
    let pending = tokio::spawn({
        let (sender, cmd) = (sender.clone(), cmd.clone());
        async move { sender.send_command(&cmd).await }
    });
    wait_for(
        "the stuck handler to receive the command",
        Duration::from_secs(10),
        || {
            let r = received.clone();
            async move { (r.load(Ordering::SeqCst) == 1).then_some(()) }
        },
    )
    .await;
    let good = TestHandler::start(
        cluster.client(&[3]),
        "good",
        "app-1",
        ledger.clone(),
        dedupe,
    );
    // The stuck handler's process goes away: its connection closes.
    stuck.abort();
    drop(stuck_stop);
    let resp = pending
        .await
        .expect("task")
        .expect("command answered by the other handler");
    assert_eq!(resp.result["by"], json!("good"));
    assert_eq!(
        ledger.lock().expect("ledger")[&cmd.id],
        vec!["good".to_string()]
    );
    good.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_senders_node_and_the_leader_loses_and_doubles_no_command() {
    let mut cluster = Cluster::start(&[]).await;
    let ledger = Ledger::default();
    let dedupe = Arc::new(MemoryDedupe::new(10_000));
    let handlers = start_a_and_b(&cluster, [&[1, 2, 3], &[2, 3, 1]], &ledger, &dedupe).await;

    let leader = cluster.leader().await;
    let entry = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut order = vec![entry];
    order.extend(cluster.running().into_iter().filter(|id| *id != entry));
    let sender = cluster.client(&order);
    let answered = Arc::new(Mutex::new(Vec::<(Uuid, Value)>::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let (sender, answered, stop) = (sender.clone(), answered.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !*stop.borrow() {
                    let cmd = command("app-1", s * 100_000 + n, 20_000);
                    // Same id until it is answered: the client retries across nodes itself.
                    let resp = sender
                        .send_command(&cmd)
                        .await
                        .expect("every command is answered");
                    answered
                        .lock()
                        .expect("answered")
                        .push((cmd.id, resp.result));
                    n += 1;
                }
            })
        })
        .collect();
    let count =
        |answered: &Arc<Mutex<Vec<(Uuid, Value)>>>| answered.lock().expect("answered").len();
    let wait_more = |n: usize, what: &'static str| {
        let answered = answered.clone();
        async move {
            wait_for(what, Duration::from_secs(60), || {
                let answered = answered.clone();
                async move { (count(&answered) >= n).then_some(()) }
            })
            .await
        }
    };
    wait_more(50, "50 commands answered").await;
    cluster.kill(entry);
    wait_more(
        count(&answered) + 50,
        "commands to go on after the sender's node died",
    )
    .await;
    cluster.spawn(entry);
    cluster.wait_ready(entry).await;
    let leader = cluster.leader().await;
    cluster.kill(leader);
    wait_more(
        count(&answered) + 50,
        "commands to go on after the leader died",
    )
    .await;
    let _ = stop_tx.send(true);
    for s in senders {
        s.await.expect("sender");
    }
    let answered = answered.lock().expect("answered").clone();
    let ledger = ledger.lock().expect("ledger").clone();
    for (id, result) in answered.iter() {
        let runs = ledger.get(id).expect("an answered command was executed");
        assert_eq!(runs.len(), 1, "command {id} executed once, not {runs:?}");
        assert_eq!(
            result["by"],
            json!(runs[0]),
            "the answer is the one execution's"
        );
    }
    for h in handlers {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_handler_timeout_and_bad_command_input() {
    let cluster = Cluster::start(&[]).await;
    let sender = cluster.client(&[1, 2, 3]);
    let err = sender
        .send_command(&command("nobody", 1, 300))
        .await
        .expect_err("no handler");
    assert_eq!(err.code(), Some("no_handler"));

    // A handler that takes the command and never answers: the sender gets a timeout.
    let (_stop, stop_rx) = watch::channel(false);
    let silent = tokio::spawn(handler::run(
        cluster.client(&[2]),
        claim_handler("silent", "quiet"),
        Arc::new(MemoryDedupe::new(10)),
        |_cmd: CommandMessage| std::future::pending::<CommandResult>(),
        stop_rx,
    ));
    wait_handlers(&cluster, "quiet", 1).await;
    let cmd = command("quiet", 1, 500);
    let err = sender.send_command(&cmd).await.expect_err("timeout");
    assert_eq!(err.code(), Some("timeout"));
    silent.abort();

    let http = cluster.http();
    let base = cluster.node(1).url();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    let id = Uuid::new_v4();
    let cases = vec![
        (
            "empty routing key",
            post(
                "/v1/commands",
                json!({"id": id, "type": "ClaimTask", "routingKey": "", "payload": {}}),
            ),
            400,
            "bad_request",
        ),
        (
            "zero timeout",
            post(
                "/v1/commands",
                json!({"id": id, "type": "ClaimTask", "routingKey": "k", "timeoutMs": 0}),
            ),
            400,
            "bad_request",
        ),
        (
            "absurd timeout",
            post(
                "/v1/commands",
                json!({"id": id, "type": "ClaimTask", "routingKey": "k", "timeoutMs": 999_999_999u64}),
            ),
            400,
            "bad_request",
        ),
        (
            "no id",
            post(
                "/v1/commands",
                json!({"type": "ClaimTask", "routingKey": "k"}),
            ),
            400,
            "invalid_json",
        ),
        (
            "result for an unknown command",
            post(
                &format!("/v1/commands/{id}/result"),
                json!({"ok": true, "result": {}, "handlerId": "h"}),
            ),
            404,
            "not_found",
        ),
        (
            "result for the timed-out command",
            post(
                &format!("/v1/commands/{}/result", cmd.id),
                json!({"ok": true, "result": {}, "handlerId": "silent"}),
            ),
            409,
            "expired",
        ),
        (
            "result id not a uuid",
            post(
                "/v1/commands/nope/result",
                json!({"ok": true, "handlerId": "h"}),
            ),
            400,
            "bad_request",
        ),
        (
            "failure without status",
            post(
                &format!("/v1/commands/{id}/result"),
                json!({"ok": false, "handlerId": "h", "error": {"code": "x", "message": "y"}}),
            ),
            400,
            "bad_request",
        ),
        (
            "failure with status 200",
            post(
                &format!("/v1/commands/{id}/result"),
                json!({"ok": false, "status": 200, "handlerId": "h", "error": {"code": "x", "message": "y"}}),
            ),
            400,
            "bad_request",
        ),
        (
            "subscribe without handler id",
            http.get(format!(
                "{base}/v1/handlers/subscribe?types=A&routingKeys=k"
            ))
            .bearer_auth(TOKEN),
            400,
            "bad_request",
        ),
        (
            "subscribe with no types",
            http.get(format!(
                "{base}/v1/handlers/subscribe?handlerId=h&types=,&routingKeys=k"
            ))
            .bearer_auth(TOKEN),
            400,
            "bad_request",
        ),
        (
            "subscribe without token",
            http.get(format!(
                "{base}/v1/handlers/subscribe?handlerId=h&types=A&routingKeys=k"
            )),
            401,
            "unauthorized",
        ),
    ];
    for (what, req, status, code) in cases {
        let resp = req.send().await.expect("request");
        let got = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{what}: {body}");
    }

    // A result from a handler the command was never given to is refused.
    let ledger = Ledger::default();
    let (gate_tx, gate_rx) = watch::channel(false);
    let gated = tokio::spawn(handler::run(
        cluster.client(&[3]),
        claim_handler("gated", "gate"),
        Arc::new(MemoryDedupe::new(10)),
        move |cmd: CommandMessage| {
            let (mut gate, ledger) = (gate_rx.clone(), ledger.clone());
            async move {
                ledger
                    .lock()
                    .expect("ledger")
                    .entry(cmd.id)
                    .or_default()
                    .push("gated".into());
                let _ = gate.wait_for(|open| *open).await;
                CommandResult::success("gated", json!({"by": "gated"}))
            }
        },
        watch::channel(false).1,
    ));
    wait_handlers(&cluster, "gate", 1).await;
    let cmd = command("gate", 1, 10_000);
    let waiting = tokio::spawn({
        let (sender, cmd) = (sender.clone(), cmd.clone());
        async move { sender.send_command(&cmd).await }
    });
    let intruder = post(
        &format!("/v1/commands/{}/result", cmd.id),
        json!({"ok": true, "result": {"by": "intruder"}, "handlerId": "intruder"}),
    );
    let status = wait_for(
        "the intruder to be refused",
        Duration::from_secs(10),
        || {
            let req = intruder.try_clone().expect("clonable request");
            async move {
                let resp = req.send().await.ok()?;
                // 404 until the command exists on the leader; then 409.
                (resp.status().as_u16() == 409).then_some(resp.status().as_u16())
            }
        },
    )
    .await;
    assert_eq!(status, 409);
    let _ = gate_tx.send(true);
    let resp = waiting.await.expect("task").expect("answer");
    assert_eq!(resp.result["by"], json!("gated"));
    gated.abort();
}
