use camunda_collector::{App, Config};
use clap::Parser;
use taskpool_api::service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service::init_tracing(config.log_json, "info,sqlx=warn");
    let app = App::build(config).await?;
    app.run_until_stopped(service::shutdown_signal()).await
}
