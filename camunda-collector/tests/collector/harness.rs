//! The real parts of a collector test: the local Camunda engine and PostgreSQL (started by
//! `deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start`; testkit drives the
//! engine's REST API), a three-node bus, and collector processes.

use std::time::Duration;

use serde_json::{json, Value};
use taskpool_api::bus::RecordedEvent;
use taskpool_api::BusClient;
pub use testkit::engine::{engine_url, env_or, REPO};
pub use testkit::{free_port, wait_for, Cluster, Engine, Service, TOKEN};

pub fn database_url() -> String {
    env_or(
        "COLLECTOR_TEST_DATABASE_URL",
        "postgres://taskpool:taskpool@127.0.0.1:5432/collector",
    )
}

/// A unique application name per test, so tests share the engine but not their state.
pub fn app_name(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The event types of a task's stream and the events.
pub async fn stream(bus: &BusClient, task_id: &str) -> Vec<RecordedEvent> {
    bus.stream(&format!("task-{task_id}"), 0, 1000)
        .await
        .map(|p| p.events)
        .unwrap_or_default()
}

pub fn types(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_type.clone()).collect()
}

pub fn data(e: &RecordedEvent) -> Value {
    serde_json::from_str(e.data.get()).expect("event data")
}

/// Waits until the task's stream holds exactly `expected` (as event types) and returns it;
/// fails at once if it holds more or different events. The deadline is generous: on a small
/// machine another test's burst of a thousand tasks can hold the engine for a while.
pub async fn expect_stream(
    bus: &BusClient,
    task_id: &str,
    expected: &[&str],
) -> Vec<RecordedEvent> {
    wait_for(
        &format!("task {task_id} stream to be {expected:?}"),
        Duration::from_secs(90),
        || async move {
            let events = stream(bus, task_id).await;
            let got = types(&events);
            assert!(
                got.len() <= expected.len() && got.iter().zip(expected).all(|(a, b)| a == b),
                "task {task_id}: stream is {got:?}, expected {expected:?}"
            );
            (got.len() == expected.len()).then_some(events)
        },
    )
    .await
}

pub struct Collector {
    pub app: String,
    pub listen: String,
    service: Service,
}

impl Collector {
    /// Starts a collector process for `app` against the bus; `extra` are more flags.
    pub fn start(app: &str, bus: &Cluster, extra: &[&str]) -> Collector {
        let nodes: Vec<String> = bus.nodes.iter().map(|n| n.url()).collect();
        let listen = extra
            .windows(2)
            .find(|w| w[0] == "--listen")
            .map(|w| w[1].to_owned())
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let defaults = [
            ("--application", app.to_owned()),
            ("--engine-url", engine_url()),
            ("--engine-user", "demo".to_owned()),
            ("--bus", nodes.join(",")),
            ("--database-url", database_url()),
            ("--poll-interval", "200ms".to_owned()),
            ("--overlap", "3s".to_owned()),
            ("--reconcile-interval", "10m".to_owned()),
            ("--listen", listen.clone()),
        ];
        // A flag in `extra` replaces its default.
        let mut args: Vec<String> = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), value]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = [
            ("COLLECTOR_ENGINE_PASSWORD", "demo"),
            ("COLLECTOR_BUS_TOKEN", TOKEN),
            ("RUST_LOG", "info,camunda_collector=debug"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        let service = Service::start(
            &format!("collector {listen}"),
            env!("CARGO_BIN_EXE_camunda-collector"),
            args,
            env,
        );
        Collector {
            app: app.to_owned(),
            listen,
            service,
        }
    }

    pub fn spawn(&mut self) {
        self.service.spawn();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.service.kill();
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(&mut self) {
        self.service.stop().await;
    }

    async fn status(&self) -> Option<Value> {
        let r = reqwest::get(format!("{}/v1/status", self.url()))
            .await
            .ok()?;
        r.json().await.ok()
    }

    pub async fn is_active(&self) -> bool {
        self.status()
            .await
            .is_some_and(|s| s["active"] == json!(true))
    }

    /// Waits until this collector is the active one.
    pub async fn wait_active(&self, within: Duration) {
        wait_for(
            &format!("collector {} active", self.listen),
            within,
            || async move { self.is_active().await.then_some(()) },
        )
        .await;
    }

    /// Waits until the first reconciliation (the import of what the engine holds) is done.
    pub async fn wait_reconciled(&self, within: Duration) {
        wait_for("first reconciliation", within, || async move {
            let m = self.metrics().await;
            m.contains("collector_poll_cycles_total{kind=\"reconcile\",outcome=\"ok\"}")
                .then_some(())
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }
}
