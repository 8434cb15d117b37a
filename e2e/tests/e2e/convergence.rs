//! A randomized workload against the real engine — starts, claims, unclaims, completions,
//! task updates, variable changes (process and task-local, set and removed), candidate
//! changes, cancellations, suspensions and activations, timer firings, BPMN errors and
//! escalations, from several workers at once — and then the pool's open tasks must equal the
//! engine's field by field, payload included. In each mode.
//!
//! Short by default (`CONVERGENCE_SECS`, 20 s of workload per mode, as `scripts/test` runs
//! it); the long form is `CONVERGENCE_SECS=600 cargo test -p e2e --test e2e convergence`.
//! `CONVERGENCE_SEED` replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Map, Value};
use testkit::{try_wait_for, Engine};

use e2e::{Mode, Stack};

const WORKERS: u64 = 4;
/// The user the comparison lists as: a reviewer (every task here has that candidate group).
const USER: &str = "demo";
const GROUPS: &[&str] = &["reviewers"];
const USERS: &[&str] = &["demo", "rita", "kermit"];

fn workload_secs() -> u64 {
    std::env::var("CONVERGENCE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn seed() -> u64 {
    std::env::var("CONVERGENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen())
}

/// What the workers did, by operation: (tried, accepted by the engine).
#[derive(Default)]
struct Tally(std::sync::Mutex<BTreeMap<&'static str, (usize, usize)>>);

impl Tally {
    fn count(&self, op: &'static str, ok: bool) {
        let mut t = self.0.lock().expect("tally lock");
        let e = t.entry(op).or_default();
        e.0 += 1;
        e.1 += usize::from(ok);
    }
}

fn typed(value: Value) -> Value {
    let kind = match &value {
        Value::Bool(_) => "Boolean",
        Value::Number(_) => "Integer",
        Value::Null => "Null",
        _ => "String",
    };
    json!({"value": value, "type": kind})
}

fn word(rng: &mut StdRng) -> String {
    const WORDS: &[&str] = &["alpha", "Grüße", "✓ ok", "late", "", "x y z"];
    WORDS[rng.gen_range(0..WORDS.len())].to_owned()
}

/// A random date within the next days, as the engine takes it.
fn date(rng: &mut StdRng) -> Value {
    let at = chrono::Utc::now() + chrono::Duration::minutes(rng.gen_range(1..10_000));
    json!(at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string())
}

/// One random step; returns its name and whether the engine accepted it. Races (a task that
/// ended meanwhile, a suspended one) are refused by the engine, as they would be for users.
async fn step(
    engine: &Engine,
    prefix: &str,
    n: &AtomicUsize,
    rng: &mut StdRng,
) -> (&'static str, bool) {
    let open = engine_tasks(engine, prefix).await;
    if open.len() < 6 || rng.gen_bool(0.12) {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let (key, mut vars) = match rng.gen_range(0..4) {
            0 => ("simpleUserTask", json!({})),
            1 => ("variableChanges", json!({})),
            2 => ("engineEvents", json!({})),
            _ => {
                let timeout = format!("PT{}S", rng.gen_range(1..8));
                ("boundaryTimer", json!({"timeout": typed(json!(timeout))}))
            }
        };
        vars["amount"] = typed(json!(rng.gen_range(0..5000)));
        vars["note"] = typed(json!(word(rng)));
        vars["vip"] = typed(json!(rng.gen_bool(0.3)));
        let body = json!({"businessKey": format!("{prefix}-{i}"), "variables": vars});
        let path = format!("/process-definition/key/{key}/start");
        return (
            "start",
            ok(engine.call(Method::POST, &path, Some(body)).await),
        );
    }
    let t = &open[rng.gen_range(0..open.len())];
    let id = t["id"].as_str().unwrap_or_default();
    let instance = t["processInstanceId"].as_str().unwrap_or_default();
    let (op, method, path, body): (&str, Method, String, Option<Value>) = match rng.gen_range(0..15)
    {
        0 | 1 => {
            let user = USERS[rng.gen_range(0..USERS.len())];
            (
                "claim",
                Method::POST,
                format!("/task/{id}/claim"),
                Some(json!({"userId": user})),
            )
        }
        2 => ("unclaim", Method::POST, format!("/task/{id}/unclaim"), None),
        3 | 4 => {
            let vars = json!({"approved": typed(json!(rng.gen_bool(0.5)))});
            (
                "complete",
                Method::POST,
                format!("/task/{id}/complete"),
                Some(json!({"variables": vars})),
            )
        }
        5 => {
            let amount = typed(json!(rng.gen_range(0..5000)));
            (
                "set variable",
                Method::PUT,
                format!("/process-instance/{instance}/variables/amount"),
                Some(amount),
            )
        }
        6 => (
            "remove variable",
            Method::DELETE,
            format!("/process-instance/{instance}/variables/note"),
            None,
        ),
        7 => {
            let value = typed(json!(word(rng)));
            (
                "set local variable",
                Method::PUT,
                format!("/task/{id}/localVariables/local"),
                Some(value),
            )
        }
        8 => (
            "cancel",
            Method::DELETE,
            format!("/process-instance/{instance}"),
            None,
        ),
        9 => {
            let suspended = rng.gen_bool(0.6);
            let body = json!({"suspended": suspended});
            (
                "suspend or activate",
                Method::PUT,
                format!("/process-instance/{instance}/suspended"),
                Some(body),
            )
        }
        10 => {
            // PUT replaces every field: what is not changed is written back as it was.
            let mut body = json!({});
            for field in [
                "description",
                "assignee",
                "owner",
                "parentTaskId",
                "caseInstanceId",
                "tenantId",
            ] {
                body[field] = t[field].clone();
            }
            body["name"] = json!(format!("Task {}", word(rng)));
            body["priority"] = json!(rng.gen_range(0..100));
            body["due"] = if rng.gen_bool(0.7) {
                date(rng)
            } else {
                Value::Null
            };
            body["followUp"] = if rng.gen_bool(0.2) {
                date(rng)
            } else {
                Value::Null
            };
            ("update", Method::PUT, format!("/task/{id}"), Some(body))
        }
        11 => {
            let link = json!({"groupId": "auditors", "type": "candidate"});
            let path = if rng.gen_bool(0.5) {
                format!("/task/{id}/identity-links")
            } else {
                format!("/task/{id}/identity-links/delete")
            };
            ("candidate group", Method::POST, path, Some(link))
        }
        12 => {
            let body = json!({"escalationCode": "late"});
            (
                "escalation",
                Method::POST,
                format!("/task/{id}/bpmnEscalation"),
                Some(body),
            )
        }
        13 => {
            let body = json!({"errorCode": "rejected"});
            (
                "bpmn error",
                Method::POST,
                format!("/task/{id}/bpmnError"),
                Some(body),
            )
        }
        _ => {
            let body = json!({"messageName": "dataArrived", "processInstanceId": instance,
                "processVariables": {"amount": typed(json!(rng.gen_range(0..5000)))}});
            ("message", Method::POST, "/message".to_owned(), Some(body))
        }
    };
    (op, ok(engine.call(method, &path, body).await))
}

fn ok((status, _): (u16, Value)) -> bool {
    (200..300).contains(&status)
}

async fn engine_tasks(engine: &Engine, prefix: &str) -> Vec<Value> {
    let path = format!("/task?processInstanceBusinessKeyLike={prefix}%25&maxResults=2000");
    let (status, tasks) = engine.call(Method::GET, &path, None).await;
    assert_eq!(status, 200, "{path}: {tasks}");
    tasks.as_array().cloned().unwrap_or_default()
}

/// An instant as text, whatever format (engine `+0000` or RFC 3339), to compare dates.
fn instant(v: &Value) -> Value {
    let Some(s) = v.as_str() else {
        return Value::Null;
    };
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z"))
        .map(|d| json!(d.timestamp_millis()))
        .unwrap_or_else(|_| v.clone())
}

fn sorted(v: &Value) -> Value {
    let mut items: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    items.sort();
    json!(items)
}

/// The fields compared, from a task as the task API lists it.
fn listed(t: &Value) -> Value {
    json!({
        "name": t["name"], "assignee": t["assignee"], "owner": t["owner"],
        "priority": t["priority"], "due": instant(&t["due"]), "followUp": instant(&t["followUp"]),
        "taskDefinitionKey": t["taskDefinitionKey"], "suspended": t["suspended"],
        "processDefinitionId": t["source"]["processDefinitionId"],
        "candidateUsers": sorted(&t["candidateUsers"]), "candidateGroups": sorted(&t["candidateGroups"]),
        "payload": t["payload"],
    })
}

/// The same fields, from the engine: the task, its candidates and the variables it sees.
async fn in_engine(engine: &Engine, t: &Value) -> Option<Value> {
    let id = t["id"].as_str()?;
    let (s1, links) = engine
        .call(Method::GET, &format!("/task/{id}/identity-links"), None)
        .await;
    let (s2, vars) = engine
        .call(Method::GET, &format!("/task/{id}/variables"), None)
        .await;
    if s1 != 200 || s2 != 200 {
        return None; // ended meanwhile: the next comparison will not list it
    }
    let (mut users, mut groups) = (Vec::new(), Vec::new());
    for l in links
        .as_array()?
        .iter()
        .filter(|l| l["type"] == "candidate")
    {
        if let Some(u) = l["userId"].as_str() {
            users.push(json!(u));
        }
        if let Some(g) = l["groupId"].as_str() {
            groups.push(json!(g));
        }
    }
    let payload: Map<String, Value> = vars
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), v["value"].clone()))
        .collect();
    Some(json!({
        "name": t["name"], "assignee": t["assignee"], "owner": t["owner"],
        "priority": t["priority"], "due": instant(&t["due"]), "followUp": instant(&t["followUp"]),
        "taskDefinitionKey": t["taskDefinitionKey"], "suspended": t["suspended"],
        "processDefinitionId": t["processDefinitionId"],
        "candidateUsers": sorted(&json!(users)), "candidateGroups": sorted(&json!(groups)),
        "payload": payload,
    }))
}

/// Both sides by task id, and how they differ (empty: equal).
async fn differences(stack: &Stack, prefix: &str) -> Option<Vec<String>> {
    let mut engine = BTreeMap::new();
    for t in engine_tasks(&stack.engine, prefix).await {
        engine.insert(
            t["id"].as_str()?.to_owned(),
            in_engine(&stack.engine, &t).await?,
        );
    }
    let query = format!("filter=task.businessKey%25{prefix}");
    let view: BTreeMap<String, Value> = stack
        .all_tasks(&query, USER, GROUPS)
        .await
        .iter()
        .filter_map(|t| Some((t["taskId"].as_str()?.to_owned(), listed(t))))
        .collect();
    let mut diffs = Vec::new();
    for id in engine
        .keys()
        .chain(view.keys().filter(|k| !engine.contains_key(*k)))
    {
        match (engine.get(id), view.get(id)) {
            (Some(e), Some(v)) if e == v => {}
            (e, v) => diffs.push(format!("{id}: engine {e:?}, pool {v:?}")),
        }
    }
    Some(diffs)
}

async fn converges(mode: Mode, name: &str) {
    let stack = Stack::start(name, mode).await;
    let prefix = format!("conv-{}", stack.app);
    let seed = seed();
    let secs = workload_secs();
    eprintln!("convergence {name}: seed {seed} (CONVERGENCE_SEED), {secs} s (CONVERGENCE_SECS)");
    let tally = Arc::new(Tally::default());
    let started = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (engine, prefix) = (stack.engine.clone(), prefix.clone());
            let (tally, started) = (tally.clone(), started.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
                while Instant::now() < until {
                    let (op, accepted) = step(&engine, &prefix, &started, &mut rng).await;
                    tally.count(op, accepted);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a workload worker");
    }
    eprintln!(
        "convergence {name}: {:?} (tried, accepted)",
        tally.0.lock().expect("tally")
    );
    let result = try_wait_for(
        "the pool's open tasks to equal the engine's, field by field",
        Duration::from_secs(120),
        || async { differences(&stack, &prefix).await.filter(Vec::is_empty) },
    )
    .await;
    if let Err(e) = result {
        let diffs = differences(&stack, &prefix).await.unwrap_or_default();
        panic!("{e} (seed {seed}):\n{}", diffs.join("\n"));
    }
    let open = engine_tasks(&stack.engine, &prefix).await.len();
    assert!(open > 0, "the workload left open tasks to compare");
    stack.delete_instances(&prefix).await;
}

#[tokio::test]
async fn a_random_workload_converges_in_hook_mode() {
    converges(Mode::Hook, "conv-hook").await;
}

#[tokio::test]
async fn a_random_workload_converges_in_poll_mode() {
    converges(Mode::Poll(Duration::from_secs(1)), "conv-poll").await;
}
