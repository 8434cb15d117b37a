//! The payload rule: which of the variables a task sees go into its payload, and as what.
//! Hook and poll mode both end here, so the same variables give the same payload.
//!
//! A task sees its own (task-local) variables, then those of each scope from its execution up
//! to its process instance, the nearest winning on a name clash (as `GET /task/{id}/variables`).
//! Values become plain JSON; types without a plain form (bytes, files, Java-serialized
//! objects) are left out.

use std::collections::HashMap;

use serde_json::{Map, Value};
use taskpool_api::bus::json_len;
use taskpool_api::tasks::Task;

use crate::dates;
use crate::engine::VariableValue;

/// Which variables go into a task's payload: names or `prefix*` patterns, globally and per
/// process definition key.
#[derive(Debug, Clone, Default)]
pub struct VariableFilter {
    /// Empty: every variable.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Per process definition key. Its include list, when given, replaces the global one for
    /// that definition; its excludes add to the global ones (a global exclude always holds).
    pub definitions: HashMap<String, DefinitionFilter>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DefinitionFilter {
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

impl VariableFilter {
    /// Builds the filter from the global lists and `[KEY:]include=NAMES` / `[KEY:]exclude=NAMES`
    /// rules (NAMES comma separated); a rule without a key adds to the global lists.
    pub fn new(
        include: Vec<String>,
        exclude: Vec<String>,
        rules: &[String],
    ) -> Result<VariableFilter, String> {
        let mut filter = VariableFilter {
            include,
            exclude,
            definitions: HashMap::new(),
        };
        for rule in rules.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            filter.add_rule(rule)?;
        }
        Ok(filter)
    }

    fn add_rule(&mut self, rule: &str) -> Result<(), String> {
        let bad = || {
            format!(
                "variable filter {rule:?}: expected [DEFINITION_KEY:]include=NAMES or \
                 [DEFINITION_KEY:]exclude=NAMES (NAMES: names or prefix*, comma separated)"
            )
        };
        let (head, names) = rule.split_once('=').ok_or_else(bad)?;
        let (key, kind) = match head.rsplit_once(':') {
            Some((key, kind)) if !key.is_empty() => (Some(key), kind),
            Some(_) => return Err(bad()),
            None => (None, head),
        };
        let names: Vec<String> = names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        match (key, kind) {
            (None, "include") => self.include.extend(names),
            (None, "exclude") => self.exclude.extend(names),
            (Some(key), "include") => self
                .definitions
                .entry(key.to_owned())
                .or_default()
                .include
                .get_or_insert_with(Vec::new)
                .extend(names),
            (Some(key), "exclude") => self
                .definitions
                .entry(key.to_owned())
                .or_default()
                .exclude
                .extend(names),
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Whether variable `name` of a task of definition `key` goes into its payload.
    pub fn admits(&self, key: Option<&str>, name: &str) -> bool {
        let own = key.and_then(|k| self.definitions.get(k));
        let include = own
            .and_then(|d| d.include.as_deref())
            .unwrap_or(&self.include);
        (include.is_empty() || any(include, name))
            && !any(&self.exclude, name)
            && !own.is_some_and(|d| any(&d.exclude, name))
    }

    /// The payload of a task of definition `key` from the variables it sees, as the REST API
    /// (or the plugin, in the same shape) gives them.
    pub fn payload(&self, key: Option<&str>, vars: &Map<String, Value>) -> Map<String, Value> {
        vars.iter()
            .filter(|(name, _)| self.admits(key, name))
            .filter_map(|(name, raw)| {
                let typed: VariableValue = serde_json::from_value(raw.clone()).ok()?;
                Some((name.clone(), plain_value(&typed)?))
            })
            .collect()
    }
}

/// The size rule: a task whose `TaskCreated` would encode larger than `max_bytes` leaves its
/// largest variables out of the payload (equal sizes by name) until it fits, and names them,
/// sorted, in `payload_truncated`. It depends on the variables alone, so hook, poll and every
/// later look at the same variables give the same task. Returns whether anything was left out.
pub fn fit(task: &mut Task, max_bytes: usize) -> bool {
    task.payload_truncated.clear();
    let mut size = json_len(task);
    if size <= max_bytes {
        return false;
    }
    let mut by_size: Vec<(usize, String)> = task
        .payload
        .iter()
        .map(|(name, value)| (json_len(name) + 2 + json_len(value), name.clone()))
        .collect();
    by_size.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    // `,"payloadTruncated":[]` once, then each name with its comma.
    size += 22;
    let mut left_out = Vec::new();
    let mut by_size = by_size.into_iter();
    for (entry, name) in by_size.by_ref() {
        task.payload.remove(&name);
        size = size - entry + json_len(&name) + 1;
        left_out.push(name);
        if size <= max_bytes {
            break;
        }
    }
    left_out.sort();
    task.payload_truncated = left_out;
    // The running size is an estimate (separators); the encoded task decides.
    for (_, name) in by_size {
        if json_len(task) <= max_bytes {
            break;
        }
        task.payload.remove(&name);
        task.payload_truncated.push(name);
        task.payload_truncated.sort();
    }
    true
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
        "Xml" => text().map(Value::String),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_names_and_prefixes() {
        let f = VariableFilter::new(
            vec!["amount".into(), "customer*".into()],
            vec!["customerSecret".into()],
            &[],
        )
        .expect("filter");
        assert!(f.admits(None, "amount"));
        assert!(f.admits(None, "customerName"));
        assert!(!f.admits(None, "customerSecret"));
        assert!(!f.admits(None, "other"));
        assert!(VariableFilter::default().admits(None, "anything"));
    }

    #[test]
    fn a_definition_rule_replaces_the_global_include_and_adds_excludes() {
        let f = VariableFilter::new(
            vec!["amount".into()],
            vec!["secret*".into()],
            &[
                "invoice:include=total,line*".into(),
                "invoice:exclude=lineSecret".into(),
                "order:exclude=amount".into(),
                "exclude=internal".into(),
            ],
        )
        .expect("filter");
        // invoice: its own include list; the global and its own excludes.
        assert!(f.admits(Some("invoice"), "total"));
        assert!(f.admits(Some("invoice"), "lineItems"));
        assert!(!f.admits(Some("invoice"), "amount"));
        assert!(!f.admits(Some("invoice"), "lineSecret"));
        assert!(!f.admits(Some("invoice"), "secretKey"));
        // order: the global include, less its own exclude.
        assert!(!f.admits(Some("order"), "amount"));
        // Anything else, and standalone tasks: the global lists, a keyless rule included.
        assert!(f.admits(Some("other"), "amount"));
        assert!(f.admits(None, "amount"));
        assert!(!f.admits(None, "internal"));
    }

    #[test]
    fn bad_rules_are_refused_with_the_expected_form() {
        for rule in ["invoice", ":include=a", "invoice:keep=a", "include"] {
            let e = VariableFilter::new(vec![], vec![], &[rule.to_owned()]).expect_err(rule);
            assert!(e.contains("DEFINITION_KEY"), "{e}");
        }
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
        let typed = |kind: &str, value: &str, info: Option<Value>| VariableValue {
            value_type: Some(kind.into()),
            value: Value::String(value.into()),
            value_info: info,
        };
        let java =
            serde_json::json!({"serializationDataFormat": "application/x-java-serialized-object"});
        assert_eq!(plain_value(&typed("Object", "rO0AB", Some(java))), None);
        let json = serde_json::json!({"serializationDataFormat": "application/json", "objectTypeName": "x.Order"});
        assert_eq!(
            plain_value(&typed("Object", r#"{"n":1}"#, Some(json))),
            Some(serde_json::json!({"n": 1}))
        );
        assert_eq!(
            plain_value(&typed("Xml", "<a>1</a>", None)),
            Some(serde_json::json!("<a>1</a>"))
        );
        assert_eq!(plain_value(&typed("Bytes", "AAE=", None)), None);
    }

    fn task_with(vars: &[(&str, usize)]) -> Task {
        Task {
            task_id: "t1".into(),
            payload: vars
                .iter()
                .map(|(name, len)| (name.to_string(), Value::String("x".repeat(*len))))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_that_fits_is_left_alone() {
        let mut task = task_with(&[("a", 10), ("b", 20)]);
        let before = task.clone();
        assert!(!fit(&mut task, 10_000));
        assert_eq!(task, before);
    }

    #[test]
    fn the_largest_variables_go_first_and_are_named() {
        let mut task = task_with(&[
            ("small", 100),
            ("big", 5_000),
            ("bigger", 9_000),
            ("mid", 3_000),
        ]);
        assert!(fit(&mut task, 5_000));
        assert_eq!(task.payload_truncated, ["big", "bigger"]);
        assert!(task.payload.contains_key("small") && task.payload.contains_key("mid"));
        assert!(json_len(&task) <= 5_000, "{}", json_len(&task));
    }

    #[test]
    fn fitting_is_the_same_for_the_same_variables_and_stays_within_the_limit() {
        // Equal sizes: by name; every limit gives a task within it.
        for max in [1_000, 2_000, 4_000, 8_000] {
            let vars: Vec<(String, usize)> = (0..30)
                .map(|i| (format!("v{i:02}"), 50 + (i % 4) * 100))
                .collect();
            let vars: Vec<(&str, usize)> = vars.iter().map(|(n, l)| (n.as_str(), *l)).collect();
            let mut one = task_with(&vars);
            let mut reversed = task_with(&vars.iter().rev().cloned().collect::<Vec<_>>());
            fit(&mut one, max);
            fit(&mut reversed, max);
            assert_eq!(one.payload_truncated, reversed.payload_truncated);
            assert_eq!(one.payload, reversed.payload);
            assert!(json_len(&one) <= max, "max {max}: {}", json_len(&one));
            let mut again = one.clone();
            fit(&mut again, max);
            assert_eq!(
                again.payload, one.payload,
                "fitting a fitted task changes nothing"
            );
        }
    }
}
