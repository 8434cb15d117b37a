use camunda_collector::{App, Config};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_kit::init_tracing(config.log_json, "info,sqlx=warn");
    let app = App::build(config).await?;
    app.run_until_stopped(service_kit::shutdown_signal()).await
}
