//! The real parts of a collector test: the local Camunda engine and PostgreSQL (started by
//! `deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start`), a three-node bus,
//! and collector processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use taskpool_api::bus::RecordedEvent;
use taskpool_api::BusClient;
pub use testkit::{free_port, wait_for, Cluster, TOKEN};

pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn engine_url() -> String {
    env_or("CAMUNDA_URL", "http://127.0.0.1:8080/engine-rest")
}

pub fn database_url() -> String {
    env_or(
        "COLLECTOR_TEST_DATABASE_URL",
        "postgres://taskpool:taskpool@127.0.0.1:5432/collector",
    )
}

const START_HINT: &str =
    "start them with: deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start";

/// A unique application name per test, so tests share the engine but not their state.
pub fn app_name(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The engine's REST API, as a test drives it.
#[derive(Clone)]
pub struct Engine {
    http: reqwest::Client,
    url: String,
}

impl Engine {
    /// Connects and deploys the test processes; fails with how to start the engine.
    pub async fn connect() -> Engine {
        let engine = Engine {
            http: reqwest::Client::new(),
            url: engine_url(),
        };
        let version = engine
            .http
            .get(format!("{}/version", engine.url))
            .basic_auth("demo", Some("demo"))
            .send()
            .await;
        match version {
            Ok(r) if r.status().is_success() => {}
            other => panic!(
                "Camunda at {} does not answer ({other:?}); {START_HINT}",
                engine.url
            ),
        }
        for file in [
            "simple-user-task.bpmn",
            "candidate-listener.bpmn",
            "boundary-timer.bpmn",
            "multi-instance.bpmn",
            "call-activity.bpmn",
        ] {
            engine.deploy(file).await;
        }
        engine
    }

    async fn deploy(&self, file: &str) {
        let path = PathBuf::from(REPO).join("deploy/processes").join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let form = reqwest::multipart::Form::new()
            .text("deployment-name", file.to_owned())
            .text("deploy-changed-only", "true")
            .part(
                "data",
                reqwest::multipart::Part::bytes(bytes).file_name(file.to_owned()),
            );
        let r = self
            .http
            .post(format!("{}/deployment/create", self.url))
            .basic_auth("demo", Some("demo"))
            .multipart(form)
            .send()
            .await
            .expect("deploy");
        assert!(
            r.status().is_success(),
            "deploy {file}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .basic_auth("demo", Some("demo"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("engine request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Calls and insists on success.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    pub async fn claim(&self, task: &str, user: &str) {
        let path = format!("/task/{task}/claim");
        self.ok(
            reqwest::Method::POST,
            &path,
            Some(json!({ "userId": user })),
        )
        .await;
    }

    pub async fn start(&self, key: &str, business_key: &str, variables: Value) -> String {
        let v = self
            .ok(
                reqwest::Method::POST,
                &format!("/process-definition/key/{key}/start"),
                Some(json!({ "businessKey": business_key, "variables": variables })),
            )
            .await;
        v["id"].as_str().expect("instance id").to_owned()
    }

    /// The open tasks of an instance (or of its called children), waiting until `n` exist.
    pub async fn tasks(&self, query: &str, n: usize) -> Vec<Value> {
        wait_for(
            &format!("{n} tasks for {query}"),
            Duration::from_secs(30),
            || async move {
                let v = self
                    .ok(reqwest::Method::GET, &format!("/task?{query}"), None)
                    .await;
                let tasks = v.as_array().cloned().unwrap_or_default();
                (tasks.len() >= n).then_some(tasks)
            },
        )
        .await
    }

    pub async fn task_id(&self, instance: &str) -> String {
        self.tasks(&format!("processInstanceId={instance}"), 1)
            .await[0]["id"]
            .as_str()
            .expect("task id")
            .to_owned()
    }

    pub async fn delete_instance(&self, instance: &str) {
        let _ = self
            .call(
                reqwest::Method::DELETE,
                &format!("/process-instance/{instance}?skipCustomListeners=true"),
                None,
            )
            .await;
    }
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
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// Starts a collector process for `app` against the bus; `extra` are more flags.
    pub fn start(app: &str, bus: &Cluster, extra: &[&str]) -> Collector {
        let dir = tempfile::tempdir().expect("temp dir");
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
        let mut c = Collector {
            app: app.to_owned(),
            listen,
            args,
            log: dir.path().join("collector.log"),
            child: None,
            _dir: dir,
        };
        c.spawn();
        c
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "collector already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_camunda-collector"))
            .args(&self.args)
            .env("COLLECTOR_ENGINE_PASSWORD", "demo")
            .env("COLLECTOR_BUS_TOKEN", TOKEN)
            .env("RUST_LOG", "info,camunda_collector=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start camunda-collector");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("signal");
            let status = wait_for("collector to exit", Duration::from_secs(20), || {
                let s = child.try_wait().ok().flatten();
                async move { s }
            })
            .await;
            assert!(status.success(), "collector exited with {status}");
        }
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

impl Drop for Collector {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of collector {} ---", self.listen);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}
