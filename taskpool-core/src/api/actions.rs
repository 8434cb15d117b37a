//! Acting on tasks: each action is a bus command to the task's engine (routing key: its
//! application), answered once the view shows the command's effect (read-your-writes). The
//! view's answer to "may this user do it" is only a quick refusal: the command carries the
//! user and their groups in that application, and the collector lets the engine's current
//! state decide.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskpool_api::task_commands::{
    Actor, AssignTask, ClaimTask, CompleteTask, DeferTask, TaskCommand, TaskCommandResult,
    UnclaimTask, UndeferTask,
};

use super::openapi::ErrorSchema;
use super::tasks::{visible_task, TaskPath};
use super::{AppError, Body, Shared, User};
use crate::identity::Identity;
use crate::query::normalize_date;
use crate::view::TaskView;

/// What an action answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    /// The task as the view shows it now; `null` once completed or no longer yours to see.
    #[schema(value_type = Option<TaskView>)]
    pub task: Option<Arc<TaskView>>,
    /// Bus position of the event that recorded the effect (0 when nothing had to change).
    pub position: u64,
    /// true: the command was executed but the view had not shown it within the wait.
    pub view_pending: bool,
}

/// The user as a command names them: with the groups that count in `application`.
pub(super) fn actor(state: &Shared, identity: &Identity, application: &str) -> Actor {
    let view = state
        .projection
        .view
        .read()
        .unwrap_or_else(|p| p.into_inner());
    Actor {
        user: identity.user.clone(),
        groups: identity.groups_in(&view, application),
    }
}

/// Sends a command to `application` and waits until the view has its effect.
pub(super) async fn execute(
    state: &Shared,
    command: TaskCommand,
    application: &str,
) -> Result<(TaskCommandResult, bool), AppError> {
    let command_type = command.command_type();
    let request = command.request(
        application,
        state.config.command_timeout.as_millis() as u64,
        None,
    );
    let outcome = |o: &str| {
        state
            .metrics
            .commands
            .with_label_values(&[command_type, o])
            .inc()
    };
    let response = match state.bus.send_command(&request).await {
        Ok(r) => r,
        Err(e) => {
            let e = AppError::from(e);
            outcome(e.code());
            return Err(e);
        }
    };
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

fn respond(
    state: &Shared,
    identity: &Identity,
    path: &TaskPath,
    position: u64,
    view_pending: bool,
) -> Response {
    let status = if view_pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let task = visible_task(state, identity, path).ok();
    (
        status,
        Json(ActionResult {
            task,
            position,
            view_pending,
        }),
    )
        .into_response()
}

/// 409 when someone else holds the task.
fn not_held_by_other(task: &TaskView, user: &str) -> Result<(), AppError> {
    match task.task.assignee.as_deref() {
        Some(holder) if holder != user => Err(AppError::HeldByOther {
            task: task.id().to_owned(),
            assignee: holder.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// One action: the task must be visible to the user and not held by someone else (in the
/// view, for a quick answer); `payload` builds the command from the task and the actor, or
/// says that nothing has to change (`None`: answered at once, without a command).
async fn act(
    state: &Shared,
    identity: &Identity,
    path: &TaskPath,
    command: impl FnOnce(&TaskView, Actor) -> Option<TaskCommand>,
) -> Result<Response, AppError> {
    let task = visible_task(state, identity, path)?;
    not_held_by_other(&task, &identity.user)?;
    let actor = actor(state, identity, &path.application);
    let Some(command) = command(&task, actor) else {
        return Ok(respond(state, identity, path, task.position, false));
    };
    let (result, pending) = execute(state, command, &path.application).await?;
    Ok(respond(state, identity, path, result.position, pending))
}

/// Claim the task for yourself.
#[utoipa::path(post, path = "/api/v1/tasks/{application}/{taskId}/claim", tag = "actions",
    params(TaskPath),
    responses((status = 200, body = ActionResult), (status = 202, body = ActionResult, description = "done; the view had not caught up"),
        (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema), (status = 503, body = ErrorSchema)))]
pub async fn claim(
    State(state): State<Shared>,
    User(id): User,
    Path(path): Path<TaskPath>,
) -> Result<Response, AppError> {
    act(&state, &id, &path, |task, actor| {
        (task.task.assignee.as_deref() != Some(actor.user.as_str())).then(|| {
            TaskCommand::ClaimTask(ClaimTask {
                task_id: path.task_id.clone(),
                user: actor.user.clone(),
                actor: Some(actor),
            })
        })
    })
    .await
}

/// Give the task back (only its assignee may).
#[utoipa::path(post, path = "/api/v1/tasks/{application}/{taskId}/unclaim", tag = "actions",
    params(TaskPath),
    responses((status = 200, body = ActionResult), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn unclaim(
    State(state): State<Shared>,
    User(id): User,
    Path(path): Path<TaskPath>,
) -> Result<Response, AppError> {
    act(&state, &id, &path, |task, actor| {
        task.task.assignee.is_some().then(|| {
            TaskCommand::UnclaimTask(UnclaimTask {
                task_id: path.task_id.clone(),
                actor: Some(actor),
            })
        })
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The new assignee; `null` unassigns.
    pub user: Option<String>,
}

/// Assign the task to a user (when it is free or yours).
#[utoipa::path(post, path = "/api/v1/tasks/{application}/{taskId}/assign", tag = "actions",
    params(TaskPath), request_body = AssignBody,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn assign(
    State(state): State<Shared>,
    User(id): User,
    Path(path): Path<TaskPath>,
    Body(body): Body<AssignBody>,
) -> Result<Response, AppError> {
    if let Some(user) = &body.user {
        if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
            return Err(AppError::bad_input(
                "bad_user",
                "user must be 1 to 256 characters without control characters",
            ));
        }
    }
    act(&state, &id, &path, |task, actor| {
        (task.task.assignee != body.user).then(|| {
            TaskCommand::AssignTask(AssignTask {
                task_id: path.task_id.clone(),
                user: body.user.clone(),
                actor: Some(actor),
            })
        })
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// Process variables to set, as plain JSON values.
    #[serde(default)]
    pub variables: Map<String, Value>,
}

/// Complete the task (yours, or free: then you complete it) with variables.
#[utoipa::path(post, path = "/api/v1/tasks/{application}/{taskId}/complete", tag = "actions",
    params(TaskPath), request_body = CompleteBody,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema), (status = 422, body = ErrorSchema)))]
pub async fn complete(
    State(state): State<Shared>,
    User(id): User,
    Path(path): Path<TaskPath>,
    Body(body): Body<CompleteBody>,
) -> Result<Response, AppError> {
    if let Some(bad) = body
        .variables
        .keys()
        .find(|k| k.is_empty() || k.len() > 256)
    {
        return Err(AppError::bad_input(
            "bad_variables",
            format!("variable name {bad:?} must be 1 to 256 characters"),
        ));
    }
    act(&state, &id, &path, |_, actor| {
        Some(TaskCommand::CompleteTask(CompleteTask {
            task_id: path.task_id.clone(),
            user: Some(actor.user.clone()),
            variables: body.variables,
            actor: Some(actor),
        }))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeferBody {
    /// RFC 3339 date-time (or `YYYY-MM-DD`) until which the task is deferred.
    pub follow_up: String,
}

/// Defer the task: set its follow-up date.
#[utoipa::path(post, path = "/api/v1/tasks/{application}/{taskId}/defer", tag = "actions",
    params(TaskPath), request_body = DeferBody,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn defer(
    State(state): State<Shared>,
    User(id): User,
    Path(path): Path<TaskPath>,
    Body(body): Body<DeferBody>,
) -> Result<Response, AppError> {
    let follow_up = normalize_date(&body.follow_up).ok_or_else(|| {
        AppError::bad_input(
            "bad_date",
            format!(
                "followUp {:?} is not an RFC 3339 date-time or YYYY-MM-DD",
                body.follow_up
            ),
        )
    })?;
    act(&state, &id, &path, |_, actor| {
        Some(TaskCommand::DeferTask(DeferTask {
            task_id: path.task_id.clone(),
            follow_up,
            actor: Some(actor),
        }))
    })
    .await
}

/// Undefer the task: clear its follow-up date.
#[utoipa::path(post, path = "/api/v1/tasks/{application}/{taskId}/undefer", tag = "actions",
    params(TaskPath),
    responses((status = 200, body = ActionResult), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn undefer(
    State(state): State<Shared>,
    User(id): User,
    Path(path): Path<TaskPath>,
) -> Result<Response, AppError> {
    act(&state, &id, &path, |task, actor| {
        task.task.follow_up.is_some().then(|| {
            TaskCommand::UndeferTask(UndeferTask {
                task_id: path.task_id.clone(),
                actor: Some(actor),
            })
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Action bodies come from anyone: each parses or is refused, never a panic.
        #[test]
        fn any_action_body_parses_or_is_refused(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = serde_json::from_slice::<AssignBody>(&body);
            let _ = serde_json::from_slice::<CompleteBody>(&body);
            let _ = serde_json::from_slice::<DeferBody>(&body);
        }

        #[test]
        fn any_json_action_body_parses_or_is_refused(
            fields in proptest::collection::btree_map("[a-zA-Z]{0,10}", ".{0,10}", 0..5),
            followup in ".{0,30}",
        ) {
            let as_json = serde_json::to_value(&fields).expect("json");
            let _ = serde_json::from_value::<AssignBody>(as_json.clone());
            let complete = serde_json::from_value::<CompleteBody>(serde_json::json!({"variables": as_json}));
            prop_assert!(complete.is_ok(), "any object is a variable map");
            let _ = serde_json::from_value::<DeferBody>(serde_json::json!({"followUp": followup}));
        }

        /// A follow-up date: normalised or refused; a normalised one stays as it is.
        #[test]
        fn any_date_normalises_or_is_refused(text in ".{0,40}") {
            if let Some(d) = normalize_date(&text) {
                prop_assert_eq!(normalize_date(&d), Some(d.clone()));
            }
        }

        #[test]
        fn real_dates_normalise_to_utc_milliseconds(
            secs in 0i64..4_000_000_000, millis in 0u32..1000, offset_min in -720i32..=840,
        ) {
            let offset = chrono::FixedOffset::east_opt(offset_min * 60).expect("offset");
            let t = chrono::DateTime::from_timestamp(secs, millis * 1_000_000).expect("time");
            let text = t.with_timezone(&offset).to_rfc3339();
            prop_assert_eq!(
                normalize_date(&text),
                Some(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            );
        }
    }
}
