use clap::Parser;
use raft_bus::{App, Config};

/// mimalloc: the bus allocates per request and per event; glibc's allocator cost a tenth of
/// the CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    return_freed_memory_at_once();
    let config = Config::parse();
    raft_bus::init_tracing(config.log_json);
    let app = App::build(config).await?;
    app.run_until_stopped(taskpool_api::service::shutdown_signal())
        .await
}

/// mimalloc keeps freed pages for a while before it gives them back; a bus node frees large
/// batches all the time, and holding them made its RSS a third larger. Give them back at once.
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return; // mimalloc read the operator's choice itself
    }
    // `mi_option_purge_delay` in mimalloc's option enum (the bindings name no constant).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: mi_option_set only stores an option value; it is valid to call at any time.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
}
