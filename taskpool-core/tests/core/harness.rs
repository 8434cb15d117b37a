//! The real parts of a taskpool-core test: a MongoDB-compatible server (locally FerretDB:
//! `deploy/scripts/ferretdb.sh start`), a three-node bus, and taskpool-core processes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use taskpool_api::bus::{AppendRequest, NewEvent};
use taskpool_api::tasks::{task_stream, SourceReference, Task, TaskEvent};
use taskpool_api::BusClient;
use taskpool_core::store::Store;
use taskpool_core::view::View;
pub use testkit::{free_port, wait_for, Cluster, Service, TOKEN};

pub const JWT_SECRET: &str = "core-test-secret-0123456789abcdef";

pub fn mongo_url() -> String {
    std::env::var("TASKPOOL_TEST_MONGO_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// A database of its own per test.
pub fn database(test: &str) -> String {
    format!(
        "t_{test}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The view store of `database`; fails with how to start the server when it is not there.
pub async fn store(database: &str) -> Store {
    store_at(&mongo_url(), database).await
}

pub async fn store_at(url: &str, database: &str) -> Store {
    let store = Store::connect(url, database).await.expect("mongo url");
    if let Err(e) = store.ping().await {
        panic!(
            "the MongoDB-compatible server at {url} does not answer ({e}); start it with: deploy/scripts/ferretdb.sh start"
        );
    }
    store
}

/// The stored view of `database`, as a restart would load it.
pub async fn stored_view(database: &str) -> View {
    stored_view_at(&mongo_url(), database).await
}

pub async fn stored_view_at(url: &str, database: &str) -> View {
    let mut view = View::default();
    store_at(url, database)
        .await
        .load(&mut view)
        .await
        .expect("load the stored view");
    view
}

/// A FerretDB server of a test's own (SQLite files in `dir`), to stop and start at will.
pub fn ferretdb(dir: &std::path::Path, port: u16) -> Service {
    let bin = std::env::var("TASKPOOL_TEST_FERRETDB_BIN")
        .unwrap_or_else(|_| format!("{}/.stack/bin/ferretdb", testkit::engine::REPO));
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} not found: build it with deploy/scripts/ferretdb.sh install (or set TASKPOOL_TEST_FERRETDB_BIN)"
    );
    let args = [
        "-listen-addr".to_owned(),
        format!("127.0.0.1:{port}"),
        "-handler".to_owned(),
        "sqlite".to_owned(),
        "-sqlite-url".to_owned(),
        format!("file:{}/", dir.display()),
    ]
    .to_vec();
    Service::start("ferretdb", bin, args, Vec::new())
}

/// A taskpool-core process.
pub struct Core {
    pub listen: String,
    pub service: Service,
    http: reqwest::Client,
}

impl Core {
    /// Starts `taskpool-core serve` on `database` with JWT and trusted identity headers.
    pub async fn start(bus: &Cluster, database: &str, extra: &[&str]) -> Core {
        Core::start_on(bus, &mongo_url(), database, extra).await
    }

    /// Like `start`, on the MongoDB-compatible server at `mongo`.
    pub async fn start_on(bus: &Cluster, mongo: &str, database: &str, extra: &[&str]) -> Core {
        store_at(mongo, database).await;
        let listen = format!("127.0.0.1:{}", free_port());
        let nodes: Vec<String> = bus.nodes.iter().map(|n| n.url()).collect();
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            &listen,
            "--bus",
            &nodes.join(","),
            "--mongo-url",
            mongo,
            "--database",
            database,
            "--trust-identity-headers",
            "--command-timeout",
            "20s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = [
            ("TASKPOOL_BUS_TOKEN", TOKEN),
            ("TASKPOOL_JWT_SECRET", JWT_SECRET),
            ("RUST_LOG", "info,taskpool_core=debug"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        let service = Service::start(
            &format!("taskpool-core {listen}"),
            env!("CARGO_BIN_EXE_taskpool-core"),
            args,
            env,
        );
        let core = Core {
            listen,
            service,
            http: reqwest::Client::new(),
        };
        core.wait_ready().await;
        core
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub async fn wait_ready(&self) {
        let url = format!("{}/health/ready", self.url());
        wait_for("taskpool-core ready", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let r = reqwest::get(url).await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// The view position and open tasks, from `/health/ready`.
    pub async fn progress(&self) -> Option<(u64, u64)> {
        let r = reqwest::get(format!("{}/health/ready", self.url()))
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        Some((v["viewPosition"].as_u64()?, v["openTasks"].as_u64()?))
    }

    /// Waits until the view has applied `position`.
    pub async fn wait_position(&self, position: u64) {
        wait_for(
            &format!("view position {position}"),
            Duration::from_secs(60),
            || async move { self.progress().await.filter(|(p, _)| *p >= position) },
        )
        .await;
    }

    /// A request as `user` with `groups` (trusted headers).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user: &str,
        groups: &[&str],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .header("x-user", user)
            .header("x-groups", groups.join(","));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("taskpool-core request");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, user: &str, groups: &[&str]) -> (StatusCode, Value) {
        self.call(Method::GET, path, user, groups, None).await
    }

    /// The ids of a list answer, in order.
    pub async fn ids(&self, query: &str, user: &str, groups: &[&str]) -> (Vec<String>, u64) {
        let (status, v) = self
            .get(&format!("/api/v1/tasks?{query}"), user, groups)
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {v}");
        let ids = v["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["taskId"].as_str().expect("taskId").to_owned())
            .collect();
        (ids, v["total"].as_u64().expect("total"))
    }
}

/// A task as a collector would report it.
pub fn task(id: &str) -> Task {
    Task {
        task_id: id.into(),
        name: Some(format!("Task {id}")),
        priority: 50,
        created: "2026-11-23T10:00:00.000Z".into(),
        source: SourceReference {
            application: "camunda".into(),
            engine: "default".into(),
            process_definition_key: Some("order".into()),
            process_instance_id: Some(format!("pi-{id}")),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Appends task events (each to its task's stream) in one batch; returns the last position.
pub async fn append(bus: &BusClient, events: &[TaskEvent]) -> u64 {
    let events = events
        .iter()
        .map(|e| NewEvent {
            stream: task_stream(e.task_id()),
            event_type: e.event_type().into(),
            data: e.to_json().expect("encode"),
            metadata: None,
            id: uuid::Uuid::new_v4(),
        })
        .collect();
    append_raw(bus, events).await
}

pub async fn append_raw(bus: &BusClient, events: Vec<NewEvent>) -> u64 {
    let r = bus
        .append(&AppendRequest {
            events,
            expected_versions: Default::default(),
        })
        .await
        .expect("append");
    r.events.last().map(|e| e.position).expect("appended")
}

/// Any event as JSON data.
pub fn event(stream: &str, event_type: &str, data: Value) -> NewEvent {
    NewEvent::new(stream, event_type, &data).expect("encode")
}
