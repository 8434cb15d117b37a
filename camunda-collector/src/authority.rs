//! The engine is the judge of every action. Before a command changes anything, the engine's
//! current state must allow it for the acting user: the task's assignee and candidates, and the
//! user's groups there. The view that let taskpool-core send the command may be stale, so it
//! proves nothing.

use std::collections::HashSet;

use futures::StreamExt;
use taskpool_api::task_commands::Actor;

use crate::engine::{Engine, EngineTask};
use crate::error::CollectorError;

/// The engine's open task `task_id`, if `actor` may act on it now: they must see it (assignee,
/// candidate user, or a member of a candidate group) and nobody else may hold it. Absent and
/// not visible answer alike (404); suspended (its process instance is) and held by someone
/// else are 409. Without an actor the platform acts for itself and only the task's existence
/// is checked.
pub async fn task_for(
    engine: &Engine,
    task_id: &str,
    actor: Option<&Actor>,
) -> Result<EngineTask, CollectorError> {
    let not_found =
        || CollectorError::TaskNotFound(format!("no open task {task_id} that you may see"));
    let task = engine.task(task_id).await?.ok_or_else(not_found)?;
    let Some(actor) = actor else {
        return Ok(task);
    };
    let own = task.assignee.as_deref() == Some(actor.user.as_str());
    if !own && !sees(engine, &task, actor).await? {
        return Err(not_found());
    }
    if task.suspended {
        return Err(CollectorError::Suspended(format!(
            "task {task_id} is suspended in its engine (its process instance is); \
             it can be acted on once the instance is activated"
        )));
    }
    if own {
        return Ok(task);
    }
    match task.assignee.as_deref() {
        Some(holder) => Err(CollectorError::HeldByOther(format!(
            "task {task_id} is assigned to {holder}"
        ))),
        None => Ok(task),
    }
}

/// Candidate user, or a candidate group among the actor's groups: those the platform sent and
/// those the engine knows (asked only when the first do not decide).
async fn sees(engine: &Engine, task: &EngineTask, actor: &Actor) -> Result<bool, CollectorError> {
    let links = engine.identity_links(&task.id).await?;
    let candidate = |l: &&crate::engine::IdentityLink| l.link_type == "candidate";
    if links
        .iter()
        .filter(candidate)
        .any(|l| l.user_id.as_deref() == Some(actor.user.as_str()))
    {
        return Ok(true);
    }
    let groups: HashSet<&str> = links
        .iter()
        .filter(candidate)
        .filter_map(|l| l.group_id.as_deref())
        .collect();
    if groups.is_empty() {
        return Ok(false);
    }
    if actor.groups.iter().any(|g| groups.contains(g.as_str())) {
        return Ok(true);
    }
    let engine_groups = engine.groups_of(&actor.user).await?;
    Ok(engine_groups.iter().any(|g| groups.contains(g.id.as_str())))
}

/// The latest definition of `key`, if `actor` may start it from a task list: it must be
/// startable in the task list and active; its candidate starters (from the BPMN), when it names
/// any, must include the user or one of their groups; and the engine's authorizations must
/// grant the start (always true where authorizations are off).
pub async fn startable(
    engine: &Engine,
    key: &str,
    actor: &Actor,
) -> Result<crate::engine::ProcessDefinition, CollectorError> {
    let not_found =
        || CollectorError::ProcessNotFound(format!("no process {key:?} that you may start"));
    let definition = engine
        .latest_definition(key)
        .await?
        .filter(|d| d.startable_in_tasklist)
        .ok_or_else(not_found)?;
    if definition.suspended {
        return Err(CollectorError::Suspended(format!(
            "process {key:?} is suspended in its engine"
        )));
    }
    let starters = starters_of(&engine.definition_xml(&definition.id).await?, key);
    if !starters.is_empty() && !starters.admits(engine, actor).await? {
        return Err(not_found());
    }
    if !engine.may_start(key, &actor.user).await? {
        return Err(CollectorError::ForbiddenByEngine(format!(
            "the engine's authorizations do not let {} start {key:?}",
            actor.user
        )));
    }
    Ok(definition)
}

/// Which of `keys` the engine's authorizations let `actor` start (all of them without an actor,
/// or when the engine lets anyone start anything: authorizations off, or a global grant).
pub async fn startable_keys(
    engine: &Engine,
    keys: Vec<String>,
    actor: Option<&Actor>,
) -> Result<Vec<String>, CollectorError> {
    let Some(actor) = actor else {
        return Ok(keys);
    };
    if keys.len() > MAX_KEYS_ASKED {
        return Err(CollectorError::BadPayload(format!(
            "at most {MAX_KEYS_ASKED} keys at a time"
        )));
    }
    // A user and a definition nobody knows: allowed only if everyone may start everything.
    let nobody = uuid::Uuid::new_v4().simple().to_string();
    if keys.is_empty() || engine.may_start(&nobody, &nobody).await? {
        return Ok(keys);
    }
    let allowed: Vec<Result<Option<String>, CollectorError>> = futures::stream::iter(keys)
        .map(|key| async move { Ok(engine.may_start(&key, &actor.user).await?.then_some(key)) })
        .buffered(8)
        .collect()
        .await;
    allowed.into_iter().filter_map(Result::transpose).collect()
}

/// Most definition keys one `StartableProcesses` may ask about.
const MAX_KEYS_ASKED: usize = 1_000;

/// `camunda:candidateStarterUsers` and `camunda:candidateStarterGroups` of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Starters {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl Starters {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    async fn admits(&self, engine: &Engine, actor: &Actor) -> Result<bool, CollectorError> {
        if self.users.contains(&actor.user) || actor.groups.iter().any(|g| self.groups.contains(g))
        {
            return Ok(true);
        }
        if self.groups.is_empty() {
            return Ok(false);
        }
        let engine_groups = engine.groups_of(&actor.user).await?;
        Ok(engine_groups.iter().any(|g| self.groups.contains(&g.id)))
    }
}

const CAMUNDA_NS: &str = "http://camunda.org/schema/1.0/bpmn";

/// The candidate starters the BPMN names for the process `key` (none when the XML cannot be
/// read: the engine parsed it, so that only happens for a definition without BPMN).
pub fn starters_of(xml: &str, key: &str) -> Starters {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Starters::default();
    };
    let Some(process) = doc
        .descendants()
        .find(|n| n.tag_name().name() == "process" && n.attribute("id") == Some(key))
    else {
        return Starters::default();
    };
    let list = |name: &str| -> Vec<String> {
        process
            .attribute((CAMUNDA_NS, name))
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Starters {
        users: list("candidateStarterUsers"),
        groups: list("candidateStarterGroups"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starters_come_from_the_process_element() {
        let xml = r#"<?xml version="1.0"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn">
  <bpmn:process id="other" camunda:candidateStarterUsers="nobody"/>
  <bpmn:process id="invoice" isExecutable="true"
      camunda:candidateStarterUsers="mary, demo" camunda:candidateStarterGroups="accounting">
    <bpmn:startEvent id="s"/>
  </bpmn:process>
</bpmn:definitions>"#;
        assert_eq!(
            starters_of(xml, "invoice"),
            Starters {
                users: vec!["mary".into(), "demo".into()],
                groups: vec!["accounting".into()],
            }
        );
        assert!(starters_of(xml, "missing").is_empty());
        let unprefixed = r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
            xmlns:c="http://camunda.org/schema/1.0/bpmn"><process id="p" c:candidateStarterGroups="g"/></definitions>"#;
        assert_eq!(starters_of(unprefixed, "p").groups, ["g"]);
    }

    proptest! {
        #[test]
        fn any_text_gives_starters_or_none(xml in ".{0,200}", key in "[a-z]{0,5}") {
            let _ = starters_of(&xml, &key);
        }
    }
}
