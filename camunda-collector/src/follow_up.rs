//! Setting a task's follow-up date. Camunda's REST API has only `PUT /task/{id}`, which
//! replaces every field and has no condition, so the collector reads the task, writes it back
//! with the new date — and then reads the engine's user-operation log of that write: a field
//! other than the follow-up date in it means a change landed between the read and the write
//! and was overwritten, and it is put back at once. (The log is written for authenticated REST
//! calls: with `--engine-user` set, as every collector of ours runs.)

use chrono::{Duration, Utc};

use crate::dates;
use crate::engine::{Engine, EngineError, EngineTask, UserOperation};

const FOLLOW_UP: &str = "followUpDate";
/// How far before the write the log is read: the engine's clock may be off ours a little.
const CLOCK_SLACK_SECS: i64 = 60;

/// Writes `task` (as just read) with `follow_up`; returns the properties of a concurrent change
/// that the write overwrote and that were restored.
pub async fn set(
    engine: &Engine,
    task: &EngineTask,
    follow_up: Option<String>,
) -> Result<Vec<String>, EngineError> {
    let since = dates::to_engine(Utc::now() - Duration::seconds(CLOCK_SLACK_SECS));
    engine.put_task(task, follow_up.clone()).await?;
    let Some(user) = engine.user() else {
        return Ok(Vec::new());
    };
    let log = engine.task_updates_after(&task.id, &since).await?;
    let overwritten = overwritten_by(&log, user, follow_up.as_deref());
    if overwritten.is_empty() {
        return Ok(Vec::new());
    }
    let Some(mut now) = engine.task(&task.id).await? else {
        return Ok(Vec::new());
    };
    let mut restored = Vec::new();
    for (property, value) in overwritten {
        let value = value.map(str::to_owned);
        let field = match property {
            "assignee" => &mut now.assignee,
            "owner" => &mut now.owner,
            "name" => &mut now.name,
            "description" => &mut now.description,
            "dueDate" => {
                now.due = value.and_then(|ms| engine_date(&ms));
                restored.push(property.to_owned());
                continue;
            }
            "priority" => {
                if let Some(p) = value.and_then(|v| v.parse().ok()) {
                    now.priority = p;
                    restored.push(property.to_owned());
                }
                continue;
            }
            other => {
                tracing::warn!(task_id = %task.id, property = other, "a concurrent change of this property was overwritten and cannot be put back");
                continue;
            }
        };
        *field = value;
        restored.push(property.to_owned());
    }
    engine.put_task(&now, follow_up).await?;
    tracing::warn!(task_id = %task.id, restored = ?restored, "a change made while the follow-up date was written was overwritten; put back");
    Ok(restored)
}

/// The properties (with their values before) that the newest write of the follow-up date by
/// `user` changed besides the date itself. The write is told by its new follow-up date
/// (milliseconds, as the log keeps dates; none for a cleared one).
fn overwritten_by<'a>(
    log: &'a [UserOperation],
    user: &str,
    follow_up: Option<&str>,
) -> Vec<(&'a str, Option<&'a str>)> {
    let millis = follow_up
        .and_then(dates::parse)
        .map(|d| d.timestamp_millis().to_string());
    let Some(ours) = log.iter().find(|op| {
        op.user_id.as_deref() == Some(user)
            && op.property.as_deref() == Some(FOLLOW_UP)
            && op.new_value == millis
    }) else {
        return Vec::new();
    };
    log.iter()
        .filter(|op| op.operation_id == ours.operation_id)
        .filter_map(|op| Some((op.property.as_deref()?, op.org_value.as_deref())))
        .filter(|(property, _)| *property != FOLLOW_UP)
        .collect()
}

/// A date of the log (milliseconds since the epoch) as the REST API takes it.
fn engine_date(millis: &str) -> Option<String> {
    let ms: i64 = millis.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(ms).map(dates::to_engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        id: &str,
        user: &str,
        property: &str,
        org: Option<&str>,
        new: Option<&str>,
    ) -> UserOperation {
        UserOperation {
            operation_id: id.into(),
            operation_type: "Update".into(),
            user_id: Some(user.into()),
            property: Some(property.into()),
            org_value: org.map(Into::into),
            new_value: new.map(Into::into),
        }
    }

    #[test]
    fn only_the_write_of_this_date_by_this_user_counts() {
        let date = "2031-01-01T00:00:00.000+0000";
        let log = [
            op(
                "w",
                "collector",
                "followUpDate",
                None,
                Some("1924992000000"),
            ),
            op("w", "collector", "assignee", Some("peter"), None),
            op("x", "someone", "followUpDate", None, Some("1924992000000")),
            op("x", "someone", "owner", Some("o"), None),
        ];
        assert_eq!(
            overwritten_by(&log, "collector", Some(date)),
            [("assignee", Some("peter"))]
        );
        assert!(overwritten_by(&log, "collector", None).is_empty());
        assert!(overwritten_by(&log, "other", Some(date)).is_empty());
        assert_eq!(
            engine_date("1924992000000").as_deref(),
            Some("2031-01-01T00:00:00.000+0000")
        );
    }
}
