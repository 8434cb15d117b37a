//! Bus clients of a cluster started with `--credentials` ([`crate::Cluster::start_with_credentials`]):
//! each with a random secret, written to the nodes' credentials file as its SHA-256.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The peer entry the nodes send as `RAFT_BUS_PEER_TOKEN`.
pub const PEER_CLIENT: &str = "testkit-peer";
/// The admin entry the cluster's own helpers (`client`, `leader`, `wait_head`, …) use.
pub const ADMIN_CLIENT: &str = "testkit-admin";

/// One `[[client]]` of the credentials file, with its secret in plain text (tests send it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusCredential {
    pub name: String,
    /// `collector`, `core`, `peer` or `admin`.
    pub role: String,
    pub application: Option<String>,
    pub data_entry_types: Vec<String>,
    pub secret: String,
}

impl BusCredential {
    fn new(name: &str, role: &str) -> Self {
        BusCredential {
            name: name.into(),
            role: role.into(),
            application: None,
            data_entry_types: Vec::new(),
            secret: random_secret(),
        }
    }

    /// A collector of `application`, e.g. `collector("collector-billing", "billing")`.
    pub fn collector(name: &str, application: &str) -> Self {
        BusCredential {
            application: Some(application.into()),
            ..Self::new(name, "collector")
        }
    }

    pub fn core(name: &str) -> Self {
        Self::new(name, "core")
    }

    pub fn admin(name: &str) -> Self {
        Self::new(name, "admin")
    }

    pub fn peer(name: &str) -> Self {
        Self::new(name, "peer")
    }

    /// Grants a collector data-entry types it may write.
    pub fn with_data_entry_types(mut self, types: &[&str]) -> Self {
        self.data_entry_types = types.iter().map(|t| t.to_string()).collect();
        self
    }

    /// The same client with a new random secret.
    pub fn with_new_secret(self) -> Self {
        BusCredential {
            secret: random_secret(),
            ..self
        }
    }

    fn toml(&self) -> String {
        let mut out = format!(
            "[[client]]\nname = {:?}\nrole = {:?}\n",
            self.name, self.role
        );
        if let Some(app) = &self.application {
            out.push_str(&format!("application = {app:?}\n"));
        }
        if !self.data_entry_types.is_empty() {
            out.push_str(&format!("data_entry_types = {:?}\n", self.data_entry_types));
        }
        out.push_str(&format!("secret = \"{}\"\n", hash_secret(&self.secret)));
        out
    }
}

/// `sha256:<hex>` of a secret, as the credentials file stores it.
pub fn hash_secret(secret: &str) -> String {
    format!("sha256:{}", to_hex(&Sha256::digest(secret.as_bytes())))
}

/// 32 random bytes as hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
        &mut bytes,
    )
    .expect("random bytes");
    to_hex(&bytes)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces the file in one rename, so that a node never reads half of it.
pub fn write_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write credentials");
    std::fs::rename(&tmp, path).expect("replace credentials");
}

pub fn file_of(clients: &[BusCredential]) -> String {
    clients
        .iter()
        .map(BusCredential::toml)
        .collect::<Vec<_>>()
        .join("\n")
}
