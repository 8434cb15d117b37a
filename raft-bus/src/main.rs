use clap::Parser;
use raft_bus::{App, Config};

/// mimalloc: the bus allocates per request and per event; glibc's allocator cost a tenth of
/// the CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    return_freed_memory_at_once();
    let config = Config::parse();
    service_kit::init_tracing(config.log_json, "info,openraft=warn");
    // One thread needs no work stealing: a current-thread runtime wakes its tasks cheaper.
    let mut runtime = match config.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = n {
                b.worker_threads(n.into());
            }
            b
        }
    };
    runtime.enable_all().build()?.block_on(async {
        let app = App::build(config).await?;
        app.run_until_stopped(service_kit::shutdown_signal()).await
    })
}

/// mimalloc keeps freed pages for a while before it gives them back, and its arenas get
/// transparent huge pages; a bus node frees large batches all the time, so both made its RSS
/// larger (holding freed pages: a third; 2 MiB pages: 113-120 MiB instead of 77 after 1,000,000
/// events, at the same throughput). So: give pages back at once, and no huge pages for this
/// process. An operator's `MIMALLOC_PURGE_DELAY` / `MIMALLOC_ALLOW_THP` win.
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // `mi_option_purge_delay` in mimalloc's option enum (the bindings name no constant).
        const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: mi_option_set only stores an option value; it is valid at any time.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    }
    // mimalloc reads its THP option only at start, so the kernel is asked instead; a refusal
    // costs only memory.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}
