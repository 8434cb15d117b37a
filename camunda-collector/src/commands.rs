//! Task commands from the bus, executed through the engine's REST API. After the engine has
//! done it, the task is looked at once more, so the answer names the event that records the
//! effect (read-your-writes for the caller).

use std::sync::Arc;

use serde_json::Value;
use taskpool_api::commands::{CommandMessage, CommandResult};
use taskpool_api::task_commands::{
    Actor, StartProcess, StartableKeys, TaskCommand, TaskCommandResult,
};
use taskpool_api::trace::Traceparent;
use tracing::Instrument;

use crate::authority;
use crate::dates;
use crate::emitter::{Emitter, Head};
use crate::engine::{in_trace, EngineError};
use crate::error::CollectorError;
use crate::follow_up;
use crate::metrics::Metrics;
use crate::payload::typed_variables;
use crate::snapshot::Snapshots;

pub struct Executor {
    pub snapshots: Arc<Snapshots>,
    pub emitter: Arc<Emitter>,
    pub metrics: Metrics,
    /// The application this collector executes commands for (the routing key it handles).
    pub application: String,
}

impl Executor {
    /// Executes a command in a span of its trace (the sender's, or a new one), which the
    /// engine calls it makes carry on.
    pub async fn execute(&self, command: CommandMessage) -> CommandResult {
        let context = Traceparent::from_header_or_new(command.traceparent.as_deref());
        let span = tracing::info_span!(
            "command",
            command_id = %command.id,
            r#type = %command.command_type,
            trace_id = %context.trace_id(),
        );
        in_trace(context, self.answer(command))
            .instrument(span)
            .await
    }

    async fn answer(&self, command: CommandMessage) -> CommandResult {
        let kind = command.command_type.clone();
        let answer = match self.run(&command).await {
            Ok(value) => {
                tracing::info!("command executed");
                CommandResult::success(String::new(), value)
            }
            Err(e) => {
                tracing::info!(code = e.code(), error = %e, "command failed");
                e.to_result()
            }
        };
        let outcome = answer.error.as_ref().map_or("ok", |e| e.code.as_str());
        self.metrics
            .commands
            .with_label_values(&[&kind, outcome])
            .inc();
        answer
    }

    /// The one dispatch: each command's check by the engine and its engine call.
    async fn run(&self, message: &CommandMessage) -> Result<Value, CollectorError> {
        if message.routing_key != self.application {
            return Err(CollectorError::UnknownApplication {
                serves: self.application.clone(),
                asked: message.routing_key.clone(),
            });
        }
        let command = TaskCommand::parse(&message.command_type, &message.payload)?;
        let engine = self.snapshots.engine();
        let actor = command.actor();
        match &command {
            TaskCommand::ClaimTask(c) => {
                authority::task_for(engine, &c.task_id, actor).await?;
                engine.claim(&c.task_id, &c.user).await?;
            }
            TaskCommand::UnclaimTask(c) => {
                authority::task_for(engine, &c.task_id, actor).await?;
                engine.unclaim(&c.task_id).await?;
            }
            TaskCommand::AssignTask(c) => {
                authority::task_for(engine, &c.task_id, actor).await?;
                engine.set_assignee(&c.task_id, c.user.as_deref()).await?;
            }
            TaskCommand::CompleteTask(c) => {
                let task = authority::task_for(engine, &c.task_id, actor).await?;
                // Completed by a user: the task records who, as Tasklist does by claiming first
                // (which the engine refuses if someone claimed it meanwhile).
                if let (Some(user), None) = (&c.user, &task.assignee) {
                    engine.claim(&c.task_id, user).await?;
                }
                engine
                    .complete(&c.task_id, typed_variables(&c.variables))
                    .await?;
            }
            TaskCommand::DeferTask(c) => {
                let at = dates::parse(&c.follow_up).ok_or_else(|| {
                    CollectorError::BadPayload(format!(
                        "followUp {:?} is not an RFC 3339 date",
                        c.follow_up
                    ))
                })?;
                self.set_follow_up(&c.task_id, actor, Some(dates::to_engine(at)))
                    .await?;
            }
            TaskCommand::UndeferTask(c) => {
                self.set_follow_up(&c.task_id, actor, None).await?;
            }
            TaskCommand::StartProcess(c) => return self.start(c).await.map(to_json),
            TaskCommand::StartableProcesses(q) => {
                let keys = authority::startable_keys(engine, q.keys.clone(), actor).await?;
                return Ok(to_json(StartableKeys { keys }));
            }
        }
        let task_id = command.task_id().unwrap_or_default();
        let head = self.record(task_id).await?;
        Ok(to_json(TaskCommandResult {
            application: Some(self.application.clone()),
            task_id: Some(task_id.to_owned()),
            process_instance_id: None,
            position: head.position,
            stream: Some(head.stream),
            version: Some(head.version),
        }))
    }

    /// Read, modify, write (`follow_up`): from the state read for the check an instant before
    /// (never the view's); a write the engine refused for a concurrent change (its optimistic
    /// lock) starts again from a fresh read, and a concurrent change the write overwrote is put
    /// back from the engine's log.
    async fn set_follow_up(
        &self,
        task_id: &str,
        actor: Option<&Actor>,
        follow_up: Option<String>,
    ) -> Result<(), CollectorError> {
        let engine = self.snapshots.engine();
        let mut attempt = 0;
        loop {
            let task = authority::task_for(engine, task_id, actor).await?;
            match follow_up::set(engine, &task, follow_up.clone()).await {
                Err(EngineError::Api { code: Some(1), .. }) if attempt < 3 => {
                    attempt += 1;
                }
                other => return other.map(|_| ()).map_err(CollectorError::from),
            }
        }
    }

    async fn start(&self, c: &StartProcess) -> Result<TaskCommandResult, CollectorError> {
        let engine = self.snapshots.engine();
        if let Some(actor) = &c.actor {
            authority::startable(engine, &c.process_definition_key, actor).await?;
        }
        let started = engine
            .start_process(
                &c.process_definition_key,
                c.business_key.as_deref(),
                typed_variables(&c.variables),
            )
            .await
            .map_err(|e| match CollectorError::from(e) {
                CollectorError::TaskNotFound(m) => CollectorError::ProcessNotFound(m),
                e => e,
            })?;
        let tasks = engine.tasks_of_instance(&started.id).await?;
        let mut first: Option<Head> = None;
        for t in &tasks {
            let obs = self.snapshots.open(t).await?;
            if let Some(head) = self.emitter.observe(&obs, "command").await? {
                first.get_or_insert(head);
            }
        }
        Ok(TaskCommandResult {
            application: Some(self.application.clone()),
            task_id: tasks.first().map(|t| t.id.clone()),
            process_instance_id: Some(started.id),
            position: first.as_ref().map_or(0, |h| h.position),
            stream: first.as_ref().map(|h| h.stream.clone()),
            version: first.as_ref().map(|h| h.version),
        })
    }

    /// Looks at the task now and emits its change; the head names the recording event.
    async fn record(&self, task_id: &str) -> Result<Head, CollectorError> {
        let obs = self
            .snapshots
            .current(task_id)
            .await?
            .ok_or_else(|| CollectorError::TaskNotFound(format!("task {task_id} vanished")))?;
        self.emitter
            .observe(&obs, "command")
            .await?
            .ok_or_else(|| CollectorError::NotRecorded("no event recorded the change".into()))
    }
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
