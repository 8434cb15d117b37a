//! Reading tasks: the list, one task, counts, and attribute names and values for filters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use taskpool_api::task_body::TaskBody;

use super::openapi::ErrorSchema;
use super::{now, AppError, Shared, User};
use crate::identity::Identity;
use crate::query::{self, TaskQuery};
use crate::view::{Principals, TaskView, View};

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage<'a> {
    pub tasks: Vec<TaskBody<'a>>,
    /// Tasks matching the query over all pages.
    pub total: usize,
    pub page: usize,
    pub size: usize,
}

/// The tasks you may see (assignee, candidate user or candidate group), filtered, sorted and
/// paged. The total is also in the `X-Total-Count` header.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    params(
        ("filter" = Option<Vec<String>>, Query, description = "Repeatable, all must hold: `field<op>value` with op `=` (equals), `%` (contains, case-insensitive), `<`, `>`, `[]` (between `from|to`). Fields: `task.<attribute>`, or `data.<key>` / a bare name for payload values."),
        ("sort" = Option<String>, Query, description = "Comma-separated `+field`/`-field` (default `-priority,created`); ties end by task id."),
        ("page" = Option<usize>, Query, description = "0-based page (default 0)"),
        ("size" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 50)"),
        ("assignedToMe" = Option<bool>, Query, description = "Only tasks assigned to you"),
        ("unassigned" = Option<bool>, Query, description = "Only tasks without assignee"),
        ("deferred" = Option<bool>, Query, description = "true: only tasks whose follow-up date is ahead; false: only the others"),
    ),
    responses((status = 200, body = TaskPage), (status = 400, body = ErrorSchema), (status = 401, body = ErrorSchema)))]
pub async fn list(
    State(state): State<Shared>,
    User(id): User,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let q = TaskQuery::parse(raw.as_deref().unwrap_or(""))?;
    let now = now();
    let page = {
        as_seen_by(&state, &id, |view, principals| {
            query::run(view, principals, &id.user, &q, &now)
        })
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(page.total));
    let tasks = page.tasks.iter().map(|t| t.body()).collect();
    Ok((
        headers,
        Json(TaskPage {
            tasks,
            total: page.total,
            page: q.page,
            size: q.size,
        }),
    )
        .into_response())
}

/// A task's place in the API: `/api/v1/tasks/{application}/{taskId}`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    /// The process application (engine) the task belongs to.
    pub application: String,
    /// The task's id in that application's engine.
    pub task_id: String,
}

/// One task you may see; 404 for any other, and for an unknown application.
#[utoipa::path(get, path = "/api/v1/tasks/{application}/{taskId}", tag = "tasks",
    params(TaskPath),
    responses((status = 200, body = TaskBody), (status = 404, body = ErrorSchema), (status = 401, body = ErrorSchema)))]
pub async fn one(
    State(state): State<Shared>,
    User(id): User,
    Path(path): Path<TaskPath>,
) -> Result<Response, AppError> {
    let task = visible_task(&state, &id, &path)?;
    Ok(Json(task.body()).into_response())
}

/// The task if `identity` may see it.
pub(super) fn visible_task(
    state: &Shared,
    identity: &Identity,
    path: &TaskPath,
) -> Result<Arc<TaskView>, AppError> {
    as_seen_by(state, identity, |view, principals| {
        view.task(&path.application, &path.task_id)
            .filter(|t| principals.allows(t.application(), &t.authorized_principals))
            .cloned()
    })
    .ok_or_else(|| AppError::TaskNotFound {
        application: path.application.clone(),
        task: path.task_id.clone(),
    })
}

/// `f` of the view and the principals `identity` has in it.
fn as_seen_by<T>(
    state: &Shared,
    identity: &Identity,
    f: impl FnOnce(&View, &Principals) -> T,
) -> T {
    let view = state.projection.read();
    f(&view, &identity.principals(&view))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Open tasks you may see, per application (engine).
    pub applications: BTreeMap<String, usize>,
    pub total: usize,
}

/// How many tasks you may see, per application.
#[utoipa::path(get, path = "/api/v1/tasks/counts", tag = "tasks",
    responses((status = 200, body = Counts), (status = 401, body = ErrorSchema)))]
pub async fn counts(State(state): State<Shared>, User(id): User) -> Json<Counts> {
    let applications = as_seen_by(&state, &id, query::counts);
    Json(Counts {
        total: applications.values().sum(),
        applications,
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttributeNames {
    /// `task.<attribute>` and `data.<payload key>`, usable in `filter` and `sort`.
    pub names: Vec<String>,
}

/// The attribute names of the tasks you may see, for building filters.
#[utoipa::path(get, path = "/api/v1/tasks/attributes", tag = "tasks",
    responses((status = 200, body = AttributeNames), (status = 401, body = ErrorSchema)))]
pub async fn attribute_names(State(state): State<Shared>, User(id): User) -> Json<AttributeNames> {
    Json(AttributeNames {
        names: as_seen_by(&state, &id, query::attribute_names),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ValuesParams {
    /// At most this many values (1 to 1000, default 100).
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttributeValues {
    pub name: String,
    pub values: Vec<serde_json::Value>,
}

/// The distinct values one attribute has in the tasks you may see.
#[utoipa::path(get, path = "/api/v1/tasks/attributes/{name}/values", tag = "tasks",
    params(("name" = String, Path, description = "`task.<attribute>` or `data.<key>`"), ValuesParams),
    responses((status = 200, body = AttributeValues), (status = 400, body = ErrorSchema), (status = 401, body = ErrorSchema)))]
pub async fn attribute_values(
    State(state): State<Shared>,
    User(id): User,
    Path(name): Path<String>,
    params: Result<Query<ValuesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AttributeValues>, AppError> {
    let Query(params) = params.map_err(|e| AppError::bad_input("bad_parameter", e.body_text()))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_input(
            "bad_parameter",
            "limit must be 1 to 1000",
        ));
    }
    let values = as_seen_by(&state, &id, |view, principals| {
        query::attribute_values(view, principals, &name, limit)
    })?;
    Ok(Json(AttributeValues { name, values }))
}
