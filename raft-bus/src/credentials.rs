//! The credentials file (`--credentials`): one `[[client]]` per bus client, with its role and
//! the SHA-256 of its secret.
//!
//! ```toml
//! [[client]]
//! name = "collector-billing"
//! role = "collector"               # collector | core | peer | admin
//! application = "billing"          # collectors only
//! data_entry_types = ["invoice"]   # collectors only, optional
//! secret = "sha256:<64 hex digits>"
//! ```
//!
//! Parsing never echoes a value of the file: a secret written in plain text by mistake must
//! not end up in the log that reports the mistake.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use taskpool_api::streams::valid_application;

/// What a client may do; see [`crate::access`] for the rights of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Collector,
    Core,
    Peer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Core => "core",
            Role::Peer => "peer",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Collector, Role::Core, Role::Peer, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// One bus client, as the file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub role: Role,
    /// A collector's application; `None` for every other role.
    pub application: Option<String>,
    /// Data-entry types a collector may write.
    pub data_entry_types: BTreeSet<String>,
    hash: [u8; 32],
}

/// `client NAME (ROLE)`, `client NAME (collector of application APP)`: how 403s and logs name it.
impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.application {
            Some(app) => write!(
                f,
                "client {} ({} of application {app})",
                self.name,
                self.role.as_str()
            ),
            None => write!(f, "client {} ({})", self.name, self.role.as_str()),
        }
    }
}

/// Every client of one version of the file.
#[derive(Debug, Default)]
pub struct Credentials {
    clients: Vec<std::sync::Arc<Client>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    client: Vec<Entry>,
}

/// Fields stay untyped (`toml::Value`) where serde's own message would quote the value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    role: Option<toml::Value>,
    application: Option<String>,
    data_entry_types: Option<Vec<String>>,
    secret: Option<toml::Value>,
}

const MAX_NAME_LEN: usize = 64;
const HASH_PREFIX: &str = "sha256:";

impl Credentials {
    /// Parses and checks a whole file; the error says what is wrong and where, never a value
    /// of a `secret`.
    pub fn parse(bytes: &[u8]) -> Result<Credentials, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("the file is not UTF-8 (at byte {})", e.valid_up_to()))?;
        let file: File = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        if file.client.is_empty() {
            return Err("the file names no [[client]]".into());
        }
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut clients = Vec::with_capacity(file.client.len());
        for (i, entry) in file.client.into_iter().enumerate() {
            let client =
                check_entry(entry).map_err(|e| format!("[[client]] number {}: {e}", i + 1))?;
            if !names.insert(client.name.clone()) {
                return Err(format!("client name `{}` appears twice", client.name));
            }
            if !hashes.insert(client.hash) {
                return Err(format!(
                    "client {} has the same secret as another client: give every client its own",
                    client.name
                ));
            }
            clients.push(std::sync::Arc::new(client));
        }
        Ok(Credentials { clients })
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client whose secret this is. Every entry is compared, in constant time each, so the
    /// time taken says nothing about which entry (if any) matched.
    pub fn find(&self, secret: &str) -> Option<&std::sync::Arc<Client>> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for client in &self.clients {
            if constant_time_eq(&client.hash, &hash) {
                found = Some(client);
            }
        }
        found
    }

    /// Whether `client` is still in force exactly as it was (same secret, name and rights).
    pub fn holds(&self, client: &Client) -> bool {
        self.clients.iter().any(|c| **c == *client)
    }
}

fn check_entry(e: Entry) -> Result<Client, String> {
    let name = e.name.ok_or("`name` is missing")?;
    check_client_name(&name)?;
    let role = match e.role {
        None => return Err(format!("client {name}: `role` is missing")),
        Some(toml::Value::String(s)) => Role::parse(&s).ok_or_else(|| {
            format!("client {name}: unknown role; use collector, core, peer or admin")
        })?,
        Some(_) => return Err(format!("client {name}: `role` must be a string")),
    };
    let application = match (role, e.application) {
        (Role::Collector, Some(app)) => {
            valid_application(&app).map_err(|why| format!("client {name}: {why}"))?;
            Some(app)
        }
        (Role::Collector, None) => {
            return Err(format!("client {name}: a collector needs `application`"))
        }
        (_, Some(_)) => {
            return Err(format!(
                "client {name}: only a collector has an `application`"
            ))
        }
        (_, None) => None,
    };
    let data_entry_types = match (role, e.data_entry_types) {
        (_, None) => BTreeSet::new(),
        (Role::Collector, Some(types)) => {
            for t in &types {
                check_entry_type(t).map_err(|why| format!("client {name}: {why}"))?;
            }
            types.into_iter().collect()
        }
        (_, Some(_)) => {
            return Err(format!(
                "client {name}: only a collector has `data_entry_types`"
            ))
        }
    };
    let hash = match e.secret {
        None => return Err(format!("client {name}: `secret` is missing")),
        Some(toml::Value::String(s)) => parse_hash(&s).ok_or_else(|| {
            format!(
                "client {name}: `secret` must be `{HASH_PREFIX}` and the 64 hex digits of the \
                 secret's SHA-256 (printf %s \"$SECRET\" | sha256sum), not the secret itself"
            )
        })?,
        Some(_) => return Err(format!("client {name}: `secret` must be a string")),
    };
    Ok(Client {
        name,
        role,
        application,
        data_entry_types,
        hash,
    })
}

/// Client names show up in logs and 403 messages: keep them plain.
fn check_client_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(plain) {
        return Err(format!(
            "client name `{}` must be 1 to {MAX_NAME_LEN} letters, digits, `-`, `_` or `.`",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// An entry type is the second segment of `data-entry/{entryType}/{entryId}`.
fn check_entry_type(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > MAX_NAME_LEN || t.contains('/') || t.chars().any(char::is_control)
    {
        return Err(format!(
            "data-entry type `{}` must be 1 to {MAX_NAME_LEN} characters without `/`",
            t.escape_debug()
        ));
    }
    Ok(())
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex_digits = s.strip_prefix(HASH_PREFIX)?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut hash).ok()?;
    Some(hash)
}

/// The parser's message and where, without the line it quotes (it may hold a secret).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            format!("not a valid credentials file (line {line}): {message}")
        }
        None => format!("not a valid credentials file: {message}"),
    }
}

/// Equal length and content, in time that depends only on the length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `sha256:<hex>` of a secret, as the file stores it.
pub fn hash_secret(secret: &str) -> String {
    format!(
        "{HASH_PREFIX}{}",
        hex::encode(Sha256::digest(secret.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(name: &str, role: &str, extra: &str, secret: &str) -> String {
        format!(
            "[[client]]\nname = \"{name}\"\nrole = \"{role}\"\n{extra}\nsecret = \"{}\"\n",
            hash_secret(secret)
        )
    }

    #[test]
    fn a_valid_file_finds_each_client_by_its_secret() {
        let file = [
            entry(
                "collector-billing",
                "collector",
                "application = \"billing\"\ndata_entry_types = [\"invoice\"]",
                "s1",
            ),
            entry("core", "core", "", "s2"),
            entry("peer", "peer", "", "s3"),
            entry("ops", "admin", "", "s4"),
        ]
        .concat();
        let creds = Credentials::parse(file.as_bytes()).expect("valid");
        assert_eq!(creds.len(), 4);
        let billing = creds.find("s1").expect("s1");
        assert_eq!(billing.role, Role::Collector);
        assert_eq!(billing.application.as_deref(), Some("billing"));
        assert!(billing.data_entry_types.contains("invoice"));
        assert_eq!(
            billing.to_string(),
            "client collector-billing (collector of application billing)"
        );
        assert_eq!(creds.find("s2").map(|c| c.role), Some(Role::Core));
        assert_eq!(
            creds.find("s4").map(|c| c.to_string()).as_deref(),
            Some("client ops (admin)")
        );
        assert!(creds.find("s5").is_none());
        assert!(creds.find("").is_none());
        assert!(creds.holds(billing));
    }

    #[test]
    fn upper_case_hex_is_the_same_hash() {
        let upper = format!(
            "[[client]]\nname = \"p\"\nrole = \"peer\"\nsecret = \"sha256:{}\"\n",
            hash_secret("x")[HASH_PREFIX.len()..].to_uppercase()
        );
        let creds = Credentials::parse(upper.as_bytes()).expect("valid");
        assert!(creds.find("x").is_some());
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        let cases: &[(String, &str)] = &[
            (entry("a", "root", "", "s"), "unknown role"),
            (
                [entry("a", "core", "", "s1"), entry("a", "admin", "", "s2")].concat(),
                "appears twice",
            ),
            (
                [entry("a", "core", "", "s"), entry("b", "admin", "", "s")].concat(),
                "same secret",
            ),
            (
                entry("a", "collector", "application = \"Billing\"", "s"),
                "[a-z][a-z0-9-]{0,39}",
            ),
            (entry("a", "collector", "", "s"), "needs `application`"),
            (
                entry("a", "core", "application = \"x\"", "s"),
                "only a collector",
            ),
            (
                entry("a", "core", "data_entry_types = [\"x\"]", "s"),
                "only a collector",
            ),
            (
                entry(
                    "a",
                    "collector",
                    "application = \"x\"\ndata_entry_types = [\"a/b\"]",
                    "s",
                ),
                "without `/`",
            ),
            (entry("bad name", "core", "", "s"), "client name"),
            (
                "[[client]]\nname = \"a\"\nrole = \"core\"\nsecret = \"sha256:abc\"\n".into(),
                "64 hex digits",
            ),
            (
                "[[client]]\nname = \"a\"\nrole = \"core\"\n".into(),
                "`secret` is missing",
            ),
            (
                "[[client]]\nname = \"a\"\nrole = \"core\"\nsecret = \"s\"\ncolour = 1\n".into(),
                "unknown field",
            ),
            ("".into(), "no [[client]]"),
            ("[[client]\n".into(), "line 1"),
        ];
        for (file, why) in cases {
            let err = Credentials::parse(file.as_bytes()).expect_err(file);
            assert!(err.contains(why), "{file:?}: {err}");
        }
    }

    #[test]
    fn no_refusal_quotes_a_secret() {
        let secret = "hunter2-plain-text";
        for file in [
            format!("[[client]]\nname = \"a\"\nrole = \"core\"\nsecret = \"{secret}\"\n"),
            format!("[[client]]\nname = \"a\"\nrole = \"core\"\nsecret = \"{secret}\n"),
            format!("[[client]]\nname = \"a\"\nrole = \"core\"\nsecret = {secret}\n"),
            format!("[[client]]\nname = \"a\"\nrole = \"{secret}\"\nsecret = \"x\"\n"),
            "[[client]]\nname = \"a\"\nrole = \"core\"\nsecret = 12345678\n".into(),
        ] {
            let err = Credentials::parse(file.as_bytes()).expect_err(&file);
            assert!(!err.contains(secret) && !err.contains("12345678"), "{err}");
        }
    }

    proptest! {
        /// Any bytes: parsed or refused, never a panic.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Credentials::parse(&bytes);
        }

        /// Files of the right shape with any field values.
        #[test]
        fn any_field_values_parse_or_are_refused(
            name in ".{0,70}", role in "[a-z]{0,10}", app in proptest::option::of(".{0,50}"),
            types in proptest::option::of(proptest::collection::vec(".{0,10}", 0..3)),
            secret in ".{0,80}",
        ) {
            let mut file = format!("[[client]]\nname = {name:?}\nrole = {role:?}\nsecret = {secret:?}\n");
            if let Some(app) = app {
                file.push_str(&format!("application = {app:?}\n"));
            }
            if let Some(types) = types {
                file.push_str(&format!("data_entry_types = {types:?}\n"));
            }
            if let Ok(creds) = Credentials::parse(file.as_bytes()) {
                prop_assert_eq!(creds.len(), 1);
            }
        }
    }
}
