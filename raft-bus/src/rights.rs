//! What each role may do, and the 403 that says what a caller lacks.
//!
//! | role | may |
//! | --- | --- |
//! | `peer` | the Raft RPC (`/raft/*`) |
//! | `collector` of X | read, cluster view; append to X's streams (and granted data-entry types); handle and answer commands routed to X |
//! | `core` | read, cluster view; send commands |
//! | `admin` | read, cluster view; learners and membership |
//!
//! Which streams are X's is [`taskpool_api::streams`]'s rule. Without `--credentials` every
//! caller is [`Caller::Trusted`] (the `--token` holder, or anyone on an open bus).

use std::collections::HashSet;
use std::sync::Arc;

use taskpool_api::bus::AppendRequest;
use taskpool_api::streams::{data_entry_type, stream_application};
use uuid::Uuid;

use crate::credentials::{Client, Role};
use crate::error::BusError;

/// What a route does, as far as rights go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /v1/events`, `/v1/streams/{s}`, `/v1/subscribe`.
    Read,
    /// `GET /v1/cluster`.
    Cluster,
    /// `POST /v1/append`; the streams are checked by [`Caller::may_append`].
    Append,
    /// `POST /v1/commands`.
    SendCommand,
    /// `GET /v1/handlers/subscribe`; the routing keys by [`Caller::may_handle`].
    HandleCommands,
    /// `POST /v1/commands/{id}/result`; the command's routing key on the leader.
    AnswerCommand,
    /// `POST /v1/cluster/learners`, `/v1/cluster/membership`.
    Membership,
    /// `/raft/*`.
    RaftRpc,
}

impl Action {
    fn allowed(self, role: Role) -> bool {
        use Action::*;
        match role {
            Role::Peer => self == RaftRpc,
            Role::Collector => matches!(
                self,
                Read | Cluster | Append | HandleCommands | AnswerCommand
            ),
            Role::Core => matches!(self, Read | Cluster | SendCommand),
            Role::Admin => matches!(self, Read | Cluster | Membership),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Read => "read events",
            Action::Cluster => "read the cluster view",
            Action::Append => "append events",
            Action::SendCommand => "send commands",
            Action::HandleCommands => "handle commands",
            Action::AnswerCommand => "answer commands",
            Action::Membership => "change the cluster membership",
            Action::RaftRpc => "call the Raft RPC",
        }
    }
}

/// Who sent a request, as authentication found it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No `--credentials`: the `--token` holder, or anyone on an open bus. Every right.
    Trusted,
    Client(Arc<Client>),
}

impl Caller {
    /// The `role` label of `raftbus_forbidden_total`.
    pub fn role_label(&self) -> &'static str {
        match self {
            Caller::Trusted => "trusted",
            Caller::Client(c) => c.role.as_str(),
        }
    }

    /// Client name for logs; empty when trusted.
    pub fn name(&self) -> &str {
        match self {
            Caller::Trusted => "",
            Caller::Client(c) => &c.name,
        }
    }

    /// Handler ids are per client: a handler id chosen by one client cannot replace another
    /// client's handler connection.
    pub fn owner(&self) -> &str {
        self.name()
    }

    pub fn may(&self, action: Action) -> Result<(), BusError> {
        match self {
            Caller::Client(c) if !action.allowed(c.role) => Err(BusError::Forbidden(format!(
                "{c} may not {}",
                action.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// Every event's stream and every `expectedVersions` stream must be the caller's to write.
    pub fn may_append(&self, request: &AppendRequest) -> Result<(), BusError> {
        let Caller::Client(c) = self else {
            return Ok(());
        };
        for e in &request.events {
            if let Err(why) = writable(c, &e.stream) {
                return Err(BusError::Forbidden(format!(
                    "{c} may not append to stream {}: {why}",
                    e.stream
                )));
            }
        }
        for stream in request.expected_versions.keys() {
            if let Err(why) = writable(c, stream) {
                return Err(BusError::Forbidden(format!(
                    "{c} may not append to stream {stream} (named in expectedVersions): {why}"
                )));
            }
        }
        Ok(())
    }

    /// Whether commands of `routing_key` are the caller's to handle and answer.
    pub fn handles(&self, routing_key: &str) -> bool {
        match self {
            Caller::Trusted => true,
            Caller::Client(c) => c.application.as_deref() == Some(routing_key),
        }
    }

    pub fn may_handle(&self, routing_keys: &HashSet<String>) -> Result<(), BusError> {
        let Caller::Client(c) = self else {
            return Ok(());
        };
        let mut keys: Vec<&String> = routing_keys.iter().collect();
        keys.sort();
        match keys.into_iter().find(|k| !self.handles(k)) {
            None => Ok(()),
            Some(key) => Err(BusError::Forbidden(format!(
                "{c} may not handle commands of routing key {key}: {}",
                own_key(c)
            ))),
        }
    }

    /// The refusal of a result for a command of another routing key.
    pub fn may_not_answer(&self, id: Uuid, routing_key: &str) -> BusError {
        let who = match self {
            Caller::Trusted => "this caller".to_string(),
            Caller::Client(c) => c.to_string(),
        };
        let own = match self {
            Caller::Client(c) => own_key(c),
            Caller::Trusted => String::new(),
        };
        BusError::Forbidden(format!(
            "{who} may not answer command {id}: its routing key is {routing_key}; {own}"
        ))
    }
}

fn own_key(c: &Client) -> String {
    match &c.application {
        Some(app) => format!("it handles only routing key {app}"),
        None => "it handles no commands".into(),
    }
}

/// Why `stream` is not the client's to write, if it is not.
fn writable(c: &Client, stream: &str) -> Result<(), String> {
    if let Some(app) = stream_application(stream) {
        return match &c.application {
            Some(own) if own == app => Ok(()),
            _ => Err(format!("it belongs to application {app}")),
        };
    }
    if let Some(entry_type) = data_entry_type(stream) {
        if c.data_entry_types.contains(entry_type) {
            return Ok(());
        }
        return Err(format!("data-entry type {entry_type} is not granted to it"));
    }
    Err("it belongs to no application".into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use taskpool_api::bus::NewEvent;

    use super::*;
    use crate::credentials::{hash_secret, Credentials};

    fn caller(role: &str, extra: &str) -> Caller {
        let file = format!(
            "[[client]]\nname = \"c\"\nrole = \"{role}\"\n{extra}\nsecret = \"{}\"\n",
            hash_secret("s")
        );
        let creds = Credentials::parse(file.as_bytes()).expect("valid");
        Caller::Client(creds.find("s").expect("client").clone())
    }

    fn billing() -> Caller {
        caller(
            "collector",
            "application = \"billing\"\ndata_entry_types = [\"invoice\"]",
        )
    }

    fn append(streams: &[&str], expected: &[&str]) -> AppendRequest {
        AppendRequest {
            events: streams
                .iter()
                .map(|s| NewEvent::new(*s, "E", &json!({})).expect("event"))
                .collect(),
            expected_versions: expected
                .iter()
                .map(|s| (s.to_string(), -1))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn each_role_has_its_actions_only() {
        use Action::*;
        let all = [
            Read,
            Cluster,
            Append,
            SendCommand,
            HandleCommands,
            AnswerCommand,
            Membership,
            RaftRpc,
        ];
        let allowed = |c: &Caller| {
            all.iter()
                .copied()
                .filter(|a| c.may(*a).is_ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            allowed(&billing()),
            [Read, Cluster, Append, HandleCommands, AnswerCommand]
        );
        assert_eq!(allowed(&caller("core", "")), [Read, Cluster, SendCommand]);
        assert_eq!(allowed(&caller("admin", "")), [Read, Cluster, Membership]);
        assert_eq!(allowed(&caller("peer", "")), [RaftRpc]);
        assert_eq!(allowed(&Caller::Trusted), all);
        let err = caller("core", "")
            .may(Append)
            .expect_err("core appends not");
        assert_eq!(err.to_string(), "client c (core) may not append events");
    }

    #[test]
    fn a_collector_writes_its_application_and_granted_entries_only() {
        let c = billing();
        assert!(c
            .may_append(&append(
                &["task/billing/1", "identity/billing", "data-entry/invoice/7"],
                &["task/billing/1"]
            ))
            .is_ok());
        for (streams, expected, why) in [
            (
                &["task/local/42"][..],
                &[][..],
                "may not append to stream task/local/42: it belongs to application local",
            ),
            (&["task-1"], &[], "task-1: it belongs to no application"),
            (&["task/billing/1", "task/local/1"], &[], "task/local/1"),
            (
                &["task/billing/1"],
                &["task/local/1"],
                "task/local/1 (named in expectedVersions)",
            ),
            (
                &["data-entry/order/1"],
                &[],
                "data-entry type order is not granted",
            ),
        ] {
            let err = c.may_append(&append(streams, expected)).expect_err(why);
            assert!(err.to_string().contains(why), "{err}");
            assert!(err
                .to_string()
                .starts_with("client c (collector of application billing)"));
        }
        assert!(caller("core", "")
            .may_append(&append(&["task/billing/1"], &[]))
            .is_err());
        assert!(Caller::Trusted
            .may_append(&append(&["task-1"], &["x"]))
            .is_ok());
    }

    #[test]
    fn a_collector_handles_its_routing_key_only() {
        let c = billing();
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert!(c.may_handle(&keys(&["billing"])).is_ok());
        let err = c
            .may_handle(&keys(&["billing", "local"]))
            .expect_err("local");
        assert!(err.to_string().contains("routing key local"), "{err}");
        assert!(c.handles("billing") && !c.handles("local"));
        assert!(Caller::Trusted.handles("anything"));
        let id = Uuid::nil();
        let err = c.may_not_answer(id, "local").to_string();
        assert!(
            err.contains("may not answer command") && err.contains("routing key is local"),
            "{err}"
        );
    }
}
