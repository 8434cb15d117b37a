//! The task list's query language: a query string parsed into a validated [`TaskQuery`].
//!
//! Syntax (Polyflow's, with its gaps closed): `filter=field<op>value`, repeatable, all must
//! hold; ops `=` equals, `%` contains (case-insensitive), `<`, `>`, `[]` between `from|to`
//! (inclusive). Fields: `task.<attribute>`, or `data.<key>` / a bare name for a payload value
//! (payload keys used bare must not contain an op character). `sort=+a,-b` (repeatable), ties
//! end by task id, missing values last. `page` (0-based), `size` (1–1000), and the options
//! `assignedToMe`, `unassigned`, `deferred`.

use crate::view::TaskView;

pub const MAX_SIZE: usize = 1_000;
const MAX_PAGE: usize = 1_000_000;
const DEFAULT_SORT: &str = "-priority,created";
const PARAMETERS: &str = "filter, sort, page, size, assignedToMe, unassigned, deferred";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueryError {
    #[error("unknown task attribute {0:?} in a filter; known: {ATTRIBUTES}")]
    UnknownFilterField(String),
    #[error("filter {0:?}: {1}")]
    BadFilter(String, String),
    #[error("filter {0:?}: {1:?} is not an RFC 3339 date-time or YYYY-MM-DD")]
    BadDate(String, String),
    #[error("sort {0:?}: {1}")]
    BadSort(String, String),
    #[error("{0}")]
    BadPage(String),
    #[error("{0} must be true or false")]
    BadOption(String),
    #[error("assignedToMe and unassigned cannot both be true")]
    ConflictingOptions,
    #[error("unknown parameter {0:?}; known: {PARAMETERS}")]
    UnknownParameter(String),
}

impl QueryError {
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::UnknownFilterField(_) => "unknown_filter_field",
            QueryError::BadFilter(..) => "bad_filter",
            QueryError::BadDate(..) => "bad_date",
            QueryError::BadSort(..) => "bad_sort",
            QueryError::BadPage(_) => "bad_page",
            QueryError::BadOption(_) => "bad_option",
            QueryError::ConflictingOptions => "conflicting_options",
            QueryError::UnknownParameter(_) => "unknown_parameter",
        }
    }
}

/// Task attributes a filter or sort may name (after `task.`).
const ATTRIBUTES: &str = "taskId, name, description, taskDefinitionKey, priority, created, due, \
followUp, assignee, owner, formKey, candidateUsers, candidateGroups, application, engine, \
processDefinitionKey, processDefinitionId, processInstanceId, executionId, businessKey, \
processName, tenantId, suspended";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Date,
    Number,
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    TaskId,
    Name,
    Description,
    TaskDefinitionKey,
    Priority,
    Created,
    Due,
    FollowUp,
    Assignee,
    Owner,
    FormKey,
    CandidateUsers,
    CandidateGroups,
    Application,
    Engine,
    ProcessDefinitionKey,
    ProcessDefinitionId,
    ProcessInstanceId,
    ExecutionId,
    BusinessKey,
    ProcessName,
    TenantId,
    /// `true` or `false`.
    Suspended,
}

pub(super) const ALL_ATTRS: [(&str, Attr); 23] = [
    ("taskId", Attr::TaskId),
    ("name", Attr::Name),
    ("description", Attr::Description),
    ("taskDefinitionKey", Attr::TaskDefinitionKey),
    ("priority", Attr::Priority),
    ("created", Attr::Created),
    ("due", Attr::Due),
    ("followUp", Attr::FollowUp),
    ("assignee", Attr::Assignee),
    ("owner", Attr::Owner),
    ("formKey", Attr::FormKey),
    ("candidateUsers", Attr::CandidateUsers),
    ("candidateGroups", Attr::CandidateGroups),
    ("application", Attr::Application),
    ("engine", Attr::Engine),
    ("processDefinitionKey", Attr::ProcessDefinitionKey),
    ("processDefinitionId", Attr::ProcessDefinitionId),
    ("processInstanceId", Attr::ProcessInstanceId),
    ("executionId", Attr::ExecutionId),
    ("businessKey", Attr::BusinessKey),
    ("processName", Attr::ProcessName),
    ("tenantId", Attr::TenantId),
    ("suspended", Attr::Suspended),
];

impl Attr {
    pub(super) fn by_name(name: &str) -> Option<Attr> {
        ALL_ATTRS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    pub(super) fn kind(self) -> Kind {
        match self {
            Attr::Priority => Kind::Number,
            Attr::Created | Attr::Due | Attr::FollowUp => Kind::Date,
            Attr::CandidateUsers | Attr::CandidateGroups => Kind::List,
            _ => Kind::Text,
        }
    }

    pub(super) fn text(self, t: &TaskView) -> Option<&str> {
        let task = &t.task;
        let s = &task.source;
        match self {
            Attr::TaskId => Some(&task.task_id),
            Attr::Name => task.name.as_deref(),
            Attr::Description => task.description.as_deref(),
            Attr::TaskDefinitionKey => task.task_definition_key.as_deref(),
            Attr::Created => Some(&task.created),
            Attr::Due => task.due.as_deref(),
            Attr::FollowUp => task.follow_up.as_deref(),
            Attr::Assignee => task.assignee.as_deref(),
            Attr::Owner => task.owner.as_deref(),
            Attr::FormKey => task.form_key.as_deref(),
            Attr::Application => Some(&s.application),
            Attr::Engine => Some(&s.engine),
            Attr::ProcessDefinitionKey => s.process_definition_key.as_deref(),
            Attr::ProcessDefinitionId => s.process_definition_id.as_deref(),
            Attr::ProcessInstanceId => s.process_instance_id.as_deref(),
            Attr::ExecutionId => s.execution_id.as_deref(),
            Attr::BusinessKey => s.business_key.as_deref(),
            Attr::ProcessName => s.process_name.as_deref(),
            Attr::TenantId => s.tenant_id.as_deref(),
            Attr::Suspended => Some(if task.suspended { "true" } else { "false" }),
            Attr::Priority | Attr::CandidateUsers | Attr::CandidateGroups => None,
        }
    }

    pub(super) fn list(self, t: &TaskView) -> &[String] {
        match self {
            Attr::CandidateUsers => &t.task.candidate_users,
            Attr::CandidateGroups => &t.task.candidate_groups,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Task(Attr),
    /// A top-level payload key.
    Data(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Contains,
    Lt,
    Gt,
    Between,
}

/// A filter value, normalized once at parse time.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Operand {
    pub(super) text: String,
    pub(super) lower: String,
    pub(super) number: Option<f64>,
}

impl Operand {
    fn new(text: String) -> Operand {
        Operand {
            lower: text.to_lowercase(),
            number: text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            text,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: Field,
    pub op: Op,
    pub(super) from: Operand,
    /// The upper bound of `[]`.
    pub(super) to: Option<Operand>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub field: Field,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskQuery {
    pub filters: Vec<Filter>,
    pub sort: Vec<SortKey>,
    pub page: usize,
    pub size: usize,
    pub assigned_to_me: bool,
    pub unassigned: bool,
    pub deferred: Option<bool>,
}

impl TaskQuery {
    /// Parses a URL query string (percent-encoded; parameters may repeat).
    pub fn parse(raw_query: &str) -> Result<TaskQuery, QueryError> {
        let mut q = TaskQuery {
            filters: Vec::new(),
            sort: Vec::new(),
            page: 0,
            size: 50,
            assigned_to_me: false,
            unassigned: false,
            deferred: None,
        };
        let mut sorts = Vec::new();
        for (key, value) in form_urlencoded::parse(raw_query.as_bytes()) {
            match &*key {
                "filter" => q.filters.push(parse_filter(&value)?),
                "sort" => sorts.push(value.into_owned()),
                "page" => {
                    q.page = number(&value).filter(|p| *p <= MAX_PAGE).ok_or_else(|| {
                        QueryError::BadPage(format!(
                            "page {value:?} must be a number from 0 to {MAX_PAGE}"
                        ))
                    })?;
                }
                "size" => {
                    q.size = number(&value)
                        .filter(|s| (1..=MAX_SIZE).contains(s))
                        .ok_or_else(|| {
                            QueryError::BadPage(format!(
                                "size {value:?} must be a number from 1 to {MAX_SIZE}"
                            ))
                        })?;
                }
                "assignedToMe" => q.assigned_to_me = boolean("assignedToMe", &value)?,
                "unassigned" => q.unassigned = boolean("unassigned", &value)?,
                "deferred" => q.deferred = Some(boolean("deferred", &value)?),
                other => return Err(QueryError::UnknownParameter(other.to_owned())),
            }
        }
        if q.assigned_to_me && q.unassigned {
            return Err(QueryError::ConflictingOptions);
        }
        if sorts.is_empty() {
            sorts.push(DEFAULT_SORT.to_owned());
        }
        for s in &sorts {
            for item in s.split(',').filter(|i| !i.trim().is_empty()) {
                q.sort.push(parse_sort(item)?);
            }
        }
        Ok(q)
    }
}

fn number(s: &str) -> Option<usize> {
    s.trim().parse().ok()
}

fn boolean(name: &str, s: &str) -> Result<bool, QueryError> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(QueryError::BadOption(name.to_owned())),
    }
}

pub(super) fn parse_field(name: &str, original: &str) -> Result<Field, QueryError> {
    if let Some(attr) = name.strip_prefix("task.") {
        return Attr::by_name(attr)
            .map(Field::Task)
            .ok_or_else(|| QueryError::UnknownFilterField(attr.to_owned()));
    }
    let key = name.strip_prefix("data.").unwrap_or(name);
    if key.is_empty() {
        return Err(QueryError::BadFilter(
            original.to_owned(),
            "the field name is empty".into(),
        ));
    }
    Ok(Field::Data(key.to_owned()))
}

fn parse_filter(s: &str) -> Result<Filter, QueryError> {
    let bad = |why: &str| QueryError::BadFilter(s.to_owned(), why.to_owned());
    let (at, op, len) = s
        .char_indices()
        .find_map(|(i, c)| match c {
            '[' if s[i..].starts_with("[]") => Some((i, Op::Between, 2)),
            '=' => Some((i, Op::Eq, 1)),
            '%' => Some((i, Op::Contains, 1)),
            '<' => Some((i, Op::Lt, 1)),
            '>' => Some((i, Op::Gt, 1)),
            _ => None,
        })
        .ok_or_else(|| bad("expected field<op>value with op one of =, %, <, >, []"))?;
    let name = &s[..at];
    let value = &s[at + len..];
    if name.is_empty() {
        return Err(bad("the field name is empty"));
    }
    if value.is_empty() {
        return Err(bad("the value is empty"));
    }
    let field = parse_field(name, s)?;
    let kind = match &field {
        Field::Task(a) => Some(a.kind()),
        Field::Data(_) => None,
    };
    if kind == Some(Kind::List) && !matches!(op, Op::Eq | Op::Contains) {
        return Err(bad("candidate lists take only = and %"));
    }
    let operand = |v: &str| -> Result<Operand, QueryError> {
        match kind {
            Some(Kind::Date) if op != Op::Contains => normalize_date(v)
                .map(Operand::new)
                .ok_or_else(|| QueryError::BadDate(s.to_owned(), v.to_owned())),
            Some(Kind::Number) => v
                .trim()
                .parse::<i64>()
                .map(|_| Operand::new(v.trim().to_owned()))
                .map_err(|_| bad("priority takes an integer")),
            _ => Ok(Operand::new(v.to_owned())),
        }
    };
    let (from, to) = if op == Op::Between {
        let (a, b) = value
            .split_once('|')
            .ok_or_else(|| bad("[] takes from|to"))?;
        if a.is_empty() || b.is_empty() {
            return Err(bad("[] takes from|to, both given"));
        }
        (operand(a)?, Some(operand(b)?))
    } else {
        (operand(value)?, None)
    };
    Ok(Filter {
        field,
        op,
        from,
        to,
    })
}

fn parse_sort(item: &str) -> Result<SortKey, QueryError> {
    // A `+` in a URL query arrives as a space.
    let trimmed = item.trim_end();
    let (descending, name) = match trimmed.chars().next() {
        Some('-') => (true, &trimmed[1..]),
        Some('+') | Some(' ') => (false, trimmed[1..].trim_start()),
        _ => (false, trimmed),
    };
    let bad = |why: &str| QueryError::BadSort(item.to_owned(), why.to_owned());
    let field = if let Some(key) = name.strip_prefix("data.") {
        if key.is_empty() {
            return Err(bad("the payload key is empty"));
        }
        Field::Data(key.to_owned())
    } else {
        let attr = Attr::by_name(name.strip_prefix("task.").unwrap_or(name)).ok_or_else(|| {
            bad(&format!(
                "unknown field; sort by a task attribute ({ATTRIBUTES}) or data.<key>"
            ))
        })?;
        if attr.kind() == Kind::List {
            return Err(bad("candidate lists cannot be sorted by"));
        }
        Field::Task(attr)
    };
    Ok(SortKey { field, descending })
}

/// RFC 3339 (any offset) or `YYYY-MM-DD` (midnight UTC) → the view's UTC form.
pub fn normalize_date(text: &str) -> Option<String> {
    let t = text.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        })?;
    Some(parsed.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}
