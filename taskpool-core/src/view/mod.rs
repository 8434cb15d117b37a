//! The task view: what the projection builds from bus events and the API answers from.
//!
//! The view lives twice: durably in MongoDB (`store`), and in this in-memory index that every
//! query reads. Both are the fold of the same events; the index is loaded from MongoDB at
//! start and then follows the projection, so a query never waits on the database.
//!
//! Every key carries its application: a task is `(application, taskId)` (kept as the text
//! `application/taskId`, unambiguous because an application name holds no `/`), and so are
//! definitions, identities and the principal index. A user's groups from one engine's identity
//! count only in that application's realm ([`Realms`]).
//!
//! Idempotence: each task remembers the position of the last event applied to it, and a
//! finished task leaves a tombstone with its final position, so an event at or below that
//! position is skipped however often it is replayed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use taskpool_api::bus::RecordedEvent;
use taskpool_api::identity::IdentityPart;
use taskpool_api::streams::{stream_application, TaskStream};
use taskpool_api::task_body::TaskBody;
use taskpool_api::tasks::{
    IdentitySynced, ProcessDefinitionRegistered, Task, TaskEvent, IDENTITY_SYNCED,
    PROCESS_DEFINITION_REGISTERED,
};

pub use crate::realms::{Principals, Realms};

/// The view's key of anything an engine names: `application/id`.
pub fn key(application: &str, id: &str) -> String {
    format!("{application}/{id}")
}

/// One open task in the view's index. The API answers it as a [`TaskBody`]; the store keeps
/// it as a document of its own (`store::task_document`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub task: Task,
    /// Who may see the task: `user:{assignee}`, `user:{candidate}`, `group:{candidate group}`.
    pub authorized_principals: Vec<String>,
    /// Global bus position of the last event applied to this task.
    pub position: u64,
    /// Version of the task's stream after that event.
    pub version: u64,
    /// When the bus recorded that event (RFC 3339).
    pub changed: String,
}

impl TaskView {
    pub fn id(&self) -> &str {
        &self.task.task_id
    }

    pub fn application(&self) -> &str {
        &self.task.source.application
    }

    /// `application/taskId`
    pub fn key(&self) -> String {
        key(self.application(), self.id())
    }

    /// The task as the API answers it.
    pub fn body(&self) -> TaskBody<'_> {
        TaskBody {
            task: Cow::Borrowed(&self.task),
            authorized_principals: Cow::Borrowed(&self.authorized_principals),
            position: self.position,
            version: self.version,
            changed: Cow::Borrowed(&self.changed),
        }
    }

    /// Deferred: its follow-up date is still ahead (`now` is RFC 3339 UTC, as the dates are).
    pub fn is_deferred(&self, now: &str) -> bool {
        self.task.follow_up.as_deref().is_some_and(|f| f > now)
    }
}

pub fn user_principal(user: &str) -> String {
    format!("user:{user}")
}

pub fn group_principal(group: &str) -> String {
    format!("group:{group}")
}

/// The principals that may see a task: its assignee, candidate users and candidate groups.
pub fn principals_of(task: &Task) -> Vec<String> {
    let mut out: Vec<String> = task
        .assignee
        .iter()
        .chain(&task.candidate_users)
        .map(|u| user_principal(u))
        .chain(task.candidate_groups.iter().map(|g| group_principal(g)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A finished (completed or deleted) task: only its id and final position are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    pub position: u64,
}

/// A process definition as `ProcessDefinitionRegistered` announced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionView {
    #[serde(flatten)]
    pub definition: ProcessDefinitionRegistered,
    pub position: u64,
}

/// The users one application's engine knows, as its last `IdentitySynced` listed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityView {
    pub identity: IdentitySynced,
    pub position: u64,
}

/// What applying one event did to one task, for the change stream.
#[derive(Debug, Clone)]
pub struct TaskChange {
    pub position: u64,
    pub event_type: String,
    pub application: String,
    pub task_id: String,
    /// The view had neither the task nor its tombstone before.
    pub new: bool,
    /// Principals that could see the task before the event.
    pub before: Vec<String>,
    /// The task after the event; `None` once it is completed or deleted.
    pub after: Option<Arc<TaskView>>,
}

impl TaskChange {
    /// `application/taskId`
    pub fn key(&self) -> String {
        key(&self.application, &self.task_id)
    }

    /// Whether someone holding `principals` could see the task before or after.
    pub fn concerns(&self, principals: &Principals) -> bool {
        let after = self
            .after
            .iter()
            .flat_map(|t| t.authorized_principals.iter());
        principals.allows(&self.application, self.before.iter().chain(after))
    }
}

/// What one event did to the view.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Already applied before (its position is not ahead of the document's), or not ours.
    Skipped,
    Task(TaskChange),
    /// The definition's key, `application/definitionId`.
    Definition(String),
    /// The application whose identity changed, and the range of user ids that changed
    /// (`None`: every user, a whole sync).
    Identity(String, Option<IdentityPart>),
}

/// An event the view cannot read: logged and counted, never fatal (the bus is shared).
#[derive(Debug, thiserror::Error)]
#[error("event at position {position} ({event_type}): {reason}")]
pub struct BadEvent {
    pub position: u64,
    pub event_type: String,
    pub reason: String,
}

type TasksById = HashMap<Arc<str>, Arc<TaskView>>;

/// The in-memory index of the view.
#[derive(Debug, Default)]
pub struct View {
    /// By `application/taskId`.
    tasks: TasksById,
    tombstones: HashMap<Arc<str>, Tombstone>,
    /// Application → principal → the open tasks it may see there, so a user's list is read
    /// without looking each task up again.
    by_principal: HashMap<String, HashMap<String, TasksById>>,
    /// By `application/definitionId`.
    definitions: BTreeMap<String, DefinitionView>,
    identities: BTreeMap<String, IdentityView>,
    /// Application → user → the groups its engine gives the user.
    groups: HashMap<String, HashMap<String, Vec<String>>>,
    realms: Realms,
    /// Every application met so far (kept, not derived: requests ask for it each time).
    applications: std::collections::BTreeSet<String>,
    /// The last bus position applied.
    position: u64,
}

impl View {
    /// An empty view whose identities count across the given realms.
    pub fn new(realms: Realms) -> View {
        View {
            realms,
            ..View::default()
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Sets the position after loading a stored view.
    pub fn set_position(&mut self, position: u64) {
        self.position = position;
    }

    pub fn open_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn task(&self, application: &str, task_id: &str) -> Option<&Arc<TaskView>> {
        self.tasks.get(key(application, task_id).as_str())
    }

    /// By `application/taskId`.
    pub fn task_by_key(&self, key: &str) -> Option<&Arc<TaskView>> {
        self.tasks.get(key)
    }

    /// The tombstone of `application/taskId`.
    pub fn tombstone(&self, key: &str) -> Option<Tombstone> {
        self.tombstones.get(key).copied()
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Arc<TaskView>> {
        self.tasks.values()
    }

    /// `(application/taskId, tombstone)`
    pub fn tombstones(&self) -> impl Iterator<Item = (&str, Tombstone)> {
        self.tombstones.iter().map(|(k, v)| (&**k, *v))
    }

    pub fn definitions(&self) -> impl Iterator<Item = &DefinitionView> {
        self.definitions.values()
    }

    /// By `application/definitionId`.
    pub fn definition(&self, key: &str) -> Option<&DefinitionView> {
        self.definitions.get(key)
    }

    pub fn identity(&self, application: &str) -> Option<&IdentityView> {
        self.identities.get(application)
    }

    pub fn identities(&self) -> impl Iterator<Item = &IdentityView> {
        self.identities.values()
    }

    /// Every application the view has met: in a task, a definition or an identity.
    pub fn applications(&self) -> impl Iterator<Item = &str> {
        self.applications.iter().map(String::as_str)
    }

    /// The groups the engines of `application`'s identity realm give `user` (empty when
    /// none of them knows the user).
    pub fn groups_of(&self, application: &str, user: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .realms
            .of(application)
            .filter_map(|app| self.groups.get(app)?.get(user))
            .flatten()
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The open tasks `principals` may see, each once, in no particular order.
    pub fn visible_to<'a>(
        &'a self,
        principals: &'a Principals,
    ) -> impl Iterator<Item = &'a Arc<TaskView>> + 'a {
        self.by_principal
            .iter()
            .flat_map(move |(application, index)| {
                visible_in(index, principals.in_application(application))
            })
    }

    /// Loads a stored task (at start, or during a rebuild).
    pub fn load_task(&mut self, task: TaskView) {
        self.insert(Arc::new(task));
    }

    /// Loads the tombstone of `application/taskId`.
    pub fn load_tombstone(&mut self, key: &str, tombstone: Tombstone) {
        self.tombstones.insert(Arc::from(key), tombstone);
    }

    pub fn load_definition(&mut self, definition: DefinitionView) {
        let d = &definition.definition;
        self.meet(&d.application);
        self.definitions
            .insert(key(&d.application, &d.id), definition);
    }

    fn meet(&mut self, application: &str) {
        if !self.applications.contains(application) {
            self.applications.insert(application.to_owned());
        }
    }

    pub fn load_identity(&mut self, identity: IdentityView) {
        self.index_groups(&identity.identity);
        self.identities
            .insert(identity.identity.application.clone(), identity);
    }

    /// Forgets tombstones at or below `position`: a replay starts after the stored position,
    /// so no event of those tasks can come again.
    pub fn forget_tombstones(&mut self, upto: u64) {
        self.tombstones.retain(|_, t| t.position > upto);
    }

    /// Applies one committed event. Events of other kinds are skipped.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<Applied, BadEvent> {
        let applied = if let Some(stream) = TaskStream::parse(&event.stream) {
            match TaskEvent::from_recorded(event) {
                Ok(task_event) => self.apply_task(event, stream, &task_event),
                Err(e) => Err(bad(event, e.to_string())),
            }
        } else if event.event_type == PROCESS_DEFINITION_REGISTERED {
            self.apply_definition(event)
        } else if event.event_type == IDENTITY_SYNCED {
            self.apply_identity(event)
        } else {
            Ok(Applied::Skipped)
        };
        self.position = self.position.max(event.position);
        applied
    }

    fn apply_task(
        &mut self,
        event: &RecordedEvent,
        stream: TaskStream<'_>,
        change: &TaskEvent,
    ) -> Result<Applied, BadEvent> {
        let source_application = &change.source().application;
        let application = match stream {
            TaskStream::Keyed {
                application,
                task_id,
            } => {
                // The bus lets a collector write only its own application's streams; data
                // naming another application is refused, never shown under either.
                if application != source_application || task_id != change.task_id() {
                    return Err(bad(
                        event,
                        format!(
                            "stream {} carries task {} of application {source_application:?}",
                            event.stream,
                            change.task_id()
                        ),
                    ));
                }
                application
            }
            TaskStream::FirstLayout { .. } => source_application.as_str(),
        };
        let id = change.task_id();
        let task_key = key(application, id);
        let seen = self
            .tasks
            .get(task_key.as_str())
            .map(|t| t.position)
            .or_else(|| self.tombstones.get(task_key.as_str()).map(|t| t.position));
        if seen.is_some_and(|p| p >= event.position) {
            return Ok(Applied::Skipped);
        }
        let current = self.remove(&task_key);
        let before = current
            .as_ref()
            .map(|t| t.authorized_principals.clone())
            .unwrap_or_default();
        let mut next = match (current, change) {
            (_, TaskEvent::Created(task)) => task.clone(),
            (Some(view), change) => {
                let mut task = Arc::unwrap_or_clone(view).task;
                task.apply(change);
                task
            }
            // A change to a task the view never saw open (it started after the task ended,
            // or the stream began before this view's first position): nothing to show.
            (None, _) => return Ok(Applied::Skipped),
        };
        let after = if change.is_final() {
            self.tombstones.insert(
                Arc::from(task_key.as_str()),
                Tombstone {
                    position: event.position,
                },
            );
            None
        } else {
            next.task_id = id.to_owned();
            next.source.application = application.to_owned();
            let view = Arc::new(TaskView {
                authorized_principals: principals_of(&next),
                task: next,
                position: event.position,
                version: event.version,
                changed: event.timestamp.clone(),
            });
            self.tombstones.remove(task_key.as_str());
            self.insert(view.clone());
            Some(view)
        };
        Ok(Applied::Task(TaskChange {
            position: event.position,
            event_type: event.event_type.clone(),
            application: application.to_owned(),
            task_id: id.to_owned(),
            new: seen.is_none(),
            before,
            after,
        }))
    }

    fn apply_definition(&mut self, event: &RecordedEvent) -> Result<Applied, BadEvent> {
        let definition: ProcessDefinitionRegistered =
            event.data_as().map_err(|e| bad(event, e.to_string()))?;
        owned_by(event, &definition.application)?;
        let definition_key = key(&definition.application, &definition.id);
        self.meet(&definition.application);
        if self
            .definitions
            .get(&definition_key)
            .is_some_and(|d| d.position >= event.position)
        {
            return Ok(Applied::Skipped);
        }
        self.definitions.insert(
            definition_key.clone(),
            DefinitionView {
                definition,
                position: event.position,
            },
        );
        Ok(Applied::Definition(definition_key))
    }

    fn apply_identity(&mut self, event: &RecordedEvent) -> Result<Applied, BadEvent> {
        let identity: IdentitySynced = event.data_as().map_err(|e| bad(event, e.to_string()))?;
        owned_by(event, &identity.application)?;
        let application = identity.application.clone();
        if self
            .identities
            .get(&application)
            .is_some_and(|i| i.position >= event.position)
        {
            return Ok(Applied::Skipped);
        }
        // A part of a sync changes the users in its id range only.
        let part = identity.part.clone();
        let identity = identity.applied_to(self.identities.get(&application).map(|i| &i.identity));
        self.index_groups(&identity);
        self.identities.insert(
            application.clone(),
            IdentityView {
                identity,
                position: event.position,
            },
        );
        Ok(Applied::Identity(application, part))
    }

    fn index_groups(&mut self, identity: &IdentitySynced) {
        self.meet(&identity.application);
        let users = identity
            .users
            .iter()
            .map(|u| {
                let mut groups = u.groups.clone();
                groups.sort();
                groups.dedup();
                (u.id.clone(), groups)
            })
            .collect();
        self.groups.insert(identity.application.clone(), users);
    }

    fn insert(&mut self, view: Arc<TaskView>) {
        self.meet(view.application());
        let id: Arc<str> = Arc::from(view.key());
        let index = self
            .by_principal
            .entry(view.application().to_owned())
            .or_default();
        for p in &view.authorized_principals {
            index
                .entry(p.clone())
                .or_default()
                .insert(id.clone(), view.clone());
        }
        self.tasks.insert(id, view);
    }

    fn remove(&mut self, key: &str) -> Option<Arc<TaskView>> {
        let view = self.tasks.remove(key)?;
        if let Some(index) = self.by_principal.get_mut(view.application()) {
            for p in &view.authorized_principals {
                if let Some(set) = index.get_mut(p) {
                    set.remove(key);
                    if set.is_empty() {
                        index.remove(p);
                    }
                }
            }
            if index.is_empty() {
                self.by_principal.remove(view.application());
            }
        }
        Some(view)
    }
}

/// The tasks of one application's index that any of `principals` may see, each once.
fn visible_in<'a>(
    index: &'a HashMap<String, TasksById>,
    principals: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = &'a Arc<TaskView>> + 'a {
    let mut sets: Vec<(&'a str, &'a TasksById)> = principals
        .filter_map(|p| index.get_key_value(p))
        .map(|(p, tasks)| (p.as_str(), tasks))
        .collect();
    // Largest first. A task of a later set was already given by an earlier one when one of
    // its (few) principals names that set: comparing those is cheaper than hashing.
    sets.sort_by_key(|(_, tasks)| std::cmp::Reverse(tasks.len()));
    let names: Arc<Vec<&'a str>> = Arc::new(sets.iter().map(|(p, _)| *p).collect());
    sets.into_iter()
        .enumerate()
        .flat_map(move |(i, (_, tasks))| {
            let names = names.clone();
            tasks.values().filter(move |t| {
                !t.authorized_principals
                    .iter()
                    .any(|p| names[..i].contains(&p.as_str()))
            })
        })
}

/// A definition or identity on a stream of the new layout must be of that stream's
/// application (the bus lets a collector write only its own).
fn owned_by(event: &RecordedEvent, application: &str) -> Result<(), BadEvent> {
    match stream_application(&event.stream) {
        Some(owner) if owner != application => Err(bad(
            event,
            format!(
                "stream {} carries data of application {application:?}",
                event.stream
            ),
        )),
        _ => Ok(()),
    }
}

fn bad(event: &RecordedEvent, reason: String) -> BadEvent {
    BadEvent {
        position: event.position,
        event_type: event.event_type.clone(),
        reason,
    }
}

#[cfg(test)]
pub(crate) mod tests;
