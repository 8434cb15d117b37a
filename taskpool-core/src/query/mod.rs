//! Task list questions answered over the in-memory view: the filters and sorts of a parsed
//! [`TaskQuery`] (see [`language`]) applied to the tasks a user may see.

mod language;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::Value;

pub use language::{normalize_date, Field, Filter, Op, QueryError, SortKey, TaskQuery};
use language::{parse_field, Attr, Kind, ALL_ATTRS};

use crate::view::{Principals, TaskView, View};

impl TaskQuery {
    fn keeps(&self, t: &TaskView, user: &str, now: &str) -> bool {
        if self.assigned_to_me && t.task.assignee.as_deref() != Some(user) {
            return false;
        }
        if self.unassigned && t.task.assignee.is_some() {
            return false;
        }
        if self.deferred.is_some_and(|d| d != t.is_deferred(now)) {
            return false;
        }
        self.filters.iter().all(|f| f.matches(t))
    }

    fn compare(&self, a: &TaskView, b: &TaskView) -> Ordering {
        for key in &self.sort {
            let o = compare_values(
                sort_value(&key.field, a),
                sort_value(&key.field, b),
                key.descending,
            );
            if o != Ordering::Equal {
                return o;
            }
        }
        // Ties end by task id, then application: the same id may exist in two engines.
        (&a.task.task_id, a.application()).cmp(&(&b.task.task_id, b.application()))
    }
}

impl Filter {
    fn matches(&self, t: &TaskView) -> bool {
        match &self.field {
            Field::Task(Attr::Priority) => self.number(t.task.priority as f64),
            Field::Task(a) if a.kind() == Kind::List => a.list(t).iter().any(|v| self.text(v)),
            Field::Task(a) => a.text(t).is_some_and(|v| self.text(v)),
            Field::Data(key) => match t.task.payload.get(key) {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => self.text(s),
                Some(Value::Number(n)) => match (n.as_f64(), self.from.number) {
                    (Some(v), Some(_)) if self.op != Op::Contains => self.number(v),
                    _ => self.text(&n.to_string()),
                },
                Some(Value::Bool(b)) => match self.op {
                    Op::Eq => self.from.lower == b.to_string(),
                    Op::Contains => b.to_string().contains(&self.from.lower),
                    _ => false,
                },
                Some(other) => self.op == Op::Contains && self.text(&other.to_string()),
            },
        }
    }

    fn text(&self, v: &str) -> bool {
        match self.op {
            Op::Eq => v == self.from.text,
            Op::Contains => v.to_lowercase().contains(&self.from.lower),
            Op::Lt => v < self.from.text.as_str(),
            Op::Gt => v > self.from.text.as_str(),
            Op::Between => {
                v >= self.from.text.as_str()
                    && self.to.as_ref().is_some_and(|to| v <= to.text.as_str())
            }
        }
    }

    fn number(&self, v: f64) -> bool {
        let Some(from) = self.from.number else {
            return false;
        };
        match self.op {
            Op::Eq => v == from,
            Op::Contains => v.to_string().contains(&self.from.lower),
            Op::Lt => v < from,
            Op::Gt => v > from,
            Op::Between => {
                v >= from
                    && self
                        .to
                        .as_ref()
                        .and_then(|t| t.number)
                        .is_some_and(|to| v <= to)
            }
        }
    }
}

/// A sortable value; variants are ordered by kind first (numbers before text).
#[derive(Debug, PartialEq, PartialOrd)]
enum SortValue<'a> {
    Bool(bool),
    Number(f64),
    Text(&'a str),
}

fn sort_value<'a>(field: &Field, t: &'a TaskView) -> Option<SortValue<'a>> {
    match field {
        Field::Task(Attr::Priority) => Some(SortValue::Number(t.task.priority as f64)),
        Field::Task(a) => a.text(t).map(SortValue::Text),
        Field::Data(key) => match t.task.payload.get(key)? {
            Value::Bool(b) => Some(SortValue::Bool(*b)),
            Value::Number(n) => n.as_f64().map(SortValue::Number),
            Value::String(s) => Some(SortValue::Text(s)),
            _ => None,
        },
    }
}

/// Missing values last in either direction.
fn compare_values(
    a: Option<SortValue<'_>>,
    b: Option<SortValue<'_>>,
    descending: bool,
) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => {
            let o = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
            if descending {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn value_key(v: &Value) -> SortValue<'_> {
    match v {
        Value::Bool(b) => SortValue::Bool(*b),
        Value::Number(n) => SortValue::Number(n.as_f64().unwrap_or(0.0)),
        _ => SortValue::Text(v.as_str().unwrap_or("")),
    }
}

/// One page of an answer and how many tasks match in all.
pub struct Page {
    pub total: usize,
    pub tasks: Vec<Arc<TaskView>>,
}

/// Answers `query` for a user who holds `principals`.
pub fn run(view: &View, principals: &Principals, user: &str, query: &TaskQuery, now: &str) -> Page {
    let mut hits: Vec<&Arc<TaskView>> = view
        .visible_to(principals)
        .filter(|t| query.keeps(t, user, now))
        .collect();
    let total = hits.len();
    let start = query.page.saturating_mul(query.size);
    if start >= total {
        return Page {
            total,
            tasks: Vec::new(),
        };
    }
    // Only the first `end` in order are needed: select them, then sort just those.
    let end = (start + query.size).min(total);
    let cmp = |a: &&Arc<TaskView>, b: &&Arc<TaskView>| query.compare(a, b);
    if end < total {
        hits.select_nth_unstable_by(end - 1, cmp);
        hits.truncate(end);
    }
    hits.sort_unstable_by(cmp);
    Page {
        total,
        tasks: hits[start..].iter().map(|t| Arc::clone(t)).collect(),
    }
}

/// Open tasks visible to `principals`, per application.
pub fn counts(view: &View, principals: &Principals) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in view.visible_to(principals) {
        *counts.entry(t.task.source.application.clone()).or_insert(0) += 1;
    }
    counts
}

/// Every filterable attribute: `task.<attribute>`, and `data.<key>` for each payload key of
/// the visible tasks.
pub fn attribute_names(view: &View, principals: &Principals) -> Vec<String> {
    let mut names: BTreeSet<String> = ALL_ATTRS.iter().map(|(n, _)| format!("task.{n}")).collect();
    for t in view.visible_to(principals) {
        for key in t.task.payload.keys() {
            if !names.contains(&format!("data.{key}")) {
                names.insert(format!("data.{key}"));
            }
        }
    }
    names.into_iter().collect()
}

/// The distinct values of one attribute among the visible tasks, sorted, at most `limit`.
pub fn attribute_values(
    view: &View,
    principals: &Principals,
    name: &str,
    limit: usize,
) -> Result<Vec<Value>, QueryError> {
    let field = if name.starts_with("task.") || name.starts_with("data.") {
        parse_field(name, name)?
    } else {
        return Err(QueryError::UnknownFilterField(name.to_owned()));
    };
    let mut seen = HashSet::new();
    let mut values = Vec::new();
    let mut add = |v: Value| {
        if seen.insert(v.to_string()) {
            values.push(v);
        }
    };
    for t in view.visible_to(principals) {
        match &field {
            Field::Task(Attr::Priority) => add(Value::from(t.task.priority)),
            Field::Task(a) if a.kind() == Kind::List => {
                a.list(t).iter().for_each(|v| add(Value::from(v.as_str())))
            }
            Field::Task(a) => {
                if let Some(v) = a.text(t) {
                    add(Value::from(v));
                }
            }
            Field::Data(key) => {
                if let Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) =
                    t.task.payload.get(key)
                {
                    add(v.clone())
                }
            }
        }
    }
    values.sort_by(|a, b| {
        value_key(a)
            .partial_cmp(&value_key(b))
            .unwrap_or(Ordering::Equal)
    });
    values.truncate(limit);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::tests::{recorded, task};
    use proptest::prelude::*;
    use serde_json::json;
    use taskpool_api::tasks::{Task, TaskEvent};

    const NOW: &str = "2026-11-23T12:00:00.000Z";

    fn view_of(tasks: &[Task]) -> View {
        let mut view = View::default();
        for (i, t) in tasks.iter().enumerate() {
            view.apply(&recorded(i as u64 + 1, 0, &TaskEvent::Created(t.clone())))
                .expect("apply");
        }
        view
    }

    fn reviewers() -> Principals {
        Principals::everywhere(["group:reviewers"])
    }

    fn ids(view: &View, query: &str) -> Vec<String> {
        let q = TaskQuery::parse(query).expect("query");
        run(view, &reviewers(), "kermit", &q, NOW)
            .tasks
            .iter()
            .map(|t| t.task.task_id.clone())
            .collect()
    }

    fn sample() -> Vec<Task> {
        (0..20)
            .map(|i| {
                let mut t = task(&format!("t{i:02}"));
                t.priority = (i % 4) * 10;
                t.name = Some(format!(
                    "{} {i}",
                    if i % 2 == 0 { "Review" } else { "Approve" }
                ));
                t.due = (i % 3 != 0).then(|| format!("2026-12-{:02}T00:00:00.000Z", i + 1));
                t.payload.insert("amount".into(), json!(i * 10));
                t.payload.insert("vip".into(), json!(i % 5 == 0));
                t.assignee = (i % 6 == 0).then(|| "kermit".to_owned());
                t.follow_up = (i == 7).then(|| "2099-01-01T00:00:00.000Z".to_owned());
                t.suspended = i == 3;
                t
            })
            .collect()
    }

    #[test]
    fn errors_have_their_codes() {
        let cases = [
            ("filter=task.nope=1", "unknown_filter_field"),
            ("filter=novalue", "bad_filter"),
            ("filter==1", "bad_filter"),
            ("filter=x=", "bad_filter"),
            ("filter=task.priority>high", "bad_filter"),
            ("filter=task.candidateGroups>a", "bad_filter"),
            ("filter=amount[]1", "bad_filter"),
            ("filter=task.due<tomorrow", "bad_date"),
            ("sort=-nope", "bad_sort"),
            ("sort=candidateUsers", "bad_sort"),
            ("size=0", "bad_page"),
            ("size=1001", "bad_page"),
            ("page=x", "bad_page"),
            ("deferred=yes", "bad_option"),
            ("assignedToMe=true&unassigned=true", "conflicting_options"),
            ("colour=red", "unknown_parameter"),
        ];
        for (q, code) in cases {
            let e = TaskQuery::parse(q).expect_err(q);
            assert_eq!(e.code(), code, "{q}: {e}");
        }
    }

    #[test]
    fn filters_on_attributes_dates_and_payload() {
        let view = view_of(&sample());
        assert_eq!(
            ids(
                &view,
                "filter=task.name%25REVIEW&filter=amount>100&sort=taskId"
            ),
            ["t12", "t14", "t16", "t18"]
        );
        assert_eq!(
            ids(&view, "filter=amount[]30|50&sort=taskId"),
            ["t03", "t04", "t05"]
        );
        assert_eq!(
            ids(&view, "filter=vip=true&sort=taskId"),
            ["t00", "t05", "t10", "t15"]
        );
        // Dates in any offset are compared in UTC.
        assert_eq!(
            ids(
                &view,
                "filter=task.due<2026-12-03T01:00:00%2B02:00&sort=taskId"
            ),
            ["t01"]
        );
        assert_eq!(
            ids(&view, "filter=task.candidateGroups=reviewers&size=1"),
            ["t03"]
        );
        assert_eq!(ids(&view, "filter=task.suspended=true"), ["t03"]);
        assert_eq!(
            ids(&view, "filter=task.priority=30&filter=task.assignee=kermit"),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(&view, "assignedToMe=true&sort=taskId"),
            ["t00", "t06", "t12", "t18"]
        );
        assert_eq!(ids(&view, "deferred=true"), ["t07"]);
    }

    #[test]
    fn sorts_put_missing_values_last_and_page_stably() {
        let view = view_of(&sample());
        let asc = ids(&view, "sort=due&size=1000");
        let desc = ids(&view, "sort=-due&size=1000");
        assert_eq!(&asc[..2], ["t01", "t02"]);
        assert_eq!(&desc[..2], ["t19", "t17"]);
        for order in [&asc, &desc] {
            assert_eq!(
                &order[13..],
                ["t00", "t03", "t06", "t09", "t12", "t15", "t18"]
            );
        }
        let all = ids(&view, "size=1000");
        let mut paged = Vec::new();
        for page in 0..7 {
            paged.extend(ids(&view, &format!("size=3&page={page}")));
        }
        assert_eq!(paged, all);
        assert_eq!(
            &all[..3],
            ["t03", "t07", "t11"],
            "-priority, then created, then id"
        );
    }

    #[test]
    fn counts_names_and_values() {
        let mut tasks = sample();
        tasks[0].source.application = "other".into();
        let view = view_of(&tasks);
        let counts = counts(&view, &reviewers());
        assert_eq!(counts.get("other"), Some(&1));
        assert_eq!(counts.get("camunda"), Some(&19));
        let names = attribute_names(&view, &reviewers());
        assert!(names.contains(&"data.vip".to_owned()) && names.contains(&"task.due".to_owned()));
        let values = attribute_values(&view, &reviewers(), "data.vip", 10).expect("values");
        assert_eq!(values, [json!(false), json!(true)]);
        let values = attribute_values(&view, &reviewers(), "task.priority", 2).expect("values");
        assert_eq!(values, [json!(0), json!(10)]);
        assert!(attribute_values(&view, &reviewers(), "task.nope", 2).is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,80}") {
            let _ = TaskQuery::parse(&s);
        }

        #[test]
        fn answers_equal_a_full_sort(
            priorities in proptest::collection::vec(0i64..5, 1..60),
            filter in prop_oneof![Just(""), Just("filter=amount>20&"), Just("filter=task.priority[]1|3&"), Just("filter=task.name%25view&")],
            sort in prop_oneof![Just("-priority,due"), Just("due,-data.amount"), Just("name"), Just("-data.amount")],
            size in 1usize..10,
            page in 0usize..8,
        ) {
            let tasks: Vec<Task> = priorities.iter().enumerate().map(|(i, p)| {
                let mut t = task(&format!("p{i:03}"));
                t.priority = *p;
                t.name = Some(if i % 3 == 0 { "Review".into() } else { "Approve".into() });
                t.due = (i % 4 != 0).then(|| format!("2026-12-{:02}T00:00:00.000Z", i % 28 + 1));
                t.payload.insert("amount".into(), json!((i * 7) % 50));
                t
            }).collect();
            let view = view_of(&tasks);
            let q = TaskQuery::parse(&format!("{filter}sort={sort}&size={size}&page={page}")).expect("query");
            let got = run(&view, &reviewers(), "kermit", &q, NOW);
            let mut all: Vec<&Arc<TaskView>> = view.tasks().filter(|t| q.keeps(t, "kermit", NOW)).collect();
            all.sort_by(|a, b| q.compare(a, b));
            let expected: Vec<String> = all.iter().skip(page * size).take(size).map(|t| t.task.task_id.clone()).collect();
            let got_ids: Vec<String> = got.tasks.iter().map(|t| t.task.task_id.clone()).collect();
            prop_assert_eq!(got.total, all.len());
            prop_assert_eq!(got_ids, expected);
        }
    }
}
