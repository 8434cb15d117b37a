//! Conventions the services' configurations share. The flags stay in each service's config:
//! their environment names carry the service's prefix (`COLLECTOR_BUS`, `TASKPOOL_BUS`, …),
//! which is a contract, and clap's derive fixes each `env` name per struct: one shared
//! `#[derive(Args)]` struct could not give the collector and taskpool-core their own names.
//! What is shared is the default and the check.

/// The default of every service's `--bus`: the three nodes of `deploy/`.
pub const DEFAULT_BUS_NODES: &str =
    "http://127.0.0.1:7101,http://127.0.0.1:7102,http://127.0.0.1:7103";

/// Refuses a `--bus` without a node, with the message every service gives.
pub fn check_bus_nodes(nodes: &[String]) -> Result<(), String> {
    if nodes.is_empty() {
        return Err("--bus needs at least one node URL".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bus_needs_a_node() {
        assert!(check_bus_nodes(&[]).is_err());
        assert!(check_bus_nodes(&["http://127.0.0.1:7101".into()]).is_ok());
        let defaults: Vec<String> = DEFAULT_BUS_NODES.split(',').map(str::to_owned).collect();
        assert_eq!(defaults.len(), 3);
        assert!(check_bus_nodes(&defaults).is_ok());
    }
}
