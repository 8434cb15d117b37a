//! Who a request comes from: an open bus, the one `--token`, or the clients of the
//! `--credentials` file (kept current: re-read on SIGHUP and when the file changes).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use axum::http::HeaderValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::credentials::{constant_time_eq, Credentials, Role};
use crate::error::BusError;
use crate::rights::Caller;

/// How often the credentials file's modification time is looked at.
const FILE_CHECK: Duration = Duration::from_secs(2);

const NO_TOKEN: &str = "missing or wrong bearer token: send `Authorization: Bearer <token>`";
const NO_CLIENT: &str =
    "missing or unknown secret: send `Authorization: Bearer <secret>` with your client's secret";
const BAD_MARKER: &str =
    "`x-raft-bus-forwarded` is for bus nodes only and must carry a peer secret";

pub struct Access {
    mode: Mode,
}

enum Mode {
    Open,
    Token(String),
    Credentials(Live),
}

struct Live {
    path: PathBuf,
    /// What this node sends to its peers; every version of the file must hold it as a peer.
    peer_token: String,
    current: watch::Sender<Arc<Credentials>>,
}

impl Access {
    /// The mode the flags ask for; a credentials file that cannot be used stops the node.
    pub fn from_config(config: &Config) -> anyhow::Result<Access> {
        let mode = match (&config.token, &config.credentials, &config.peer_token) {
            (Some(_), Some(_), _) => bail!(
                "--token and --credentials exclude each other: --token is one secret with every \
                 right (a single-application setup), --credentials one secret per client; use one"
            ),
            (_, None, Some(_)) => {
                bail!(
                    "--peer-token goes with --credentials only; with --token, nodes send the token"
                )
            }
            (_, Some(_), None) => bail!(
                "--credentials needs --peer-token (RAFT_BUS_PEER_TOKEN): the secret this node \
                 sends to its peers, whose hash is a peer entry of the file"
            ),
            (Some(token), None, None) => Mode::Token(token.clone()),
            (None, None, None) => Mode::Open,
            (None, Some(path), Some(peer_token)) => {
                let creds = load(path, peer_token)
                    .map_err(|why| anyhow::anyhow!("credentials file {}: {why}", path.display()))?;
                tracing::info!(clients = creds.len(), "credentials loaded");
                Mode::Credentials(Live {
                    path: path.clone(),
                    peer_token: peer_token.clone(),
                    current: watch::Sender::new(Arc::new(creds)),
                })
            }
        };
        Ok(Access { mode })
    }

    /// The secret this node sends with its Raft RPC and forwards, if the bus has any.
    pub fn node_secret(&self) -> Option<String> {
        match &self.mode {
            Mode::Open => None,
            Mode::Token(token) => Some(token.clone()),
            Mode::Credentials(live) => Some(live.peer_token.clone()),
        }
    }

    /// The value of the forwarded marker this node sets: with credentials the peer secret,
    /// so that no client can pass a request off as a node's.
    pub fn forwarded_marker(&self) -> String {
        match &self.mode {
            Mode::Credentials(live) => live.peer_token.clone(),
            _ => "1".into(),
        }
    }

    /// The caller of a request with this `Authorization` header and forwarded marker.
    pub fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        marker: Option<&HeaderValue>,
    ) -> Result<Caller, BusError> {
        let bearer = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match &self.mode {
            Mode::Open => Ok(Caller::Trusted),
            Mode::Token(token) => match bearer {
                Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
                    Ok(Caller::Trusted)
                }
                _ => Err(BusError::Unauthorized(NO_TOKEN)),
            },
            Mode::Credentials(live) => {
                let creds = live.current.borrow().clone();
                let client = bearer
                    .and_then(|s| creds.find(s))
                    .cloned()
                    .ok_or(BusError::Unauthorized(NO_CLIENT))?;
                if let Some(marker) = marker {
                    let by_peer = marker
                        .to_str()
                        .ok()
                        .and_then(|s| creds.find(s))
                        .is_some_and(|c| c.role == Role::Peer);
                    if !by_peer {
                        return Err(BusError::Unauthorized(BAD_MARKER));
                    }
                }
                Ok(Caller::Client(client))
            }
        }
    }

    /// Resolves once the caller's credential is no longer in force (removed, its secret or
    /// rights changed), so that a long-lived stream does not outlive it; never without
    /// `--credentials`.
    pub async fn revoked(&self, caller: &Caller) {
        let (Mode::Credentials(live), Caller::Client(client)) = (&self.mode, caller) else {
            return std::future::pending().await;
        };
        let mut rx = live.current.subscribe();
        loop {
            if !rx.borrow_and_update().holds(client) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Reads the file again; an invalid one leaves the credentials in force as they were.
    /// Answers the number of clients now in force.
    pub fn reload(&self) -> Result<usize, String> {
        let Mode::Credentials(live) = &self.mode else {
            return Ok(0);
        };
        let creds = load(&live.path, &live.peer_token)?;
        let n = creds.len();
        live.current.send_replace(Arc::new(creds));
        Ok(n)
    }

    /// With `--credentials`: reloads on SIGHUP and when the file's modification time (or size,
    /// or inode: an editor's rename) changes, looked at every 2 s, until `shutdown`.
    pub fn keep_current(self: &Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Mode::Credentials(live) = &self.mode else {
            return Ok(());
        };
        // Installed before the node serves: from now on SIGHUP no longer ends the process.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut stamp = file_stamp(&live.path);
        let access = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FILE_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let trigger = tokio::select! {
                    _ = hangup.recv() => "SIGHUP",
                    _ = tick.tick() => "file changed",
                    _ = shutdown.cancelled() => return,
                };
                let Mode::Credentials(live) = &access.mode else {
                    return;
                };
                let now = file_stamp(&live.path);
                if trigger != "SIGHUP" && now == stamp {
                    continue;
                }
                stamp = now;
                match access.reload() {
                    Ok(clients) => tracing::info!(trigger, clients, "credentials reloaded"),
                    Err(why) => tracing::warn!(
                        trigger,
                        reason = %why,
                        "credentials file not reloaded; the previous credentials stay in force"
                    ),
                }
            }
        });
        Ok(())
    }
}

/// Reads and checks the file, and that it still names this node's peer secret (a file
/// without it would cut the node off its peers).
fn load(path: &Path, peer_token: &str) -> Result<Credentials, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let creds = Credentials::parse(&bytes)?;
    match creds.find(peer_token) {
        Some(c) if c.role == Role::Peer => Ok(creds),
        Some(c) => Err(format!(
            "this node's --peer-token is the secret of {c}, not of a peer"
        )),
        None => Err("no peer entry has the hash of this node's --peer-token".into()),
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::credentials::hash_secret;

    fn file(entries: &[(&str, &str, &str)]) -> String {
        entries
            .iter()
            .map(|(name, role, secret)| {
                let app = if *role == "collector" {
                    "application = \"billing\"\n"
                } else {
                    ""
                };
                format!(
                    "[[client]]\nname = \"{name}\"\nrole = \"{role}\"\n{app}secret = \"{}\"\n",
                    hash_secret(secret)
                )
            })
            .collect()
    }

    fn config(extra: &[&str]) -> Config {
        crate::config::parse_for_tests(extra).expect("flags")
    }

    fn bearer(s: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {s}")).expect("header")
    }

    fn name(c: Result<Caller, BusError>) -> Result<String, String> {
        c.map(|c| c.name().to_owned()).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_that_do_not_go_together_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file(&[("peer", "peer", "p")])).expect("write");
        let path = path.to_str().expect("utf-8");
        let err = |extra: &[&str]| {
            Access::from_config(&config(extra))
                .err()
                .map(|e| e.to_string())
        };
        assert!(err(&["--token", "t", "--credentials", path])
            .expect("refused")
            .contains("exclude each other"));
        assert!(err(&["--credentials", path])
            .expect("refused")
            .contains("needs --peer-token"));
        assert!(err(&["--peer-token", "p"])
            .expect("refused")
            .contains("--credentials only"));
        assert!(err(&["--credentials", path, "--peer-token", "x"])
            .expect("refused")
            .contains("no peer entry"));
        assert_eq!(err(&["--credentials", path, "--peer-token", "p"]), None);
        std::fs::write(path, "role = 1").expect("write");
        let why = err(&["--credentials", path, "--peer-token", "p"]).expect("refused");
        assert!(why.starts_with("credentials file "), "{why}");
    }

    #[test]
    fn token_and_open_modes_trust_their_callers() {
        let open = Access::from_config(&config(&[])).expect("open");
        assert!(matches!(open.authenticate(None, None), Ok(Caller::Trusted)));
        assert_eq!(open.node_secret(), None);
        let token = Access::from_config(&config(&["--token", "t"])).expect("token");
        assert!(matches!(
            token.authenticate(Some(&bearer("t")), None),
            Ok(Caller::Trusted)
        ));
        assert!(matches!(
            token.authenticate(Some(&bearer("u")), None),
            Err(BusError::Unauthorized(_))
        ));
        assert!(matches!(
            token.authenticate(None, None),
            Err(BusError::Unauthorized(_))
        ));
        assert_eq!(token.node_secret().as_deref(), Some("t"));
    }

    #[test]
    fn credentials_name_the_caller_and_a_forward_needs_a_peer_secret() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file(&[("peer", "peer", "p"), ("core", "core", "c")]))
            .expect("write");
        let path_arg = path.to_str().expect("utf-8");
        let access =
            Access::from_config(&config(&["--credentials", path_arg, "--peer-token", "p"]))
                .expect("credentials");
        assert_eq!(access.node_secret().as_deref(), Some("p"));
        assert_eq!(
            name(access.authenticate(Some(&bearer("c")), None)),
            Ok("core".into())
        );
        assert!(name(access.authenticate(Some(&bearer("x")), None)).is_err());
        assert!(name(access.authenticate(None, None)).is_err());
        let marker = HeaderValue::from_str(&access.forwarded_marker()).expect("marker");
        assert_eq!(
            name(access.authenticate(Some(&bearer("c")), Some(&marker))),
            Ok("core".into())
        );
        for forged in ["1", "c"] {
            let forged = HeaderValue::from_static(forged);
            let err =
                name(access.authenticate(Some(&bearer("c")), Some(&forged))).expect_err("forged");
            assert!(err.contains("x-raft-bus-forwarded"), "{err}");
        }

        // A new secret for core; the old one is out. An invalid file changes nothing.
        let core = access.authenticate(Some(&bearer("c")), None).expect("core");
        std::fs::write(
            &path,
            file(&[("peer", "peer", "p"), ("core", "core", "c2")]),
        )
        .expect("write");
        assert_eq!(access.reload(), Ok(2));
        assert!(name(access.authenticate(Some(&bearer("c")), None)).is_err());
        assert_eq!(
            name(access.authenticate(Some(&bearer("c2")), None)),
            Ok("core".into())
        );
        let revoked = access.revoked(&core);
        futures::pin_mut!(revoked);
        assert!(
            futures::FutureExt::now_or_never(revoked).is_some(),
            "the old credential is revoked"
        );
        for broken in [
            file(&[("core", "core", "c3")]),
            "[[client]".into(),
            file(&[("peer", "peer", "p"), ("x", "root", "y")]),
        ] {
            std::fs::write(&path, broken).expect("write");
            assert!(access.reload().is_err());
            assert_eq!(
                name(access.authenticate(Some(&bearer("c2")), None)),
                Ok("core".into())
            );
        }
    }
}
