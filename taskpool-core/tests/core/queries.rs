//! Filters, sorts, paging, counts and visibility on a few thousand tasks, and bad input.

use std::cmp::Ordering;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use taskpool_api::tasks::{Task, TaskEvent};

use crate::harness::{append, database, task, Cluster, Core};

const N: usize = 3_000;

fn date(base_day: usize, minutes: usize) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("date")
        + chrono::Duration::days(base_day as i64)
        + chrono::Duration::minutes(minutes as i64);
    d.and_hms_opt(0, 0, 0)
        .expect("time")
        .and_utc()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn data_set() -> Vec<Task> {
    (0..N)
        .map(|i| {
            let mut t = task(&format!("q{i:04}"));
            t.name = Some(format!("{} {i}", ["Review", "Approve", "Check"][i % 3]));
            t.priority = ((i * 37) % 100) as i64;
            t.created = {
                let base =
                    chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").expect("base");
                (base + chrono::Duration::minutes(i as i64 / 2))
                    .with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            };
            t.due = (i % 4 != 0).then(|| date((i * 13) % 50, 0));
            t.follow_up = (i % 10 == 0).then(|| "2099-01-01T00:00:00.000Z".to_owned());
            t.candidate_groups = vec![format!("g{}", i % 5)];
            if i % 2 == 0 {
                t.candidate_users = vec![format!("u{}", i % 7)];
            }
            if i % 3 == 0 {
                t.assignee = Some(format!("u{}", i % 11));
            }
            t.payload.insert("amount".into(), json!(i % 1000));
            t.payload
                .insert("region".into(), json!(["north", "south"][i % 2]));
            t.source.application = ["alpha", "beta"][i % 2].into();
            t
        })
        .collect()
}

fn visible(t: &Task, user: &str, groups: &[&str]) -> bool {
    t.assignee.as_deref() == Some(user)
        || t.candidate_users.iter().any(|u| u == user)
        || t.candidate_groups
            .iter()
            .any(|g| groups.contains(&g.as_str()))
}

/// Missing values last, whatever the direction.
fn opt_cmp<T: Ord>(a: &Option<T>, b: &Option<T>, desc: bool) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => {
            if desc {
                y.cmp(x)
            } else {
                x.cmp(y)
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn ids(tasks: &[&Task]) -> Vec<String> {
    tasks.iter().map(|t| t.task_id.clone()).collect()
}

#[tokio::test]
async fn filters_sorts_pages_and_counts_match_a_plain_computation() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let core = Core::start(&bus, &database("queries"), &[]).await;
    let tasks = data_set();
    let mut head = 0;
    for chunk in tasks.chunks(500) {
        let events: Vec<TaskEvent> = chunk.iter().cloned().map(TaskEvent::Created).collect();
        head = append(&client, &events).await;
    }
    core.wait_position(head).await;
    let (user, groups) = ("u3", ["g1", "g2"]);
    let mine: Vec<&Task> = tasks.iter().filter(|t| visible(t, user, &groups)).collect();

    // Default order (-priority, created, id), paged: every visible task exactly once, in order.
    let mut expected = mine.clone();
    expected.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.created.cmp(&b.created))
            .then(a.task_id.cmp(&b.task_id))
    });
    let mut paged = Vec::new();
    for page in 0.. {
        let (page_ids, total) = core
            .ids(&format!("size=97&page={page}"), user, &groups)
            .await;
        assert_eq!(total as usize, mine.len());
        if page_ids.is_empty() {
            break;
        }
        paged.extend(page_ids);
    }
    assert_eq!(paged, ids(&expected));

    // Filters on attributes, dates and payload, with a multi-key sort on a nullable date.
    let query = "filter=task.priority%3E50&filter=amount%5B%5D100%7C600&filter=task.name%25review\
                 &filter=task.due%3C2026-12-10&sort=%2Bdue,-name&size=1000";
    let mut expected: Vec<&Task> = mine
        .iter()
        .copied()
        .filter(|t| t.priority > 50)
        .filter(|t| (100..=600).contains(&t.payload["amount"].as_i64().expect("amount")))
        .filter(|t| {
            t.name
                .as_deref()
                .is_some_and(|n| n.to_lowercase().contains("review"))
        })
        .filter(|t| {
            t.due
                .as_deref()
                .is_some_and(|d| d < "2026-12-10T00:00:00.000Z")
        })
        .collect();
    expected.sort_by(|a, b| {
        opt_cmp(&a.due, &b.due, false)
            .then(opt_cmp(&a.name, &b.name, true))
            .then(a.task_id.cmp(&b.task_id))
    });
    assert!(expected.len() > 10, "the filter keeps a meaningful set");
    let (got, total) = core.ids(query, user, &groups).await;
    assert_eq!((got, total as usize), (ids(&expected), expected.len()));

    // Options, and a descending sort with missing values last.
    type Keep = Box<dyn Fn(&Task) -> bool>;
    let cases: Vec<(&str, Keep)> = vec![
        (
            "assignedToMe=true",
            Box::new(|t: &Task| t.assignee.as_deref() == Some(user)),
        ),
        ("unassigned=true", Box::new(|t: &Task| t.assignee.is_none())),
        ("deferred=true", Box::new(|t: &Task| t.follow_up.is_some())),
        (
            "deferred=false&filter=region=south",
            Box::new(|t: &Task| t.follow_up.is_none() && t.payload["region"] == "south"),
        ),
        (
            "filter=task.candidateGroups=g2&filter=task.application=alpha",
            Box::new(|t: &Task| {
                t.candidate_groups.contains(&"g2".to_owned()) && t.source.application == "alpha"
            }),
        ),
    ];
    for (q, keep) in cases {
        let mut expected: Vec<&Task> = mine.iter().copied().filter(|t| keep(t)).collect();
        expected.sort_by(|a, b| opt_cmp(&a.due, &b.due, true).then(a.task_id.cmp(&b.task_id)));
        let (got, total) = core
            .ids(&format!("{q}&sort=-due&size=1000"), user, &groups)
            .await;
        assert_eq!(total as usize, expected.len(), "{q}");
        assert_eq!(got, ids(&expected[..expected.len().min(1000)]), "{q}");
    }

    // Counts per application.
    let (status, counts) = core.get("/api/v1/tasks/counts", user, &groups).await;
    assert_eq!(status, StatusCode::OK);
    let alpha = mine
        .iter()
        .filter(|t| t.source.application == "alpha")
        .count();
    assert_eq!(counts["applications"]["alpha"], json!(alpha));
    assert_eq!(counts["applications"]["beta"], json!(mine.len() - alpha));
    assert_eq!(counts["total"], json!(mine.len()));

    // Attribute names and values for filter builders.
    let (_, names) = core.get("/api/v1/tasks/attributes", user, &groups).await;
    let names: Vec<&str> = names["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"data.amount") && names.contains(&"task.priority"),
        "{names:?}"
    );
    let (_, values) = core
        .get("/api/v1/tasks/attributes/data.region/values", user, &groups)
        .await;
    assert_eq!(values["values"], json!(["north", "south"]));

    // Another user sees only their own share.
    let (_, total) = core.ids("size=1", "nobody", &[]).await;
    assert_eq!(total, 0);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let core = Core::start(&bus, &database("bad"), &["--max-body-bytes", "4096"]).await;
    let mut t = task("b1");
    t.candidate_users = vec!["kermit".into()];
    // An application may be named like a word of the API's own paths.
    let mut named_like_a_route = t.clone();
    named_like_a_route.source.application = "attributes".into();
    core.wait_position(
        append(
            &client,
            &[
                TaskEvent::Created(t),
                TaskEvent::Created(named_like_a_route),
            ],
        )
        .await,
    )
    .await;
    let (status, body) = core.get("/api/v1/tasks/attributes/b1", "kermit", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"]["application"], "attributes");

    // An unknown application or task: 404 with the error body, for reads and actions alike.
    for path in ["/api/v1/tasks/nowhere/b1", "/api/v1/tasks/camunda/nothing"] {
        let (status, body) = core.get(path, "kermit", &[]).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("task_not_found")),
            "{path}"
        );
        let (status, body) = core
            .call(Method::POST, &format!("{path}/claim"), "kermit", &[], None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, body) = core
        .call(
            Method::POST,
            "/api/v1/processes/nowhere/order/start",
            "kermit",
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("process_not_found"))
    );

    let cases = [
        ("filter=task.nope=1", "unknown_filter_field"),
        ("filter=novalue", "bad_filter"),
        ("filter=task.priority>high", "bad_filter"),
        ("filter=task.due>yesterday", "bad_date"),
        ("sort=-nope", "bad_sort"),
        ("size=0", "bad_page"),
        ("size=5000", "bad_page"),
        ("page=-1", "bad_page"),
        ("colour=red", "unknown_parameter"),
        ("assignedToMe=true&unassigned=true", "conflicting_options"),
        ("deferred=maybe", "bad_option"),
    ];
    for (query, code) in cases {
        let (status, body) = core
            .get(&format!("/api/v1/tasks?{query}"), "kermit", &[])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    let post = |path: &'static str, body: reqwest::Body, content_type: &'static str| {
        let url = format!("{}{path}", core.url());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("x-user", "kermit")
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("request");
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let json = "application/json";
    let (status, body) = post(
        "/api/v1/tasks/camunda/b1/complete",
        "{\"variables\": [1,2]}".into(),
        json,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_body"))
    );
    let (status, _) = post(
        "/api/v1/tasks/camunda/b1/complete",
        "{not json".into(),
        json,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let big = format!("{{\"variables\":{{\"x\":\"{}\"}}}}", "a".repeat(10_000));
    let (status, body) = post("/api/v1/tasks/camunda/b1/complete", big.into(), json).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::PAYLOAD_TOO_LARGE, json!("body_too_large"))
    );
    let (status, body) = post(
        "/api/v1/tasks/camunda/b1/defer",
        "{\"followUp\":\"next week\"}".into(),
        json,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_date"))
    );
    let (status, body) = post(
        "/api/v1/tasks/camunda/b1/assign",
        "{\"user\":\"\"}".into(),
        json,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_user"))
    );
    let (status, body) = post(
        "/api/v1/tasks/camunda/b1/assign",
        "{\"user\":\"x\",\"extra\":1}".into(),
        json,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_body"))
    );
    let (status, _) = post(
        "/api/v1/tasks/camunda/b1/assign",
        "{\"user\":\"x\"}".into(),
        "text/plain",
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Nobody learns about or acts on a task they may not see, whatever the request.
    for action in ["claim", "unclaim", "undefer"] {
        let (status, body) = core
            .call(
                Method::POST,
                &format!("/api/v1/tasks/camunda/b1/{action}"),
                "intruder",
                &["admins"],
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("task_not_found")),
            "{action}"
        );
    }
    let (status, _) = core
        .call(
            Method::POST,
            "/api/v1/tasks/camunda/b1/complete",
            "intruder",
            &[],
            Some(json!({"variables": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = core.get("/api/v1/nowhere", "kermit", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
}
