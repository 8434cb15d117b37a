//! A camunda-collector process against the local engine (`deploy/scripts/camunda.sh start`)
//! and its PostgreSQL (`COLLECTOR_TEST_DATABASE_URL`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::{engine_url, env_or, REPO};
use crate::{free_port, wait_for, Cluster, Service};

/// libfaketime's preload library, wherever the distribution put it.
fn faketime_lib() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    match found {
        Some(p) => p.display().to_string(),
        None => panic!(
            "libfaketime is not installed (a clock-skew test needs it): \
             run deploy/scripts/test-tools.sh install"
        ),
    }
}

pub fn database_url() -> String {
    env_or(
        "COLLECTOR_TEST_DATABASE_URL",
        "postgres://taskpool:taskpool@127.0.0.1:5432/collector",
    )
}

/// Where the engine sends hooks: `TASKPOOL_HOOK_URL` as `deploy/scripts/camunda.sh` uses it.
pub fn hook_listen() -> String {
    let url = std::env::var("TASKPOOL_HOOK_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:7201/v1/hooks".to_owned());
    let rest = url
        .strip_prefix("http://")
        .expect("TASKPOOL_HOOK_URL is http://HOST:PORT/…");
    rest.split('/').next().expect("host:port").to_owned()
}

pub fn hook_secret() -> String {
    let dir = std::env::var("STACK_DIR").unwrap_or_else(|_| format!("{REPO}/.stack"));
    let path = format!("{dir}/hook-secret");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; start the engine with deploy/scripts/camunda.sh start, which creates it"))
        .trim()
        .to_owned()
}

pub struct Collector {
    pub app: String,
    pub listen: String,
    service: Service,
}

impl Collector {
    /// Starts a collector process for `app` against the bus; `extra` are more flags. On a
    /// cluster with credentials it presents the entry `collector-{app}`.
    pub fn start(app: &str, bus: &Cluster, extra: &[&str]) -> Collector {
        Collector::start_with_env(app, bus, extra, &[])
    }

    /// As [`Collector::start`], whose host clock is `offset` off (e.g. `+45s`, `-45s`), by
    /// libfaketime (`deploy/scripts/test-tools.sh install`); monotonic time stays true.
    pub fn start_skewed(app: &str, bus: &Cluster, extra: &[&str], offset: &str) -> Collector {
        let lib = faketime_lib();
        let env = [
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_FORCE_MONOTONIC_FIX", "1"),
        ];
        Collector::start_with_env(app, bus, extra, &env)
    }

    /// As [`Collector::start`], with more environment variables.
    pub fn start_with_env(
        app: &str,
        bus: &Cluster,
        extra: &[&str],
        more_env: &[(&str, &str)],
    ) -> Collector {
        let nodes: Vec<String> = bus.nodes.iter().map(|n| n.url()).collect();
        let listen = extra
            .windows(2)
            .find(|w| w[0] == "--listen")
            .map(|w| w[1].to_owned())
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let defaults = [
            ("--application", app.to_owned()),
            ("--engine-url", engine_url()),
            ("--engine-user", "demo".to_owned()),
            ("--bus", nodes.join(",")),
            ("--database-url", database_url()),
            ("--poll-interval", "200ms".to_owned()),
            ("--overlap", "3s".to_owned()),
            ("--reconcile-interval", "10m".to_owned()),
            ("--listen", listen.clone()),
        ];
        // A flag in `extra` replaces its default.
        let mut args: Vec<String> = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), value]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // On a cluster with credentials, the collector's own entry `collector-{app}`.
        let token = bus.secret(&format!("collector-{app}"));
        let env = [
            ("COLLECTOR_ENGINE_PASSWORD", "demo"),
            ("COLLECTOR_BUS_TOKEN", token.as_str()),
            ("RUST_LOG", "info,camunda_collector=debug"),
        ]
        .iter()
        .chain(more_env)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let service = Service::start(
            &format!("collector {listen}"),
            crate::workspace_binary("camunda-collector"),
            args,
            env,
        );
        Collector {
            app: app.to_owned(),
            listen,
            service,
        }
    }

    pub fn spawn(&mut self) {
        self.service.spawn();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// What the collector has logged so far (stderr).
    pub fn log(&self) -> String {
        self.service.log()
    }

    pub fn pid(&self) -> Option<nix::unistd::Pid> {
        self.service.pid()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.service.kill();
    }

    /// How the process ended, once it has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.service.exited()
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(&mut self) {
        self.service.stop().await;
    }

    async fn status(&self) -> Option<Value> {
        let r = reqwest::get(format!("{}/v1/status", self.url()))
            .await
            .ok()?;
        r.json().await.ok()
    }

    pub async fn is_active(&self) -> bool {
        self.status()
            .await
            .is_some_and(|s| s["active"] == json!(true))
    }

    /// Waits until this collector is the active one.
    pub async fn wait_active(&self, within: Duration) {
        wait_for(
            &format!("collector {} active", self.listen),
            within,
            || async move { self.is_active().await.then_some(()) },
        )
        .await;
    }

    /// Waits until the first reconciliation (the import of what the engine holds) is done.
    pub async fn wait_reconciled(&self, within: Duration) {
        wait_for("first reconciliation", within, || async move {
            let m = self.metrics().await;
            m.contains("collector_poll_cycles_total{kind=\"reconcile\",outcome=\"ok\"}")
                .then_some(())
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        crate::get_text(&format!("{}/metrics", self.url())).await
    }
}
