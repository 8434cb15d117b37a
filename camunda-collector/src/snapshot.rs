//! Turns what the engine says about a task (REST answers or a hook) into an [`Observation`]:
//! the whole task as it is now, or the fact that it ended.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde_json::{Map, Value};
use taskpool_api::tasks::{SourceReference, Task};

use crate::dates;
use crate::engine::{
    Engine, EngineError, EngineTask, HistoricTask, IdentityLink, IdentityLinkLog, VariableValue,
};

/// One look at a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The task is open and looks like this; `changed_at` orders looks at the same task.
    Open { task: Task, changed_at: String },
    /// The task ended; `task` is its last state. `delete_reason` "completed" = completed.
    Finished {
        task: Task,
        delete_reason: Option<String>,
    },
}

impl Observation {
    pub fn task(&self) -> &Task {
        match self {
            Observation::Open { task, .. } | Observation::Finished { task, .. } => task,
        }
    }

    pub fn changed_at(&self) -> Option<&str> {
        match self {
            Observation::Open { changed_at, .. } => Some(changed_at),
            Observation::Finished { .. } => None,
        }
    }
}

/// Which process variables go into a task's payload: names or `prefix*` patterns.
#[derive(Debug, Clone, Default)]
pub struct VariableFilter {
    /// Empty: every variable.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl VariableFilter {
    fn matches(pattern: &str, name: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => pattern == name,
        }
    }

    pub fn admits(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| Self::matches(p, name)))
            && !self.exclude.iter().any(|p| Self::matches(p, name))
    }
}

/// A typed engine value as plain JSON; `None` for types that have no plain form
/// (serialized Java objects, bytes, files).
pub fn plain_value(v: &VariableValue) -> Option<Value> {
    let text = || v.value.as_str().map(str::to_owned);
    match v.value_type.as_deref().unwrap_or("Null") {
        "Null" => Some(Value::Null),
        "String" | "Boolean" | "Integer" | "Long" | "Short" | "Double" => Some(v.value.clone()),
        "Date" => text().map(|s| Value::String(dates::to_event(&s))),
        "Json" => text().map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s))),
        "Object" => {
            let format = v
                .value_info
                .as_ref()
                .and_then(|i| i.get("serializationDataFormat"))
                .and_then(Value::as_str);
            if format == Some("application/json") {
                text().and_then(|s| serde_json::from_str(&s).ok())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Plain JSON → the typed value Camunda's REST API takes (`CompleteTask`, `StartProcess`).
pub fn typed_value(v: &Value) -> Value {
    let (value, kind) = match v {
        Value::Null => (Value::Null, "Null"),
        Value::Bool(_) => (v.clone(), "Boolean"),
        Value::Number(n) if n.is_i64() => {
            let fits_int = n.as_i64().is_some_and(|i| i32::try_from(i).is_ok());
            (v.clone(), if fits_int { "Integer" } else { "Long" })
        }
        Value::Number(_) => (v.clone(), "Double"),
        Value::String(_) => (v.clone(), "String"),
        Value::Array(_) | Value::Object(_) => (Value::String(v.to_string()), "Json"),
    };
    serde_json::json!({ "value": value, "type": kind })
}

pub fn typed_variables(vars: &Map<String, Value>) -> Map<String, Value> {
    vars.iter()
        .map(|(k, v)| (k.clone(), typed_value(v)))
        .collect()
}

fn candidates(links: &[IdentityLink]) -> (Vec<String>, Vec<String>) {
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for l in links.iter().filter(|l| l.link_type == "candidate") {
        if let Some(u) = &l.user_id {
            users.insert(u.clone());
        }
        if let Some(g) = &l.group_id {
            groups.insert(g.clone());
        }
    }
    (users.into_iter().collect(), groups.into_iter().collect())
}

/// The candidates a task had at its end, from the identity-link history (adds and deletes
/// in time order).
fn candidates_from_log(log: &[IdentityLinkLog]) -> (Vec<String>, Vec<String>) {
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for entry in log
        .iter()
        .filter(|l| l.link_type.as_deref() == Some("candidate"))
    {
        let add = entry.operation_type.as_deref() == Some("add");
        let set = |s: &mut BTreeSet<String>, v: &Option<String>| {
            if let Some(v) = v {
                if add {
                    s.insert(v.clone());
                } else {
                    s.remove(v);
                }
            }
        };
        set(&mut users, &entry.user_id);
        set(&mut groups, &entry.group_id);
    }
    (users.into_iter().collect(), groups.into_iter().collect())
}

/// Builds observations, with small caches of what never changes (definition key and name,
/// an instance's business key).
pub struct Snapshots {
    engine: Engine,
    application: String,
    engine_name: String,
    filter: VariableFilter,
    definitions: Mutex<HashMap<String, (String, Option<String>)>>,
    business_keys: Mutex<HashMap<String, Option<String>>>,
}

/// Entries kept per cache before it starts over.
const CACHE_LIMIT: usize = 50_000;

impl Snapshots {
    pub fn new(
        engine: Engine,
        application: &str,
        engine_name: &str,
        filter: VariableFilter,
    ) -> Self {
        Snapshots {
            engine,
            application: application.to_owned(),
            engine_name: engine_name.to_owned(),
            filter,
            definitions: Mutex::new(HashMap::new()),
            business_keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn payload(&self, vars: &Map<String, Value>) -> Map<String, Value> {
        vars.iter()
            .filter(|(name, _)| self.filter.admits(name))
            .filter_map(|(name, raw)| {
                let typed: VariableValue = serde_json::from_value(raw.clone()).ok()?;
                Some((name.clone(), plain_value(&typed)?))
            })
            .collect()
    }

    async fn definition(&self, id: &str) -> Result<(String, Option<String>), EngineError> {
        if let Some(d) = self.definitions.lock().expect("cache lock").get(id) {
            return Ok(d.clone());
        }
        let d = self.engine.process_definition(id).await?;
        let entry = (d.key, d.name);
        let mut cache = self.definitions.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(id.to_owned(), entry.clone());
        Ok(entry)
    }

    async fn business_key(&self, instance: &str) -> Result<Option<String>, EngineError> {
        if let Some(k) = self.business_keys.lock().expect("cache lock").get(instance) {
            return Ok(k.clone());
        }
        let key = self
            .engine
            .historic_process_instance(instance)
            .await?
            .and_then(|p| p.business_key);
        let mut cache = self.business_keys.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(instance.to_owned(), key.clone());
        Ok(key)
    }

    /// The source reference of a task; `known` carries what a hook already told (definition
    /// key, process name, business key).
    pub async fn source(
        &self,
        t: &EngineTask,
        known: Option<(Option<String>, Option<String>, Option<String>)>,
    ) -> Result<SourceReference, EngineError> {
        let definition_id = t.process_definition_id.as_deref();
        let instance_id = t.process_instance_id.as_deref();
        let (key, name, business_key) = match known {
            Some(k) => k,
            None => {
                let (key, name) = match definition_id {
                    Some(id) => {
                        let (k, n) = self.definition(id).await?;
                        (Some(k), n)
                    }
                    None => (None, None),
                };
                let bk = match instance_id {
                    Some(id) => self.business_key(id).await?,
                    None => None,
                };
                (key, name, bk)
            }
        };
        Ok(SourceReference {
            application: self.application.clone(),
            engine: self.engine_name.clone(),
            process_definition_key: key,
            process_definition_id: definition_id.map(str::to_owned),
            process_instance_id: instance_id.map(str::to_owned),
            execution_id: t.execution_id.clone(),
            process_name: name,
            business_key,
            tenant_id: t.tenant_id.clone(),
        })
    }

    /// An open task from its REST form plus what is known of it otherwise.
    pub fn task_from(
        t: &EngineTask,
        candidates: (Vec<String>, Vec<String>),
        payload: Map<String, Value>,
        source: SourceReference,
    ) -> Observation {
        let task = Task {
            task_id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            task_definition_key: t.task_definition_key.clone(),
            priority: t.priority,
            created: dates::to_event(&t.created),
            due: dates::opt_to_event(&t.due),
            follow_up: dates::opt_to_event(&t.follow_up),
            assignee: t.assignee.clone(),
            owner: t.owner.clone(),
            candidate_users: candidates.0,
            candidate_groups: candidates.1,
            form_key: t.form_key.clone(),
            payload,
            source,
        };
        Observation::Open {
            task,
            changed_at: dates::to_event(t.changed_at()),
        }
    }

    /// The variables each task of a page sees (its process instance's, then its own), in two
    /// calls per 50 tasks rather than one per task.
    pub async fn variables_of(
        &self,
        tasks: &[EngineTask],
    ) -> Result<HashMap<String, Map<String, Value>>, EngineError> {
        let mut out: HashMap<String, Map<String, Value>> = HashMap::new();
        for chunk in tasks.chunks(50) {
            let instances: BTreeSet<String> = chunk
                .iter()
                .filter_map(|t| t.process_instance_id.clone())
                .collect();
            let ids: Vec<String> = chunk.iter().map(|t| t.id.clone()).collect();
            let mut found = Vec::new();
            if !instances.is_empty() {
                let instances: Vec<String> = instances.into_iter().collect();
                found.extend(
                    self.engine
                        .variable_instances("processInstanceIdIn", &instances)
                        .await?,
                );
            }
            found.extend(self.engine.variable_instances("taskIdIn", &ids).await?);
            for t in chunk {
                let mut vars = Map::new();
                let of_instance = |v: &&crate::engine::VariableInstance| {
                    v.task_id.is_none()
                        && v.process_instance_id.is_some()
                        && v.execution_id == v.process_instance_id
                        && v.process_instance_id == t.process_instance_id
                };
                let own = |v: &&crate::engine::VariableInstance| {
                    v.task_id.as_deref() == Some(t.id.as_str())
                };
                for v in found
                    .iter()
                    .filter(of_instance)
                    .chain(found.iter().filter(own))
                {
                    vars.insert(
                        v.name.clone(),
                        serde_json::to_value(&v.value).unwrap_or(Value::Null),
                    );
                }
                out.insert(t.id.clone(), vars);
            }
        }
        Ok(out)
    }

    /// Looks at an open task from the task list: its candidates, variables and source. A task
    /// that ended meanwhile is looked at again by id.
    pub async fn open(&self, t: &EngineTask) -> Result<Observation, EngineError> {
        self.open_with(t, None).await
    }

    /// As [`Snapshots::open`], with the task's variables already read.
    pub async fn open_with(
        &self,
        t: &EngineTask,
        vars: Option<Map<String, Value>>,
    ) -> Result<Observation, EngineError> {
        match self.open_once(t, vars).await {
            Err(e) if e.is_not_found() => match Box::pin(self.current(&t.id)).await? {
                Some(obs) => Ok(obs),
                None => Err(e),
            },
            other => other,
        }
    }

    async fn open_once(
        &self,
        t: &EngineTask,
        vars: Option<Map<String, Value>>,
    ) -> Result<Observation, EngineError> {
        let (links, vars) = match vars {
            Some(vars) => (self.engine.identity_links(&t.id).await?, vars),
            None => tokio::try_join!(
                self.engine.identity_links(&t.id),
                self.engine.task_variables(&t.id)
            )?,
        };
        let source = self.source(t, None).await?;
        Ok(Self::task_from(
            t,
            candidates(&links),
            self.payload(&vars),
            source,
        ))
    }

    /// Looks at a task that ended, from history (variables are not read: they may be gone).
    pub async fn finished(&self, h: &HistoricTask) -> Result<Observation, EngineError> {
        let last = EngineTask::from(h);
        let log = self.engine.identity_link_log_of(&h.id).await?;
        let source = self.source(&last, None).await?;
        let open = Self::task_from(&last, candidates_from_log(&log), Map::new(), source);
        Ok(Observation::Finished {
            task: open.task().clone(),
            delete_reason: h.delete_reason.clone(),
        })
    }

    /// The task as it is now: open, finished, or unknown to the engine (`None`).
    pub async fn current(&self, task_id: &str) -> Result<Option<Observation>, EngineError> {
        if let Some(t) = self.engine.task(task_id).await? {
            match self.open_once(&t, None).await {
                Err(e) if e.is_not_found() => {}
                other => return other.map(Some),
            }
        }
        match self.engine.historic_task(task_id).await? {
            Some(h) if h.end_time.is_some() => self.finished(&h).await.map(Some),
            // Ended between the two calls' views, or history not written yet: look again.
            Some(_) => match self.engine.task(task_id).await? {
                Some(t) => self.open_once(&t, None).await.map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_names_and_prefixes() {
        let f = VariableFilter {
            include: vec!["amount".into(), "customer*".into()],
            exclude: vec!["customerSecret".into()],
        };
        assert!(f.admits("amount"));
        assert!(f.admits("customerName"));
        assert!(!f.admits("customerSecret"));
        assert!(!f.admits("other"));
        assert!(VariableFilter::default().admits("anything"));
    }

    #[test]
    fn plain_json_round_trips_through_typed_values() {
        for (plain, kind) in [
            (serde_json::json!(null), "Null"),
            (serde_json::json!(true), "Boolean"),
            (serde_json::json!(42), "Integer"),
            (serde_json::json!(5_000_000_000_i64), "Long"),
            (serde_json::json!(1.5), "Double"),
            (serde_json::json!("x"), "String"),
            (serde_json::json!({"a": [1, 2]}), "Json"),
        ] {
            let typed = typed_value(&plain);
            assert_eq!(typed["type"], kind);
            let v: VariableValue = serde_json::from_value(typed).expect("typed value");
            assert_eq!(plain_value(&v), Some(plain));
        }
        let object = VariableValue {
            value_type: Some("Object".into()),
            value: Value::String("rO0AB".into()),
            value_info: Some(
                serde_json::json!({"serializationDataFormat": "application/x-java-serialized-object"}),
            ),
        };
        assert_eq!(plain_value(&object), None);
    }

    #[test]
    fn candidates_at_the_end_follow_the_log_in_order() {
        let entry = |op: &str, user: Option<&str>, group: Option<&str>| IdentityLinkLog {
            time: String::new(),
            link_type: Some("candidate".into()),
            user_id: user.map(str::to_owned),
            group_id: group.map(str::to_owned),
            task_id: Some("t".into()),
            operation_type: Some(op.into()),
        };
        let log = [
            entry("add", None, Some("a")),
            entry("add", Some("u"), None),
            entry("delete", None, Some("a")),
            entry("add", None, Some("b")),
        ];
        assert_eq!(
            candidates_from_log(&log),
            (vec!["u".into()], vec!["b".into()])
        );
    }
}
