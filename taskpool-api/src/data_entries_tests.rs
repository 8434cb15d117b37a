use super::*;
use serde_json::json;

fn at(minute: u32) -> Modification {
    Modification {
        time: format!("2026-12-04T10:{minute:02}:00.000Z"),
        username: Some(if minute == 0 { "SYSTEM" } else { "kermit" }.into()),
        log_message: Some(format!("step {minute}")),
        log_notes: Some("called the customer".into()),
    }
}

fn invoice() -> DataEntryFields {
    DataEntryFields {
        type_name: "Invoice".into(),
        application_name: "billing".into(),
        name: "Invoice 4711".into(),
        description: Some("Office chairs for Fozzie Bear".into()),
        state: DataEntryState {
            processing_type: ProcessingType::InProgress,
            state: "waiting for approval".into(),
        },
        payload: json!({"amount": 1200, "customer": "Fozzie Bear"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        authorized_users: vec!["fozzie".into()],
        authorized_groups: vec!["accounting".into()],
        form_key: None,
        correlations: vec![Correlation {
            entry_type: "order".into(),
            entry_id: "o-1".into(),
        }],
    }
}

/// Folds `events` from nothing, through their JSON form (as a reader gets them).
fn fold(events: &[DataEntryEvent]) -> Option<DataEntry> {
    events.iter().fold(None, |current, e| {
        let json = e.to_json().expect("encode");
        let back = DataEntryEvent::decode(e.event_type(), json.get()).expect("decode");
        assert_eq!(&back, e);
        DataEntry::fold(current, &back)
    })
}

#[test]
fn a_create_or_update_is_the_difference_and_the_protocol_grows_by_one_line_each() {
    let created =
        DataEntry::change_to(None, "invoice", "4711", &invoice(), at(0)).expect("a create");
    assert_eq!(created.event_type(), DATA_ENTRY_CREATED);
    let entry = fold(std::slice::from_ref(&created)).expect("an entry");
    assert_eq!(entry.fields, invoice());
    assert_eq!(entry.created, at(0).time);

    let mut approved = invoice();
    approved.state = DataEntryState {
        processing_type: ProcessingType::Completed,
        state: "approved".into(),
    };
    approved.description = None;
    let update =
        DataEntry::change_to(Some(&entry), "invoice", "4711", &approved, at(5)).expect("an update");
    let DataEntryEvent::Updated(u) = &update else {
        panic!("expected an update, got {update:?}")
    };
    assert!(
        u.payload.is_none() && u.name.is_none(),
        "only what changed: {u:?}"
    );
    let json = serde_json::to_value(u).expect("json");
    assert_eq!(json["description"], Value::Null, "cleared, and said so");
    assert!(json.get("payload").is_none());

    let entry = fold(&[created, update]).expect("an entry");
    assert_eq!(entry.fields, approved);
    assert_eq!(entry.last_modified, at(5).time);
    let states: Vec<_> = entry
        .protocol
        .iter()
        .map(|p| p.state.processing_type)
        .collect();
    assert_eq!(
        states,
        [ProcessingType::InProgress, ProcessingType::Completed]
    );
    assert_eq!(entry.protocol[1].log_message.as_deref(), Some("step 5"));

    // The same fields again: nothing to say, unless there is a log message.
    let mut quiet = at(6);
    quiet.log_message = None;
    assert!(DataEntry::change_to(Some(&entry), "invoice", "4711", &approved, quiet).is_none());
    assert!(DataEntry::change_to(Some(&entry), "invoice", "4711", &approved, at(6)).is_some());
}

#[test]
fn a_deleted_entry_keeps_its_final_state_and_may_be_created_again() {
    let created = DataEntry::change_to(None, "invoice", "1", &invoice(), at(0)).expect("create");
    let final_state = DataEntryState {
        processing_type: ProcessingType::Deleted,
        state: "withdrawn".into(),
    };
    let deleted = DataEntryEvent::Deleted(DataEntryDeleted {
        entry_type: "invoice".into(),
        entry_id: "1".into(),
        state: final_state.clone(),
        modification: at(1),
    });
    let entry = fold(&[created.clone(), deleted.clone()]).expect("a tombstone");
    assert!(entry.deleted);
    assert_eq!(entry.fields.state, final_state);
    // An update of a deleted entry changes nothing; a create starts it again, protocol kept.
    let mut renamed = invoice();
    renamed.name = "again".into();
    let update = DataEntryEvent::Updated(DataEntryUpdated {
        entry_type: "invoice".into(),
        entry_id: "1".into(),
        name: Some("ignored".into()),
        modification: at(2),
        ..Default::default()
    });
    let again =
        DataEntry::change_to(Some(&entry), "invoice", "1", &renamed, at(3)).expect("create");
    assert_eq!(again.event_type(), DATA_ENTRY_CREATED);
    let entry = fold(&[created, deleted, update, again]).expect("an entry");
    assert!(!entry.deleted);
    assert_eq!(entry.fields.name, "again");
    assert_eq!(entry.protocol.len(), 3, "create, delete, create");
}

#[test]
fn an_anonymized_entry_loses_its_personal_data_for_good() {
    let created = DataEntry::change_to(None, "invoice", "2", &invoice(), at(0)).expect("create");
    let mut next = invoice();
    next.state.state = "checked".into();
    let entry = fold(std::slice::from_ref(&created)).expect("entry");
    let update = DataEntry::change_to(Some(&entry), "invoice", "2", &next, at(1)).expect("update");
    let anonymized = DataEntryEvent::Anonymized(DataEntryAnonymized {
        entry_type: "invoice".into(),
        entry_id: "2".into(),
        anonymous_username: "anonymous".into(),
        excluded_usernames: vec!["SYSTEM".into()],
        modification: Modification {
            time: at(2).time,
            username: Some("SYSTEM".into()),
            log_message: Some("anonymized".into()),
            log_notes: None,
        },
    });
    let entry = fold(&[created, update, anonymized.clone()]).expect("entry");
    assert!(entry.anonymized);
    assert!(entry.fields.payload.is_empty() && entry.fields.description.is_none());
    assert!(entry.fields.authorized_users.is_empty());
    let users: Vec<_> = entry
        .protocol
        .iter()
        .map(|p| p.username.as_deref())
        .collect();
    assert_eq!(users, [Some("SYSTEM"), Some("anonymous"), Some("SYSTEM")]);
    assert!(entry.protocol.iter().all(|p| p.log_notes.is_none()));
    let text = serde_json::to_string(&entry).expect("json");
    assert!(
        !text.contains("Fozzie") && !text.contains("kermit") && !text.contains("customer"),
        "{text}"
    );
    // Nothing brings personal data back.
    assert!(DataEntry::change_to(Some(&entry), "invoice", "2", &invoice(), at(3)).is_none());
    let recreate = DataEntryEvent::Created(DataEntryCreated {
        entry_type: "invoice".into(),
        entry_id: "2".into(),
        fields: invoice(),
        modification: at(4),
    });
    assert_eq!(DataEntry::fold(Some(entry.clone()), &recreate), Some(entry));
}

#[test]
fn keys_follow_the_rule() {
    assert!(check_key("invoice", "4711/2026").is_ok());
    assert!(check_key("purchase-order.v2", "Ä ö").is_ok());
    for (t, id) in [
        ("", "1"),
        ("a/b", "1"),
        ("a b", "1"),
        ("invoice", ""),
        ("invoice", "a\nb"),
    ] {
        assert!(check_key(t, id).is_err(), "{t:?} {id:?}");
    }
    assert!(check_key(&"x".repeat(201), "1").is_err());
}
