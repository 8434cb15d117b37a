//! The collector's configuration: flags, each with an environment fallback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use service_kit::config::{check_bus_nodes, DEFAULT_BUS_NODES};
use taskpool_api::streams::valid_application;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Learn changes by polling the REST API only (no change to the engine).
    Poll,
    /// Take signed hooks from the engine plugin, and poll less often as a safety net.
    Hook,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "camunda-collector",
    version,
    about = "Sidecar of one Camunda 7 engine: reports every user-task change to the Taskpool bus and executes task commands on the engine.",
    long_about = "Sidecar of one Camunda 7 engine: reports every user-task change to the Taskpool bus \
and executes task commands on the engine.\n\n\
It learns changes by polling the engine's REST API (--mode poll), or from signed hooks the \
engine plugin sends (--mode hook), and in both modes reconciles every open task periodically, \
so no change is lost. Two collectors of one application may run: one works, the other takes \
over within seconds when it stops (a PostgreSQL advisory lock decides)."
)]
pub struct Config {
    /// This engine's application name, unique on the platform: `[a-z][a-z0-9-]{0,39}`. It keys
    /// everything the engine names (streams `task/{application}/{taskId}` …), is the routing
    /// key of its commands and the `application` of every event it reports.
    #[arg(long, env = "COLLECTOR_APPLICATION", default_value = "camunda")]
    pub application: String,

    /// Base URL of the engine's REST API.
    #[arg(
        long,
        env = "COLLECTOR_ENGINE_URL",
        default_value = "http://127.0.0.1:8080/engine-rest"
    )]
    pub engine_url: String,

    /// Engine name reported in each task's source reference.
    #[arg(long, env = "COLLECTOR_ENGINE_NAME", default_value = "default")]
    pub engine_name: String,

    /// User for the engine's REST basic auth.
    #[arg(long, env = "COLLECTOR_ENGINE_USER")]
    pub engine_user: Option<String>,

    /// Password for the engine's REST basic auth.
    #[arg(long, env = "COLLECTOR_ENGINE_PASSWORD", hide_env_values = true)]
    pub engine_password: Option<String>,

    /// Timeout of one REST call to the engine.
    #[arg(long, env = "COLLECTOR_ENGINE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub engine_timeout: Duration,

    /// The bus nodes, comma separated.
    #[arg(long, env = "COLLECTOR_BUS", value_delimiter = ',', default_value = DEFAULT_BUS_NODES)]
    pub bus: Vec<String>,

    /// Bearer token of the bus.
    #[arg(long, env = "COLLECTOR_BUS_TOKEN", hide_env_values = true)]
    pub bus_token: Option<String>,

    /// PostgreSQL for the collector's state (schema `taskpool_collector`).
    #[arg(
        long,
        env = "COLLECTOR_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://taskpool:taskpool@127.0.0.1:5432/collector"
    )]
    pub database_url: String,

    /// Address for hooks, /metrics and /health/*.
    #[arg(long, env = "COLLECTOR_LISTEN", default_value = "127.0.0.1:7201")]
    pub listen: SocketAddr,

    #[arg(long, env = "COLLECTOR_MODE", value_enum, default_value = "poll")]
    pub mode: Mode,

    /// Secret the engine plugin signs hooks with (needed in hook mode).
    #[arg(long, env = "COLLECTOR_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,

    /// Time between incremental polls (default 1s in poll mode, 15s in hook mode).
    #[arg(long, env = "COLLECTOR_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,

    /// How far each incremental query reaches back behind its watermark, for changes whose
    /// transaction committed after later ones.
    #[arg(long, env = "COLLECTOR_OVERLAP", default_value = "10s", value_parser = humantime::parse_duration)]
    pub overlap: Duration,

    /// Time between full reconciliations of every open task (and of process definitions
    /// and users).
    #[arg(long, env = "COLLECTOR_RECONCILE_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,

    /// Page size of list queries.
    #[arg(long, env = "COLLECTOR_PAGE_SIZE", default_value_t = 500)]
    pub page_size: u32,

    /// Tasks looked at, and commands executed, at once.
    #[arg(long, env = "COLLECTOR_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Process variables copied into task payloads: names or `prefix*`, comma separated
    /// (empty: all).
    #[arg(long, env = "COLLECTOR_VARIABLES_INCLUDE", value_delimiter = ',')]
    pub variables_include: Vec<String>,

    /// Process variables never copied: names or `prefix*`, comma separated.
    #[arg(long, env = "COLLECTOR_VARIABLES_EXCLUDE", value_delimiter = ',')]
    pub variables_exclude: Vec<String>,

    /// Variable filters per process definition: `KEY:include=NAMES` (replaces the global
    /// include list for that definition) or `KEY:exclude=NAMES` (adds to the global excludes),
    /// NAMES comma separated; repeat the flag, or separate rules with `;` in the environment.
    #[arg(
        long = "variable-filter",
        env = "COLLECTOR_VARIABLE_FILTERS",
        value_delimiter = ';'
    )]
    pub variable_filters: Vec<String>,

    /// Largest accepted hook body, in bytes.
    #[arg(long, env = "COLLECTOR_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,

    /// Largest event this collector writes, in bytes (16 KiB to 3 MiB; the bus takes 4 MiB
    /// bodies by default). A task that would be larger leaves its largest variables out of the
    /// payload and names them in `payloadTruncated`; an identity sync is split into parts.
    #[arg(long, env = "COLLECTOR_MAX_EVENT_BYTES", default_value_t = DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,

    /// How long the active collector's lease lasts unrenewed: a standby takes over this long
    /// after the active one stopped renewing (paused, its host lost or cut off); at once when
    /// its process died. The holder renews every fifth and stops acting after four fifths.
    #[arg(long, env = "COLLECTOR_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Log as JSON lines.
    #[arg(long, env = "COLLECTOR_LOG_JSON")]
    pub log_json: bool,
}

pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;
const MIN_EVENT_BYTES: usize = 16 << 10;
const MAX_EVENT_BYTES: usize = 3 << 20;

impl Config {
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval.unwrap_or(match self.mode {
            Mode::Poll => Duration::from_secs(1),
            Mode::Hook => Duration::from_secs(15),
        })
    }

    /// The payload's variable filter, from the global lists and the per-definition rules.
    pub fn variable_filter(&self) -> Result<crate::payload::VariableFilter, String> {
        crate::payload::VariableFilter::new(
            self.variables_include.clone(),
            self.variables_exclude.clone(),
            &self.variable_filters,
        )
    }

    /// Refuses settings that cannot work, with a message saying what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == Mode::Hook && self.hook_secret.as_deref().is_none_or(str::is_empty) {
            return Err("--mode hook needs --hook-secret (env COLLECTOR_HOOK_SECRET), the secret the engine plugin signs with".into());
        }
        valid_application(&self.application)
            .map_err(|e| format!("--application {:?}: {e}", self.application))?;
        check_bus_nodes(&self.bus)?;
        self.variable_filter()?;
        if !(MIN_EVENT_BYTES..=MAX_EVENT_BYTES).contains(&self.max_event_bytes) {
            return Err(format!(
                "--max-event-bytes {}: must be between {MIN_EVENT_BYTES} and {MAX_EVENT_BYTES} \
                 (below the bus's body limit, with room for the rest of an append)",
                self.max_event_bytes
            ));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err("--lease-ttl must be at least 1s".into());
        }
        if self.page_size == 0 || self.concurrency == 0 {
            return Err("--page-size and --concurrency must be at least 1".into());
        }
        Ok(())
    }
}
