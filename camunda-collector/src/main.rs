use camunda_collector::{app, Config};
use clap::Parser;
use taskpool_api::service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service::init_tracing(config.log_json, "info,sqlx=warn");
    app::run(config, service::shutdown_signal()).await
}
