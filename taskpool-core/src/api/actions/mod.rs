//! Acting on tasks: `POST /api/v1/tasks/{application}/{taskId}/{action}`. Each action is a bus
//! command to the task's engine (routing key: its application), answered once the view shows
//! the command's effect (read-your-writes). The view's answer to "may this user do it" is only
//! a quick refusal: the command carries the user and their groups in that application, and the
//! collector lets the engine's current state decide.
//!
//! Every action takes the one path of [`act`]; what differs is an [`Action`] (`kinds.rs`).

mod kinds;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use taskpool_api::task_body::TaskBody;
use taskpool_api::task_commands::{Actor, TaskCommand};
use taskpool_api::trace::Traceparent;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::{Components, ContentBuilder, Ref, Required, ResponseBuilder};
use utoipa::{IntoParams, ToSchema};

use super::command::{actor, execute};
use super::openapi::ErrorSchema;
use super::tasks::{visible_task, TaskPath};
use super::{AppError, Body, Shared, Trace, User};
use crate::identity::Identity;
use crate::view::TaskView;

/// What an action answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult<'a> {
    /// The task as the view shows it now; `null` once completed or no longer yours to see.
    pub task: Option<TaskBody<'a>>,
    /// Bus position of the event that recorded the effect (0 when nothing had to change).
    pub position: u64,
    /// true: the command was executed but the view had not shown it within the wait.
    pub view_pending: bool,
}

/// One task action. Adding one: its `TaskCommand` variant, an implementation of this trait
/// (the check of its body and whether anything has to change), its name in [`actions!`], and
/// its tests.
pub(super) trait Action: Sized + Send + 'static {
    /// The last word of its path.
    const NAME: &'static str;
    /// What it does, as the OpenAPI document says.
    const SUMMARY: &'static str;
    /// Its request body: [`Body`] of a JSON type, or [`NoBody`].
    type Request: ActionRequest;

    /// Checks the request at the edge: bad input is answered 400 before any task is looked up.
    fn new(request: Self::Request) -> Result<Self, AppError>;

    /// The command that makes the change to `task`, or `None` when nothing has to change
    /// (answered at once, without a command).
    fn command(self, task: &TaskView, actor: Actor) -> Option<TaskCommand>;
}

/// How an action reads its request body and how the OpenAPI document shows it.
pub(super) trait ActionRequest: FromRequest<Shared, Rejection = AppError> + Send {
    /// Its `requestBody`, adding the schemas it names; `None` when the action takes no body.
    fn document(components: &mut Components) -> Option<RequestBody>;
}

impl<T: DeserializeOwned + ToSchema + Send> ActionRequest for Body<T> {
    fn document(components: &mut Components) -> Option<RequestBody> {
        add_schema::<T>(components);
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(T::name())))
            .build();
        Some(
            RequestBodyBuilder::new()
                .content("application/json", content)
                .required(Some(Required::True))
                .build(),
        )
    }
}

/// The request of an action that takes no body: whatever is sent is not read.
pub(super) struct NoBody;

impl FromRequest<Shared> for NoBody {
    type Rejection = AppError;

    async fn from_request(_: Request, _: &Shared) -> Result<NoBody, AppError> {
        Ok(NoBody)
    }
}

impl ActionRequest for NoBody {
    fn document(_: &mut Components) -> Option<RequestBody> {
        None
    }
}

/// Every action, named once: its route and its OpenAPI operation both come from here.
macro_rules! actions {
    ($($action:ty),* $(,)?) => {
        /// The action routes, under `/api/v1`.
        pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
            router $(.route(&format!("/tasks/{{application}}/{{taskId}}/{}", <$action>::NAME),
                post(act::<$action>)))*
        }

        /// Adds the operation of each action to the OpenAPI document.
        pub(super) fn document(openapi: &mut utoipa::openapi::OpenApi) {
            add_schema::<ActionResult>(openapi.components.get_or_insert_with(Default::default));
            $(add_operation::<$action>(openapi);)*
        }
    };
}

actions!(
    kinds::Claim,
    kinds::Unclaim,
    kinds::Assign,
    kinds::Complete,
    kinds::Defer,
    kinds::Undefer,
);

/// The one HTTP path of every action: the body must be valid, the task visible to the user
/// and not held by someone else (in the view, for a quick answer); then the command, unless
/// nothing has to change.
async fn act<A: Action>(
    State(state): State<Shared>,
    User(id): User,
    Trace(trace): Trace,
    Path(path): Path<TaskPath>,
    request: A::Request,
) -> Result<Response, AppError> {
    act_on::<A>(&state, &id, &trace, &path, request).await
}

#[tracing::instrument(name = "action", skip_all, fields(action = A::NAME, application = %path.application, task_id = %path.task_id, user = %id.user))]
async fn act_on<A: Action>(
    state: &Shared,
    id: &Identity,
    trace: &Traceparent,
    path: &TaskPath,
    request: A::Request,
) -> Result<Response, AppError> {
    let action = A::new(request)?;
    let task = visible_task(state, id, path)?;
    not_held_by_other(&task, &id.user)?;
    let actor = actor(state, id, &path.application);
    let Some(command) = action.command(&task, actor) else {
        return Ok(respond(state, id, path, task.position, false));
    };
    let (result, pending) = execute(state, command, &path.application, trace).await?;
    Ok(respond(state, id, path, result.position, pending))
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
            task: task.as_deref().map(TaskView::body),
            position,
            view_pending,
        }),
    )
        .into_response()
}

/// Adds `T`'s schema and those it names to the OpenAPI document's components.
fn add_schema<T: ToSchema>(components: &mut Components) {
    let mut schemas = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut schemas);
    components.schemas.extend(schemas);
}

fn add_operation<A: Action>(openapi: &mut utoipa::openapi::OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    let operation = operation::<A>(components);
    openapi.paths.add_path_operation(
        format!("/api/v1/tasks/{{application}}/{{taskId}}/{}", A::NAME),
        vec![HttpMethod::Post],
        operation,
    );
}

/// The OpenAPI operation of action `A`.
fn operation<A: Action>(components: &mut Components) -> Operation {
    let answer = |description: &str, schema: &str| {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build();
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build()
    };
    let error = |description: &str| answer(description, &ErrorSchema::name());
    let mut operation = OperationBuilder::new()
        .tag("actions")
        .summary(Some(A::SUMMARY))
        .operation_id(Some(A::NAME))
        .parameters(Some(TaskPath::into_params(|| None)))
        .response("200", answer("done", "ActionResult"))
        .response(
            "202",
            answer("done; the view had not caught up", "ActionResult"),
        );
    if let Some(body) = A::Request::document(components) {
        operation = operation
            .request_body(Some(body))
            .response("400", error("the body is not valid"));
    }
    operation
        .response("401", error("no valid credentials"))
        .response("404", error("no such task that you may see"))
        .response(
            "409",
            error("someone else holds the task, or the engine's state conflicts"),
        )
        .response("422", error("the engine refused the action"))
        .response(
            "503",
            error("the bus or the task's collector is unavailable"),
        )
        .build()
}
