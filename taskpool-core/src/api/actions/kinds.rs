//! Each action: what its body must hold, and the command it makes of it for a task (or none,
//! when the task already is as asked).

use serde::Deserialize;
use serde_json::{Map, Value};
use taskpool_api::task_commands::{
    Actor, AssignTask, ClaimTask, CompleteTask, DeferTask, TaskCommand, UnclaimTask, UndeferTask,
};

use super::{Action, NoBody};
use crate::api::{AppError, Body};
use crate::query::normalize_date;
use crate::view::TaskView;

pub(in crate::api) struct Claim;

impl Action for Claim {
    const NAME: &'static str = "claim";
    const SUMMARY: &'static str = "Claim the task for yourself.";
    type Request = NoBody;

    fn new(_: NoBody) -> Result<Claim, AppError> {
        Ok(Claim)
    }

    fn command(self, task: &TaskView, actor: Actor) -> Option<TaskCommand> {
        (task.task.assignee.as_deref() != Some(actor.user.as_str())).then(|| {
            TaskCommand::ClaimTask(ClaimTask {
                task_id: task.id().to_owned(),
                user: actor.user.clone(),
                actor: Some(actor),
            })
        })
    }
}

pub(in crate::api) struct Unclaim;

impl Action for Unclaim {
    const NAME: &'static str = "unclaim";
    const SUMMARY: &'static str = "Give the task back (only its assignee may).";
    type Request = NoBody;

    fn new(_: NoBody) -> Result<Unclaim, AppError> {
        Ok(Unclaim)
    }

    fn command(self, task: &TaskView, actor: Actor) -> Option<TaskCommand> {
        task.task.assignee.is_some().then(|| {
            TaskCommand::UnclaimTask(UnclaimTask {
                task_id: task.id().to_owned(),
                actor: Some(actor),
            })
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The new assignee; `null` unassigns.
    pub user: Option<String>,
}

pub(in crate::api) struct Assign(AssignBody);

impl Action for Assign {
    const NAME: &'static str = "assign";
    const SUMMARY: &'static str = "Assign the task to a user (when it is free or yours).";
    type Request = Body<AssignBody>;

    fn new(Body(body): Body<AssignBody>) -> Result<Assign, AppError> {
        if let Some(user) = &body.user {
            if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
                return Err(AppError::bad_input(
                    "bad_user",
                    "user must be 1 to 256 characters without control characters",
                ));
            }
        }
        Ok(Assign(body))
    }

    fn command(self, task: &TaskView, actor: Actor) -> Option<TaskCommand> {
        (task.task.assignee != self.0.user).then(|| {
            TaskCommand::AssignTask(AssignTask {
                task_id: task.id().to_owned(),
                user: self.0.user,
                actor: Some(actor),
            })
        })
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// Process variables to set, as plain JSON values.
    #[serde(default)]
    pub variables: Map<String, Value>,
}

pub(in crate::api) struct Complete(CompleteBody);

impl Action for Complete {
    const NAME: &'static str = "complete";
    const SUMMARY: &'static str =
        "Complete the task (yours, or free: then you complete it) with variables.";
    type Request = Body<CompleteBody>;

    fn new(Body(body): Body<CompleteBody>) -> Result<Complete, AppError> {
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
        Ok(Complete(body))
    }

    fn command(self, task: &TaskView, actor: Actor) -> Option<TaskCommand> {
        Some(TaskCommand::CompleteTask(CompleteTask {
            task_id: task.id().to_owned(),
            user: Some(actor.user.clone()),
            variables: self.0.variables,
            actor: Some(actor),
        }))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeferBody {
    /// RFC 3339 date-time (or `YYYY-MM-DD`) until which the task is deferred.
    pub follow_up: String,
}

/// The follow-up date, normalised (RFC 3339 UTC with milliseconds).
pub(in crate::api) struct Defer(String);

impl Action for Defer {
    const NAME: &'static str = "defer";
    const SUMMARY: &'static str = "Defer the task: set its follow-up date.";
    type Request = Body<DeferBody>;

    fn new(Body(body): Body<DeferBody>) -> Result<Defer, AppError> {
        normalize_date(&body.follow_up).map(Defer).ok_or_else(|| {
            AppError::bad_input(
                "bad_date",
                format!(
                    "followUp {:?} is not an RFC 3339 date-time or YYYY-MM-DD",
                    body.follow_up
                ),
            )
        })
    }

    fn command(self, task: &TaskView, actor: Actor) -> Option<TaskCommand> {
        Some(TaskCommand::DeferTask(DeferTask {
            task_id: task.id().to_owned(),
            follow_up: self.0,
            actor: Some(actor),
        }))
    }
}

pub(in crate::api) struct Undefer;

impl Action for Undefer {
    const NAME: &'static str = "undefer";
    const SUMMARY: &'static str = "Undefer the task: clear its follow-up date.";
    type Request = NoBody;

    fn new(_: NoBody) -> Result<Undefer, AppError> {
        Ok(Undefer)
    }

    fn command(self, task: &TaskView, actor: Actor) -> Option<TaskCommand> {
        task.task.follow_up.is_some().then(|| {
            TaskCommand::UndeferTask(UndeferTask {
                task_id: task.id().to_owned(),
                actor: Some(actor),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn task(assignee: Option<&str>, follow_up: Option<&str>) -> TaskView {
        let mut task = crate::view::tests::task("t1");
        task.assignee = assignee.map(str::to_owned);
        task.follow_up = follow_up.map(str::to_owned);
        TaskView {
            authorized_principals: crate::view::principals_of(&task),
            task,
            position: 3,
            version: 0,
            changed: "2026-11-23T10:00:00.000Z".into(),
        }
    }

    fn kermit() -> Actor {
        Actor {
            user: "kermit".into(),
            groups: vec!["frogs".into()],
        }
    }

    fn body<T: serde::de::DeserializeOwned>(json: Value) -> Body<T> {
        Body(serde_json::from_value(json).expect("body"))
    }

    fn code(e: AppError) -> String {
        e.code().to_owned()
    }

    #[test]
    fn an_action_that_changes_nothing_sends_no_command() {
        let mine = task(Some("kermit"), None);
        let free = task(None, None);
        assert_eq!(Claim.command(&mine, kermit()), None);
        assert_eq!(Unclaim.command(&free, kermit()), None);
        assert_eq!(Undefer.command(&free, kermit()), None);
        let assign = |user: Value| Assign::new(body(serde_json::json!({"user": user})));
        let same = assign("kermit".into()).expect("valid");
        assert_eq!(same.command(&mine, kermit()), None);
        assert_eq!(
            assign(Value::Null).expect("valid").command(&free, kermit()),
            None
        );
    }

    #[test]
    fn each_action_sends_its_command_for_the_task_and_the_actor() {
        let free = task(None, Some("2099-01-01T00:00:00.000Z"));
        let mine = task(Some("kermit"), None);
        assert_eq!(
            Claim.command(&free, kermit()),
            Some(TaskCommand::ClaimTask(ClaimTask {
                task_id: "t1".into(),
                user: "kermit".into(),
                actor: Some(kermit()),
            }))
        );
        assert!(matches!(
            Unclaim.command(&mine, kermit()),
            Some(TaskCommand::UnclaimTask(UnclaimTask { ref task_id, .. })) if task_id == "t1"
        ));
        assert!(matches!(
            Undefer.command(&free, kermit()),
            Some(TaskCommand::UndeferTask(_))
        ));
        let assign = Assign::new(body(serde_json::json!({"user": "piggy"}))).expect("valid");
        assert!(matches!(
            assign.command(&mine, kermit()),
            Some(TaskCommand::AssignTask(AssignTask { user: Some(ref u), .. })) if u == "piggy"
        ));
        let complete =
            Complete::new(body(serde_json::json!({"variables": {"ok": true}}))).expect("valid");
        let Some(TaskCommand::CompleteTask(c)) = complete.command(&mine, kermit()) else {
            panic!("a completion")
        };
        assert_eq!(
            (c.user.as_deref(), &c.variables["ok"]),
            (Some("kermit"), &Value::Bool(true))
        );
        let defer = Defer::new(body(serde_json::json!({"followUp": "2099-01-01"}))).expect("valid");
        assert!(matches!(
            defer.command(&free, kermit()),
            Some(TaskCommand::DeferTask(DeferTask { ref follow_up, .. }))
                if follow_up == "2099-01-01T00:00:00.000Z"
        ));
    }

    #[test]
    fn bad_bodies_are_refused_with_their_code() {
        let long = "x".repeat(257);
        for user in ["", long.as_str(), "a\nb"] {
            let refused = Assign::new(body(serde_json::json!({ "user": user })));
            assert_eq!(refused.map(|_| ()).map_err(code), Err("bad_user".into()));
        }
        let refused = Complete::new(body(serde_json::json!({"variables": {"": 1}})));
        assert_eq!(
            refused.map(|_| ()).map_err(code),
            Err("bad_variables".into())
        );
        let refused = Defer::new(body(serde_json::json!({"followUp": "soon"})));
        assert_eq!(refused.map(|_| ()).map_err(code), Err("bad_date".into()));
    }

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
