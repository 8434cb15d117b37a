//! The local Camunda engine's REST API as tests drive it (started by
//! `deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start`), and the engine of
//! the second process application, billing (`deploy/scripts/camunda.sh start billing`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::wait_for;

/// The repository root (the test processes live in `deploy/processes/`).
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn engine_url() -> String {
    env_or("CAMUNDA_URL", "http://127.0.0.1:8080/engine-rest")
}

pub const START_HINT: &str =
    "start them with: deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start";

/// The engine of the second process application, `billing` (its own process and database).
pub fn billing_engine_url() -> String {
    env_or("CAMUNDA_BILLING_URL", "http://127.0.0.1:8081/engine-rest")
}

pub const BILLING_START_HINT: &str =
    "start them with: deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start billing";

/// A test engine whose history level is `audit` (below what poll mode reads).
pub fn audit_engine_url() -> String {
    env_or("CAMUNDA_AUDIT_URL", "http://127.0.0.1:8082/engine-rest")
}

/// The audit engine's own PostgreSQL database (for tests that fill its identity tables in
/// bulk): `CAMUNDA_AUDIT_DATABASE_URL`, else the collector's test database server with the
/// database `camunda_audit` (as `deploy/scripts/postgres.sh` creates it).
pub fn audit_database_url() -> String {
    std::env::var("CAMUNDA_AUDIT_DATABASE_URL").unwrap_or_else(|_| {
        let collector = crate::collector::database_url();
        let server = collector
            .rsplit_once('/')
            .map_or(collector.as_str(), |(s, _)| s);
        format!("{server}/camunda_audit")
    })
}

pub const AUDIT_START_HINT: &str =
    "start them with: deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start audit";

/// The body of `POST /deployment/create` for one BPMN file, deployed only when it changed.
pub fn deployment_form(file: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("deployment-name", file.to_owned())
        .text("deploy-changed-only", "true")
        .part(
            "data",
            reqwest::multipart::Part::bytes(bytes).file_name(file.to_owned()),
        )
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
        Engine::connect_to(&engine_url()).await
    }

    /// Connects to the engine at `url` (e.g. [`billing_engine_url`]) and deploys the test
    /// processes there, as [`Engine::connect`] does; fails with how to start that engine.
    pub async fn connect_to(url: &str) -> Engine {
        let engine = Engine {
            http: reqwest::Client::new(),
            url: url.to_owned(),
        };
        let hint = if url == billing_engine_url() && url != engine_url() {
            BILLING_START_HINT
        } else if url == audit_engine_url() {
            AUDIT_START_HINT
        } else {
            START_HINT
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
                "Camunda at {} does not answer ({other:?}); {hint}",
                engine.url
            ),
        }
        for file in [
            "simple-user-task.bpmn",
            "candidate-listener.bpmn",
            "boundary-timer.bpmn",
            "multi-instance.bpmn",
            "call-activity.bpmn",
            "candidate-starters.bpmn",
            "variable-changes.bpmn",
            "form-ref.bpmn",
            "engine-events.bpmn",
        ] {
            engine.deploy(file).await;
        }
        engine
    }

    async fn deploy(&self, file: &str) {
        let path = PathBuf::from(REPO).join("deploy/processes").join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let form = deployment_form(file, bytes);
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

    /// A process instance's state in the history (`ACTIVE`, `COMPLETED`, …).
    pub async fn instance_state(&self, instance: &str) -> Value {
        let path = format!("/history/process-instance/{instance}");
        self.ok(reqwest::Method::GET, &path, None).await["state"].clone()
    }

    /// The value a process variable of the instance had last (history).
    pub async fn history_variable(&self, instance: &str, name: &str) -> Value {
        let path =
            format!("/history/variable-instance?processInstanceId={instance}&variableName={name}");
        self.ok(reqwest::Method::GET, &path, None).await[0]["value"].clone()
    }

    /// Adds or removes a candidate group of a task, through the engine's identity links.
    pub async fn candidate_group(&self, task: &str, group: &str, add: bool) {
        let path = if add {
            format!("/task/{task}/identity-links")
        } else {
            format!("/task/{task}/identity-links/delete")
        };
        let link = json!({"groupId": group, "type": "candidate"});
        self.ok(reqwest::Method::POST, &path, Some(link)).await;
    }

    /// Makes sure the engine knows `user` (password as the name) as a member of `group`.
    pub async fn user_in_group(&self, user: &str, group: &str) {
        let (status, _) = self
            .call(reqwest::Method::GET, &format!("/group/{group}"), None)
            .await;
        if status == 404 {
            let body = json!({"id": group, "name": group, "type": "WORKFLOW"});
            self.ok(reqwest::Method::POST, "/group/create", Some(body))
                .await;
        }
        let (status, _) = self
            .call(reqwest::Method::GET, &format!("/user/{user}/profile"), None)
            .await;
        if status == 404 {
            let body = json!({"profile": {"id": user, "firstName": user, "lastName": "Test"},
                "credentials": {"password": user}});
            self.ok(reqwest::Method::POST, "/user/create", Some(body))
                .await;
        }
        let path = format!("/user/count?id={user}&memberOfGroup={group}");
        if self.ok(reqwest::Method::GET, &path, None).await["count"] != 1 {
            let path = format!("/group/{group}/members/{user}");
            self.ok(reqwest::Method::PUT, &path, None).await;
        }
    }

    /// Grants `user` `permissions` on a resource (type: 6 process definition, 8 process
    /// instance …), unless they hold an authorization there already. Only an engine that
    /// checks authorizations heeds it.
    pub async fn grant_user(
        &self,
        user: &str,
        resource_type: u32,
        resource_id: &str,
        permissions: &[&str],
    ) {
        let path = format!(
            "/authorization/count?userIdIn={user}&resourceType={resource_type}&resourceId={resource_id}"
        );
        if self.ok(reqwest::Method::GET, &path, None).await["count"] == 0 {
            let body = json!({"type": 1, "permissions": permissions, "userId": user,
                "resourceType": resource_type, "resourceId": resource_id});
            self.ok(reqwest::Method::POST, "/authorization/create", Some(body))
                .await;
        }
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
