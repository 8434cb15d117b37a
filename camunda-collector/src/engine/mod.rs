//! Camunda 7's REST API (`/engine-rest`), the only way the collector talks to the engine.
//! Field names follow Camunda's DTOs; only what the collector reads is declared.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::metrics::Metrics;

mod dto;
mod probe;
mod trace;
mod variables;

pub use dto::*;
pub use probe::HistoryCheck;
pub use trace::in_trace;
pub use variables::VariableUpdate;

/// Camunda's error body: `{type, message, code}`.
#[derive(Debug, Clone, Default, Deserialize)]
struct EngineErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    #[error("engine answered {status} {kind}: {message}")]
    Api {
        status: u16,
        kind: String,
        message: String,
        code: Option<i64>,
    },
    #[error("engine answer is not what its API documents: {0}")]
    Decode(String),
}

impl EngineError {
    /// What the engine answers for a task it does not have.
    pub fn task_not_found(id: &str) -> EngineError {
        EngineError::Api {
            status: 404,
            kind: "InvalidRequestException".into(),
            message: format!("No matching task with id {id}"),
            code: None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        match self {
            EngineError::Api {
                status, message, ..
            } => {
                *status == 404
                    || message.contains("Cannot find")
                    || message.contains("No matching")
                    || message.contains("task is null")
                    || message.contains("does not exist")
            }
            _ => false,
        }
    }

    /// Worth trying again later: the engine was away or overloaded, or lost an optimistic lock.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Unreachable(_) => true,
            EngineError::Api { status, code, .. } => {
                *code == Some(1) || matches!(status, 502..=504)
            }
            EngineError::Decode(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// e.g. `http://127.0.0.1:8080/engine-rest`
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct Engine {
    http: reqwest::Client,
    config: EngineConfig,
    metrics: Metrics,
}

/// Query strings: Camunda dates contain `+`, which must be sent as `%2B`.
pub fn q(s: &str) -> String {
    taskpool_api::client::percent_encode(s)
}

impl Engine {
    pub fn new(config: EngineConfig, metrics: Metrics) -> anyhow::Result<Engine> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Engine {
            http,
            config,
            metrics,
        })
    }

    /// One REST call. `endpoint` is a fixed label for metrics (no ids in it).
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<T>, EngineError> {
        self.request_dated(method, endpoint, path, body)
            .await
            .map(|(v, _)| v)
    }

    /// A REST call, and the engine's clock when it answered (its `Date` header, whole seconds).
    async fn request_dated<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Option<T>, Option<DateTime<Utc>>), EngineError> {
        let url = format!("{}{}", self.config.url.trim_end_matches('/'), path);
        let mut req = self.http.request(method, &url);
        if let Some(user) = &self.config.user {
            req = req.basic_auth(user, self.config.password.as_ref());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(context) = trace::outgoing() {
            req = req.header(taskpool_api::trace::HEADER, context.to_string());
        }
        let started = Instant::now();
        let result = req.send().await;
        let outcome = match &result {
            Ok(r) => r.status().as_str().to_owned(),
            Err(_) => "unreachable".to_owned(),
        };
        self.metrics
            .engine_call(endpoint, &outcome, started.elapsed());
        let resp = result.map_err(|e| EngineError::Unreachable(e.to_string()))?;
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&Utc));
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        self.metrics.engine_bytes(endpoint, bytes.len());
        if status == StatusCode::NO_CONTENT {
            return Ok((None, date));
        }
        if !status.is_success() {
            let body: EngineErrorBody =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| EngineErrorBody {
                    message: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                    ..Default::default()
                });
            return Err(EngineError::Api {
                status: status.as_u16(),
                kind: body.kind,
                message: body.message,
                code: body.code,
            });
        }
        serde_json::from_slice(&bytes)
            .map(|v| (Some(v), date))
            .map_err(|e| EngineError::Decode(format!("{endpoint}: {e}")))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
    ) -> Result<T, EngineError> {
        self.request(Method::GET, endpoint, path, None)
            .await?
            .ok_or_else(|| EngineError::Decode(format!("{endpoint}: empty answer")))
    }

    async fn post(
        &self,
        endpoint: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<(), EngineError> {
        self.request::<Value>(Method::POST, endpoint, path, Some(body))
            .await
            .map(|_| ())
    }

    pub async fn engine_names(&self) -> Result<Vec<Value>, EngineError> {
        self.get("engine", "/engine").await
    }

    /// Tasks changed (or created) after `after` (Camunda format), oldest change first, and
    /// the engine's clock at the answer.
    pub async fn tasks_updated_after(
        &self,
        after: &str,
        first: u32,
        max: u32,
    ) -> Result<(Vec<EngineTask>, Option<DateTime<Utc>>), EngineError> {
        let path = format!(
            "/task?updatedAfter={}&sortBy=lastUpdated&sortOrder=asc&firstResult={first}&maxResults={max}",
            q(after)
        );
        match self
            .request_dated(Method::GET, "task_list", &path, None)
            .await?
        {
            (Some(tasks), date) => Ok((tasks, date)),
            (None, _) => Err(EngineError::Decode("task_list: empty answer".into())),
        }
    }

    /// Every open task, a page at a time, in id order (for reconciliation).
    pub async fn tasks_page(&self, first: u32, max: u32) -> Result<Vec<EngineTask>, EngineError> {
        let path = format!("/task?sortBy=id&sortOrder=asc&firstResult={first}&maxResults={max}");
        self.get("task_list", &path).await
    }

    /// Which of `ids` are open tasks now (one call for up to a few hundred ids).
    pub async fn open_ids_among(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, EngineError> {
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        let path = format!(
            "/task?taskIdIn={}&maxResults={}",
            q(&ids.join(",")),
            ids.len()
        );
        let open: Vec<Id> = self.get("task_list", &path).await?;
        Ok(open.into_iter().map(|t| t.id).collect())
    }

    /// How many open tasks are suspended (their instance or definition is).
    pub async fn suspended_task_count(&self) -> Result<u64, EngineError> {
        let c: probe::Count = self.get("task_count", "/task/count?suspended=true").await?;
        Ok(c.count)
    }

    /// The suspended open tasks, a page at a time, in id order.
    pub async fn suspended_tasks_page(
        &self,
        first: u32,
        max: u32,
    ) -> Result<Vec<EngineTask>, EngineError> {
        let path = format!(
            "/task?suspended=true&sortBy=id&sortOrder=asc&firstResult={first}&maxResults={max}"
        );
        self.get("task_list", &path).await
    }

    /// A GET of one thing; `None` when the engine says it does not exist.
    async fn get_if_exists<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
    ) -> Result<Option<T>, EngineError> {
        match self.get(endpoint, path).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `None` when the task does not exist (any more).
    pub async fn task(&self, id: &str) -> Result<Option<EngineTask>, EngineError> {
        self.get_if_exists("task", &format!("/task/{}", q(id)))
            .await
    }

    pub async fn identity_links(&self, id: &str) -> Result<Vec<IdentityLink>, EngineError> {
        self.get(
            "task_identity_links",
            &format!("/task/{}/identity-links", q(id)),
        )
        .await
    }

    pub async fn identity_link_log_after(
        &self,
        after: &str,
        first: u32,
        max: u32,
    ) -> Result<Vec<IdentityLinkLog>, EngineError> {
        let path = format!(
            "/history/identity-link-log?dateAfter={}&sortBy=time&sortOrder=asc&firstResult={first}&maxResults={max}",
            q(after)
        );
        self.get("identity_link_log", &path).await
    }

    pub async fn identity_link_log_of(
        &self,
        task_id: &str,
    ) -> Result<Vec<IdentityLinkLog>, EngineError> {
        let path = format!(
            "/history/identity-link-log?taskId={}&sortBy=time&sortOrder=asc",
            q(task_id)
        );
        self.get("identity_link_log", &path).await
    }

    pub async fn historic_tasks(
        &self,
        filter: &str,
        after: &str,
        sort_by: &str,
        first: u32,
        max: u32,
    ) -> Result<Vec<HistoricTask>, EngineError> {
        let path = format!(
            "/history/task?{filter}={}&sortBy={sort_by}&sortOrder=asc&firstResult={first}&maxResults={max}",
            q(after)
        );
        self.get("history_task", &path).await
    }

    pub async fn historic_task(&self, id: &str) -> Result<Option<HistoricTask>, EngineError> {
        let path = format!("/history/task?taskId={}", q(id));
        let mut found: Vec<HistoricTask> = self.get("history_task", &path).await?;
        Ok(found.pop())
    }

    pub async fn process_definition(&self, id: &str) -> Result<ProcessDefinition, EngineError> {
        self.get(
            "process_definition",
            &format!("/process-definition/{}", q(id)),
        )
        .await
    }

    pub async fn process_definitions(
        &self,
        first: u32,
        max: u32,
    ) -> Result<Vec<ProcessDefinition>, EngineError> {
        let path = format!(
            "/process-definition?sortBy=id&sortOrder=asc&firstResult={first}&maxResults={max}"
        );
        self.get("process_definition_list", &path).await
    }

    /// The latest version of the definition with `key` (`None`: no such key).
    pub async fn latest_definition(
        &self,
        key: &str,
    ) -> Result<Option<ProcessDefinition>, EngineError> {
        let path = format!("/process-definition?key={}&latestVersion=true", q(key));
        let mut found: Vec<ProcessDefinition> = self.get("process_definition_list", &path).await?;
        Ok(found.pop())
    }

    /// The BPMN XML of a definition (empty for a definition without one, e.g. CMMN).
    pub async fn definition_xml(&self, id: &str) -> Result<String, EngineError> {
        let path = format!("/process-definition/{}/xml", q(id));
        let xml: DefinitionXml = self.get("process_definition_xml", &path).await?;
        Ok(xml.bpmn20_xml.unwrap_or_default())
    }

    /// Whether the engine's authorizations let `user` start instances of `key`: CREATE_INSTANCE
    /// on the definition and CREATE on process instances. An engine with authorizations off
    /// allows both.
    pub async fn may_start(&self, key: &str, user: &str) -> Result<bool, EngineError> {
        for (permission, resource, resource_type, id) in [
            ("CREATE_INSTANCE", "ProcessDefinition", 6, key),
            ("CREATE", "ProcessInstance", 8, "*"),
        ] {
            let path = format!(
                "/authorization/check?permissionName={permission}&resourceName={resource}\
                 &resourceType={resource_type}&resourceId={}&userId={}",
                q(id),
                q(user)
            );
            let check: AuthorizationCheck = self.get("authorization_check", &path).await?;
            if !check.authorized {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The start form: its key and its Camunda Form reference (both absent: none).
    pub async fn start_form(&self, definition_id: &str) -> Result<StartForm, EngineError> {
        let path = format!("/process-definition/{}/startForm", q(definition_id));
        match self.get::<StartForm>("start_form", &path).await {
            Ok(f) => Ok(f),
            Err(e) if e.is_not_found() => Ok(StartForm::default()),
            Err(EngineError::Api { status: 400, .. }) => Ok(StartForm::default()),
            Err(e) => Err(e),
        }
    }

    pub async fn historic_process_instance(
        &self,
        id: &str,
    ) -> Result<Option<HistoricProcessInstance>, EngineError> {
        let path = format!("/history/process-instance/{}", q(id));
        self.get_if_exists("history_process_instance", &path).await
    }

    pub async fn users(&self, first: u32, max: u32) -> Result<Vec<EngineUser>, EngineError> {
        self.get(
            "user_list",
            &format!("/user?sortBy=userId&sortOrder=asc&firstResult={first}&maxResults={max}"),
        )
        .await
    }

    pub async fn groups(&self, first: u32, max: u32) -> Result<Vec<EngineGroup>, EngineError> {
        self.get(
            "group_list",
            &format!("/group?sortBy=id&sortOrder=asc&firstResult={first}&maxResults={max}"),
        )
        .await
    }

    /// The members of a group, a page at a time.
    pub async fn members(
        &self,
        group: &str,
        first: u32,
        max: u32,
    ) -> Result<Vec<EngineUser>, EngineError> {
        let path = format!(
            "/user?memberOfGroup={}&sortBy=userId&sortOrder=asc&firstResult={first}&maxResults={max}",
            q(group)
        );
        self.get("user_list", &path).await
    }

    pub async fn groups_of(&self, user: &str) -> Result<Vec<EngineGroup>, EngineError> {
        self.get("group_list", &format!("/group?member={}", q(user)))
            .await
    }

    /// `POST /task/{id}/{action}`: what a command does to a task.
    async fn task_action(
        &self,
        endpoint: &'static str,
        task_id: &str,
        action: &str,
        body: &Value,
    ) -> Result<(), EngineError> {
        let path = format!("/task/{}/{action}", q(task_id));
        self.post(endpoint, &path, body).await
    }

    pub async fn claim(&self, task_id: &str, user: &str) -> Result<(), EngineError> {
        let body = serde_json::json!({ "userId": user });
        self.task_action("task_claim", task_id, "claim", &body)
            .await
    }

    pub async fn unclaim(&self, task_id: &str) -> Result<(), EngineError> {
        self.task_action("task_unclaim", task_id, "unclaim", &Value::Null)
            .await
    }

    pub async fn set_assignee(&self, task_id: &str, user: Option<&str>) -> Result<(), EngineError> {
        let body = serde_json::json!({ "userId": user });
        self.task_action("task_assignee", task_id, "assignee", &body)
            .await
    }

    pub async fn complete(
        &self,
        task_id: &str,
        variables: Map<String, Value>,
    ) -> Result<(), EngineError> {
        let body = serde_json::json!({ "variables": variables, "withVariablesInReturn": false });
        self.task_action("task_complete", task_id, "complete", &body)
            .await
    }

    /// `PUT /task/{id}` replaces every field: read the task, change one thing, write it all.
    pub async fn put_task(
        &self,
        task: &EngineTask,
        follow_up: Option<String>,
    ) -> Result<(), EngineError> {
        let body = serde_json::json!({
            "name": task.name,
            "description": task.description,
            "priority": task.priority,
            "assignee": task.assignee,
            "owner": task.owner,
            "due": task.due,
            "followUp": follow_up,
            "parentTaskId": task.parent_task_id,
            "caseInstanceId": task.case_instance_id,
            "tenantId": task.tenant_id,
        });
        self.request::<Value>(
            Method::PUT,
            "task_put",
            &format!("/task/{}", q(&task.id)),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// The REST user this collector calls the engine as, if any.
    pub fn user(&self) -> Option<&str> {
        self.config.user.as_deref()
    }

    /// Updates of task `task_id` logged after `after` (the engine's clock), newest first.
    pub async fn task_updates_after(
        &self,
        task_id: &str,
        after: &str,
    ) -> Result<Vec<UserOperation>, EngineError> {
        let path = format!(
            "/history/user-operation?taskId={}&operationType=Update&afterTimestamp={}\
             &sortBy=timestamp&sortOrder=desc&maxResults=100",
            q(task_id),
            q(after)
        );
        self.get("user_operation_list", &path).await
    }

    pub async fn start_process(
        &self,
        key: &str,
        business_key: Option<&str>,
        variables: Map<String, Value>,
    ) -> Result<StartedInstance, EngineError> {
        let body = serde_json::json!({ "businessKey": business_key, "variables": variables });
        self.request(
            Method::POST,
            "process_start",
            &format!("/process-definition/key/{}/start", q(key)),
            Some(&body),
        )
        .await?
        .ok_or_else(|| EngineError::Decode("process_start: empty answer".into()))
    }

    pub async fn tasks_of_instance(
        &self,
        instance_id: &str,
    ) -> Result<Vec<EngineTask>, EngineError> {
        let path = format!(
            "/task?processInstanceId={}&sortBy=created&sortOrder=asc",
            q(instance_id)
        );
        self.get("task_list", &path).await
    }
}
