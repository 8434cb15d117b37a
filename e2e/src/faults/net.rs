//! Cutting a bus node off the network for real: each node runs in a network namespace of its
//! own, joined to the host by a veth pair on one bridge; the workload and the checker talk to
//! the nodes over that bridge. Cutting node N off takes its veth link down (every packet to and
//! from it is lost, as when a cable is pulled); healing brings it up again. Needs root
//! (CAP_NET_ADMIN and CAP_SYS_ADMIN).

use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Net {
    /// Short unique name part (interface names have at most 15 characters).
    tag: String,
    subnet: String,
    nodes: usize,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (Debian's iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// A bridge `tp<tag>br` on 10.213.X.1/24 and, per node, a namespace `tp<tag>n<N>` holding
    /// 10.213.X.(10+N).
    pub fn setup(nodes: usize) -> Result<Net> {
        let n: u32 = rand::random::<u32>();
        let net = Net {
            tag: format!("{:04x}", n & 0xffff),
            subnet: format!("10.213.{}", (n >> 16) % 250 + 1),
            nodes,
        };
        net.create().with_context(|| {
            "could not build the test network (needs root: CAP_NET_ADMIN, CAP_SYS_ADMIN); \
             run as root, or pass --no-partitions to inject only kills and pauses"
        })?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("tp{}br", self.tag)
    }

    fn namespace(&self, node: usize) -> String {
        format!("tp{}n{node}", self.tag)
    }

    fn veth(&self, node: usize) -> String {
        format!("tp{}v{node}", self.tag)
    }

    fn create(&self) -> Result<()> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.1/24", self.subnet), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for node in 1..=self.nodes {
            let (ns, veth, peer) = (
                self.namespace(node),
                self.veth(node),
                format!("tp{}p{node}", self.tag),
            );
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &br])?;
            ip(&["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", self.addr(node));
            ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &peer,
            ])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &peer, "up"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    pub fn addr(&self, node: usize) -> String {
        format!("{}.{}", self.subnet, 10 + node)
    }

    /// The command prefix that runs a program inside node N's namespace.
    pub fn exec_prefix(&self, node: usize) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.namespace(node)]
    }

    pub fn cut(&self, node: usize) -> Result<()> {
        ip(&["link", "set", &self.veth(node), "down"])
    }

    pub fn heal(&self, node: usize) -> Result<()> {
        ip(&["link", "set", &self.veth(node), "up"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(node)]);
            let _ = ip(&["link", "del", &self.veth(node)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
