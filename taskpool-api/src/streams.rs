//! Stream names, and which application a stream belongs to: the one rule the bus enforces a
//! collector's writes with (`raft-bus --credentials`) and the names are built on.
//!
//! - `{kind}/{application}` and `{kind}/{application}/{rest}`, for the kinds in
//!   [`APPLICATION_KINDS`], belong to `application`;
//! - `data-entry/{entryType}/{entryId}` belongs to no application: the data-entry types a
//!   collector may write are granted to it one by one ([`data_entry_type`]);
//! - everything else, the first layout (`task-42`, `process-definition-x`, `identity-x`)
//!   included, belongs to no application.

/// The stream kinds whose second segment is the application.
pub const APPLICATION_KINDS: [&str; 5] = [
    "task",
    "process-definition",
    "identity",
    "process-instance",
    "collector-lease",
];

/// Longest application name.
pub const MAX_APPLICATION_LEN: usize = 40;

/// The application that owns `stream`, if any. A second segment that is not a valid
/// application name ([`valid_application`]) makes the stream no application's.
pub fn stream_application(stream: &str) -> Option<&str> {
    let (kind, rest) = stream.split_once('/')?;
    if !APPLICATION_KINDS.contains(&kind) {
        return None;
    }
    let application = rest.split_once('/').map_or(rest, |(app, _)| app);
    valid_application(application).ok()?;
    Some(application)
}

/// The entry type of a `data-entry/{entryType}/{entryId}` stream (both segments non-empty).
pub fn data_entry_type(stream: &str) -> Option<&str> {
    let rest = stream.strip_prefix("data-entry/")?;
    let (entry_type, entry_id) = rest.split_once('/')?;
    (!entry_type.is_empty() && !entry_id.is_empty()).then_some(entry_type)
}

/// `data-entry/{entryType}/{entryId}`: the stream of one data entry.
pub fn data_entry_stream(entry_type: &str, entry_id: &str) -> String {
    format!("data-entry/{entry_type}/{entry_id}")
}

/// An application name: `[a-z][a-z0-9-]{0,39}`.
pub fn valid_application(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if starts_well && rest_ok && name.len() <= MAX_APPLICATION_LEN {
        return Ok(());
    }
    Err(format!(
        "application name `{}` does not match [a-z][a-z0-9-]{{0,39}}: a lower-case letter, then \
         up to 39 lower-case letters, digits or `-`",
        name.escape_debug()
    ))
}

/// `task/{application}/{taskId}`: the stream of one task.
pub fn task_stream(application: &str, task_id: &str) -> String {
    format!("task/{application}/{task_id}")
}

/// `process-definition/{application}/{definitionId}`
pub fn process_definition_stream(application: &str, definition_id: &str) -> String {
    format!("process-definition/{application}/{definition_id}")
}

/// `identity/{application}`: the users and groups one engine knows.
pub fn identity_stream(application: &str) -> String {
    format!("identity/{application}")
}

/// `collector-lease/{application}`: who became the application's active collector, when
/// (`CollectorLeaseTaken`); its version fences the holder's appends.
pub fn collector_lease_stream(application: &str) -> String {
    format!("collector-lease/{application}")
}

/// How a stream holds task events: as `task/{application}/{taskId}`, or in the first layout
/// (`task-{taskId}`, written before application keys), where the application is the one in
/// each event's `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStream<'a> {
    Keyed {
        application: &'a str,
        task_id: &'a str,
    },
    FirstLayout {
        task_id: &'a str,
    },
}

impl<'a> TaskStream<'a> {
    pub fn parse(stream: &'a str) -> Option<TaskStream<'a>> {
        if let Some(rest) = stream.strip_prefix("task/") {
            let (application, task_id) = rest.split_once('/')?;
            return (!application.is_empty() && !task_id.is_empty()).then_some(TaskStream::Keyed {
                application,
                task_id,
            });
        }
        let task_id = stream.strip_prefix("task-")?;
        (!task_id.is_empty()).then_some(TaskStream::FirstLayout { task_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_streams_parse_in_both_layouts() {
        let keyed = task_stream("billing", "42");
        assert_eq!(keyed, "task/billing/42");
        assert_eq!(
            TaskStream::parse(&keyed),
            Some(TaskStream::Keyed {
                application: "billing",
                task_id: "42"
            })
        );
        // A task id may hold a slash (the engine accepts any id); the application cannot.
        assert_eq!(
            TaskStream::parse("task/local/a/b"),
            Some(TaskStream::Keyed {
                application: "local",
                task_id: "a/b"
            })
        );
        assert_eq!(
            TaskStream::parse("task-42"),
            Some(TaskStream::FirstLayout { task_id: "42" })
        );
        for other in [
            "task/",
            "task/x",
            "task//1",
            "task/x/",
            "task-",
            "identity/x",
            "tasks-1",
        ] {
            assert_eq!(TaskStream::parse(other), None, "{other}");
        }
        assert_eq!(
            crate::tasks::TaskKey::new("local", "7").to_string(),
            "local/7"
        );
    }

    #[test]
    fn streams_of_an_application_name_it_in_their_second_segment() {
        assert_eq!(stream_application("task/billing/42"), Some("billing"));
        assert_eq!(stream_application("task/billing/a/b"), Some("billing"));
        assert_eq!(
            stream_application("process-definition/billing/p:1"),
            Some("billing")
        );
        assert_eq!(stream_application("identity/billing"), Some("billing"));
        assert_eq!(
            stream_application("process-instance/app-2/9"),
            Some("app-2")
        );
    }

    #[test]
    fn other_streams_belong_to_no_application() {
        for stream in [
            "task-42",
            "process-definition-x",
            "identity-x",
            "data-entry/invoice/1",
            "task",
            "task/",
            "task//1",
            "task/Billing/1",
            "task/1app/1",
            "tasks/billing/1",
            "order/billing/1",
            "",
            "/billing/1",
        ] {
            assert_eq!(stream_application(stream), None, "{stream}");
        }
        let long = format!("task/{}/1", "a".repeat(41));
        assert_eq!(stream_application(&long), None);
        let longest = format!("task/{}/1", "a".repeat(40));
        assert_eq!(stream_application(&longest).map(str::len), Some(40));
    }

    #[test]
    fn data_entries_name_their_type() {
        assert_eq!(data_entry_type("data-entry/invoice/1"), Some("invoice"));
        assert_eq!(
            data_entry_type(&data_entry_stream("invoice", "2026/4711")),
            Some("invoice")
        );
        assert_eq!(data_entry_type("data-entry/invoice/a/b"), Some("invoice"));
        for stream in [
            "data-entry/invoice",
            "data-entry/invoice/",
            "data-entry//1",
            "data-entry-x",
            "task/billing/1",
        ] {
            assert_eq!(data_entry_type(stream), None, "{stream}");
        }
    }

    #[test]
    fn application_names_follow_the_rule() {
        for ok in ["a", "billing", "app-1", "a-", &"x".repeat(40)] {
            assert!(valid_application(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1app",
            "-a",
            "Billing",
            "bill_ing",
            "bill/ing",
            "é",
            &"x".repeat(41),
        ] {
            let err = valid_application(bad).expect_err(bad);
            assert!(err.contains("[a-z][a-z0-9-]{0,39}"), "{err}");
        }
    }
}
