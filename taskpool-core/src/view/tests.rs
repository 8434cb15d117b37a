//! The view's fold and index, event by event.

use super::*;
use taskpool_api::streams::task_stream;
use taskpool_api::tasks::{
    SourceReference, TaskAssigned, TaskCandidatesChanged, TaskCompleted, TaskUpdated,
};

pub fn source(application: &str) -> SourceReference {
    SourceReference {
        application: application.into(),
        engine: "default".into(),
        ..Default::default()
    }
}

pub fn task(id: &str) -> Task {
    task_of("camunda", id)
}

pub fn task_of(application: &str, id: &str) -> Task {
    Task {
        task_id: id.into(),
        name: Some("Review".into()),
        priority: 50,
        created: "2026-11-23T10:00:00.000Z".into(),
        candidate_groups: vec!["reviewers".into()],
        source: source(application),
        ..Default::default()
    }
}

/// An event on its task's stream (`task/{application}/{taskId}`).
pub fn recorded(position: u64, version: u64, event: &TaskEvent) -> RecordedEvent {
    let stream = task_stream(&event.source().application, event.task_id());
    recorded_on(&stream, position, version, event)
}

pub fn recorded_on(stream: &str, position: u64, version: u64, event: &TaskEvent) -> RecordedEvent {
    RecordedEvent {
        position,
        stream: stream.into(),
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
        source: source("camunda"),
    })
}

fn set(items: &[&str]) -> Principals {
    Principals::everywhere(items.iter().copied())
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
            source: source("camunda"),
        }),
    ))
    .expect("apply");
    assert_eq!(view.visible_to(&reviewers).count(), 0);
    let t = view.task("camunda", "t1").expect("open");
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
            source: source("camunda"),
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
            source: source("camunda"),
        }),
    );
    for e in [&created, &renamed, &created, &renamed] {
        view.apply(e).expect("apply");
    }
    let t = view.task("camunda", "t1").expect("open");
    assert_eq!(t.task.name.as_deref(), Some("Approve"));
    view.apply(&completed).expect("apply");
    for e in [&created, &renamed, &completed] {
        assert!(matches!(view.apply(e), Ok(Applied::Skipped)));
    }
    assert!(view.task("camunda", "t1").is_none());
    assert_eq!(
        view.tombstone("camunda/t1"),
        Some(Tombstone { position: 3 })
    );
    assert_eq!(view.position(), 3);
}

#[test]
fn a_change_concerns_who_saw_it_before_and_after() {
    let mut view = View::default();
    view.apply(&recorded(1, 0, &TaskEvent::Created(task("t1"))))
        .expect("apply");
    let Ok(Applied::Task(change)) = view.apply(&recorded(2, 1, &assigned("t1", Some("k")))) else {
        panic!("a task change")
    };
    assert!(change.concerns(&set(&["group:reviewers"])));
    assert!(change.concerns(&set(&["user:k"])));
    assert!(!change.concerns(&set(&["user:other"])));
}

#[test]
fn the_same_task_id_in_two_applications_is_two_tasks() {
    let mut view = View::default();
    let mut a = task_of("local", "1");
    a.candidate_groups = vec!["accounting".into()];
    let mut b = task_of("billing", "1");
    b.candidate_groups = vec![];
    b.candidate_users = vec!["bob".into()];
    view.apply(&recorded(1, 0, &TaskEvent::Created(a)))
        .expect("apply");
    view.apply(&recorded(2, 0, &TaskEvent::Created(b)))
        .expect("apply");
    assert_eq!(view.open_tasks(), 2);
    let bob = set(&["user:bob"]);
    let seen: Vec<String> = view.visible_to(&bob).map(|t| t.key()).collect();
    assert_eq!(seen, ["billing/1"]);
    assert_eq!(
        view.task("local", "1")
            .expect("local")
            .task
            .candidate_groups,
        ["accounting"]
    );
}

#[test]
fn first_layout_streams_belong_to_the_application_in_their_source() {
    let mut view = View::default();
    let old = recorded_on("task-7", 1, 0, &TaskEvent::Created(task_of("local", "7")));
    view.apply(&old).expect("apply");
    assert!(view.task("local", "7").is_some());
    // The same task continued on its keyed stream after an upgrade.
    let keyed = recorded(2, 0, &TaskEvent::Created(task_of("local", "7")));
    assert!(matches!(view.apply(&keyed), Ok(Applied::Task(_))));
    assert_eq!(view.open_tasks(), 1);
    // A keyed stream whose data names another application is refused.
    let lying = recorded_on(
        "task/billing/8",
        3,
        0,
        &TaskEvent::Created(task_of("local", "8")),
    );
    assert!(view.apply(&lying).is_err());
    assert!(view.task("local", "8").is_none() && view.task("billing", "8").is_none());
}

#[test]
fn engine_groups_count_in_their_realm_only() {
    let identity = |app: &str, groups: &[&str]| IdentityView {
        identity: IdentitySynced {
            application: app.into(),
            users: vec![taskpool_api::tasks::IdentityUser {
                id: "mary".into(),
                first_name: None,
                last_name: None,
                email: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
            }],
            part: None,
        },
        position: 1,
    };
    let mut alone = View::default();
    alone.load_identity(identity("billing", &["clerks"]));
    assert_eq!(alone.groups_of("billing", "mary"), ["clerks"]);
    assert!(alone.groups_of("local", "mary").is_empty());
    let realms = Realms::new(&[vec!["local".into(), "billing".into()]]).expect("realms");
    let mut shared = View::new(realms);
    shared.load_identity(identity("billing", &["clerks"]));
    shared.load_identity(identity("local", &["accounting"]));
    assert_eq!(shared.groups_of("local", "mary"), ["accounting", "clerks"]);
}

fn identity_event(position: u64, identity: &IdentitySynced) -> RecordedEvent {
    RecordedEvent {
        position,
        stream: taskpool_api::streams::identity_stream(&identity.application),
        version: position,
        event_type: IDENTITY_SYNCED.into(),
        data: serde_json::value::to_raw_value(identity).expect("encode"),
        metadata: None,
        id: uuid::Uuid::new_v4(),
        timestamp: "2026-11-23T10:00:00.000Z".into(),
    }
}

fn engine_identity(users: u32, group: &str) -> IdentitySynced {
    IdentitySynced {
        application: "billing".into(),
        users: (0..users)
            .map(|i| taskpool_api::tasks::IdentityUser {
                id: format!("user-{i:05}"),
                first_name: Some("Mary".into()),
                last_name: None,
                email: Some(format!("user-{i:05}@example.com")),
                groups: vec![group.into()],
            })
            .collect(),
        part: None,
    }
}

#[test]
fn an_identity_sync_in_parts_ends_as_the_whole_and_a_cut_one_mixes_only_whole_users() {
    let old = engine_identity(3_000, "clerks");
    let new = engine_identity(2_500, "auditors");
    let parts = new.clone().split(20_000);
    assert!(parts.len() > 5, "{} parts", parts.len());
    for p in &parts {
        let len = serde_json::to_vec(p).expect("encode").len();
        assert!(len <= 20_000, "a part of {len} bytes");
    }
    let mut view = View::default();
    view.apply(&identity_event(1, &old)).expect("apply");
    // Only the first two parts arrive: those users are new, users beyond are still old.
    view.apply(&identity_event(2, &parts[0])).expect("apply");
    view.apply(&identity_event(3, &parts[1])).expect("apply");
    assert_eq!(view.groups_of("billing", "user-00000"), ["auditors"]);
    assert_eq!(view.groups_of("billing", "user-02999"), ["clerks"]);
    for (i, p) in parts.iter().enumerate().skip(2) {
        view.apply(&identity_event(2 + i as u64, p)).expect("apply");
    }
    let held = &view.identity("billing").expect("an identity").identity;
    assert_eq!(
        held, &new,
        "every part applied: the new identity, nothing of the old"
    );
    assert!(view.groups_of("billing", "user-02999").is_empty());
}
