//! The handler side of command routing: subscribe for command types and routing keys on any
//! bus node, execute each command once, answer it, and reconnect to another node when one goes.
//!
//! Delivery is at least once (a command whose handler vanished is given to another, or to the
//! same one after it reconnects), so execution is made at most once here: a [`Dedupe`] store
//! remembers each command id's outcome, and a command already running is not started again.
//! Handlers of one routing key that can take over each other's commands must share one store
//! (the collector keeps it in Postgres).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use reqwest::Method;
use tokio::sync::watch;
use uuid::Uuid;

use crate::client::percent_encode;
use crate::commands::{CommandMessage, CommandResult};
use crate::sse::SseParser;
use crate::BusClient;

/// What a handler answers for one command.
pub type Answer = CommandResult;

/// What a [`Dedupe`] store says about a command id.
#[derive(Debug, Clone, PartialEq)]
// One claim per command delivery, never stored in bulk: boxing the answer would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Claim {
    /// Nobody ran it: it is now ours to run.
    Run,
    /// It ran to the end before: here is its answer.
    Done(Answer),
    /// Another run of it (here or in another handler of the same store) has not ended yet.
    Busy,
}

/// Remembers which commands ran and how they ended, so a command delivered twice runs once.
/// `claim` must be atomic across every handler sharing the store.
pub trait Dedupe: Send + Sync + 'static {
    fn claim(&self, id: Uuid) -> impl Future<Output = Claim> + Send;
    fn finish(&self, id: Uuid, answer: &Answer) -> impl Future<Output = ()> + Send;
}

/// Each command id's answer (`None` while it runs), and the ids oldest first.
type Runs = (HashMap<Uuid, Option<Answer>>, VecDeque<Uuid>);

/// A bounded in-memory [`Dedupe`]: for handlers in one process, or tests.
pub struct MemoryDedupe {
    inner: Mutex<Runs>,
    capacity: usize,
}

impl MemoryDedupe {
    pub fn new(capacity: usize) -> Self {
        MemoryDedupe {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
        }
    }
}

impl Dedupe for MemoryDedupe {
    async fn claim(&self, id: Uuid) -> Claim {
        let mut guard = self.inner.lock().expect("dedupe lock");
        let (map, order) = &mut *guard;
        match map.get(&id) {
            Some(Some(answer)) => Claim::Done(answer.clone()),
            Some(None) => Claim::Busy,
            None => {
                map.insert(id, None);
                order.push_back(id);
                while order.len() > self.capacity {
                    if let Some(old) = order.pop_front() {
                        map.remove(&old);
                    }
                }
                Claim::Run
            }
        }
    }

    async fn finish(&self, id: Uuid, answer: &Answer) {
        let mut guard = self.inner.lock().expect("dedupe lock");
        guard.0.insert(id, Some(answer.clone()));
    }
}

#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// Stable per handler process: a reconnect with the same id takes over its commands.
    pub handler_id: String,
    pub types: Vec<String>,
    pub routing_keys: Vec<String>,
    /// Commands executed at once.
    pub concurrency: usize,
}

/// Runs `execute` for every command routed to this handler until `stop` turns true.
/// `execute` returns the answer: build it with [`CommandResult::success`] or
/// [`CommandResult::failure`] (the handler id is filled in here).
pub async fn run<D, F, Fut>(
    client: BusClient,
    config: HandlerConfig,
    dedupe: Arc<D>,
    execute: F,
    mut stop: watch::Receiver<bool>,
) where
    D: Dedupe,
    F: Fn(CommandMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let execute = Arc::new(execute);
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let path = format!(
        "/v1/handlers/subscribe?handlerId={}&types={}&routingKeys={}",
        percent_encode(&config.handler_id),
        percent_encode(&config.types.join(",")),
        percent_encode(&config.routing_keys.join(","))
    );
    let mut attempt = 0usize;
    while !*stop.borrow() {
        let Some(resp) = client.open_stream(&path, attempt).await else {
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        tracing::info!(handler = %config.handler_id, "command handler subscribed");
        let mut parser = SseParser::new();
        let mut body = resp.bytes_stream();
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(client.config().idle_timeout, body.next()) => c,
                _ = stop.changed() => break,
            };
            let chunk = match chunk {
                Ok(Some(Ok(c))) => c,
                _ => break,
            };
            for msg in parser.feed(&chunk) {
                let command: CommandMessage = match serde_json::from_str(&msg.data) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable command message");
                        continue;
                    }
                };
                let task = Task {
                    client: client.clone(),
                    handler_id: config.handler_id.clone(),
                    dedupe: dedupe.clone(),
                    execute: execute.clone(),
                };
                let permits = permits.clone();
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    task.handle(command).await;
                });
            }
        }
        attempt += 1;
    }
}

struct Task<D, F> {
    client: BusClient,
    handler_id: String,
    dedupe: Arc<D>,
    execute: Arc<F>,
}

impl<D, F, Fut> Task<D, F>
where
    D: Dedupe,
    F: Fn(CommandMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    async fn handle(self, command: CommandMessage) {
        let id = command.id;
        let deadline = humantime::parse_rfc3339(&command.deadline).ok();
        let Some(mut answer) = self.answer(command, deadline).await else {
            tracing::debug!(%id, "command passed its deadline while another run of it went on");
            return;
        };
        answer.handler_id = self.handler_id.clone();
        let path = format!("/v1/commands/{id}/result");
        match self
            .client
            .call::<serde_json::Value>(Method::POST, &path, Some(&answer))
            .await
        {
            Ok(_) => {}
            // Answered already (by us before a reconnect, or by another handler), or the
            // sender gave up: nothing left to do.
            Err(e)
                if matches!(
                    e.code(),
                    Some("already_answered" | "expired" | "not_found" | "not_chosen")
                ) =>
            {
                tracing::debug!(%id, error = %e, "result not needed any more")
            }
            Err(e) => tracing::warn!(%id, error = %e, "could not deliver a command result"),
        }
    }

    /// Runs the command if no run of it happened; waits for a run going on elsewhere.
    async fn answer(
        &self,
        command: CommandMessage,
        deadline: Option<SystemTime>,
    ) -> Option<Answer> {
        let id = command.id;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.dedupe.claim(id).await {
                Claim::Done(answer) => return Some(answer),
                Claim::Run => {
                    let answer = (self.execute)(command).await;
                    self.dedupe.finish(id, &answer).await;
                    return Some(answer);
                }
                Claim::Busy => {
                    if deadline.is_some_and(|d| SystemTime::now() >= d) {
                        return None;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_dedupe_passes_the_suite() {
        crate::dedupe_suite::run(Arc::new(MemoryDedupe::new(1_000))).await;
    }

    #[tokio::test]
    async fn memory_dedupe_forgets_the_oldest_beyond_its_capacity() {
        let store = MemoryDedupe::new(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            assert_eq!(store.claim(*id).await, Claim::Run);
            store.finish(*id, &crate::dedupe_suite::answer(*id)).await;
        }
        assert_eq!(
            store.claim(ids[0]).await,
            Claim::Run,
            "the oldest is forgotten"
        );
        assert_eq!(
            store.claim(ids[2]).await,
            Claim::Done(crate::dedupe_suite::answer(ids[2]))
        );
    }
}
