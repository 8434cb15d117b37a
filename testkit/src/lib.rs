//! Test support shared by the workspace's integration tests: real three-node clusters of
//! `raft-bus` processes on loopback, our services as child processes, the local Camunda
//! engine's REST API, and waiting for a condition with a deadline.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

pub mod cluster;
pub mod collector;
pub mod core;
pub mod credentials;
pub mod engine;
pub mod relay;
pub mod service;

pub use cluster::{Cluster, Node, Options};
pub use collector::Collector;
pub use core::Core;
pub use credentials::BusCredential;
pub use engine::Engine;
pub use service::Service;

pub const TOKEN: &str = "test-token";

/// Waits for `check` to give `Some`, polling, until the deadline; panics with `what` after it.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_wait_for(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_for`] that fails with `Err` instead of panicking: for a benchmark, which reports
/// a failed run and goes on with the next.
pub async fn try_wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of `GET url` (a `/metrics` page), failing the test when it does not answer.
pub async fn get_text(url: &str) -> String {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Sends `request` until a service with room for few requests admits it, and returns that
/// answer: while another request holds the room, it is shed (503 with `Retry-After`, which only
/// shedding sets).
pub async fn send_admitted(request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    wait_for("a request to be admitted", Duration::from_secs(30), || {
        let req = request();
        async move {
            let resp = req.send().await.ok()?;
            let shed = resp.status() == 503 && resp.headers().contains_key("retry-after");
            (!shed).then_some(resp)
        }
    })
    .await
}

/// Waits until `request` is shed by a full service: 503 with `Retry-After: 1` and the error
/// code `busy`. Returns the error message.
pub async fn wait_busy(request: impl Fn() -> reqwest::RequestBuilder) -> String {
    let shed = wait_for("a request to be shed", Duration::from_secs(5), || {
        let req = request();
        async move {
            let resp = req.send().await.ok()?;
            (resp.status() == 503).then_some(resp)
        }
    })
    .await;
    assert_eq!(
        shed.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: serde_json::Value = shed.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "busy", "{body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The `raft-bus` binary next to the running test's directory (`target/<profile>/`), or
/// `RAFT_BUS_BIN`. `cargo test --workspace` builds it before any test runs.
pub fn raft_bus_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("RAFT_BUS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/raft-bus
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("raft-bus"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p raft-bus` (or set RAFT_BUS_BIN)",
        bin.display()
    );
    bin
}

/// The binary `name` in the running executable's own dir: a benchmark's sibling from the
/// same `cargo build --release` (`target/release/<name>`).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    exe.with_file_name(name)
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports: every listener is held until all are chosen.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// A binary of this workspace next to the running test (`target/<profile>/<name>`), or the
/// path in `<NAME>_BIN` (e.g. `CAMUNDA_COLLECTOR_BIN`). `cargo test --workspace` builds every
/// binary before any test runs.
pub fn workspace_binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(bin) = std::env::var_os(&var) {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p {name}` (or set {var})",
        bin.display()
    );
    bin
}

/// Runs schemathesis (`st`, or `SCHEMATHESIS_BIN`) against the OpenAPI document at `schema`
/// with the check that no answer is a 5xx, a fixed seed and `args`; fails with its report when
/// it finds anything, else returns the report.
pub async fn schemathesis(schema: &str, args: &[&str]) -> String {
    let st = std::env::var("SCHEMATHESIS_BIN").unwrap_or_else(|_| "st".into());
    let mut cmd = Command::new(&st);
    cmd.args(["run", schema, "--checks", "not_a_server_error"])
        .args([
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--request-timeout",
            "15",
        ])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("schemathesis")
        .unwrap_or_else(|e| {
            panic!("{st}: {e}; install it with `pip install schemathesis` (deploy/scripts/test-tools.sh does)")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
    report
}
