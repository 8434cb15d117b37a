//! The durable view in MongoDB. The only module that talks to MongoDB.
//!
//! Collections (database `--database`):
//! - `tasks`: one document per task, `_id` = `{application}/{taskId}`. Open tasks hold the
//!   whole task plus `authorizedPrincipals`; a completed or deleted task is a tombstone
//!   `{state: "closed", position}` until the stored position passes it (see
//!   `View::forget_tombstones`).
//! - `process_definitions`: `_id` = `{application}/{definitionId}`.
//! - `users`: `_id` = `{application}/{user}`, with the user's groups in that engine.
//! - `view_position`: `{_id: "view", position, layout}`, the last bus position fully written
//!   and the layout of the documents. A view of an older layout (keys without application)
//!   is dropped at load and replayed from the bus.
//!
//! Every task document carries the position of the last event applied to it. The projection
//! skips any event at or below it (in memory, where the stored view is loaded at start), so a
//! replay never moves a task backwards. Task writes match on `_id` alone: FerretDB answers that
//! from its primary key, while any further condition makes it scan the collection for each
//! statement. So one projecting instance writes one database (see ARCHITECTURE.md).
//!
//! The payload (process variables) is stored as JSON text in `payloadJson`, because variable
//! names may hold `.` or `$`, which MongoDB field names may not; its top-level scalar values are
//! also listed in `data: [{k, v}]`, which MongoDB can index and query.
//!
//! Only portable MongoDB commands are used (find, update with many statements, delete,
//! createIndexes, drop), so the same code runs on MongoDB and on FerretDB.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database, IndexModel};
use serde_json::Value;
use taskpool_api::identity::IdentityPart;

use crate::view::{key, DefinitionView, IdentityView, TaskView, Tombstone, View};

mod task_document;

use task_document::{decode_task, encode_task};

const TASKS: &str = "tasks";
const DEFINITIONS: &str = "process_definitions";
const USERS: &str = "users";
const POSITION: &str = "view_position";
/// The document layout this version writes: 2 = every key carries its application.
const LAYOUT: i64 = 2;
/// Statements per `update` command: well under the 16 MiB message limit for usual tasks.
const WRITE_CHUNK: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The server cannot be reached or did not answer in time: retry later.
    #[error("MongoDB is unavailable: {0}")]
    Unavailable(String),
    /// The server refused an operation.
    #[error("MongoDB refused {operation}: {message}")]
    Refused { operation: String, message: String },
    /// A stored document does not have the shape this version writes.
    #[error("stored document {id} in {collection} is unreadable: {reason}")]
    BadDocument {
        collection: &'static str,
        id: String,
        reason: String,
    },
}

/// The one translation of driver errors.
fn store_error(operation: &str, e: mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind;
    match *e.kind {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => StoreError::Unavailable(format!("{operation}: {e}")),
        _ => StoreError::Refused {
            operation: operation.to_owned(),
            message: e.to_string(),
        },
    }
}

/// One task as it must be written: open, or a tombstone.
#[derive(Debug, Clone)]
pub enum TaskRecord {
    Open(Arc<TaskView>),
    /// `key` is `application/taskId`.
    Closed {
        key: String,
        tombstone: Tombstone,
    },
}

/// What a batch of events changed, to be written together.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub tasks: Vec<TaskRecord>,
    /// Tasks (`application/taskId`) the view had never seen before this batch: inserted
    /// rather than replaced.
    pub new_tasks: std::collections::HashSet<String>,
    pub definitions: Vec<DefinitionView>,
    pub identities: Vec<IdentityWrite>,
    /// The view position after the batch.
    pub position: u64,
}

/// An application's identity to write: the users of `ranges` only (the parts of a sync the
/// batch applied), or all of them (`None`).
#[derive(Debug, Clone)]
pub struct IdentityWrite {
    pub view: IdentityView,
    pub ranges: Option<Vec<IdentityPart>>,
}

impl TaskRecord {
    /// `application/taskId`
    pub fn key(&self) -> String {
        match self {
            TaskRecord::Open(t) => t.key(),
            TaskRecord::Closed { key, .. } => key.clone(),
        }
    }
}

impl Changes {
    /// The current state of task `key` (`application/taskId`) in `view`: open, or its
    /// tombstone.
    pub fn record(view: &View, key: &str) -> Option<TaskRecord> {
        if let Some(task) = view.task_by_key(key) {
            return Some(TaskRecord::Open(task.clone()));
        }
        view.tombstone(key).map(|tombstone| TaskRecord::Closed {
            key: key.to_owned(),
            tombstone,
        })
    }
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Connects (lazily: the driver connects on first use) to `url`, database `database`.
    pub async fn connect(url: &str, database: &str) -> Result<Store, StoreError> {
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| store_error("parse --mongo-url", e))?;
        options.app_name = Some("taskpool-core".into());
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(5));
        let client = Client::with_options(options).map_err(|e| store_error("connect", e))?;
        Ok(Store {
            db: client.database(database),
        })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map_err(|e| store_error("ping", e))?;
        Ok(())
    }

    fn tasks(&self) -> Collection<Document> {
        self.db.collection(TASKS)
    }

    /// Creates the collections and the indexes the view lacks. Collections are created here,
    /// before any write, rather than implicitly by the first write: FerretDB's SQLite backend
    /// creates a collection's table and its catalogue entry in separate steps, and a server
    /// killed between them refuses every later write to that collection ("table already
    /// exists"). Indexes serve what the API filters and sorts on (MongoDB uses them for the
    /// same questions; the service itself answers from its in-memory index).
    pub async fn prepare(&self) -> Result<(), StoreError> {
        self.create_missing_collections().await?;
        let task_indexes = [
            doc! {"authorizedPrincipals": 1, "priority": -1, "created": 1},
            doc! {"state": 1, "position": 1},
            doc! {"source.application": 1},
            doc! {"assignee": 1},
            doc! {"created": 1},
            doc! {"due": 1},
            doc! {"followUp": 1},
            doc! {"data.k": 1, "data.v": 1},
        ];
        self.create_missing_indexes(TASKS, &task_indexes).await?;
        self.create_missing_indexes(USERS, &[doc! {"application": 1}])
            .await
    }

    async fn create_missing_collections(&self) -> Result<(), StoreError> {
        let existing = self
            .db
            .list_collection_names()
            .await
            .map_err(|e| store_error("listCollections", e))?;
        for name in [TASKS, DEFINITIONS, USERS, POSITION] {
            if existing.iter().any(|e| e == name) {
                continue;
            }
            match self.db.create_collection(name).await {
                Ok(()) => {}
                // Created meanwhile by another instance (NamespaceExists).
                Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 48) =>
                    {}
                Err(e) => return Err(store_error(&format!("create {name}"), e)),
            }
        }
        Ok(())
    }

    /// Creates the indexes a collection lacks. Only the missing ones: FerretDB 1.24 fails
    /// (closes the connection) when asked to create an index that exists.
    async fn create_missing_indexes(
        &self,
        collection: &str,
        keys: &[Document],
    ) -> Result<(), StoreError> {
        let coll = self.db.collection::<Document>(collection);
        let existing = match coll.list_index_names().await {
            Ok(names) => names,
            // A collection that does not exist yet has no indexes.
            Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 26) => {
                Vec::new()
            }
            Err(e) => return Err(store_error(&format!("listIndexes {collection}"), e)),
        };
        let missing: Vec<IndexModel> = keys
            .iter()
            .map(|k| (index_name(k), k))
            .filter(|(name, _)| !existing.contains(name))
            .map(|(name, k)| {
                IndexModel::builder()
                    .keys(k.clone())
                    .options(mongodb::options::IndexOptions::builder().name(name).build())
                    .build()
            })
            .collect();
        if !missing.is_empty() {
            coll.create_indexes(missing)
                .await
                .map_err(|e| store_error(&format!("createIndexes {collection}"), e))?;
        }
        Ok(())
    }

    /// The stored position (0: empty view).
    pub async fn position(&self) -> Result<u64, StoreError> {
        Ok(self.stored_position().await?.map_or(0, |(p, _)| p))
    }

    /// The stored position and the layout of the documents, if a view was written.
    async fn stored_position(&self) -> Result<Option<(u64, i64)>, StoreError> {
        let found = self
            .db
            .collection::<Document>(POSITION)
            .find_one(doc! {"_id": "view"})
            .await
            .map_err(|e| store_error("read view position", e))?;
        Ok(found.map(|d| {
            let position = d.get("position").and_then(as_u64).unwrap_or(0);
            let layout = d.get("layout").and_then(as_u64).map_or(1, |l| l as i64);
            (position, layout)
        }))
    }

    /// Loads the whole stored view into `view` and returns the stored position. A view of an
    /// older layout is dropped: the projection then replays the bus from its first event.
    pub async fn load(&self, view: &mut View) -> Result<u64, StoreError> {
        let position = match self.stored_position().await? {
            Some((position, layout)) if layout < LAYOUT => {
                tracing::warn!(
                    position,
                    layout,
                    "the stored view predates application keys; dropping it to replay the bus"
                );
                self.drop_view().await?;
                return Ok(0);
            }
            Some((position, _)) => position,
            None => 0,
        };
        self.each_document(TASKS, None, |d| {
            match decode_task(&d)? {
                TaskRecord::Open(task) => view.load_task(Arc::unwrap_or_clone(task)),
                TaskRecord::Closed { key, tombstone } => view.load_tombstone(&key, tombstone),
            }
            Ok(())
        })
        .await?;
        self.each_document(DEFINITIONS, None, |d| {
            view.load_definition(decode(DEFINITIONS, d)?);
            Ok(())
        })
        .await?;
        for identity in self.load_identities().await? {
            view.load_identity(identity);
        }
        view.set_position(position);
        Ok(position)
    }

    async fn load_identities(&self) -> Result<Vec<IdentityView>, StoreError> {
        let mut by_app: std::collections::BTreeMap<String, IdentityView> = Default::default();
        self.each_document(USERS, Some(doc! {"_id": 1}), |d| {
            let user: StoredUser = decode(USERS, d)?;
            let entry = by_app
                .entry(user.application.clone())
                .or_insert_with(|| IdentityView {
                    identity: taskpool_api::tasks::IdentitySynced {
                        application: user.application.clone(),
                        users: Vec::new(),
                        part: None,
                    },
                    position: user.position,
                });
            entry.position = entry.position.max(user.position);
            entry.identity.users.push(user.user);
            Ok(())
        })
        .await?;
        Ok(by_app.into_values().collect())
    }

    /// Runs `f` on every document of `collection` (in `sort` order, if given) as the cursor
    /// yields them.
    async fn each_document(
        &self,
        collection: &str,
        sort: Option<Document>,
        mut f: impl FnMut(Document) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let operation = format!("load {collection}");
        let mut options = mongodb::options::FindOptions::default();
        options.sort = sort;
        options.batch_size = Some(2_000);
        let mut cursor = self
            .db
            .collection::<Document>(collection)
            .find(doc! {})
            .with_options(options)
            .await
            .map_err(|e| store_error(&operation, e))?;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| store_error(&operation, e))?
        {
            f(d)?;
        }
        Ok(())
    }

    /// Writes a batch's changes, then moves the stored position forward. Safe to repeat.
    #[tracing::instrument(skip_all, fields(tasks = changes.tasks.len(), definitions = changes.definitions.len(), identities = changes.identities.len(), position = changes.position))]
    pub async fn write(&self, changes: &Changes) -> Result<(), StoreError> {
        let (new, known): (Vec<&TaskRecord>, Vec<&TaskRecord>) = changes
            .tasks
            .iter()
            .partition(|t| changes.new_tasks.contains(&t.key()));
        // New tasks are inserted in bulk; one that is there already (a replay after a crash
        // between this write and the position's) is replaced like any other.
        let mut replace: Vec<&TaskRecord> = known;
        for chunk in new.chunks(WRITE_CHUNK * 2) {
            let docs: Vec<Document> = chunk
                .iter()
                .map(|t| encode_task(t).map(|(_, _, d)| d))
                .collect::<Result<_, _>>()?;
            let existing = self.insert(TASKS, docs).await?;
            replace.extend(chunk.iter().filter(|t| existing.contains(&t.key())));
        }
        for chunk in replace.chunks(WRITE_CHUNK) {
            let updates: Vec<Document> = chunk
                .iter()
                .map(|t| encode_task(t))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(|(id, _, replacement)| {
                    doc! {"q": {"_id": id}, "u": replacement, "upsert": true}
                })
                .collect();
            self.update(TASKS, updates).await?;
        }
        if !changes.definitions.is_empty() {
            let updates = changes
                .definitions
                .iter()
                .map(|d| {
                    let id = key(&d.definition.application, &d.definition.id);
                    guarded_upsert(id, d.position, d)
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.update(DEFINITIONS, updates).await?;
        }
        for identity in &changes.identities {
            self.write_identity(&identity.view, identity.ranges.as_deref())
                .await?;
        }
        self.db
            .collection::<Document>(POSITION)
            .update_one(
                doc! {"_id": "view"},
                doc! {"$max": {"position": changes.position as i64}, "$set": {"layout": LAYOUT}},
            )
            .upsert(true)
            .await
            .map_err(|e| store_error("write view position", e))?;
        Ok(())
    }

    /// Writes one application's users: those in `ranges` (all where `None`) are upserted, then
    /// the older ones in those ranges removed; users outside them are not touched, so a
    /// sync in parts writes each user once.
    async fn write_identity(
        &self,
        identity: &IdentityView,
        ranges: Option<&[IdentityPart]>,
    ) -> Result<(), StoreError> {
        let application = &identity.identity.application;
        let position = identity.position as i64;
        let in_ranges = |id: &str| ranges.is_none_or(|r| r.iter().any(|p| p.covers(id)));
        let updates = identity
            .identity
            .users
            .iter()
            .filter(|user| in_ranges(&user.id))
            .map(|user| {
                let stored = StoredUser {
                    application: application.clone(),
                    position: identity.position,
                    user: user.clone(),
                };
                guarded_upsert(key(application, &user.id), identity.position, &stored)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for chunk in updates.chunks(WRITE_CHUNK) {
            self.update(USERS, chunk.to_vec()).await?;
        }
        let older = doc! {"application": application, "position": {"$lt": position}};
        let filters: Vec<Document> = match ranges {
            None => vec![older],
            Some(ranges) => ranges
                .iter()
                .map(|p| {
                    let mut ids = Document::new();
                    if let Some(from) = &p.from {
                        ids.insert("$gte", from.as_str());
                    }
                    if let Some(until) = &p.until {
                        ids.insert("$lt", until.as_str());
                    }
                    let mut filter = older.clone();
                    if !ids.is_empty() {
                        filter.insert("id", ids);
                    }
                    filter
                })
                .collect(),
        };
        for filter in filters {
            self.db
                .collection::<Document>(USERS)
                .delete_many(filter)
                .await
                .map_err(|e| store_error("remove users", e))?;
        }
        Ok(())
    }

    /// Inserts `docs`, unordered; returns the ids that already existed.
    async fn insert(
        &self,
        collection: &str,
        docs: Vec<Document>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let ids: Vec<String> = docs
            .iter()
            .map(|d| d.get_str("_id").unwrap_or_default().to_owned())
            .collect();
        let command = doc! {"insert": collection, "documents": docs, "ordered": false};
        let reply = self
            .db
            .run_command(command)
            .await
            .map_err(|e| store_error(&format!("insert {collection}"), e))?;
        let mut existing = std::collections::HashSet::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                let d = e.as_document();
                let code = d.and_then(|d| d.get("code")).and_then(as_u64);
                let index = d.and_then(|d| d.get("index")).and_then(as_u64);
                match (code, index.and_then(|i| ids.get(i as usize))) {
                    (Some(11000), Some(id)) => {
                        existing.insert(id.clone());
                    }
                    _ => {
                        return Err(StoreError::Refused {
                            operation: format!("insert {collection}"),
                            message: e.to_string(),
                        })
                    }
                }
            }
        }
        Ok(existing)
    }

    /// One `update` command with many statements. Definitions and users are guarded by
    /// position: a guarded upsert that meets a newer document fails with a duplicate key,
    /// which means "already newer" and is fine.
    async fn update(&self, collection: &str, updates: Vec<Document>) -> Result<(), StoreError> {
        let command = doc! {"update": collection, "updates": updates, "ordered": false};
        let reply = self
            .db
            .run_command(command)
            .await
            .map_err(|e| store_error(&format!("update {collection}"), e))?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                let code = e.as_document().and_then(|d| d.get("code")).and_then(as_u64);
                if code != Some(11000) {
                    return Err(StoreError::Refused {
                        operation: format!("update {collection}"),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes tombstones at or below `upto` (the stored position).
    pub async fn purge_tombstones(&self, upto: u64) -> Result<u64, StoreError> {
        let result = self
            .tasks()
            .delete_many(doc! {"state": "closed", "position": {"$lte": upto as i64}})
            .await
            .map_err(|e| store_error("purge tombstones", e))?;
        Ok(result.deleted_count)
    }

    /// Drops every collection of the view (for a rebuild).
    pub async fn drop_view(&self) -> Result<(), StoreError> {
        for name in [TASKS, DEFINITIONS, USERS, POSITION] {
            self.db
                .collection::<Document>(name)
                .drop()
                .await
                .map_err(|e| store_error(&format!("drop {name}"), e))?;
        }
        self.prepare().await
    }

    /// Inserts documents into an empty view in bulk (for a rebuild), a few batches at once:
    /// the server's per-document work then uses more than one core.
    pub async fn insert_tasks(&self, tasks: &[TaskRecord]) -> Result<(), StoreError> {
        use futures::StreamExt;
        let batches = tasks.chunks(WRITE_CHUNK * 2).map(|chunk| async move {
            let docs: Vec<Document> = chunk
                .iter()
                .map(|t| encode_task(t).map(|(_, _, d)| d))
                .collect::<Result<_, _>>()?;
            self.tasks()
                .insert_many(docs)
                .ordered(false)
                .await
                .map_err(|e| store_error("insert tasks", e))
                .map(|_| ())
        });
        let mut running = futures::stream::iter(batches).buffer_unordered(4);
        while let Some(done) = running.next().await {
            done?;
        }
        Ok(())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredUser {
    application: String,
    position: u64,
    #[serde(flatten)]
    user: taskpool_api::tasks::IdentityUser,
}

/// The update statement that writes `value` as document `id` unless the stored one is at
/// `position` or newer: then the upsert meets the existing `_id` and fails with a duplicate
/// key, which [`Store::update`] takes as done.
fn guarded_upsert(
    id: String,
    position: u64,
    value: &impl serde::Serialize,
) -> Result<Document, StoreError> {
    let mut replacement = to_document(value)?;
    replacement.insert("_id", id.clone());
    Ok(doc! {
        "q": {"_id": id, "position": {"$lt": position as i64}},
        "u": replacement,
        "upsert": true,
    })
}

/// MongoDB's default index name: `field_1_other_-1`.
fn index_name(keys: &Document) -> String {
    keys.iter()
        .map(|(k, v)| format!("{k}_{v}"))
        .collect::<Vec<_>>()
        .join("_")
}

pub(super) fn as_u64(b: &Bson) -> Option<u64> {
    match b {
        Bson::Int32(v) => u64::try_from(*v).ok(),
        Bson::Int64(v) => u64::try_from(*v).ok(),
        Bson::Double(v) if *v >= 0.0 => Some(*v as u64),
        _ => None,
    }
}

fn to_document(value: &impl serde::Serialize) -> Result<Document, StoreError> {
    let json = serde_json::to_value(value).map_err(|e| StoreError::BadDocument {
        collection: TASKS,
        id: String::new(),
        reason: e.to_string(),
    })?;
    json_to_document(json)
}

pub(super) fn json_to_document(json: Value) -> Result<Document, StoreError> {
    match bson::to_bson(&json) {
        Ok(Bson::Document(d)) => Ok(d),
        other => Err(StoreError::BadDocument {
            collection: TASKS,
            id: String::new(),
            reason: format!("not a document: {other:?}"),
        }),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    collection: &'static str,
    mut d: Document,
) -> Result<T, StoreError> {
    let id = d.remove("_id").map(|b| b.to_string()).unwrap_or_default();
    let json = Bson::Document(d).into_relaxed_extjson();
    serde_json::from_value(json).map_err(|e| StoreError::BadDocument {
        collection,
        id,
        reason: e.to_string(),
    })
}
