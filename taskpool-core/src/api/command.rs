//! Sending task commands over the bus to an application's collector (routing key: the
//! application), as actions and process starts do.

use std::time::Duration;

use taskpool_api::commands::CommandResponse;
use taskpool_api::task_commands::{Actor, TaskCommand, TaskCommandResult};
use taskpool_api::trace::Traceparent;
use taskpool_api::ClientError;

use super::{AppError, Shared};
use crate::identity::Identity;

/// The user as a command names them: with the groups that count in `application`.
pub(super) fn actor(state: &Shared, identity: &Identity, application: &str) -> Actor {
    let view = state.projection.read();
    Actor {
        user: identity.user.clone(),
        groups: identity.groups_in(&view, application),
    }
}

/// Sends a command to `application`'s collector, in the trace of the request (`trace`'s
/// child), and waits for its answer at most `timeout`.
pub(super) async fn send(
    state: &Shared,
    command: &TaskCommand,
    application: &str,
    timeout: Duration,
    trace: &Traceparent,
) -> Result<CommandResponse, ClientError> {
    let context = trace.child();
    let request = command.request(
        application,
        timeout.as_millis() as u64,
        Some(context.to_string()),
    );
    tracing::info!(
        command_id = %request.id,
        command = command.command_type(),
        application,
        trace_id = %context.trace_id(),
        "command sent"
    );
    state.bus.send_command(&request).await
}

/// Sends a command to `application` and waits until the view has its effect; the bool says
/// the wait ended first (the view had not caught up).
#[tracing::instrument(skip_all, fields(command = command.command_type(), application = %application))]
pub(super) async fn execute(
    state: &Shared,
    command: TaskCommand,
    application: &str,
    trace: &Traceparent,
) -> Result<(TaskCommandResult, bool), AppError> {
    let command_type = command.command_type();
    let outcome = |o: &str| {
        state
            .metrics
            .commands
            .with_label_values(&[command_type, o])
            .inc()
    };
    let timeout = state.config.command_timeout;
    let response = send(state, &command, application, timeout, trace)
        .await
        .map_err(|e| {
            let e = AppError::from(e);
            outcome(e.code());
            e
        })?;
    let result = serde_json::from_value::<TaskCommandResult>(response.result)
        .ok()
        .filter(|r| r.application.as_deref().is_none_or(|a| a == application))
        .ok_or_else(|| {
            outcome("bad_result");
            AppError::BadCommandResult {
                application: application.to_owned(),
            }
        })?;
    outcome("ok");
    let shown = state
        .projection
        .wait_for(result.position, state.config.view_wait)
        .await;
    Ok((result, !shown))
}
