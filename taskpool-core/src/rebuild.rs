//! `taskpool-core rebuild`: replay every bus event into a fresh view, then replace the stored
//! view with it. The replay happens in memory first, so a failed rebuild leaves the old view.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use taskpool_api::{BusClient, ClientConfig};

use crate::config::RebuildConfig;
use crate::store::{Changes, IdentityWrite, Store, TaskRecord};
use crate::view::View;

/// Events read from the bus per request (the bus's largest page).
const PAGE: u32 = 10_000;

pub struct Rebuilt {
    pub events: u64,
    pub open_tasks: usize,
    pub seconds: f64,
    /// Reading the bus and folding its events in memory.
    pub replay_seconds: f64,
    /// Replacing the stored view with the result.
    pub write_seconds: f64,
}

pub async fn run(config: RebuildConfig) -> anyhow::Result<()> {
    config.view.validate().map_err(anyhow::Error::msg)?;
    let bus = BusClient::new(ClientConfig::new(
        config.view.bus.clone(),
        config.view.bus_token.clone(),
    ))?;
    let store = Store::connect(&config.view.mongo_url, &config.view.database).await?;
    store
        .ping()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the view store (--mongo-url): {e}"))?;
    let show = !config.no_progress && std::io::stderr().is_terminal();
    let r = rebuild(&bus, &store, show).await?;
    println!(
        "rebuilt view: {} events, {} open tasks in {:.1} s ({:.0} events/s; replay {:.1} s, write {:.1} s)",
        r.events,
        r.open_tasks,
        r.seconds,
        r.events as f64 / r.seconds.max(1e-9),
        r.replay_seconds,
        r.write_seconds,
    );
    Ok(())
}

/// Replays the bus up to its head at the start into `store`.
pub async fn rebuild(bus: &BusClient, store: &Store, progress: bool) -> anyhow::Result<Rebuilt> {
    let started = Instant::now();
    let head = bus.events(1, 1).await?.head;
    let bar = if progress {
        ProgressBar::with_draw_target(Some(head), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:10} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("replaying");
    let mut view = View::default();
    let mut next = 1;
    let mut bad = 0u64;
    while next <= head {
        let page = bus.events(next, PAGE).await?;
        if page.events.is_empty() {
            anyhow::bail!("the bus returned no events from position {next} below its head {head}");
        }
        for event in page.events.iter().take_while(|e| e.position <= head) {
            if let Err(e) = view.apply(event) {
                bad += 1;
                tracing::warn!(error = %e, "event skipped");
            }
            next = event.position + 1;
        }
        bar.set_position(next - 1);
    }
    bar.set_message("writing");
    let replayed = started.elapsed();
    let tasks: Vec<TaskRecord> = view.tasks().cloned().map(TaskRecord::Open).collect();
    store.drop_view().await?;
    store.insert_tasks(&tasks).await?;
    store
        .write(&Changes {
            tasks: Vec::new(),
            new_tasks: Default::default(),
            definitions: view.definitions().cloned().collect(),
            identities: view
                .identities()
                .map(|i| IdentityWrite {
                    view: i.clone(),
                    ranges: None,
                })
                .collect(),
            position: head,
        })
        .await?;
    bar.finish_and_clear();
    let total = started.elapsed();
    if bad > 0 {
        tracing::warn!(skipped = bad, "events that could not be read were skipped");
    }
    Ok(Rebuilt {
        events: head,
        open_tasks: tasks.len(),
        seconds: total.as_secs_f64(),
        replay_seconds: replayed.as_secs_f64(),
        write_seconds: (total - replayed).as_secs_f64(),
    })
}
