//! The three raft-bus processes of a fault run: in network namespaces (see `net`) or, without
//! partitions, on loopback. Killed, paused, resumed and restarted by the nemesis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::net::Net;

pub struct Nodes {
    pub net: Option<Net>,
    bin: PathBuf,
    dir: PathBuf,
    token: String,
    addrs: Vec<String>,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    /// Nodes that exited without being killed: each an anomaly.
    pub crashes: Vec<String>,
}

pub const NODES: usize = 3;
const PORT: u16 = 7101;

impl Nodes {
    pub fn start(bin: &Path, dir: &Path, token: &str, net: Option<Net>) -> Result<Nodes> {
        let addrs = (1..=NODES)
            .map(|n| match &net {
                Some(net) => format!("{}:{PORT}", net.addr(n)),
                None => format!("127.0.0.1:{}", testkit::free_port()),
            })
            .collect();
        let mut nodes = Nodes {
            net,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            token: token.to_owned(),
            addrs,
            children: (0..NODES).map(|_| None).collect(),
            paused: vec![false; NODES],
            crashes: Vec::new(),
        };
        for n in 1..=NODES {
            nodes.spawn(n)?;
        }
        Ok(nodes)
    }

    pub fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }

    pub fn url(&self, node: usize) -> String {
        format!("http://{}", self.addrs[node - 1])
    }

    pub fn log(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{node}.log"))
    }

    pub fn spawn(&mut self, node: usize) -> Result<()> {
        let peers = self
            .addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let args = [
            "--node-id".to_owned(),
            node.to_string(),
            "--listen".to_owned(),
            self.addrs[node - 1].clone(),
            "--data-dir".to_owned(),
            self.dir.join(format!("node-{node}")).display().to_string(),
            "--peers".to_owned(),
            peers,
            // Small snapshots, so that lagging and restarted nodes install them.
            "--snapshot-logs".to_owned(),
            "2000".to_owned(),
        ];
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(net.exec_prefix(node)).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(node))?;
        let child = cmd
            .args(args)
            .env("RAFT_BUS_TOKEN", &self.token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.children[node - 1] = Some(child);
        self.paused[node - 1] = false;
        Ok(())
    }

    fn pid(&self, node: usize) -> Option<Pid> {
        self.children[node - 1]
            .as_ref()
            .map(|c| Pid::from_raw(c.id() as i32))
    }

    pub fn is_running(&self, node: usize) -> bool {
        self.children[node - 1].is_some()
    }

    /// Notes a node that is gone though nobody killed it.
    fn check_alive(&mut self, node: usize) {
        let log = self.log(node);
        if let Some(child) = self.children[node - 1].as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.crashes.push(format!(
                    "node {node} exited on its own ({status}); see {}",
                    log.display()
                ));
                self.children[node - 1] = None;
            }
        }
    }

    pub fn kill(&mut self, node: usize) {
        self.check_alive(node);
        if let Some(mut child) = self.children[node - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused[node - 1] = false;
    }

    pub fn pause(&mut self, node: usize) {
        if let Some(pid) = self.pid(node) {
            let _ = kill(pid, Signal::SIGSTOP);
            self.paused[node - 1] = true;
        }
    }

    pub fn resume(&mut self, node: usize) {
        if let Some(pid) = self.pid(node) {
            let _ = kill(pid, Signal::SIGCONT);
        }
        self.paused[node - 1] = false;
    }

    /// Every node running, resumed and on the network.
    pub fn heal_all(&mut self) -> Result<()> {
        for node in 1..=NODES {
            self.check_alive(node);
            if let Some(net) = &self.net {
                net.heal(node)?;
            }
            if self.paused[node - 1] {
                self.resume(node);
            }
            if !self.is_running(node) {
                self.spawn(node)?;
            }
        }
        Ok(())
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in 1..=NODES {
            self.resume(node);
            self.kill(node);
        }
    }
}
