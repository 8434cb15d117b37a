//! A taskpool-core process on a MongoDB-compatible server (`TASKPOOL_TEST_MONGO_URL`; locally
//! FerretDB, `deploy/scripts/ferretdb.sh start`), and the task API as a user calls it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{free_port, wait_for, Cluster, Service};

pub const JWT_SECRET: &str = "core-test-secret-0123456789abcdef";

pub fn mongo_url() -> String {
    std::env::var("TASKPOOL_TEST_MONGO_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// A FerretDB server of a test's own (SQLite files in `dir`), to stop and start at will.
pub fn ferretdb(dir: &std::path::Path, port: u16) -> Service {
    let bin = std::env::var("TASKPOOL_TEST_FERRETDB_BIN")
        .unwrap_or_else(|_| format!("{}/.stack/bin/ferretdb", crate::engine::REPO));
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

/// Fails with how to start the server when nothing listens at the URL's host and port.
fn assert_reachable(mongo: &str) {
    let hostport = mongo
        .trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_owned();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "the MongoDB-compatible server at {mongo} does not answer; start it with: deploy/scripts/ferretdb.sh start"
    );
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
        assert_reachable(mongo);
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
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--command-timeout") {
            args.extend(["--command-timeout".into(), "20s".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // On a cluster with credentials, the entry `core`.
        let token = bus.secret("core");
        let env = [
            ("TASKPOOL_BUS_TOKEN", token.as_str()),
            ("TASKPOOL_JWT_SECRET", JWT_SECRET),
            ("RUST_LOG", "info,taskpool_core=debug"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        let service = Service::start(
            &format!("taskpool-core {listen}"),
            crate::workspace_binary("taskpool-core"),
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
