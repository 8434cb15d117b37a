//! What the collector asks of an engine before it relies on it: which version it runs, and
//! whether its history level keeps what poll mode reads. Camunda's REST API does not tell the
//! history level, so the history is checked against evidence: open tasks with candidates must
//! have identity-link log entries, instances with variables must have variable details (both
//! are written at history level `full` only).

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;

use super::{q, Engine, EngineError, EngineTask, VariableInstance};

/// `GET /version`
#[derive(Debug, Clone, Deserialize)]
pub struct EngineVersion {
    pub version: String,
}

/// What the history check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryCheck {
    /// The history keeps what poll mode reads.
    Full,
    /// It does not: the message says what is missing and which setting to change.
    TooLow(String),
    /// Nothing to judge by yet (no open task with candidates or variables).
    Undecided,
}

/// How many of the newest open tasks the check looks at.
const SAMPLE: u32 = 20;

const SETTING: &str = "set the engine's history level to full \
    (camunda.bpm.history-level=full, or historyLevel in the engine configuration); \
    or run this collector in hook mode";

/// `GET …/count`
#[derive(Deserialize)]
pub(super) struct Count {
    pub(super) count: u64,
}

impl Engine {
    /// The engine's clock now, from the `Date` header of a small answer (whole seconds: the
    /// second before it), this host's less a second without one. Watermarks are kept in the
    /// engine's time, so this host's clock may be off.
    pub async fn clock(&self) -> Result<DateTime<Utc>, EngineError> {
        let (_, date) = self
            .request_dated::<serde_json::Value>(Method::GET, "version", "/version", None)
            .await?;
        Ok(date.unwrap_or_else(Utc::now) - chrono::Duration::seconds(1))
    }

    pub async fn version(&self) -> Result<String, EngineError> {
        let v: EngineVersion = self.get("version", "/version").await?;
        Ok(v.version)
    }

    /// Judges the history level by the newest open tasks (a few calls, once).
    pub async fn check_history(&self) -> Result<HistoryCheck, EngineError> {
        let path = format!("/task?sortBy=created&sortOrder=desc&maxResults={SAMPLE}");
        let tasks: Vec<EngineTask> = self.get("task_list", &path).await?;
        let mut decided = false;
        for t in &tasks {
            let links = self.identity_links(&t.id).await?;
            if !links.iter().any(|l| l.link_type == "candidate") {
                continue;
            }
            let path = format!("/history/identity-link-log/count?taskId={}", q(&t.id));
            let logged: Count = self.get("identity_link_log_count", &path).await?;
            if logged.count == 0 {
                return Ok(HistoryCheck::TooLow(format!(
                    "task {} has candidates but the engine's history has no identity-link log \
                     for it, so poll mode would miss candidate changes: {SETTING}",
                    t.id
                )));
            }
            decided = true;
            break;
        }
        let instances: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.process_instance_id.clone())
            .collect();
        if !instances.is_empty() {
            let path = format!(
                "/variable-instance?processInstanceIdIn={}&maxResults=1&deserializeValues=false",
                q(&instances.join(","))
            );
            let vars: Vec<VariableInstance> = self.get("variable_instance_list", &path).await?;
            if let Some(instance) = vars.iter().find_map(|v| v.process_instance_id.clone()) {
                let path = format!(
                    "/history/detail/count?variableUpdates=true&processInstanceId={}",
                    q(&instance)
                );
                let logged: Count = self.get("history_detail_count", &path).await?;
                if logged.count == 0 {
                    return Ok(HistoryCheck::TooLow(format!(
                        "process instance {instance} has variables but the engine's history has \
                         no variable details for it, so poll mode would miss variable changes: \
                         {SETTING}"
                    )));
                }
                decided = true;
            }
        }
        Ok(if decided {
            HistoryCheck::Full
        } else {
            HistoryCheck::Undecided
        })
    }
}
