//! The fold of a task stream: applying task events to a [`Task`], and the events that turn
//! one state of a task into another (what the collector emits, what every reader folds).

use crate::tasks::{Task, TaskAssigned, TaskCandidatesChanged, TaskEvent, TaskKey, TaskUpdated};

/// Where a task stream's fold stands.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TaskFold {
    #[default]
    Absent,
    Open(Task),
    /// Completed or deleted; the last known state.
    Finished(Task),
}

impl TaskFold {
    pub fn apply(&mut self, event: &TaskEvent) {
        let next = match (std::mem::take(self), event) {
            (_, TaskEvent::Created(task)) => TaskFold::Open(task.clone()),
            (TaskFold::Open(mut task), event) => {
                let finished = event.is_final();
                task.apply(event);
                if finished {
                    TaskFold::Finished(task)
                } else {
                    TaskFold::Open(task)
                }
            }
            (state, _) => state,
        };
        *self = next;
    }

    pub fn task(&self) -> Option<&Task> {
        match self {
            TaskFold::Absent => None,
            TaskFold::Open(t) | TaskFold::Finished(t) => Some(t),
        }
    }
}

impl Task {
    /// Its key: `source.application` and the task id.
    pub fn key(&self) -> TaskKey {
        TaskKey::new(&self.source.application, &self.task_id)
    }

    /// Applies a change to an open task (a `Created` event replaces it).
    pub fn apply(&mut self, event: &TaskEvent) {
        match event {
            TaskEvent::Created(task) => *self = task.clone(),
            TaskEvent::Assigned(e) => self.assignee = e.assignee.clone(),
            TaskEvent::CandidatesChanged(e) => {
                self.candidate_users = e.candidate_users.clone();
                self.candidate_groups = e.candidate_groups.clone();
            }
            TaskEvent::Updated(e) => {
                if let Some(v) = &e.name {
                    self.name = v.clone();
                }
                if let Some(v) = &e.description {
                    self.description = v.clone();
                }
                if let Some(v) = e.priority {
                    self.priority = v;
                }
                if let Some(v) = &e.due {
                    self.due = v.clone();
                }
                if let Some(v) = &e.follow_up {
                    self.follow_up = v.clone();
                }
                if let Some(v) = &e.owner {
                    self.owner = v.clone();
                }
                if let Some(v) = &e.form_key {
                    self.form_key = v.clone();
                }
                if let Some(v) = &e.form_ref {
                    self.form_ref = v.clone();
                }
                if let Some(v) = &e.payload {
                    self.payload = v.clone();
                }
                if let Some(v) = &e.payload_truncated {
                    self.payload_truncated = v.clone();
                }
                if let Some(v) = e.suspended {
                    self.suspended = v;
                }
                if let Some(v) = &e.task_definition_key {
                    self.task_definition_key = v.clone();
                }
                if e.definition_changed {
                    self.source = e.source.clone();
                }
            }
            TaskEvent::Completed(_) | TaskEvent::Deleted(_) => {}
        }
    }

    /// The events that turn `self` into `new` (same task), in a fixed order.
    pub fn changes_to(&self, new: &Task) -> Vec<TaskEvent> {
        let mut events = Vec::new();
        let source = new.source.clone();
        let id = new.task_id.clone();
        if self.assignee != new.assignee {
            events.push(TaskEvent::Assigned(TaskAssigned {
                task_id: id.clone(),
                assignee: new.assignee.clone(),
                source: source.clone(),
            }));
        }
        if self.candidate_users != new.candidate_users
            || self.candidate_groups != new.candidate_groups
        {
            events.push(TaskEvent::CandidatesChanged(TaskCandidatesChanged {
                task_id: id.clone(),
                candidate_users: new.candidate_users.clone(),
                candidate_groups: new.candidate_groups.clone(),
                source: source.clone(),
            }));
        }
        fn diff<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
            (old != new).then(|| new.clone())
        }
        let update = TaskUpdated {
            task_id: id,
            source,
            name: diff(&self.name, &new.name),
            description: diff(&self.description, &new.description),
            priority: diff(&self.priority, &new.priority),
            due: diff(&self.due, &new.due),
            follow_up: diff(&self.follow_up, &new.follow_up),
            owner: diff(&self.owner, &new.owner),
            form_key: diff(&self.form_key, &new.form_key),
            form_ref: diff(&self.form_ref, &new.form_ref),
            payload: diff(&self.payload, &new.payload),
            payload_truncated: diff(&self.payload_truncated, &new.payload_truncated),
            suspended: diff(&self.suspended, &new.suspended),
            task_definition_key: diff(&self.task_definition_key, &new.task_definition_key),
            definition_changed: self.source.moved_to(&new.source),
        };
        if !update.is_empty() {
            events.push(TaskEvent::Updated(update));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{
        SourceReference, TaskCompleted, TASK_ASSIGNED, TASK_CANDIDATES_CHANGED, TASK_UPDATED,
    };
    use serde_json::Value;

    fn task() -> Task {
        Task {
            task_id: "t1".into(),
            name: Some("Review".into()),
            priority: 50,
            created: "2026-11-23T20:40:05.123Z".into(),
            candidate_groups: vec!["reviewers".into()],
            ..Default::default()
        }
    }

    #[test]
    fn changes_fold_back_to_the_new_state() {
        let old = task();
        let mut new = old.clone();
        new.assignee = Some("demo".into());
        new.candidate_users = vec!["kermit".into()];
        new.follow_up = Some("2026-12-01T00:00:00.000Z".into());
        new.name = None;
        let events = old.changes_to(&new);
        let types: Vec<_> = events.iter().map(|e| e.event_type()).collect();
        assert_eq!(
            types,
            [TASK_ASSIGNED, TASK_CANDIDATES_CHANGED, TASK_UPDATED]
        );
        let mut folded = TaskFold::Open(old);
        for e in &events {
            let json = e.to_json().expect("encode");
            let back = TaskEvent::decode(e.event_type(), json.get()).expect("decode");
            assert_eq!(&back, e);
            folded.apply(&back);
        }
        assert_eq!(folded, TaskFold::Open(new.clone()));
        assert!(new.changes_to(&new).is_empty());
    }

    #[test]
    fn a_suspension_and_a_migration_fold_back_and_nothing_else_moves() {
        let old = task();
        let mut new = old.clone();
        new.suspended = true;
        new.task_definition_key = Some("review_v2".into());
        new.source.process_definition_id = Some("review:2:abc".into());
        new.source.business_key = Some("b-1".into());
        let events = old.changes_to(&new);
        let [TaskEvent::Updated(update)] = events.as_slice() else {
            panic!("expected one TaskUpdated, got {events:?}")
        };
        assert!(update.definition_changed && update.suspended == Some(true));
        let mut folded = old.clone();
        folded.apply(&events[0]);
        assert_eq!(folded, new);
        // The source alone (a business key) is no change of definition: no event.
        let mut renamed = old.clone();
        renamed.source.business_key = Some("b-2".into());
        assert!(old.changes_to(&renamed).is_empty());
    }

    #[test]
    fn an_update_says_which_fields_were_cleared() {
        let old = task();
        let mut new = old.clone();
        new.name = None;
        let events = old.changes_to(&new);
        let [TaskEvent::Updated(update)] = events.as_slice() else {
            panic!("expected one TaskUpdated, got {events:?}")
        };
        let json = serde_json::to_value(update).expect("encode");
        assert_eq!(json["name"], Value::Null);
        assert!(json.get("priority").is_none());
    }

    #[test]
    fn a_finished_task_ignores_later_events() {
        let mut fold = TaskFold::default();
        fold.apply(&TaskEvent::Created(task()));
        fold.apply(&TaskEvent::Completed(TaskCompleted {
            task_id: "t1".into(),
            completed_by: None,
            source: SourceReference::default(),
        }));
        fold.apply(&TaskEvent::Assigned(TaskAssigned {
            task_id: "t1".into(),
            assignee: Some("x".into()),
            source: SourceReference::default(),
        }));
        assert_eq!(fold, TaskFold::Finished(task()));
    }
}
