//! The task view: what the projection builds from bus events and the API answers from.
//!
//! The view lives twice: durably in MongoDB (`store`), and in this in-memory index that every
//! query reads. Both are the fold of the same events; the index is loaded from MongoDB at
//! start and then follows the projection, so a query never waits on the database.
//!
//! Idempotence: each task remembers the position of the last event applied to it, and a
//! finished task leaves a tombstone with its final position, so an event at or below that
//! position is skipped however often it is replayed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use taskpool_api::bus::RecordedEvent;
use taskpool_api::tasks::{
    IdentitySynced, ProcessDefinitionRegistered, Task, TaskEvent, IDENTITY_SYNCED,
    PROCESS_DEFINITION_REGISTERED,
};

/// One open task as the view holds it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    #[serde(flatten)]
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
    pub task_id: String,
    /// Principals that could see the task before the event.
    pub before: Vec<String>,
    /// The task after the event; `None` once it is completed or deleted.
    pub after: Option<Arc<TaskView>>,
}

impl TaskChange {
    /// Whether anyone holding one of `principals` could see the task before or after.
    pub fn concerns(&self, principals: &HashSet<String>) -> bool {
        let after = self
            .after
            .iter()
            .flat_map(|t| t.authorized_principals.iter());
        self.before
            .iter()
            .chain(after)
            .any(|p| principals.contains(p))
    }
}

/// What one event did to the view.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Already applied before (its position is not ahead of the document's), or not ours.
    Skipped,
    Task(TaskChange),
    Definition(String),
    Identity(String),
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
    tasks: HashMap<Arc<str>, Arc<TaskView>>,
    tombstones: HashMap<Arc<str>, Tombstone>,
    /// Principal → the open tasks it may see (by id), so a user's list is read without
    /// looking each task up again.
    by_principal: HashMap<String, TasksById>,
    definitions: BTreeMap<String, DefinitionView>,
    identities: BTreeMap<String, IdentityView>,
    /// user id → groups, over every application's identity.
    groups_of_user: HashMap<String, Vec<String>>,
    /// The last bus position applied.
    position: u64,
}

impl View {
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

    pub fn task(&self, id: &str) -> Option<&Arc<TaskView>> {
        self.tasks.get(id)
    }

    pub fn tombstone(&self, id: &str) -> Option<Tombstone> {
        self.tombstones.get(id).copied()
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Arc<TaskView>> {
        self.tasks.values()
    }

    pub fn tombstones(&self) -> impl Iterator<Item = (&str, Tombstone)> {
        self.tombstones.iter().map(|(k, v)| (&**k, *v))
    }

    pub fn definitions(&self) -> impl Iterator<Item = &DefinitionView> {
        self.definitions.values()
    }

    pub fn definition(&self, id: &str) -> Option<&DefinitionView> {
        self.definitions.get(id)
    }

    pub fn identity(&self, application: &str) -> Option<&IdentityView> {
        self.identities.get(application)
    }

    pub fn identities(&self) -> impl Iterator<Item = &IdentityView> {
        self.identities.values()
    }

    /// The groups the engines' identity gives `user` (empty when no engine knows the user).
    pub fn groups_of(&self, user: &str) -> &[String] {
        self.groups_of_user
            .get(user)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The open tasks any of `principals` may see, each once, in no particular order.
    pub fn visible_to<'a>(
        &'a self,
        principals: &'a HashSet<String>,
    ) -> impl Iterator<Item = &'a Arc<TaskView>> + 'a {
        let mut sets: Vec<(&'a str, &'a TasksById)> = principals
            .iter()
            .filter_map(|p| self.by_principal.get_key_value(p))
            .map(|(p, tasks)| (p.as_str(), tasks))
            .collect();
        // Largest first. A task of a later set was already given by an earlier one when one
        // of its (few) principals names that set: comparing those is cheaper than hashing.
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

    /// Loads a stored task (at start, or during a rebuild).
    pub fn load_task(&mut self, task: TaskView) {
        self.insert(Arc::new(task));
    }

    pub fn load_tombstone(&mut self, id: &str, tombstone: Tombstone) {
        self.tombstones.insert(Arc::from(id), tombstone);
    }

    pub fn load_definition(&mut self, definition: DefinitionView) {
        self.definitions
            .insert(definition.definition.id.clone(), definition);
    }

    pub fn load_identity(&mut self, identity: IdentityView) {
        self.identities
            .insert(identity.identity.application.clone(), identity);
        self.index_groups();
    }

    /// Forgets tombstones at or below `position`: a replay starts after the stored position,
    /// so no event of those tasks can come again.
    pub fn forget_tombstones(&mut self, upto: u64) {
        self.tombstones.retain(|_, t| t.position > upto);
    }

    /// Applies one committed event. Events of other kinds are skipped.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<Applied, BadEvent> {
        let applied = if event.stream.starts_with("task-") {
            match TaskEvent::from_recorded(event) {
                Ok(task_event) => self.apply_task(event, &task_event),
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
        change: &TaskEvent,
    ) -> Result<Applied, BadEvent> {
        let id = change.task_id();
        let seen = self
            .tasks
            .get(id)
            .map(|t| t.position)
            .or_else(|| self.tombstones.get(id).map(|t| t.position));
        if seen.is_some_and(|p| p >= event.position) {
            return Ok(Applied::Skipped);
        }
        let current = self.remove(id);
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
                Arc::from(id),
                Tombstone {
                    position: event.position,
                },
            );
            None
        } else {
            next.task_id = id.to_owned();
            let view = Arc::new(TaskView {
                authorized_principals: principals_of(&next),
                task: next,
                position: event.position,
                version: event.version,
                changed: event.timestamp.clone(),
            });
            self.tombstones.remove(id);
            self.insert(view.clone());
            Some(view)
        };
        Ok(Applied::Task(TaskChange {
            position: event.position,
            event_type: event.event_type.clone(),
            task_id: id.to_owned(),
            before,
            after,
        }))
    }

    fn apply_definition(&mut self, event: &RecordedEvent) -> Result<Applied, BadEvent> {
        let definition: ProcessDefinitionRegistered =
            event.data_as().map_err(|e| bad(event, e.to_string()))?;
        if self
            .definitions
            .get(&definition.id)
            .is_some_and(|d| d.position >= event.position)
        {
            return Ok(Applied::Skipped);
        }
        let id = definition.id.clone();
        self.definitions.insert(
            id.clone(),
            DefinitionView {
                definition,
                position: event.position,
            },
        );
        Ok(Applied::Definition(id))
    }

    fn apply_identity(&mut self, event: &RecordedEvent) -> Result<Applied, BadEvent> {
        let identity: IdentitySynced = event.data_as().map_err(|e| bad(event, e.to_string()))?;
        let application = identity.application.clone();
        if self
            .identities
            .get(&application)
            .is_some_and(|i| i.position >= event.position)
        {
            return Ok(Applied::Skipped);
        }
        self.identities.insert(
            application.clone(),
            IdentityView {
                identity,
                position: event.position,
            },
        );
        self.index_groups();
        Ok(Applied::Identity(application))
    }

    fn index_groups(&mut self) {
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for identity in self.identities.values() {
            for user in &identity.identity.users {
                groups
                    .entry(user.id.clone())
                    .or_default()
                    .extend(user.groups.iter().cloned());
            }
        }
        for list in groups.values_mut() {
            list.sort();
            list.dedup();
        }
        self.groups_of_user = groups;
    }

    fn insert(&mut self, view: Arc<TaskView>) {
        let id: Arc<str> = Arc::from(view.id());
        for p in &view.authorized_principals {
            self.by_principal
                .entry(p.clone())
                .or_default()
                .insert(id.clone(), view.clone());
        }
        self.tasks.insert(id, view);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<TaskView>> {
        let view = self.tasks.remove(id)?;
        for p in &view.authorized_principals {
            if let Some(set) = self.by_principal.get_mut(p) {
                set.remove(id);
                if set.is_empty() {
                    self.by_principal.remove(p);
                }
            }
        }
        Some(view)
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
pub(crate) mod tests {
    use super::*;
    use taskpool_api::tasks::{
        SourceReference, TaskAssigned, TaskCandidatesChanged, TaskCompleted, TaskUpdated,
    };

    pub fn task(id: &str) -> Task {
        Task {
            task_id: id.into(),
            name: Some("Review".into()),
            priority: 50,
            created: "2026-11-23T10:00:00.000Z".into(),
            candidate_groups: vec!["reviewers".into()],
            source: SourceReference {
                application: "camunda".into(),
                engine: "default".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn recorded(position: u64, version: u64, event: &TaskEvent) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: format!("task-{}", event.task_id()),
            version,
            event_type: event.event_type().into(),
            data: event.to_json().expect("encode"),
            metadata: None,
            id: uuid::Uuid::new_v4(),
            timestamp: "2026-11-23T10:00:00.000Z".into(),
        }
    }

    fn assigned(id: &str, user: Option<&str>) -> TaskEvent {
        TaskEvent::Assigned(TaskAssigned {
            task_id: id.into(),
            assignee: user.map(Into::into),
            source: SourceReference::default(),
        })
    }

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn principals_follow_assignee_and_candidates() {
        let mut view = View::default();
        view.apply(&recorded(1, 0, &TaskEvent::Created(task("t1"))))
            .expect("apply");
        let reviewers = set(&["group:reviewers"]);
        assert_eq!(view.visible_to(&reviewers).count(), 1);
        view.apply(&recorded(2, 1, &assigned("t1", Some("kermit"))))
            .expect("apply");
        view.apply(&recorded(
            3,
            2,
            &TaskEvent::CandidatesChanged(TaskCandidatesChanged {
                task_id: "t1".into(),
                candidate_users: vec!["piggy".into()],
                candidate_groups: vec![],
                source: SourceReference::default(),
            }),
        ))
        .expect("apply");
        assert_eq!(view.visible_to(&reviewers).count(), 0);
        let t = view.task("t1").expect("open");
        assert_eq!(t.authorized_principals, ["user:kermit", "user:piggy"]);
        assert_eq!((t.position, t.version), (3, 2));
        let both = set(&["user:kermit", "user:piggy", "group:x"]);
        assert_eq!(view.visible_to(&both).count(), 1, "each task once");
    }

    #[test]
    fn replays_and_resurrections_are_skipped() {
        let mut view = View::default();
        let created = recorded(1, 0, &TaskEvent::Created(task("t1")));
        let renamed = recorded(
            2,
            1,
            &TaskEvent::Updated(TaskUpdated {
                task_id: "t1".into(),
                name: Some(Some("Approve".into())),
                ..Default::default()
            }),
        );
        let completed = recorded(
            3,
            2,
            &TaskEvent::Completed(TaskCompleted {
                task_id: "t1".into(),
                completed_by: None,
                source: SourceReference::default(),
            }),
        );
        for e in [&created, &renamed, &created, &renamed] {
            view.apply(e).expect("apply");
        }
        let t = view.task("t1").expect("open");
        assert_eq!(t.task.name.as_deref(), Some("Approve"));
        view.apply(&completed).expect("apply");
        for e in [&created, &renamed, &completed] {
            assert!(matches!(view.apply(e), Ok(Applied::Skipped)));
        }
        assert!(view.task("t1").is_none());
        assert_eq!(view.tombstone("t1"), Some(Tombstone { position: 3 }));
        assert_eq!(view.position(), 3);
    }

    #[test]
    fn a_change_concerns_who_saw_it_before_and_after() {
        let mut view = View::default();
        view.apply(&recorded(1, 0, &TaskEvent::Created(task("t1"))))
            .expect("apply");
        let Ok(Applied::Task(change)) = view.apply(&recorded(2, 1, &assigned("t1", Some("k"))))
        else {
            panic!("a task change")
        };
        assert!(change.concerns(&set(&["group:reviewers"])));
        assert!(change.concerns(&set(&["user:k"])));
        assert!(!change.concerns(&set(&["user:other"])));
    }
}
