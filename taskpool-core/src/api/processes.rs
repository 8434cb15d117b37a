//! Process definitions a user may start, and starting them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskpool_api::task_commands::{StartProcess, StartableKeys, StartableProcesses, TaskCommand};
use taskpool_api::trace::Traceparent;

use super::command::{actor, execute, send};
use super::openapi::ErrorSchema;
use super::{AppError, Body, Shared, Trace, User};
use crate::identity::Identity;
use crate::view::{group_principal, user_principal, DefinitionView, Principals, View};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Processes {
    /// The latest version of each definition you may start, per application.
    pub processes: Vec<DefinitionView>,
}

/// Whether `principals` may start `definition` from a task list: it must be startable in the
/// task list, and its candidate starters (when its BPMN names any) must include the user or
/// one of their groups in the definition's application. (The engine judges again at start,
/// its authorizations included.)
fn may_start(principals: &Principals, definition: &DefinitionView) -> bool {
    let d = &definition.definition;
    if !d.startable_in_tasklist {
        return false;
    }
    if d.candidate_starter_users.is_empty() && d.candidate_starter_groups.is_empty() {
        return true;
    }
    let starters: Vec<String> = d
        .candidate_starter_users
        .iter()
        .map(|u| user_principal(u))
        .chain(
            d.candidate_starter_groups
                .iter()
                .map(|g| group_principal(g)),
        )
        .collect();
    principals.allows(&d.application, &starters)
}

/// The latest startable version of each (application, key).
fn startable(view: &View, identity: &Identity) -> Vec<DefinitionView> {
    let principals = identity.principals(view);
    let mut latest: BTreeMap<(String, String), &DefinitionView> = BTreeMap::new();
    for d in view.definitions() {
        let k = (d.definition.application.clone(), d.definition.key.clone());
        if latest
            .get(&k)
            .is_none_or(|cur| cur.definition.version < d.definition.version)
        {
            latest.insert(k, d);
        }
    }
    latest
        .into_values()
        .filter(|d| may_start(&principals, d))
        .cloned()
        .collect()
}

/// Process definitions you may start: startable in a task list, with you among their
/// candidate starters if their BPMN names any, and — asked of each application's engine over
/// the bus — allowed by its authorizations (an engine that does not answer in time is taken at
/// the view's word; a start is judged by the engine anyway).
#[utoipa::path(get, path = "/api/v1/processes", tag = "processes",
    responses((status = 200, body = Processes), (status = 401, body = ErrorSchema)))]
pub async fn list(
    State(state): State<Shared>,
    User(id): User,
    Trace(trace): Trace,
) -> Json<Processes> {
    let candidates = {
        let view = state.projection.read();
        startable(&view, &id)
    };
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &candidates {
        let app = keys.entry(d.definition.application.clone()).or_default();
        app.push(d.definition.key.clone());
    }
    let answers = futures::future::join_all(keys.into_iter().map(|(app, keys)| {
        let state = &state;
        let (id, trace) = (&id, &trace);
        async move {
            let allowed = allowed_by_engine(state, id, trace, &app, keys).await;
            (app, allowed)
        }
    }))
    .await;
    let answers: BTreeMap<String, Option<HashSet<String>>> = answers.into_iter().collect();
    let processes = candidates
        .into_iter()
        .filter(|d| {
            answers
                .get(&d.definition.application)
                .and_then(Option::as_ref)
                .is_none_or(|allowed| allowed.contains(&d.definition.key))
        })
        .collect();
    Json(Processes { processes })
}

/// How long the list waits for an engine's answer.
const ENGINE_ANSWER: Duration = Duration::from_secs(2);

/// The keys of `application` the engine's authorizations let the user start, or `None` when
/// its collector did not answer.
async fn allowed_by_engine(
    state: &Shared,
    identity: &Identity,
    trace: &Traceparent,
    application: &str,
    keys: Vec<String>,
) -> Option<HashSet<String>> {
    let command = TaskCommand::StartableProcesses(StartableProcesses {
        keys,
        actor: Some(actor(state, identity, application)),
    });
    match send(state, &command, application, ENGINE_ANSWER, trace).await {
        Ok(answer) => match serde_json::from_value::<StartableKeys>(answer.result) {
            Ok(k) => Some(k.keys.into_iter().collect()),
            Err(e) => {
                tracing::warn!(application, error = %e, "unreadable answer to StartableProcesses");
                None
            }
        },
        Err(e) => {
            tracing::debug!(application, error = %e, "no engine answer on startable processes");
            None
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartBody {
    pub business_key: Option<String>,
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// Which engine, when more than one has a definition with this key.
    pub application: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The application (engine) that started it.
    pub application: String,
    pub process_instance_id: Option<String>,
    /// The first task of the new instance, if it has one; the view shows it already.
    pub task_id: Option<String>,
    pub position: u64,
    pub view_pending: bool,
}

/// Start the latest version of a process definition you may start, naming its application
/// in the body when more than one has the key.
#[utoipa::path(post, path = "/api/v1/processes/{key}/start", tag = "processes",
    params(("key" = String, Path, description = "Process definition key")), request_body = StartBody,
    responses((status = 200, body = Started), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema), (status = 422, body = ErrorSchema)))]
pub async fn start(
    State(state): State<Shared>,
    User(id): User,
    Trace(trace): Trace,
    Path(key): Path<String>,
    Body(body): Body<StartBody>,
) -> Result<(StatusCode, Json<Started>), AppError> {
    let application = body.application.clone();
    start_process(&state, &id, &trace, application.as_deref(), key, body).await
}

/// Start the latest version of a process definition of one application.
#[utoipa::path(post, path = "/api/v1/processes/{application}/{key}/start", tag = "processes",
    params(("application" = String, Path, description = "The process application (engine)"),
        ("key" = String, Path, description = "Process definition key")), request_body = StartBody,
    responses((status = 200, body = Started), (status = 400, body = ErrorSchema), (status = 404, body = ErrorSchema), (status = 409, body = ErrorSchema), (status = 422, body = ErrorSchema)))]
pub async fn start_in(
    State(state): State<Shared>,
    User(id): User,
    Trace(trace): Trace,
    Path((application, key)): Path<(String, String)>,
    Body(body): Body<StartBody>,
) -> Result<(StatusCode, Json<Started>), AppError> {
    if body.application.as_ref().is_some_and(|a| *a != application) {
        return Err(AppError::bad_input(
            "bad_body",
            "`application` in the body names another application than the path",
        ));
    }
    start_process(&state, &id, &trace, Some(&application), key, body).await
}

#[tracing::instrument(skip_all, fields(key = %key, application = ?application, user = %id.user))]
async fn start_process(
    state: &Shared,
    id: &Identity,
    trace: &Traceparent,
    application: Option<&str>,
    key: String,
    body: StartBody,
) -> Result<(StatusCode, Json<Started>), AppError> {
    let mut candidates: Vec<String> = {
        let view = state.projection.read();
        startable(&view, id)
            .into_iter()
            .filter(|d| d.definition.key == key)
            .filter(|d| application.is_none_or(|a| a == d.definition.application))
            .map(|d| d.definition.application)
            .collect()
    };
    if candidates.len() > 1 {
        // Ambiguous by the view: the engines' own grants may leave one.
        let mut allowed = Vec::new();
        for app in candidates {
            let answer = allowed_by_engine(state, id, trace, &app, vec![key.clone()]).await;
            if answer.is_none_or(|keys| keys.contains(&key)) {
                allowed.push(app);
            }
        }
        candidates = allowed;
    }
    let application = match candidates.len() {
        0 => return Err(AppError::ProcessNotFound { key }),
        1 => candidates.remove(0),
        _ => {
            return Err(AppError::AmbiguousProcess {
                key,
                applications: candidates,
            })
        }
    };
    let command = TaskCommand::StartProcess(StartProcess {
        process_definition_key: key,
        business_key: body.business_key,
        variables: body.variables,
        user: Some(id.user.clone()),
        actor: Some(actor(state, id, &application)),
    });
    let (result, pending) = execute(state, command, &application, trace).await?;
    let status = if pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Started {
            application,
            process_instance_id: result.process_instance_id,
            task_id: result.task_id,
            position: result.position,
            view_pending: pending,
        }),
    ))
}
