//! One Taskpool installation per test: its own bus, collector (one application) and
//! taskpool-core (one database), around the shared local engine.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use testkit::collector::{hook_listen, hook_secret};
use testkit::core::mongo_url;
use testkit::{wait_for, Cluster, Collector, Core, Engine};
use tokio::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How the collector learns of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Signed hooks from the engine plugin, on the address the engine posts to.
    Hook,
    /// Polling the engine's REST API at this interval.
    Poll(Duration),
}

pub struct Stack {
    pub engine: Engine,
    pub bus: Cluster,
    pub collector: Collector,
    pub core: Core,
    pub app: String,
    pub database: String,
    _hook_address: Option<MutexGuard<'static, ()>>,
    _shared_parts: SharedParts,
}

/// The engine and PostgreSQL serve every test at once. A test that takes them down holds them
/// alone; every other test that uses them holds them shared, and waits meanwhile.
static SHARED_PARTS: RwLock<()> = RwLock::const_new(());

/// How a test holds the shared parts.
pub enum SharedParts {
    InUse(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// For a test that uses the shared engine or database without a `Stack`: hold it while running.
pub async fn use_shared_parts() -> SharedParts {
    SharedParts::InUse(SHARED_PARTS.read().await)
}

/// The engine posts hooks to one address, so collectors in hook mode take turns.
static HOOK_ADDRESS: Mutex<()> = Mutex::const_new(());

impl Stack {
    pub async fn start(name: &str, mode: Mode) -> Stack {
        Stack::start_on(name, mode, &mongo_url()).await
    }

    /// Like `start`, with the view on the MongoDB-compatible server at `mongo`.
    pub async fn start_on(name: &str, mode: Mode, mongo: &str) -> Stack {
        Stack::start_with(name, mode, mongo, &[]).await
    }

    /// Like `start_on`, with `flags` given to both the collector and taskpool-core (flags
    /// they share, such as `--log-json`).
    pub async fn start_with(name: &str, mode: Mode, mongo: &str, flags: &[&str]) -> Stack {
        let parts = use_shared_parts().await;
        Stack::start_holding(parts, name, mode, mongo, flags).await
    }

    /// Like `start_on`, for a test that stops and starts the shared engine and database: it
    /// waits until no other test uses them, and keeps them for itself.
    pub async fn start_to_take_down_shared_parts(name: &str, mode: Mode, mongo: &str) -> Stack {
        let parts = SharedParts::Alone(SHARED_PARTS.write().await);
        Stack::start_holding(parts, name, mode, mongo, &[]).await
    }

    async fn start_holding(
        shared_parts: SharedParts,
        name: &str,
        mode: Mode,
        mongo: &str,
        flags: &[&str],
    ) -> Stack {
        let shared = flags;
        // Taken after the shared parts, never before: a test waiting to take them down holds
        // no hook address meanwhile.
        let guard = match mode {
            Mode::Hook => Some(HOOK_ADDRESS.lock().await),
            Mode::Poll(_) => None,
        };
        let engine = Engine::connect().await;
        let bus = Cluster::start(&[]).await;
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let app = format!("e2e-{name}-{suffix}");
        let database = format!("e2e_{name}_{suffix}");
        let flags: Vec<String> = match mode {
            Mode::Hook => {
                let listen = hook_listen();
                assert!(
                    std::net::TcpListener::bind(&listen).is_ok(),
                    "{listen}, where the engine posts hooks, is taken: stop the local stack's collector (deploy/scripts/collector.sh stop)"
                );
                vec![
                    "--mode".into(),
                    "hook".into(),
                    "--listen".into(),
                    listen,
                    "--hook-secret".into(),
                    hook_secret(),
                ]
            }
            Mode::Poll(every) => vec!["--poll-interval".into(), format!("{}ms", every.as_millis())],
        };
        let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        flags.extend_from_slice(shared);
        let collector = Collector::start(&app, &bus, &flags);
        collector.wait_active(Duration::from_secs(60)).await;
        let core = Core::start_on(&bus, mongo, &database, shared).await;
        Stack {
            engine,
            bus,
            collector,
            core,
            app,
            database,
            _hook_address: guard,
            _shared_parts: shared_parts,
        }
    }

    /// Waits until `user` (in `groups`) sees task `id` in the task API, and returns it.
    pub async fn visible(&self, id: &str, user: &str, groups: &[&str]) -> Value {
        let path = format!("/api/v1/tasks/{}/{id}", self.app);
        wait_for(
            &format!("task {id} visible to {user}"),
            Duration::from_secs(60),
            || async {
                let (status, task) = self.core.get(&path, user, groups).await;
                status.is_success().then_some(task)
            },
        )
        .await
    }

    /// Waits until task `id` is not visible to `user` any more (404).
    pub async fn gone(&self, id: &str, user: &str, groups: &[&str]) {
        let path = format!("/api/v1/tasks/{}/{id}", self.app);
        wait_for(
            &format!("task {id} gone for {user}"),
            Duration::from_secs(60),
            || async {
                let (status, _) = self.core.get(&path, user, groups).await;
                (status == reqwest::StatusCode::NOT_FOUND).then_some(())
            },
        )
        .await
    }

    /// Waits until `user` sees task `id` with `check` true of it.
    pub async fn until(
        &self,
        what: &str,
        id: &str,
        user: &str,
        groups: &[&str],
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/api/v1/tasks/{}/{id}", self.app);
        let check = &check;
        wait_for(what, Duration::from_secs(60), || async {
            let (status, task) = self.core.get(&path, user, groups).await;
            (status.is_success() && check(&task)).then_some(task)
        })
        .await
    }

    /// Every task the task API lists for `user` matching `query`, following the pages.
    pub async fn all_tasks(&self, query: &str, user: &str, groups: &[&str]) -> Vec<Value> {
        let mut out = Vec::new();
        for page in 0.. {
            let path = format!("/api/v1/tasks?{query}&size=1000&page={page}");
            let (status, v) = self.core.get(&path, user, groups).await;
            assert!(status.is_success(), "{path}: {status} {v}");
            let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
            let total = v["total"].as_u64().unwrap_or(0) as usize;
            out.extend(tasks);
            if out.len() >= total || v["tasks"].as_array().is_none_or(Vec::is_empty) {
                break;
            }
        }
        out
    }

    /// The engine's open tasks of instances whose business key starts with `prefix`; `None`
    /// while the engine does not answer.
    pub async fn engine_tasks(&self, prefix: &str) -> Option<Vec<Value>> {
        let path = format!("/task?processInstanceBusinessKeyLike={prefix}%25&maxResults=2000");
        let (status, tasks) = self.engine.call(reqwest::Method::GET, &path, None).await;
        (status == 200).then(|| tasks.as_array().cloned()).flatten()
    }

    /// A reviewer's task list, filtered to instances whose business key starts with `prefix`.
    pub async fn reviewer_tasks(&self, prefix: &str) -> Vec<Value> {
        let query = format!("filter=task.businessKey%25{prefix}");
        self.all_tasks(&query, "rita", &["reviewers"]).await
    }

    /// Waits until a reviewer's task list, filtered to `prefix`, holds the same tasks as the
    /// engine's open tasks of `prefix`; returns the listed ids (a task listed twice stays
    /// twice, for the caller to check).
    pub async fn wait_view_matches_engine(&self, prefix: &str, after: &str) -> Vec<String> {
        let ids = |tasks: &[Value], field: &str| -> Vec<String> {
            tasks
                .iter()
                .filter_map(|t| t[field].as_str().map(str::to_owned))
                .collect()
        };
        wait_for(
            &format!("the view to hold the engine's open tasks after {after}"),
            Duration::from_secs(180),
            || async {
                let expected: BTreeSet<String> = ids(&self.engine_tasks(prefix).await?, "id")
                    .into_iter()
                    .collect();
                let listed = ids(&self.reviewer_tasks(prefix).await, "taskId");
                let set: BTreeSet<String> = listed.iter().cloned().collect();
                (set == expected).then_some(listed)
            },
        )
        .await
    }

    /// Deletes the instances of `prefix` that still have open tasks: the engine is shared.
    pub async fn delete_instances(&self, prefix: &str) {
        for t in self.engine_tasks(prefix).await.unwrap_or_default() {
            if let Some(instance) = t["processInstanceId"].as_str() {
                self.engine.delete_instance(instance).await;
            }
        }
    }
}
