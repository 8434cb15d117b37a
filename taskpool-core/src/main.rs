use clap::Parser;
use taskpool_core::config::{Cli, Command};
use taskpool_core::{rebuild, App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(config) => {
            service_kit::init_tracing(config.view.log_json, "info,mongodb=warn");
            let app = App::build(config).await?;
            app.run_until_stopped(service_kit::shutdown_signal()).await
        }
        Command::Rebuild(config) => {
            service_kit::init_tracing(config.view.log_json, "info,mongodb=warn");
            rebuild::run(config).await
        }
    }
}
