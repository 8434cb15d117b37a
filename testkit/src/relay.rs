//! TCP relays a test puts between a process and the servers it talks to, to cut it off the
//! network without touching either: a [`Link`] switches every relay made with it at once.
//! `Link::refuse` is a dead peer (connections cut, new ones closed at once); `Link::hold` a
//! network that stops passing bytes while every connection stays open (what a host that
//! vanished looks like: nothing fails until a timeout says so).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const OPEN: u8 = 0;
const REFUSE: u8 = 1;
const HOLD: u8 = 2;

/// The state of every relay made with it (cheap to clone, shared).
#[derive(Clone, Default)]
pub struct Link(Arc<AtomicU8>);

impl Link {
    pub fn new() -> Link {
        Link::default()
    }

    /// Passes everything again (held bytes go on).
    pub fn restore(&self) {
        self.0.store(OPEN, Ordering::SeqCst);
    }

    /// Cuts every connection and closes new ones at once.
    pub fn refuse(&self) {
        self.0.store(REFUSE, Ordering::SeqCst);
    }

    /// Passes nothing, and keeps every connection open.
    pub fn hold(&self) {
        self.0.store(HOLD, Ordering::SeqCst);
    }

    fn state(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }

    /// Resolves once the link refuses.
    async fn refused(&self) {
        while self.state() != REFUSE {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resolves once bytes may pass; `false` when the link refuses instead.
    async fn passing(&self) -> bool {
        loop {
            match self.state() {
                OPEN => return true,
                REFUSE => return false,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// A relay to `target` (host:port) on a free local port; returns its address.
    pub async fn relay(&self, target: &str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr").to_string();
        let (target, link) = (target.to_owned(), self.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if link.state() == REFUSE {
                    continue; // dropped: the peer looks gone
                }
                let (target, link) = (target.clone(), link.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(link.pump(in_read, out_write), link.pump(out_read, in_write));
                });
            }
        });
        addr
    }

    /// `url` with its `host:port` replaced by a relay's (credentials and path kept).
    pub async fn relayed(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("scheme://host:port/…");
        let (credentials, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
        let (host_port, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let relay = self.relay(host_port).await;
        let at = if credentials.is_empty() { "" } else { "@" };
        format!("{scheme}://{credentials}{at}{relay}{path}")
    }

    /// Copies `from` to `to` while the link passes, holding bytes while it holds; returns
    /// (closing both) when either side closes or the link refuses.
    async fn pump(&self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !self.passing().await {
                return;
            }
            let n = tokio::select! {
                read = from.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                () = self.refused() => return,
            };
            if !self.passing().await || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
