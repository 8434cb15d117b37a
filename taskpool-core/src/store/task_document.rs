//! One task as a MongoDB document: open (the task's fields, `authorizedPrincipals`, `position`,
//! `version`, `changed`, the payload as JSON text plus its scalar values in `data`) or a
//! tombstone; `_id` is `application/taskId`. The store's own shape: neither the index entry
//! nor the API's body.

use std::sync::Arc;

use mongodb::bson::{doc, Bson, Document};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{as_u64, json_to_document, StoreError, TaskRecord, TASKS};
use crate::view::{TaskView, Tombstone};

/// `(id, position, document)` of one task record.
pub(super) fn encode_task(record: &TaskRecord) -> Result<(String, i64, Document), StoreError> {
    match record {
        TaskRecord::Closed { key, tombstone } => {
            let position = tombstone.position as i64;
            Ok((
                key.clone(),
                position,
                doc! {"_id": key.clone(), "state": "closed", "position": position},
            ))
        }
        TaskRecord::Open(view) => {
            let position = view.position as i64;
            let not_an_object = || StoreError::BadDocument {
                collection: TASKS,
                id: view.id().to_owned(),
                reason: "a task does not encode as an object".into(),
            };
            let Ok(Value::Object(mut fields)) = serde_json::to_value(&view.task) else {
                return Err(not_an_object());
            };
            let Ok(Value::Object(indexed)) = serde_json::to_value(Indexed::of(view)) else {
                return Err(not_an_object());
            };
            let payload = fields.remove("payload").unwrap_or(Value::Null);
            let data: Vec<Value> = view
                .task
                .payload
                .iter()
                .filter(|(_, v)| !v.is_object() && !v.is_array() && !v.is_null())
                .map(|(k, v)| serde_json::json!({"k": k, "v": v}))
                .collect();
            // Absent reads back as null; each stored field costs FerretDB time on every write.
            fields.retain(|_, v| !v.is_null());
            if let Some(Value::Object(source)) = fields.get_mut("source") {
                source.retain(|_, v| !v.is_null());
            }
            fields.extend(indexed);
            fields.insert("payloadJson".into(), Value::String(payload.to_string()));
            fields.insert("data".into(), Value::Array(data));
            fields.insert("state".into(), Value::String("open".into()));
            fields.remove("taskId");
            let key = view.key();
            let mut d = json_to_document(Value::Object(fields))?;
            d.insert("_id", key.clone());
            Ok((key, position, d))
        }
    }
}

pub(super) fn decode_task(d: &Document) -> Result<TaskRecord, StoreError> {
    let id = d.get_str("_id").unwrap_or_default().to_owned();
    let bad = |reason: String| StoreError::BadDocument {
        collection: TASKS,
        id: id.clone(),
        reason,
    };
    let position = d
        .get("position")
        .and_then(as_u64)
        .ok_or_else(|| bad("no position".into()))?;
    if d.get_str("state") == Ok("closed") {
        return Ok(TaskRecord::Closed {
            key: id.clone(),
            tombstone: Tombstone { position },
        });
    }
    let task_id = id
        .split_once('/')
        .map(|(_, task_id)| task_id.to_owned())
        .ok_or_else(|| bad("the key is not application/taskId".into()))?;
    let Value::Object(mut fields) = Bson::Document(d.clone()).into_relaxed_extjson() else {
        return Err(bad("not a document".into()));
    };
    let payload: Map<String, Value> = match fields.remove("payloadJson") {
        Some(Value::String(text)) => serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?,
        _ => Map::new(),
    };
    fields.remove("data");
    fields.remove("state");
    fields.remove("_id");
    let indexed: Map<String, Value> = Indexed::FIELDS
        .iter()
        .filter_map(|name| fields.remove_entry(*name))
        .collect();
    let indexed: Indexed =
        serde_json::from_value(Value::Object(indexed)).map_err(|e| bad(e.to_string()))?;
    fields.insert("taskId".into(), Value::String(task_id));
    fields.insert("payload".into(), Value::Object(payload));
    let task = serde_json::from_value(Value::Object(fields)).map_err(|e| bad(e.to_string()))?;
    Ok(TaskRecord::Open(Arc::new(TaskView {
        task,
        authorized_principals: indexed.authorized_principals,
        position: indexed.position,
        version: indexed.version,
        changed: indexed.changed,
    })))
}

/// What an open task's document holds beside the task's own fields.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Indexed {
    authorized_principals: Vec<String>,
    position: u64,
    version: u64,
    changed: String,
}

impl Indexed {
    const FIELDS: &'static [&'static str] =
        &["authorizedPrincipals", "position", "version", "changed"];

    fn of(view: &TaskView) -> Indexed {
        Indexed {
            authorized_principals: view.authorized_principals.clone(),
            position: view.position,
            version: view.version,
            changed: view.changed.clone(),
        }
    }
}

/// A task's document round-trips: what `load` reads is what `write` wrote.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_documents_round_trip() {
        let mut task = crate::view::tests::task("t1");
        task.payload
            .insert("a.b".into(), serde_json::json!({"$x": [1, 2]}));
        task.payload
            .insert("amount".into(), serde_json::json!(12.5));
        task.due = None;
        task.source.tenant_id = None;
        let view = TaskView {
            authorized_principals: crate::view::principals_of(&task),
            task,
            position: 7,
            version: 2,
            changed: "2026-11-23T10:00:00.000Z".into(),
        };
        let (id, position, d) =
            encode_task(&TaskRecord::Open(Arc::new(view.clone()))).expect("encode");
        assert_eq!((id.as_str(), position), ("camunda/t1", 7));
        assert!(d.get("payloadJson").is_some());
        assert!(d.get("due").is_none(), "an absent value is not stored");
        assert!(d
            .get_document("source")
            .is_ok_and(|s| !s.contains_key("tenantId")));
        let TaskRecord::Open(back) = decode_task(&d).expect("decode") else {
            panic!("open")
        };
        assert_eq!(*back, view);
    }
}
