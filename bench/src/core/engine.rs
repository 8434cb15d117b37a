//! The engine's side of the `core` benchmark: its 100,000 open tasks (a multi-instance user
//! task, 1,000 tasks per start), its users, groups and memberships (identity REST API), the
//! same tasks read back as `TaskCreated` data (task list pages plus the identity-link log for
//! candidates), and its own answers to "my tasks".

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::json;
use taskpool_api::tasks::{SourceReference, Task};

use crate::collector::Engine;
use crate::CoreArgs;

const KEY: &str = "taskpoolBenchQuery";
const PER_START: usize = 1_000;

fn bpmn() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="bench-query" targetNamespace="http://taskpool.dev/bench">
  <bpmn:process id="{KEY}" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:userTask id="work" name="Bench task"
        camunda:candidateUsers="bench-user-${{(loopCounter * 7 + offset) % users}}"
        camunda:candidateGroups="bench-group-${{(loopCounter + offset) % groups}}"
        camunda:priority="${{(loopCounter * 13 + offset) % 100}}">
      <bpmn:multiInstanceLoopCharacteristics camunda:collection="${{items}}" camunda:elementVariable="item" />
    </bpmn:userTask>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#
    )
}

pub(crate) fn user(i: usize) -> String {
    format!("bench-user-{i}")
}

/// A user's five groups.
pub(crate) fn groups_of(i: usize, groups: usize) -> Vec<String> {
    (0..5)
        .map(|k| format!("bench-group-{}", (i + k * 10) % groups))
        .collect()
}

async fn count(engine: &Engine, query: &str) -> Result<u64> {
    let (v, _) = engine
        .call(Method::GET, &format!("/task/count?{query}"), None)
        .await?;
    v["count"].as_u64().context("count")
}

/// Users, groups and memberships in the engine's identity service (skipped when present).
pub(super) async fn identities(engine: &Engine, args: &CoreArgs) -> Result<()> {
    let last = user(args.users - 1);
    if engine
        .call(Method::GET, &format!("/user/{last}/profile"), None)
        .await
        .is_ok()
    {
        return Ok(());
    }
    eprintln!(
        "[core] creating {} users and {} groups in the engine",
        args.users, args.groups
    );
    for g in 0..args.groups {
        let id = format!("bench-group-{g}");
        let _ = engine
            .call(
                Method::POST,
                "/group/create",
                Some(json!({"id": id, "name": id, "type": "WORKFLOW"})),
            )
            .await;
    }
    for i in 0..args.users {
        let id = user(i);
        let _ = engine
            .call(Method::POST, "/user/create", Some(json!({
                "profile": {"id": id, "firstName": "Bench", "lastName": i.to_string(), "email": format!("{id}@example.com")},
                "credentials": {"password": "bench-password"}
            })))
            .await;
        for g in groups_of(i, args.groups) {
            let _ = engine
                .call(Method::PUT, &format!("/group/{g}/members/{id}"), None)
                .await;
        }
    }
    Ok(())
}

/// Starts instances until the engine holds `args.tasks` open bench tasks (the run removes
/// them at its end, so other work on the engine does not meet them).
pub(super) async fn fill(engine: &Engine, args: &CoreArgs) -> Result<()> {
    engine
        .deploy_bytes("bench-query.bpmn", bpmn().into_bytes())
        .await?;
    let mut open = count(engine, &format!("processDefinitionKey={KEY}")).await? as usize;
    let started = Instant::now();
    let mut offset = open / PER_START;
    while open < args.tasks {
        let items: Vec<usize> = (0..PER_START).collect();
        engine
            .start(KEY, json!({
                "items": {"value": serde_json::to_string(&items)?, "type": "Object",
                          "valueInfo": {"objectTypeName": "java.util.ArrayList", "serializationDataFormat": "application/json"}},
                "offset": {"value": offset, "type": "Integer"},
                "users": {"value": args.users, "type": "Integer"},
                "groups": {"value": args.groups, "type": "Integer"},
            }))
            .await?;
        offset += 1;
        open += PER_START;
        eprintln!(
            "[core] engine: {open}/{} open tasks ({:.0} s)",
            args.tasks,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The engine's bench tasks as `TaskCreated` data of `application`: task list pages plus the
/// identity-link log for candidates, in the order of their ids.
pub(super) async fn tasks(engine: &Engine, application: &str) -> Result<Vec<Task>> {
    let mut candidates: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    let page = 10_000;
    for first in (0..).step_by(page) {
        let (v, _) = engine
            .call(Method::GET, &format!("/history/identity-link-log?processDefinitionKey={KEY}&type=candidate&sortBy=time&sortOrder=asc&firstResult={first}&maxResults={page}"), None)
            .await?;
        let rows = v.as_array().context("identity links")?;
        for r in rows {
            let (Some(task), Some(op)) = (r["taskId"].as_str(), r["operationType"].as_str()) else {
                continue;
            };
            let entry = candidates.entry(task.to_owned()).or_default();
            if op != "add" {
                continue;
            }
            if let Some(u) = r["userId"].as_str() {
                entry.0.push(u.to_owned());
            }
            if let Some(g) = r["groupId"].as_str() {
                entry.1.push(g.to_owned());
            }
        }
        if rows.len() < page {
            break;
        }
    }
    let mut tasks = Vec::new();
    for first in (0..).step_by(page) {
        let (v, _) = engine
            .call(Method::GET, &format!("/task?processDefinitionKey={KEY}&sortBy=id&sortOrder=asc&firstResult={first}&maxResults={page}"), None)
            .await?;
        let rows = v.as_array().context("tasks")?;
        for t in rows {
            let id = t["id"].as_str().context("task id")?.to_owned();
            let (users, groups) = candidates.remove(&id).unwrap_or_default();
            let created = t["created"]
                .as_str()
                .and_then(|c| chrono::DateTime::parse_from_str(c, "%Y-%m-%dT%H:%M:%S%.3f%z").ok())
                .map(|d| {
                    d.with_timezone(&chrono::Utc)
                        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                        .to_string()
                })
                .context("created")?;
            tasks.push(Task {
                task_id: id,
                name: t["name"].as_str().map(str::to_owned),
                task_definition_key: t["taskDefinitionKey"].as_str().map(str::to_owned),
                priority: t["priority"].as_i64().unwrap_or(50),
                created,
                assignee: t["assignee"].as_str().map(str::to_owned),
                candidate_users: users,
                candidate_groups: groups,
                source: SourceReference {
                    application: application.into(),
                    engine: "default".into(),
                    process_definition_key: Some(KEY.into()),
                    process_definition_id: t["processDefinitionId"].as_str().map(str::to_owned),
                    process_instance_id: t["processInstanceId"].as_str().map(str::to_owned),
                    execution_id: t["executionId"].as_str().map(str::to_owned),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        if rows.len() < page {
            break;
        }
    }
    Ok(tasks)
}

/// The very question taskpool-core answers, on the engine: assignee, candidate user or one
/// of the user's five groups, first page of 50 by priority then creation, and the count.
pub(super) async fn my_tasks(engine: &Engine, u: usize, groups: usize) -> Result<u64> {
    let name = user(u);
    let body = json!({
        "orQueries": [{"assignee": name, "candidateUser": name, "candidateGroups": groups_of(u, groups), "includeAssignedTasks": true}],
        "sorting": [{"sortBy": "priority", "sortOrder": "desc"}, {"sortBy": "created", "sortOrder": "asc"}],
    });
    engine
        .call(
            Method::POST,
            "/task?firstResult=0&maxResults=50",
            Some(body.clone()),
        )
        .await?;
    let (v, _) = engine.call(Method::POST, "/task/count", Some(body)).await?;
    Ok(v["count"].as_u64().unwrap_or(0))
}

/// A narrower engine query (`q`: its filter parameters), first page of 50 by priority and
/// the count.
pub(super) async fn list(engine: &Engine, q: &str) -> Result<u64> {
    engine
        .call(
            Method::GET,
            &format!("/task?{q}&sortBy=priority&sortOrder=desc&firstResult=0&maxResults=50"),
            None,
        )
        .await?;
    count(engine, q).await
}

/// Removes the benchmark's process instances from the engine.
pub(super) async fn remove(engine: &Engine) -> Result<()> {
    let (v, _) = engine
        .call(
            Method::GET,
            &format!("/process-instance?processDefinitionKey={KEY}"),
            None,
        )
        .await?;
    let instances: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    engine.delete(&instances).await;
    Ok(())
}
