//! Turns what the engine says about a task (REST answers or a hook) into an [`Observation`]:
//! the whole task as it is now, or the fact that it ended.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde_json::{Map, Value};
use taskpool_api::tasks::{SourceReference, Task};

use crate::dates;
use crate::engine::{
    Engine, EngineError, EngineTask, HistoricTask, IdentityLink, IdentityLinkLog, VariableInstance,
};
use crate::payload::VariableFilter;

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

    pub fn task_mut(&mut self) -> &mut Task {
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

    /// The payload of a task of definition `key` from the variables it sees.
    pub fn payload(&self, key: Option<&str>, vars: &Map<String, Value>) -> Map<String, Value> {
        self.filter.payload(key, vars)
    }

    /// The payload of an open task from the variables it sees (its definition's filter).
    pub async fn payload_of(
        &self,
        t: &EngineTask,
        vars: &Map<String, Value>,
    ) -> Result<Map<String, Value>, EngineError> {
        let key = match t.process_definition_id.as_deref() {
            Some(id) => Some(self.definition(id).await?.0),
            None => None,
        };
        Ok(self.payload(key.as_deref(), vars))
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
            form_ref: t.camunda_form_ref.clone(),
            payload,
            payload_truncated: Vec::new(),
            suspended: t.suspended,
            source,
        };
        Observation::Open {
            task,
            changed_at: dates::to_event(t.changed_at()),
        }
    }

    /// The variables each task of a page sees, in two calls per 50 tasks rather than one per
    /// task. Exact where a task's process instance keeps variables only on itself (the usual
    /// case): the task's own, then the instance's. A task whose instance has variables on
    /// other scopes too (sub-processes, multi-instance, local ones), and a subtask, is asked
    /// about alone, so the engine resolves which of them it sees.
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
            let (of_instances, own) = tokio::try_join!(
                async {
                    if instances.is_empty() {
                        return Ok(Vec::new());
                    }
                    let instances: Vec<String> = instances.iter().cloned().collect();
                    self.engine
                        .variable_instances("processInstanceIdIn", &instances)
                        .await
                },
                self.engine.variable_instances("taskIdIn", &ids)
            )?;
            let scoped: Vec<&VariableInstance> = of_instances
                .iter()
                .filter(|v| v.task_id.is_none())
                .collect();
            let mut alone = Vec::new();
            for t in chunk {
                let of_t = |v: &&&VariableInstance| v.process_instance_id == t.process_instance_id;
                // A subtask also sees its parent task's variables: the engine resolves those.
                if t.parent_task_id.is_some()
                    || scoped
                        .iter()
                        .filter(of_t)
                        .any(|v| v.execution_id != v.process_instance_id)
                {
                    alone.push(&t.id);
                    continue;
                }
                let mut vars = Map::new();
                let mine = own
                    .iter()
                    .filter(|v| v.task_id.as_deref() == Some(t.id.as_str()));
                // Nearest first: a name already taken hides the instance's variable.
                for v in mine.chain(scoped.iter().filter(of_t).copied()) {
                    if !vars.contains_key(&v.name) {
                        vars.insert(
                            v.name.clone(),
                            serde_json::to_value(&v.value).unwrap_or(Value::Null),
                        );
                    }
                }
                out.insert(t.id.clone(), vars);
            }
            let asked = futures::future::try_join_all(
                alone.iter().map(|id| self.engine.task_variables(id)),
            )
            .await?;
            out.extend(alone.into_iter().cloned().zip(asked));
        }
        Ok(out)
    }

    /// Looks at the open tasks of a list page: their variables in batches
    /// ([`Snapshots::variables_of`]), their candidates one call each (`concurrency` at once),
    /// and, for those whose candidates or variables came back empty — which is also what a
    /// task that ended between the calls shows — one call per 100 that tells which are still
    /// open. A task that ended meanwhile is looked at again by id; one the engine knows
    /// nothing of any more is left out.
    pub async fn open_page(
        &self,
        tasks: &[EngineTask],
        concurrency: usize,
    ) -> Result<Vec<Observation>, EngineError> {
        use futures::{StreamExt, TryStreamExt};
        let mut variables = self.variables_of(tasks).await?;
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let links: Vec<Option<Vec<IdentityLink>>> = futures::stream::iter(ids)
            .map(|id| async move {
                match self.engine.identity_links(&id).await {
                    Ok(links) => Ok(Some(links)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
        let mut seen = Vec::with_capacity(tasks.len());
        let mut unsure = Vec::new();
        for (t, links) in tasks.iter().zip(links) {
            let vars = variables.remove(&t.id).unwrap_or_default();
            let found = links.map(|l| candidates(&l));
            if let Some((users, groups)) = &found {
                if (users.is_empty() && groups.is_empty()) || vars.is_empty() {
                    unsure.push(t.id.clone());
                }
            }
            seen.push((t, found, vars));
        }
        let mut open = std::collections::HashSet::new();
        for chunk in unsure.chunks(100) {
            open.extend(self.engine.open_ids_among(chunk).await?);
        }
        let unsure: std::collections::HashSet<String> = unsure.into_iter().collect();
        let mut out = Vec::with_capacity(seen.len());
        for (t, found, vars) in seen {
            match found {
                Some(c) if !unsure.contains(&t.id) || open.contains(&t.id) => {
                    let source = self.source(t, None).await?;
                    let payload = self.payload(source.process_definition_key.as_deref(), &vars);
                    out.push(Self::task_from(t, c, payload, source));
                }
                // Ended meanwhile (or was never there by the time we asked).
                _ => out.extend(self.current(&t.id).await?),
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
        let (users, groups) = candidates(&links);
        // The engine reads a task and its links (or variables) in separate statements: a
        // task that ended between them shows open with nothing. Where nothing is what was
        // read, the task must still be there.
        if (users.is_empty() && groups.is_empty()) || vars.is_empty() {
            (self.engine.task(&t.id).await?).ok_or_else(|| EngineError::task_not_found(&t.id))?;
        }
        let source = self.source(t, None).await?;
        let payload = self.payload(source.process_definition_key.as_deref(), &vars);
        Ok(Self::task_from(t, (users, groups), payload, source))
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
