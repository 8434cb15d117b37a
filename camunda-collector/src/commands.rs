//! Task commands from the bus, executed through the engine's REST API. After the engine has
//! done it, the task is looked at once more, so the answer names the event that records the
//! effect (read-your-writes for the caller).

use std::sync::Arc;

use serde_json::Value;
use taskpool_api::commands::{CommandMessage, CommandResult};
use taskpool_api::task_commands::{
    Actor, ParseError, StartProcess, StartableKeys, TaskCommand, TaskCommandResult,
};

use crate::authority;
use crate::dates;
use crate::emitter::{EmitError, Emitter, Head};
use crate::engine::EngineError;
use crate::follow_up;
use crate::metrics::Metrics;
use crate::snapshot::{typed_variables, Snapshots};

pub struct Executor {
    pub snapshots: Arc<Snapshots>,
    pub emitter: Arc<Emitter>,
    pub metrics: Metrics,
    /// The application this collector executes commands for (the routing key it handles).
    pub application: String,
}

/// A failed command: the status the sender gets, a stable code and a clear message.
#[derive(Debug)]
pub struct Failure {
    status: u16,
    code: &'static str,
    message: String,
}

pub(crate) fn fail(status: u16, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
    }
}

/// Camunda answers most failures with 500 and says what happened in `type` and `message`.
impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        match &e {
            _ if e.is_not_found() => fail(404, "task_not_found", e.to_string()),
            EngineError::Api { kind, message, .. }
                if kind.contains("TaskAlreadyClaimed") || message.contains("already claimed") =>
            {
                fail(409, "already_claimed", message.clone())
            }
            EngineError::Api {
                code: Some(1),
                message,
                ..
            } => fail(
                409,
                "conflict",
                format!("the engine saw a concurrent change; retry: {message}"),
            ),
            EngineError::Api {
                status: 400,
                message,
                ..
            } => fail(422, "rejected_by_engine", message.clone()),
            EngineError::Api {
                status: 403,
                message,
                ..
            } => fail(403, "forbidden_by_engine", message.clone()),
            EngineError::Api { kind, message, .. }
                if kind.contains("ProcessEngineException") && message.contains("suspended") =>
            {
                fail(409, "suspended", message.clone())
            }
            EngineError::Unreachable(m) => fail(503, "engine_unavailable", m.clone()),
            EngineError::Api { .. } | EngineError::Decode(_) => {
                fail(502, "engine_error", e.to_string())
            }
        }
    }
}

impl From<EmitError> for Failure {
    fn from(e: EmitError) -> Failure {
        fail(
            503,
            "not_recorded",
            format!("the engine did it but its event is not on the bus yet (it will be): {e}"),
        )
    }
}

impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Failure {
        match e {
            ParseError::UnknownType(t) => fail(
                422,
                "unknown_command",
                format!("this collector does not handle {t}"),
            ),
            e @ ParseError::BadPayload { .. } => fail(422, "bad_payload", e.to_string()),
        }
    }
}

impl Executor {
    pub async fn execute(&self, command: CommandMessage) -> CommandResult {
        let kind = command.command_type.clone();
        let answer = match self.run(&command).await {
            Ok(value) => CommandResult::success(String::new(), value),
            Err(f) => {
                tracing::info!(id = %command.id, kind, code = f.code, message = %f.message, "command failed");
                CommandResult::failure(String::new(), f.status, f.code, f.message)
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
    async fn run(&self, message: &CommandMessage) -> Result<Value, Failure> {
        if message.routing_key != self.application {
            return Err(fail(
                404,
                "unknown_application",
                format!(
                    "this collector serves application {}, not {}",
                    self.application, message.routing_key
                ),
            ));
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
                    fail(
                        422,
                        "bad_payload",
                        format!("followUp {:?} is not an RFC 3339 date", c.follow_up),
                    )
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
    ) -> Result<(), Failure> {
        let engine = self.snapshots.engine();
        let mut attempt = 0;
        loop {
            let task = authority::task_for(engine, task_id, actor).await?;
            match follow_up::set(engine, &task, follow_up.clone()).await {
                Err(crate::engine::EngineError::Api { code: Some(1), .. }) if attempt < 3 => {
                    attempt += 1;
                }
                other => return other.map(|_| ()).map_err(Failure::from),
            }
        }
    }

    async fn start(&self, c: &StartProcess) -> Result<TaskCommandResult, Failure> {
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
            .map_err(|e| match Failure::from(e) {
                f if f.code == "task_not_found" => fail(404, "process_not_found", f.message),
                f => f,
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
    async fn record(&self, task_id: &str) -> Result<Head, Failure> {
        let obs = self
            .snapshots
            .current(task_id)
            .await?
            .ok_or_else(|| fail(404, "task_not_found", format!("task {task_id} vanished")))?;
        self.emitter
            .observe(&obs, "command")
            .await?
            .ok_or_else(|| fail(503, "not_recorded", "no event recorded the change"))
    }
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
