//! The rate of `taskpool-core rebuild` on two histories of the same open tasks:
//! - created only: every event makes an open task, the worst case, bound by the store's
//!   document inserts;
//! - a working history: the same open tasks (some claimed) after many more tasks were created,
//!   claimed, updated and completed: what a bus that has run for a while holds.
//!
//! The events have the shape the collector gives them (candidates, priority, payload, source),
//! the users and groups of the `core` benchmark. No engine is needed: a rebuild reads only the bus.

use std::path::Path;

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use taskpool_api::bus::{AppendRequest, NewEvent};
use taskpool_api::streams::task_stream;
use taskpool_api::tasks::{
    SourceReference, Task, TaskAssigned, TaskCompleted, TaskEvent, TaskUpdated,
};
use taskpool_api::BusClient;
use tokio::process::Command;

use crate::cluster;
use crate::core::{groups_of, user};
use crate::{render_table, CommonArgs, RebuildArgs, ViewArgs};

/// Events per append, and appends at once, while filling the bus.
const BATCH: usize = 100;
const APPENDERS: usize = 8;

pub async fn run(common: &CommonArgs, args: &RebuildArgs, dir: &Path) -> bool {
    match bench(common, args, dir).await {
        Ok(table) => {
            print!("{table}");
            true
        }
        Err(e) => {
            eprintln!("rebuild benchmark failed: {e:#}");
            false
        }
    }
}

fn source(i: usize) -> SourceReference {
    SourceReference {
        application: "camunda".into(),
        engine: "default".into(),
        process_definition_key: Some("invoice".into()),
        process_definition_id: Some("invoice:3:7f1c2a5e-0c1d-11f1-9a2b-0242ac120002".into()),
        process_instance_id: Some(format!("pi-{i}")),
        execution_id: Some(format!("ex-{i}")),
        business_key: Some(format!("INV-{i}")),
        process_name: Some("Invoice approval".into()),
        ..Default::default()
    }
}

fn created(i: usize, args: &RebuildArgs) -> TaskEvent {
    let mut payload = serde_json::Map::new();
    payload.insert("amount".into(), json!((i * 37) % 10_000));
    payload.insert("creditor".into(), json!(format!("Supplier {}", i % 500)));
    TaskEvent::Created(Task {
        task_id: format!("task-{i}"),
        name: Some("Approve invoice".into()),
        task_definition_key: Some("approve".into()),
        priority: ((i * 13) % 100) as i64,
        created: format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.000Z",
            1 + (i / 86_400) % 28,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60
        ),
        candidate_users: vec![user((i * 7) % args.users)],
        candidate_groups: vec![groups_of(i % args.users, args.groups)[0].clone()],
        payload,
        source: source(i),
        ..Default::default()
    })
}

fn claimed(i: usize, args: &RebuildArgs) -> TaskEvent {
    TaskEvent::Assigned(TaskAssigned {
        task_id: format!("task-{i}"),
        assignee: Some(user((i * 7) % args.users)),
        source: source(i),
    })
}

/// A finished task's whole life: created, claimed, its variables changed, completed.
fn finished(i: usize, args: &RebuildArgs) -> Vec<TaskEvent> {
    let mut payload = serde_json::Map::new();
    payload.insert("approved".into(), json!(i % 3 != 0));
    vec![
        created(i, args),
        claimed(i, args),
        TaskEvent::Updated(TaskUpdated {
            task_id: format!("task-{i}"),
            source: source(i),
            payload: Some(payload),
            ..Default::default()
        }),
        TaskEvent::Completed(TaskCompleted {
            task_id: format!("task-{i}"),
            completed_by: Some(user((i * 7) % args.users)),
            source: source(i),
        }),
    ]
}

/// Appends `events` in batches, several at once; a task's events stay in one batch.
async fn fill(bus: &BusClient, tasks: Vec<Vec<TaskEvent>>) -> Result<usize> {
    let mut batches: Vec<Vec<TaskEvent>> = vec![Vec::new()];
    for events in tasks {
        if batches
            .last()
            .is_some_and(|b| b.len() + events.len() > BATCH)
        {
            batches.push(Vec::new());
        }
        batches.last_mut().context("a batch")?.extend(events);
    }
    let total: usize = batches.iter().map(Vec::len).sum();
    futures::stream::iter(batches.into_iter().map(|batch| async move {
        let events = batch
            .iter()
            .map(|e| {
                Ok(NewEvent::new(
                    task_stream(&e.source().application, e.task_id()),
                    e.event_type(),
                    &e.to_json()?,
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        bus.append(&AppendRequest {
            events,
            expected_versions: Default::default(),
        })
        .await?;
        Ok::<(), anyhow::Error>(())
    }))
    .buffer_unordered(APPENDERS)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(total)
}

/// Runs `taskpool-core rebuild` into `database`; returns its summary line.
pub(crate) async fn rebuild(
    view: &ViewArgs,
    bus: &testkit::Cluster,
    database: &str,
) -> Result<String> {
    let out = Command::new(&view.core_bin)
        .args(["rebuild", "--bus", &bus.urls().join(",")])
        .args(["--mongo-url", &view.mongo_url, "--database", database])
        .arg("--no-progress")
        .env("TASKPOOL_BUS_TOKEN", bus.token().unwrap_or_default())
        .output()
        .await?;
    if !out.status.success() {
        bail!("rebuild failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `(seconds, replay, write)` from a rebuild's summary line.
fn timings(line: &str) -> Option<(f64, f64, f64)> {
    let number_before = |marker: &str| -> Option<f64> {
        let head = &line[..line.find(marker)?];
        head.rsplit(' ').next()?.parse().ok()
    };
    let total = number_before(" s (")?;
    let replay = number_before(" s, write")?;
    let write = number_before(" s)")?;
    Some((total, replay, write))
}

async fn bench(common: &CommonArgs, args: &RebuildArgs, dir: &Path) -> Result<String> {
    if !args.view.core_bin.exists() {
        bail!(
            "{} not found: run cargo build --release -p taskpool-core",
            args.view.core_bin.display()
        );
    }
    let mongo = mongodb::Client::with_uri_str(&args.view.mongo_url).await?;
    eprintln!("[rebuild] starting three bus nodes");
    let cluster = cluster::start_bus(common, dir).await?;
    let bus = cluster::client_from(&cluster, 0)?;
    let run_id = &crate::run_id();
    let mut rows = vec![["history on the bus", "events", "events/s", "note"].map(String::from)];
    let mut measure = |what: String, line: String, events: usize| -> Result<()> {
        let (total, replay, write) =
            timings(&line).with_context(|| format!("a rebuild summary: {line}"))?;
        eprintln!("[rebuild] {line}");
        if !line.contains(&format!(", {} open tasks in", args.open_tasks)) {
            bail!(
                "the rebuilt view should hold {} open tasks: {line}",
                args.open_tasks
            );
        }
        rows.push([
            what,
            events.to_string(),
            format!("{:.0}", events as f64 / total),
            format!(
                "{} open tasks in {total:.1} s: replay {replay:.1} s, write {write:.1} s (goal ≥ 20,000 events/s)",
                args.open_tasks
            ),
        ]);
        Ok(())
    };

    eprintln!("[rebuild] appending {} created tasks", args.open_tasks);
    let open: Vec<Vec<TaskEvent>> = (0..args.open_tasks)
        .map(|i| vec![created(i, args)])
        .collect();
    let mut events = fill(&bus, open).await?;
    let first = format!("bench_rebuild_{run_id}_created");
    let line = rebuild(&args.view, &cluster, &first).await?;
    measure(
        format!("{} tasks created, nothing else", args.open_tasks),
        line,
        events,
    )?;

    eprintln!(
        "[rebuild] appending {} finished tasks and claims of a third of the open ones",
        args.finished_tasks
    );
    let history: Vec<Vec<TaskEvent>> = (0..args.finished_tasks)
        .map(|i| finished(args.open_tasks + i, args))
        .chain(
            (0..args.open_tasks)
                .step_by(3)
                .map(|i| vec![claimed(i, args)]),
        )
        .collect();
    events += fill(&bus, history).await?;
    let second = format!("bench_rebuild_{run_id}_history");
    let line = rebuild(&args.view, &cluster, &second).await?;
    measure(
        format!(
            "the same open tasks (a third claimed) after {} finished tasks (created, claimed, updated, completed)",
            args.finished_tasks
        ),
        line,
        events,
    )?;

    for db in [first, second] {
        mongo.database(&db).drop().await?;
    }
    Ok(render_table(&rows))
}

#[cfg(test)]
mod tests {
    use super::timings;

    #[test]
    fn reads_the_summary_line() {
        let line = "rebuilt view: 500000 events, 100000 open tasks in 12.5 s (40000 events/s; replay 4.1 s, write 8.4 s)";
        assert_eq!(timings(line), Some((12.5, 4.1, 8.4)));
        assert_eq!(timings("rebuilt view: garbage"), None);
    }
}
