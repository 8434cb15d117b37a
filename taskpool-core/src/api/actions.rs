//! Acting on tasks: each action is a bus command to the task's engine (routing key: its
//! application), answered once the view shows the command's effect (read-your-writes).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskpool_api::commands::CommandRequest;
use taskpool_api::tasks::{
    AssignTask, ClaimTask, CompleteTask, DeferTask, TaskCommandResult, UnclaimTask, UndeferTask,
    ASSIGN_TASK, CLAIM_TASK, COMPLETE_TASK, DEFER_TASK, UNCLAIM_TASK, UNDEFER_TASK,
};

use super::openapi::ErrorSchema;
use super::tasks::visible_task;
use super::{AppError, Body, Shared, User};
use crate::identity::Identity;
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

/// Sends a command and waits until the view has its effect.
pub(super) async fn execute(
    state: &Shared,
    command_type: &str,
    routing_key: &str,
    payload: impl Serialize,
) -> Result<(TaskCommandResult, bool), AppError> {
    let request = CommandRequest {
        id: uuid::Uuid::new_v4(),
        command_type: command_type.to_owned(),
        routing_key: routing_key.to_owned(),
        payload: serde_json::to_value(payload)
            .map_err(|e| AppError::bad_request("bad_body", format!("command payload: {e}")))?,
        timeout_ms: Some(state.config.command_timeout.as_millis() as u64),
    };
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
            outcome(&e.body.error.code);
            return Err(e);
        }
    };
    let result: TaskCommandResult = serde_json::from_value(response.result).map_err(|e| {
        outcome("bad_result");
        AppError::new(
            StatusCode::BAD_GATEWAY,
            "bad_command_result",
            format!(
                "the engine's collector answered something else than a task command result: {e}"
            ),
        )
    })?;
    outcome("ok");
    let shown = state
        .projection
        .wait_for(result.position, state.config.view_wait)
        .await;
    Ok((result, !shown))
}

async fn answer(
    state: &Shared,
    identity: &Identity,
    task_id: &str,
    command_type: &str,
    routing_key: &str,
    payload: impl Serialize,
) -> Result<Response, AppError> {
    let (result, pending) = execute(state, command_type, routing_key, payload).await?;
    Ok(respond(state, identity, task_id, result.position, pending))
}

fn respond(
    state: &Shared,
    identity: &Identity,
    task_id: &str,
    position: u64,
    view_pending: bool,
) -> Response {
    let status = if view_pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let task = visible_task(state, identity, task_id).ok();
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
        Some(holder) if holder != user => Err(AppError::new(
            StatusCode::CONFLICT,
            "held_by_other",
            format!("task {} is assigned to {holder}", task.id()),
        )
        .with("assignee", holder)),
        _ => Ok(()),
    }
}

/// Claim the task for yourself.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/claim", tag = "actions",
    params(("id" = String, Path)),
    responses((status = 200, body = ActionResult), (status = 202, body = ActionResult, description = "done; the view had not caught up"),
        (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema), (status = 503, body = ErrorSchema)))]
pub async fn claim(
    State(state): State<Shared>,
    User(id): User,
    Path(task_id): Path<String>,
) -> Result<Response, AppError> {
    let task = visible_task(&state, &id, &task_id)?;
    not_held_by_other(&task, &id.user)?;
    if task.task.assignee.as_deref() == Some(id.user.as_str()) {
        return Ok(respond(&state, &id, &task_id, task.position, false));
    }
    let payload = ClaimTask {
        task_id: task_id.clone(),
        user: id.user.clone(),
    };
    answer(
        &state,
        &id,
        &task_id,
        CLAIM_TASK,
        &task.task.source.application,
        payload,
    )
    .await
}

/// Give the task back (only its assignee may).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/unclaim", tag = "actions",
    params(("id" = String, Path)),
    responses((status = 200, body = ActionResult), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn unclaim(
    State(state): State<Shared>,
    User(id): User,
    Path(task_id): Path<String>,
) -> Result<Response, AppError> {
    let task = visible_task(&state, &id, &task_id)?;
    not_held_by_other(&task, &id.user)?;
    if task.task.assignee.is_none() {
        return Ok(respond(&state, &id, &task_id, task.position, false));
    }
    let payload = UnclaimTask {
        task_id: task_id.clone(),
    };
    answer(
        &state,
        &id,
        &task_id,
        UNCLAIM_TASK,
        &task.task.source.application,
        payload,
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The new assignee; `null` unassigns.
    pub user: Option<String>,
}

/// Assign the task to a user (when it is free or yours).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/assign", tag = "actions",
    params(("id" = String, Path)), request_body = AssignBody,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn assign(
    State(state): State<Shared>,
    User(id): User,
    Path(task_id): Path<String>,
    Body(body): Body<AssignBody>,
) -> Result<Response, AppError> {
    if let Some(user) = &body.user {
        if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
            return Err(AppError::bad_request(
                "bad_user",
                "user must be 1 to 256 characters without control characters",
            ));
        }
    }
    let task = visible_task(&state, &id, &task_id)?;
    not_held_by_other(&task, &id.user)?;
    if task.task.assignee == body.user {
        return Ok(respond(&state, &id, &task_id, task.position, false));
    }
    let payload = AssignTask {
        task_id: task_id.clone(),
        user: body.user,
    };
    answer(
        &state,
        &id,
        &task_id,
        ASSIGN_TASK,
        &task.task.source.application,
        payload,
    )
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
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "actions",
    params(("id" = String, Path)), request_body = CompleteBody,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema), (status = 422, body = ErrorSchema)))]
pub async fn complete(
    State(state): State<Shared>,
    User(id): User,
    Path(task_id): Path<String>,
    Body(body): Body<CompleteBody>,
) -> Result<Response, AppError> {
    if let Some(bad) = body
        .variables
        .keys()
        .find(|k| k.is_empty() || k.len() > 256)
    {
        return Err(AppError::bad_request(
            "bad_variables",
            format!("variable name {bad:?} must be 1 to 256 characters"),
        ));
    }
    let task = visible_task(&state, &id, &task_id)?;
    not_held_by_other(&task, &id.user)?;
    let payload = CompleteTask {
        task_id: task_id.clone(),
        user: Some(id.user.clone()),
        variables: body.variables,
    };
    answer(
        &state,
        &id,
        &task_id,
        COMPLETE_TASK,
        &task.task.source.application,
        payload,
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeferBody {
    /// RFC 3339 date-time (or `YYYY-MM-DD`) until which the task is deferred.
    pub follow_up: String,
}

/// Defer the task: set its follow-up date.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/defer", tag = "actions",
    params(("id" = String, Path)), request_body = DeferBody,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn defer(
    State(state): State<Shared>,
    User(id): User,
    Path(task_id): Path<String>,
    Body(body): Body<DeferBody>,
) -> Result<Response, AppError> {
    let follow_up = normalize_date(&body.follow_up).ok_or_else(|| {
        AppError::bad_request(
            "bad_date",
            format!(
                "followUp {:?} is not an RFC 3339 date-time or YYYY-MM-DD",
                body.follow_up
            ),
        )
    })?;
    let task = visible_task(&state, &id, &task_id)?;
    not_held_by_other(&task, &id.user)?;
    let payload = DeferTask {
        task_id: task_id.clone(),
        follow_up,
    };
    answer(
        &state,
        &id,
        &task_id,
        DEFER_TASK,
        &task.task.source.application,
        payload,
    )
    .await
}

/// Undefer the task: clear its follow-up date.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/undefer", tag = "actions",
    params(("id" = String, Path)),
    responses((status = 200, body = ActionResult), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema)))]
pub async fn undefer(
    State(state): State<Shared>,
    User(id): User,
    Path(task_id): Path<String>,
) -> Result<Response, AppError> {
    let task = visible_task(&state, &id, &task_id)?;
    not_held_by_other(&task, &id.user)?;
    if task.task.follow_up.is_none() {
        return Ok(respond(&state, &id, &task_id, task.position, false));
    }
    let payload = UndeferTask {
        task_id: task_id.clone(),
    };
    answer(
        &state,
        &id,
        &task_id,
        UNDEFER_TASK,
        &task.task.source.application,
        payload,
    )
    .await
}

/// RFC 3339 (any offset) or `YYYY-MM-DD` (midnight UTC) → UTC with milliseconds.
pub(super) fn normalize_date(text: &str) -> Option<String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        })?;
    Some(parsed.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
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
