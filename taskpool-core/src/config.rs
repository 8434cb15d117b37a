//! taskpool-core's configuration: subcommands and flags, each flag with an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use service_kit::config::{check_bus_nodes, DEFAULT_BUS_NODES};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "taskpool-core",
    version,
    about = "The Taskpool task view and HTTP task API.",
    long_about = "The Taskpool task view and HTTP task API.\n\n\
`serve` projects the task events of the bus into MongoDB and answers the task API from that \
view: every user sees the tasks they may work on, across every engine, and acts on them \
through the bus. `rebuild` drops the view and replays it from the first event."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Project the bus into the view and serve the task API.
    Serve(ServeConfig),
    /// Drop the view and replay every event of the bus into it (stop `serve` first).
    Rebuild(RebuildConfig),
}

/// Where the events come from and where the view lives.
#[derive(Debug, Clone, Args)]
pub struct ViewArgs {
    /// The bus nodes, comma separated.
    #[arg(long, env = "TASKPOOL_BUS", value_delimiter = ',', default_value = DEFAULT_BUS_NODES)]
    pub bus: Vec<String>,

    /// Bearer token of the bus.
    #[arg(long, env = "TASKPOOL_BUS_TOKEN", hide_env_values = true)]
    pub bus_token: Option<String>,

    /// MongoDB (or a MongoDB-compatible server) that holds the view.
    #[arg(
        long,
        env = "TASKPOOL_MONGO_URL",
        hide_env_values = true,
        default_value = "mongodb://127.0.0.1:27017"
    )]
    pub mongo_url: String,

    /// Database of the view.
    #[arg(long, env = "TASKPOOL_DATABASE", default_value = "taskpool")]
    pub database: String,

    /// Log as JSON lines.
    #[arg(long, env = "TASKPOOL_LOG_JSON")]
    pub log_json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub view: ViewArgs,

    /// Address of the task API, /metrics and /health/*.
    #[arg(long, env = "TASKPOOL_LISTEN", default_value = "127.0.0.1:7301")]
    pub listen: SocketAddr,

    /// Secret of HS256-signed JWTs (claims `sub`, `groups`, `exp`).
    #[arg(long, env = "TASKPOOL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the RSA public key of RS256-signed JWTs.
    #[arg(long, env = "TASKPOOL_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `iss` of JWTs, when set.
    #[arg(long, env = "TASKPOOL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of JWTs, when set.
    #[arg(long, env = "TASKPOOL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Applications whose engines share one identity realm, comma separated (repeatable; env:
    /// realms separated by `;`). A user's groups from an engine's identity count only for that
    /// application's tasks and definitions, unless its application is in a realm with others:
    /// then they count for all of them. Groups from a JWT or the gateway count everywhere.
    #[arg(
        long = "identity-realm",
        env = "TASKPOOL_IDENTITY_REALMS",
        value_delimiter = ';',
        value_name = "APP,APP,..."
    )]
    pub identity_realms: Vec<String>,

    /// Take the user from `X-User` and groups from `X-Groups` (comma separated). Only behind a
    /// gateway that authenticates users and sets these headers itself.
    #[arg(long, env = "TASKPOOL_TRUST_IDENTITY_HEADERS")]
    pub trust_identity_headers: bool,

    /// How long an action waits for its command's result from the engine's collector.
    #[arg(long, env = "TASKPOOL_COMMAND_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,

    /// How long an action then waits for the view to show its effect.
    #[arg(long, env = "TASKPOOL_VIEW_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub view_wait: Duration,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TASKPOOL_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Most SSE task streams open at once.
    #[arg(long, env = "TASKPOOL_MAX_STREAMS", default_value_t = 1_000)]
    pub max_streams: usize,

    /// Most API requests in flight; past it a request is answered 503 `busy` at once instead of
    /// queueing. Task streams, health and metrics are not counted.
    #[arg(long, env = "TASKPOOL_MAX_CONCURRENT_REQUESTS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,
}

#[derive(Debug, Clone, Args)]
pub struct RebuildConfig {
    #[command(flatten)]
    pub view: ViewArgs,

    /// No progress bar (also off when stderr is not a terminal).
    #[arg(long, env = "TASKPOOL_NO_PROGRESS")]
    pub no_progress: bool,
}

impl ServeConfig {
    /// The identity realms of `--identity-realm`.
    pub fn realms(&self) -> Result<crate::view::Realms, String> {
        let realms: Vec<Vec<String>> = self
            .identity_realms
            .iter()
            .map(|r| {
                r.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        crate::view::Realms::new(&realms).map_err(|e| format!("--identity-realm: {e}"))
    }

    /// Refuses settings that cannot work, with a message saying what to change.
    pub fn validate(&self) -> Result<(), String> {
        self.realms()?;
        if self.jwt_secret.is_none()
            && self.jwt_public_key.is_none()
            && !self.trust_identity_headers
        {
            return Err("no way to identify users: set --jwt-secret (HS256), --jwt-public-key (RS256) or, behind an authenticating gateway, --trust-identity-headers".into());
        }
        if self.jwt_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return Err("--jwt-secret must be at least 16 bytes".into());
        }
        self.view.validate()
    }
}

impl ViewArgs {
    pub fn validate(&self) -> Result<(), String> {
        check_bus_nodes(&self.bus)?;
        if self.database.is_empty() || self.database.contains(['/', '.', ' ', '$']) {
            return Err("--database must be a plain MongoDB database name".into());
        }
        Ok(())
    }
}
