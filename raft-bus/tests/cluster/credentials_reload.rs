//! `--credentials` kept current without a restart (SIGHUP, a changed file, a broken one), and
//! the flags and files a node refuses to start with.

use std::process::{Command, Stdio};

use futures::StreamExt;
use reqwest::Method;

use crate::credentials::{call, clients, CORE, LOCAL, WAIT};
use crate::harness::credentials::{hash_secret, write_file};
use crate::harness::{wait_for, BusCredential, Cluster};

/// Lines of node `id`'s log that contain every one of `parts`.
fn log_lines(cluster: &Cluster, id: u64, parts: &[&str]) -> usize {
    let log = std::fs::read_to_string(cluster.node(id).log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Per node, the lines of its log that contain every one of `parts`.
fn log_counts(cluster: &Cluster, parts: &[&str]) -> Vec<usize> {
    (1..=3).map(|id| log_lines(cluster, id, parts)).collect()
}

/// Waits until every node's log has more lines with every one of `parts` than `before` (one
/// count per node) says.
async fn wait_logged(cluster: &Cluster, what: &str, parts: &[&str], before: &[usize]) {
    for id in 1..=3 {
        wait_for(&format!("node {id} to log {what}"), WAIT, || async {
            (log_lines(cluster, id, parts) > before[id as usize - 1]).then_some(())
        })
        .await;
    }
}

/// The clients with a new secret for core.
fn new_core_secret(clients: Vec<BusCredential>) -> Vec<BusCredential> {
    (clients.into_iter())
        .map(|c| {
            if c.name == CORE {
                c.with_new_secret()
            } else {
                c
            }
        })
        .collect()
}

/// Waits until every node takes `fresh` and refuses every one of `stale` with 401.
async fn wait_in_force(cluster: &Cluster, fresh: &str, stale: &[String]) {
    for id in 1..=3 {
        wait_for(
            &format!("node {id} to take the new credentials"),
            WAIT,
            || async move {
                let ok = call(cluster, id, Method::GET, "/v1/cluster", Some(fresh), None)
                    .await
                    .0
                    == 200;
                for old in stale {
                    if call(cluster, id, Method::GET, "/v1/cluster", Some(old), None)
                        .await
                        .0
                        != 401
                    {
                        return None;
                    }
                }
                ok.then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_rotate_without_a_restart() {
    let mut cluster = Cluster::start_with_credentials(&clients(), &[]).await;
    let old_core = cluster.secret(CORE);
    let local = cluster.secret(LOCAL);
    // A live subscription of the client about to be removed.
    let subscription = cluster
        .http()
        .get(format!("{}/v1/subscribe?from=1", cluster.node(2).url()))
        .bearer_auth(&local)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(subscription.status().as_u16(), 200);

    // 1. A new secret for core, collector-local removed; SIGHUP to every node.
    let mut next = clients();
    next.retain(|c| c.name != LOCAL);
    let next = new_core_secret(next);
    let sighup = ["credentials reloaded", "SIGHUP"];
    let sighups = log_counts(&cluster, &sighup);
    cluster.set_credentials(&next);
    cluster.reload_credentials();
    let new_core = cluster.secret(CORE);
    assert_ne!(new_core, old_core);
    wait_in_force(&cluster, &new_core, &[old_core.clone(), local.clone()]).await;
    wait_logged(&cluster, "the SIGHUP reload", &sighup, &sighups).await;
    // The removed client's subscription ended with its credential.
    let mut body = subscription.bytes_stream();
    tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = body.next().await {} })
        .await
        .expect("the removed client's subscription ends");

    // 2. Another new secret, without a signal: the nodes see the file change.
    let file_changed = ["credentials reloaded", "file changed"];
    let changed = log_counts(&cluster, &file_changed);
    let again = new_core_secret(next);
    cluster.set_credentials(&again);
    let newest = cluster.secret(CORE);
    wait_in_force(
        &cluster,
        &newest,
        &[old_core.clone(), new_core.clone(), local.clone()],
    )
    .await;
    wait_logged(
        &cluster,
        "the reload of the changed file",
        &file_changed,
        &changed,
    )
    .await;

    // 3. A broken file keeps the credentials in force, and every node says why.
    let file = cluster.credentials_file().expect("file").to_owned();
    let broken = format!(
        "[[client]]\nname = \"core\"\nrole = \"root\"\nsecret = \"{}\"\n",
        hash_secret("x")
    );
    write_file(&file, broken.as_bytes());
    cluster.reload_credentials();
    let refused = ["WARN", "credentials file not reloaded", "unknown role"];
    wait_logged(
        &cluster,
        "that it refused the broken file",
        &refused,
        &[0; 3],
    )
    .await;
    for id in 1..=3 {
        let answer = call(
            &cluster,
            id,
            Method::GET,
            "/v1/cluster",
            Some(&newest),
            None,
        )
        .await;
        assert_eq!(answer.0, 200, "node {id} still takes the secret in force");
        assert_eq!(
            call(
                &cluster,
                id,
                Method::GET,
                "/v1/cluster",
                Some(&new_core),
                None
            )
            .await
            .0,
            401
        );
    }
    // No secret ever reached a log.
    for id in 1..=3 {
        let log = std::fs::read_to_string(cluster.node(id).log_path()).unwrap_or_default();
        for secret in [&old_core, &new_core, &newest, &local] {
            assert!(!log.contains(secret.as_str()), "node {id} logged a secret");
        }
    }
}

/// Runs one node with `args` and `env` and returns its exit status and stderr.
async fn run_node(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let mut command = Command::new(testkit::raft_bus_binary());
    command
        .args([
            "--node-id",
            "1",
            "--listen",
            &addr,
            "--peers",
            &format!("1={addr}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("RAFT_BUS_TOKEN")
        .env_remove("RAFT_BUS_CREDENTIALS")
        .env_remove("RAFT_BUS_PEER_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("start raft-bus");
    let out = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the node stops by itself")
    .expect("join")
    .expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_with_credentials_it_cannot_use() {
    let dir = tempfile::tempdir().expect("dir");
    let good = dir.path().join("good.toml");
    let peer = BusCredential::peer("peer");
    std::fs::write(
        &good,
        format!(
            "[[client]]\nname = \"peer\"\nrole = \"peer\"\nsecret = \"{}\"\n",
            hash_secret(&peer.secret)
        ),
    )
    .expect("write");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[client]]\nname = \"a\"\nrole = \"collector\"\nsecret = \"sha256:00\"\n",
    )
    .expect("write");
    let (good, bad) = (good.to_str().expect("utf-8"), bad.to_str().expect("utf-8"));
    let token = [("RAFT_BUS_PEER_TOKEN", peer.secret.as_str())];
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (&["--credentials", bad], &token, "needs `application`"),
        (
            &["--credentials", good, "--token", "t"],
            &token,
            "--token and --credentials exclude each other",
        ),
        (
            &["--credentials", good],
            &[],
            "--credentials needs --peer-token",
        ),
        (
            &["--credentials", good],
            &[("RAFT_BUS_PEER_TOKEN", "other")],
            "no peer entry",
        ),
        (
            &["--credentials", "/nonexistent/credentials.toml"],
            &token,
            "cannot be read",
        ),
    ];
    for (args, env, why) in cases {
        let (code, stderr) = run_node(args, env).await;
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(!stderr.contains(&peer.secret), "{stderr}");
    }
}
