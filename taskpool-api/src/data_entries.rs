//! The data pool's wire types: a data entry (a business object a process works on — an
//! order, an invoice — as in Polyflow's data pool), its four events on the stream
//! `data-entry/{entryType}/{entryId}`, and the fold of such a stream with the entry's
//! protocol (one line per event: time, user, state, log message and notes).
//!
//! A deleted entry stays as a tombstone with its final state; an anonymized one too, without
//! its payload, description, authorized users and log notes, and with every protocol
//! username replaced (but those excluded, such as `SYSTEM`); nothing changes it afterwards.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bus::RecordedEvent;
use crate::tasks::{decode_data, present, DecodeError};

pub const DATA_ENTRY_CREATED: &str = "DataEntryCreated";
pub const DATA_ENTRY_UPDATED: &str = "DataEntryUpdated";
pub const DATA_ENTRY_DELETED: &str = "DataEntryDeleted";
pub const DATA_ENTRY_ANONYMIZED: &str = "DataEntryAnonymized";

/// Longest entry type and entry id, in bytes.
pub const MAX_KEY_LEN: usize = 200;

/// An entry type (`[A-Za-z0-9._-]`, 1 to 200) and an entry id (1 to 200 bytes, no control
/// characters; `/` allowed, the stream name keeps the type apart).
pub fn check_key(entry_type: &str, entry_id: &str) -> Result<(), String> {
    let type_ok = !entry_type.is_empty()
        && entry_type.len() <= MAX_KEY_LEN
        && entry_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !type_ok {
        return Err(format!(
            "entry type `{}` must be 1 to {MAX_KEY_LEN} of A-Z, a-z, 0-9, `.`, `_`, `-`",
            entry_type.escape_debug()
        ));
    }
    if entry_id.is_empty() || entry_id.len() > MAX_KEY_LEN || entry_id.chars().any(char::is_control)
    {
        return Err(format!(
            "entry id `{}` must be 1 to {MAX_KEY_LEN} bytes without control characters",
            entry_id.escape_debug()
        ));
    }
    Ok(())
}

/// Where an entry stands in its processing (Polyflow's processing types).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessingType {
    Preliminary,
    InProgress,
    Completed,
    Cancelled,
    Deleted,
    #[default]
    Undefined,
}

/// The processing type and a free text saying more (e.g. "waiting for approval").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DataEntryState {
    pub processing_type: ProcessingType,
    #[serde(default)]
    pub state: String,
}

/// Who changed an entry, when (RFC 3339) and why; every event carries one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Modification {
    pub time: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub log_message: Option<String>,
    #[serde(default)]
    pub log_notes: Option<String>,
}

/// One line of an entry's protocol: a modification and the state it left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProtocolEntry {
    pub time: String,
    pub username: Option<String>,
    pub state: DataEntryState,
    pub log_message: Option<String>,
    pub log_notes: Option<String>,
}

/// A reference to a data entry, from a task or from another entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Correlation {
    pub entry_type: String,
    pub entry_id: String,
}

/// What a writer says an entry is: the data of `DataEntryCreated`, and what a create-or-update
/// compares with the current entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DataEntryFields {
    /// Human-readable type, e.g. "Invoice".
    #[serde(rename = "type", default)]
    pub type_name: String,
    /// The process application it comes from.
    pub application_name: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub state: DataEntryState,
    #[serde(default)]
    pub payload: Map<String, Value>,
    #[serde(default)]
    pub authorized_users: Vec<String>,
    #[serde(default)]
    pub authorized_groups: Vec<String>,
    #[serde(default)]
    pub form_key: Option<String>,
    #[serde(default)]
    pub correlations: Vec<Correlation>,
}

/// A whole entry: the fold of its stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DataEntry {
    pub entry_type: String,
    pub entry_id: String,
    #[serde(flatten)]
    pub fields: DataEntryFields,
    pub created: String,
    pub last_modified: String,
    pub protocol: Vec<ProtocolEntry>,
    /// Deleted (a tombstone with its final state).
    #[serde(default)]
    pub deleted: bool,
    /// Anonymized: its personal data is gone, and nothing changes it any more.
    #[serde(default)]
    pub anonymized: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataEntryCreated {
    pub entry_type: String,
    pub entry_id: String,
    #[serde(flatten)]
    pub fields: DataEntryFields,
    pub modification: Modification,
}

/// Only the fields that changed are present (`null` clears an optional one), and one
/// protocol line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataEntryUpdated {
    pub entry_type: String,
    pub entry_id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DataEntryState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_users: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_groups: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub form_key: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlations: Option<Vec<Correlation>>,
    pub modification: Modification,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataEntryDeleted {
    pub entry_type: String,
    pub entry_id: String,
    /// The final state (processing type `DELETED` unless the writer says otherwise).
    pub state: DataEntryState,
    pub modification: Modification,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataEntryAnonymized {
    pub entry_type: String,
    pub entry_id: String,
    /// What every protocol username becomes.
    pub anonymous_username: String,
    /// Usernames kept as they are (e.g. `SYSTEM`).
    #[serde(default)]
    pub excluded_usernames: Vec<String>,
    pub modification: Modification,
}

/// One event of a data-entry stream.
#[derive(Debug, Clone, PartialEq)]
pub enum DataEntryEvent {
    Created(DataEntryCreated),
    Updated(DataEntryUpdated),
    Deleted(DataEntryDeleted),
    Anonymized(DataEntryAnonymized),
}

impl DataEntryEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            DataEntryEvent::Created(_) => DATA_ENTRY_CREATED,
            DataEntryEvent::Updated(_) => DATA_ENTRY_UPDATED,
            DataEntryEvent::Deleted(_) => DATA_ENTRY_DELETED,
            DataEntryEvent::Anonymized(_) => DATA_ENTRY_ANONYMIZED,
        }
    }

    /// `(entryType, entryId)`
    pub fn key(&self) -> (&str, &str) {
        let (t, id) = match self {
            DataEntryEvent::Created(e) => (&e.entry_type, &e.entry_id),
            DataEntryEvent::Updated(e) => (&e.entry_type, &e.entry_id),
            DataEntryEvent::Deleted(e) => (&e.entry_type, &e.entry_id),
            DataEntryEvent::Anonymized(e) => (&e.entry_type, &e.entry_id),
        };
        (t, id)
    }

    pub fn modification(&self) -> &Modification {
        match self {
            DataEntryEvent::Created(e) => &e.modification,
            DataEntryEvent::Updated(e) => &e.modification,
            DataEntryEvent::Deleted(e) => &e.modification,
            DataEntryEvent::Anonymized(e) => &e.modification,
        }
    }

    pub fn to_json(&self) -> serde_json::Result<Box<serde_json::value::RawValue>> {
        use serde_json::value::to_raw_value;
        match self {
            DataEntryEvent::Created(e) => to_raw_value(e),
            DataEntryEvent::Updated(e) => to_raw_value(e),
            DataEntryEvent::Deleted(e) => to_raw_value(e),
            DataEntryEvent::Anonymized(e) => to_raw_value(e),
        }
    }

    pub fn decode(event_type: &str, data: &str) -> Result<DataEntryEvent, DecodeError> {
        Ok(match event_type {
            DATA_ENTRY_CREATED => DataEntryEvent::Created(decode_data(event_type, data)?),
            DATA_ENTRY_UPDATED => DataEntryEvent::Updated(decode_data(event_type, data)?),
            DATA_ENTRY_DELETED => DataEntryEvent::Deleted(decode_data(event_type, data)?),
            DATA_ENTRY_ANONYMIZED => DataEntryEvent::Anonymized(decode_data(event_type, data)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }

    pub fn from_recorded(event: &RecordedEvent) -> Result<DataEntryEvent, DecodeError> {
        DataEntryEvent::decode(&event.event_type, event.data.get())
    }
}

impl DataEntry {
    /// The entry after `event`; `None` is no entry yet. A `Created` starts it (again, after
    /// a deletion: the protocol goes on); an event for no entry, and anything after an
    /// anonymization, changes nothing.
    pub fn fold(current: Option<DataEntry>, event: &DataEntryEvent) -> Option<DataEntry> {
        let m = event.modification();
        match (current, event) {
            (Some(e), _) if e.anonymized => Some(e),
            (current, DataEntryEvent::Created(c)) => {
                let protocol = current.map(|e| e.protocol).unwrap_or_default();
                let mut entry = DataEntry {
                    entry_type: c.entry_type.clone(),
                    entry_id: c.entry_id.clone(),
                    fields: c.fields.clone(),
                    created: m.time.clone(),
                    last_modified: m.time.clone(),
                    protocol,
                    deleted: false,
                    anonymized: false,
                };
                entry.log(m);
                Some(entry)
            }
            (None, _) => None,
            (Some(mut e), DataEntryEvent::Updated(u)) if !e.deleted => {
                e.apply(u);
                e.log(m);
                Some(e)
            }
            (Some(e), DataEntryEvent::Updated(_)) => Some(e),
            (Some(mut e), DataEntryEvent::Deleted(d)) => {
                e.fields.state = d.state.clone();
                e.deleted = true;
                e.log(m);
                Some(e)
            }
            (Some(mut e), DataEntryEvent::Anonymized(a)) => {
                e.anonymize(a);
                e.log(m);
                Some(e)
            }
        }
    }

    fn log(&mut self, m: &Modification) {
        self.last_modified.clone_from(&m.time);
        self.protocol.push(ProtocolEntry {
            time: m.time.clone(),
            username: m.username.clone(),
            state: self.fields.state.clone(),
            log_message: m.log_message.clone(),
            log_notes: m.log_notes.clone(),
        });
    }

    fn apply(&mut self, u: &DataEntryUpdated) {
        let f = &mut self.fields;
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        }
        set(&mut f.type_name, &u.type_name);
        set(&mut f.application_name, &u.application_name);
        set(&mut f.name, &u.name);
        set(&mut f.description, &u.description);
        set(&mut f.state, &u.state);
        set(&mut f.payload, &u.payload);
        set(&mut f.authorized_users, &u.authorized_users);
        set(&mut f.authorized_groups, &u.authorized_groups);
        set(&mut f.form_key, &u.form_key);
        set(&mut f.correlations, &u.correlations);
    }

    fn anonymize(&mut self, a: &DataEntryAnonymized) {
        let f = &mut self.fields;
        f.payload.clear();
        f.description = None;
        f.authorized_users.clear();
        for line in &mut self.protocol {
            if let Some(user) = &line.username {
                if !a.excluded_usernames.contains(user) {
                    line.username = Some(a.anonymous_username.clone());
                }
            }
            line.log_notes = None;
        }
        self.anonymized = true;
    }

    /// The event that makes this entry what `fields` say, with `m` as its protocol line:
    /// `Created` for an entry that is not there (or was deleted), `Updated` with the fields
    /// that differ, and `None` when nothing differs and `m` has no log message to record.
    /// An anonymized entry takes nothing (`None`).
    pub fn change_to(
        current: Option<&DataEntry>,
        entry_type: &str,
        entry_id: &str,
        fields: &DataEntryFields,
        m: Modification,
    ) -> Option<DataEntryEvent> {
        let Some(e) = current.filter(|e| !e.deleted) else {
            return Some(DataEntryEvent::Created(DataEntryCreated {
                entry_type: entry_type.to_owned(),
                entry_id: entry_id.to_owned(),
                fields: fields.clone(),
                modification: m,
            }));
        };
        if e.anonymized {
            return None;
        }
        fn diff<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
            (old != new).then(|| new.clone())
        }
        let old = &e.fields;
        let u = DataEntryUpdated {
            entry_type: entry_type.to_owned(),
            entry_id: entry_id.to_owned(),
            type_name: diff(&old.type_name, &fields.type_name),
            application_name: diff(&old.application_name, &fields.application_name),
            name: diff(&old.name, &fields.name),
            description: diff(&old.description, &fields.description),
            state: diff(&old.state, &fields.state),
            payload: diff(&old.payload, &fields.payload),
            authorized_users: diff(&old.authorized_users, &fields.authorized_users),
            authorized_groups: diff(&old.authorized_groups, &fields.authorized_groups),
            form_key: diff(&old.form_key, &fields.form_key),
            correlations: diff(&old.correlations, &fields.correlations),
            modification: m,
        };
        let nothing = DataEntryUpdated {
            entry_type: u.entry_type.clone(),
            entry_id: u.entry_id.clone(),
            modification: u.modification.clone(),
            ..Default::default()
        };
        (u != nothing || u.modification.log_message.is_some()).then_some(DataEntryEvent::Updated(u))
    }
}

#[cfg(test)]
#[path = "data_entries_tests.rs"]
mod tests;
