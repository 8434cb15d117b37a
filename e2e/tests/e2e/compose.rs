//! docker-compose.yml cannot run here (no Docker engine), so Debian's `docker-compose config`
//! checks it, and this test holds its settings to the local stack's: the same process
//! applications (local, billing) with the same ports and databases, a bus credential of its own
//! for every client, and the same Prometheus jobs.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use testkit::engine::REPO;

const SECRETS: [(&str, &str); 9] = [
    ("TASKPOOL_BUS_PEER_SECRET", "bus-peer-secret-for-the-test"),
    ("TASKPOOL_BUS_ADMIN_SECRET", "bus-admin-secret-for-the-test"),
    ("TASKPOOL_BUS_CORE_SECRET", "bus-core-secret-for-the-test"),
    (
        "TASKPOOL_BUS_COLLECTOR_LOCAL_SECRET",
        "bus-collector-local-secret-for-the-test",
    ),
    (
        "TASKPOOL_BUS_COLLECTOR_BILLING_SECRET",
        "bus-collector-billing-secret-for-the-test",
    ),
    ("TASKPOOL_HOOK_SECRET", "hook-secret-for-the-test"),
    ("TASKPOOL_JWT_SECRET", "jwt-secret-for-the-test-0123456789"),
    ("POSTGRES_PASSWORD", "postgres-password-for-the-test"),
    ("CAMUNDA_ADMIN_PASSWORD", "demo"),
];

/// The secret of `name` among [`SECRETS`].
fn secret(name: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .expect("a secret of the test")
}

/// `docker-compose ARGS` with the test's secrets, less those in `missing`.
fn compose(args: &[&str], missing: &[&str]) -> std::process::Output {
    // Only this test's environment, not a developer's .env.
    let no_env = tempfile::NamedTempFile::new().expect("empty env file");
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(REPO)
        .arg("--env-file")
        .arg(no_env.path())
        .args(["-f", "docker-compose.yml"])
        .args(args);
    for (k, v) in SECRETS {
        cmd.env_remove(k);
        if !missing.contains(&k) {
            cmd.env(k, v);
        }
    }
    cmd.output().unwrap_or_else(|e| {
        panic!("docker-compose: {e}; install it with `apt-get install docker-compose` (scripts/test does)")
    })
}

/// `docker-compose config`'s output, as service → its lines (indented by four). A long value
/// that it folds onto the next line, deeper indented, is joined back.
fn services(config: &str) -> BTreeMap<String, Vec<String>> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_services = false;
    let mut current = None;
    let mut previous = "";
    for line in config.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
        } else if in_services && line.starts_with("  ") && !line.starts_with("   ") {
            let name = line.trim().trim_end_matches(':').to_owned();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(name) = &current {
            let lines = out.get_mut(name).expect("service");
            let folded = indent(line) > indent(previous)
                && previous.contains(": ")
                && !previous.trim_start().starts_with("- ")
                && !line.contains(": ")
                && !line.trim_start().starts_with("- ");
            match lines.last_mut() {
                Some(last) if folded => {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                _ => lines.push(line.trim().to_owned()),
            }
        }
        previous = line;
    }
    out
}

/// The value of `KEY: value` among a service's lines.
fn setting<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("{key}: ");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim_matches(|c| c == '"' || c == '\''))
}

/// The value of `KEY: value`, which the service must have.
fn must<'a>(services: &'a BTreeMap<String, Vec<String>>, service: &str, key: &str) -> &'a str {
    setting(&services[service], key).unwrap_or_else(|| panic!("{service} sets no {key}"))
}

/// The default a local-stack script gives a variable: `VAR="${VAR:-default}"`.
fn script_default(script: &str, var: &str) -> String {
    let path = format!("{REPO}/deploy/scripts/{script}");
    let text = std::fs::read_to_string(&path).expect("script");
    let marker = format!("{var}:-");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("{path} sets no default for {var}"))
        + marker.len();
    text[start..].split('}').next().expect("default").to_owned()
}

/// What follows the last `/` (a database of a URL) or `:` (a port of an address).
fn last(value: &str, sep: char) -> &str {
    value.rsplit(sep).next().expect("non-empty")
}

fn sha256_hex(secret: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(secret.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8(out.stdout).expect("utf-8")[..64].to_owned()
}

fn config() -> (String, BTreeMap<String, Vec<String>>) {
    let out = compose(&["config"], &[]);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = String::from_utf8(out.stdout).expect("utf-8");
    let services = services(&config);
    (config, services)
}

#[test]
fn the_compose_file_is_valid_and_matches_the_local_stack() {
    let (config, services) = config();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bus-credentials",
            "bus1",
            "bus2",
            "bus3",
            "camunda",
            "camunda-billing",
            "collector",
            "collector-billing",
            "demo",
            "mongo",
            "postgres",
            "prometheus",
            "taskpool-core"
        ]
    );

    // The ports of DESIGN.md's local defaults, published the same.
    for (service, port) in [
        ("bus1", 7101),
        ("bus2", 7102),
        ("bus3", 7103),
        ("collector", 7201),
        ("collector-billing", 7202),
        ("taskpool-core", 7301),
        ("camunda", 8080),
        ("camunda-billing", 8081),
        ("prometheus", 9090),
    ] {
        let lines = &services[service];
        assert!(
            lines.contains(&format!("- published: {port}")),
            "{service} publishes {port}: {lines:?}"
        );
    }
    // Every long-running service has a healthcheck; ours run from the non-root image.
    for (name, lines) in &services {
        if name != "demo" && name != "bus-credentials" {
            assert!(
                lines.iter().any(|l| l == "healthcheck:"),
                "{name} has no healthcheck"
            );
        }
    }
    // The same settings as the local stack's scripts.
    let collector = &services["collector"];
    for var in ["COLLECTOR_APPLICATION", "COLLECTOR_MODE"] {
        assert_eq!(
            setting(collector, var),
            Some(script_default("collector.sh", var).as_str()),
            "{var}"
        );
    }
    assert_eq!(
        setting(&services["taskpool-core"], "TASKPOOL_DATABASE"),
        Some(script_default("core.sh", "TASKPOOL_DATABASE").as_str())
    );
    for engine in ["camunda", "camunda-billing"] {
        assert_eq!(
            setting(&services[engine], "CAMUNDA_BPM_ADMINUSER_ID"),
            Some(script_default("camunda.sh", "CAMUNDA_ADMIN_USER").as_str()),
            "{engine}"
        );
        assert_eq!(
            setting(&services[engine], "CAMUNDA_BPM_HISTORYLEVEL"),
            Some("full"),
            "{engine}: the collector polls the identity-link log"
        );
    }
    assert_eq!(
        setting(&services["camunda"], "TASKPOOL_HOOK_URL"),
        Some("http://collector:7201/v1/hooks")
    );
    // The secrets come from the environment (.env), none is built in.
    for (var, value) in SECRETS {
        assert!(config.contains(value), "{var} is used");
    }

    let dockerfile =
        std::fs::read_to_string(format!("{REPO}/deploy/docker/Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "multi-stage");
    // The one-shot bus-credentials runs bash and sha256sum in it.
    assert!(
        stages[1].starts_with("FROM debian:"),
        "a Debian image (bash, coreutils): {}",
        stages[1]
    );
    assert!(
        dockerfile.contains("\nUSER taskpool"),
        "runs as a non-root user"
    );
}

/// The second process application as the local stack runs it: its own engine without hooks,
/// its own databases, its collector polling every second on 7202 as application billing.
#[test]
fn billing_is_a_second_process_application_as_in_the_local_stack() {
    let (_, services) = config();
    let engine = &services["camunda-billing"];
    assert_eq!(
        setting(engine, "image"),
        Some("camunda/camunda-bpm-platform:run-7.24.0")
    );
    assert!(
        setting(engine, "TASKPOOL_HOOK_URL").is_none()
            && setting(engine, "CAMUNDA_BPM_RUN_PROCESSENGINEPLUGINS_0_PLUGINCLASS").is_none(),
        "no hook plugin: {engine:?}"
    );
    assert_eq!(
        script_default("camunda.sh", "TASKPOOL_BILLING_HOOK_URL"),
        ""
    );
    // It checks authorizations, in compose as in the local stack.
    assert_eq!(
        must(
            &services,
            "camunda-billing",
            "CAMUNDA_BPM_AUTHORIZATION_ENABLED"
        ),
        script_default("camunda.sh", "CAMUNDA_BILLING_AUTHORIZATION_ENABLED")
    );
    assert!(
        engine.contains(&format!(
            "- published: {}",
            script_default("camunda.sh", "CAMUNDA_BILLING_PORT")
        )),
        "{engine:?}"
    );

    let collector = "collector-billing";
    assert_eq!(
        must(&services, collector, "COLLECTOR_APPLICATION"),
        "billing"
    );
    assert!(
        std::fs::read_to_string(format!("{REPO}/deploy/scripts/collector.sh"))
            .expect("collector.sh")
            .contains("export COLLECTOR_APPLICATION=billing")
    );
    assert_eq!(
        must(&services, collector, "COLLECTOR_MODE"),
        script_default("collector.sh", "COLLECTOR_BILLING_MODE")
    );
    assert_eq!(
        must(&services, collector, "COLLECTOR_POLL_INTERVAL"),
        script_default("collector.sh", "COLLECTOR_BILLING_POLL_INTERVAL")
    );
    assert_eq!(
        must(&services, collector, "COLLECTOR_ENGINE_URL"),
        "http://camunda-billing:8080/engine-rest"
    );
    assert!(setting(&services[collector], "COLLECTOR_HOOK_SECRET").is_none());
    // Ports and databases, instance by instance.
    for (service, script_var) in [
        ("collector", "COLLECTOR_LISTEN"),
        ("collector-billing", "COLLECTOR_BILLING_LISTEN"),
    ] {
        assert_eq!(
            last(must(&services, service, "COLLECTOR_LISTEN"), ':'),
            last(&script_default("collector.sh", script_var), ':'),
            "{service}"
        );
    }
    let init = std::fs::read_to_string(format!("{REPO}/deploy/docker/postgres-init.sql"))
        .expect("postgres-init.sql");
    let local_databases = script_default("postgres.sh", "PG_DATABASES");
    let postgres_db = must(&services, "postgres", "POSTGRES_DB");
    for (service, key, script, script_var) in [
        ("camunda", "DB_URL", "camunda.sh", "CAMUNDA_DB_URL"),
        (
            "camunda-billing",
            "DB_URL",
            "camunda.sh",
            "CAMUNDA_BILLING_DB_URL",
        ),
        (
            "collector",
            "COLLECTOR_DATABASE_URL",
            "collector.sh",
            "COLLECTOR_DATABASE_URL",
        ),
        (
            "collector-billing",
            "COLLECTOR_DATABASE_URL",
            "collector.sh",
            "COLLECTOR_BILLING_DATABASE_URL",
        ),
    ] {
        let database = last(must(&services, service, key), '/');
        assert_eq!(
            database,
            last(&script_default(script, script_var), '/'),
            "{service}'s database"
        );
        assert!(
            database == postgres_db || init.contains(&format!("CREATE DATABASE {database};")),
            "postgres creates {database} (deploy/docker/postgres-init.sql)"
        );
        assert!(
            local_databases.split(' ').any(|d| d == database),
            "postgres.sh creates {database}: {local_databases}"
        );
    }
}

/// Every bus client has a credential of its own: the nodes read a credentials file that the
/// one-shot bus-credentials writes from the secrets, and nothing uses one shared token.
#[test]
fn every_bus_client_has_its_own_credential() {
    let (config, services) = config();
    assert!(!config.contains("RAFT_BUS_TOKEN"), "no single bus token");
    let writer = &services["bus-credentials"];
    assert_eq!(setting(writer, "restart"), Some("no"), "a one-shot");
    for node in ["bus1", "bus2", "bus3"] {
        let lines = &services[node];
        assert_eq!(
            setting(lines, "RAFT_BUS_CREDENTIALS"),
            Some("/etc/taskpool/bus/credentials.toml"),
            "{node}"
        );
        assert_eq!(
            setting(lines, "RAFT_BUS_PEER_TOKEN"),
            Some(secret("TASKPOOL_BUS_PEER_SECRET")),
            "{node}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "- bus-credentials:/etc/taskpool/bus:ro"),
            "{node} mounts the credentials read-only: {lines:?}"
        );
        let waits = lines.windows(2).any(|w| {
            w[0] == "bus-credentials:" && w[1] == "condition: service_completed_successfully"
        });
        assert!(
            waits,
            "{node} starts once the credentials are written: {lines:?}"
        );
    }

    // The clients, as the local stack's bus.sh has them.
    let clients: Vec<&str> = must(&services, "bus-credentials", "BUS_CLIENTS")
        .split(' ')
        .collect();
    let mut local_clients = vec!["peer:peer", "admin:admin", "core:core"];
    let applications = script_default("bus.sh", "BUS_APPLICATIONS");
    let collectors: Vec<String> = applications
        .split(' ')
        .map(|app| format!("collector-{app}:collector:{app}"))
        .collect();
    local_clients.extend(collectors.iter().map(String::as_str));
    assert_eq!(clients, local_clients);
    // Each client's own secret, and each service presents the one of its client.
    let users = [
        ("taskpool-core", "TASKPOOL_BUS_TOKEN", "core"),
        ("collector", "COLLECTOR_BUS_TOKEN", "collector-local"),
        (
            "collector-billing",
            "COLLECTOR_BUS_TOKEN",
            "collector-billing",
        ),
    ];
    for (service, key, client) in users {
        let var = format!("BUS_SECRET_{}", client.to_uppercase().replace('-', "_"));
        assert_eq!(
            setting(&services[service], key),
            setting(writer, &var),
            "{service} presents the secret of client {client}"
        );
    }
    for (service, _, client) in users.iter().filter(|u| u.2.starts_with("collector-")) {
        assert_eq!(
            client.strip_prefix("collector-"),
            Some(must(&services, service, "COLLECTOR_APPLICATION")),
            "{service}'s credential is for its application"
        );
    }
    let mut distinct: Vec<&str> = clients
        .iter()
        .map(|c| {
            let name = c.split(':').next().expect("name");
            let var = format!("BUS_SECRET_{}", name.to_uppercase().replace('-', "_"));
            must(&services, "bus-credentials", &var)
        })
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), clients.len(), "one secret per client");

    // What the one-shot writes, run here with the same environment.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("credentials.toml");
    let mut cmd = Command::new("bash");
    cmd.arg(format!("{REPO}/deploy/docker/bus-credentials.sh"))
        .env("BUS_CREDENTIALS_FILE", &file)
        .env("BUS_CLIENTS", clients.join(" "));
    for c in &clients {
        let name = c.split(':').next().expect("name");
        let var = format!("BUS_SECRET_{}", name.to_uppercase().replace('-', "_"));
        cmd.env(&var, must(&services, "bus-credentials", &var));
    }
    let out = cmd.output().expect("bash");
    assert!(
        out.status.success(),
        "bus-credentials.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).expect("credentials file");
    for (name, var) in [
        ("peer", "TASKPOOL_BUS_PEER_SECRET"),
        ("admin", "TASKPOOL_BUS_ADMIN_SECRET"),
        ("core", "TASKPOOL_BUS_CORE_SECRET"),
        ("collector-local", "TASKPOOL_BUS_COLLECTOR_LOCAL_SECRET"),
        ("collector-billing", "TASKPOOL_BUS_COLLECTOR_BILLING_SECRET"),
    ] {
        let role = clients
            .iter()
            .find_map(|c| {
                let mut parts = c.split(':');
                (parts.next() == Some(name)).then(|| parts.collect::<Vec<_>>())
            })
            .expect("client");
        let mut entry = format!("[[client]]\nname = \"{name}\"\nrole = \"{}\"\n", role[0]);
        if let Some(app) = role.get(1) {
            entry.push_str(&format!("application = \"{app}\"\n"));
        }
        entry.push_str(&format!(
            "secret = \"sha256:{}\"\n",
            sha256_hex(secret(var))
        ));
        assert!(written.contains(&entry), "{entry} in:\n{written}");
        assert!(!written.contains(secret(var)), "only hashes");
    }
}

/// One Prometheus file for compose, the local stack and the tests: every collector and node of
/// the compose file is scraped, and the local copy replaces every compose address.
#[test]
fn prometheus_scrapes_every_service_of_the_compose_file() {
    let (_, services) = config();
    let file =
        std::fs::read_to_string(format!("{REPO}/deploy/prometheus.yml")).expect("prometheus.yml");
    for (service, lines) in &services {
        let Some(listen) = setting(lines, "COLLECTOR_LISTEN")
            .or_else(|| setting(lines, "RAFT_BUS_LISTEN"))
            .or_else(|| setting(lines, "TASKPOOL_LISTEN"))
        else {
            continue;
        };
        let target = format!("\"{service}:{}\"", last(listen, ':'));
        assert!(file.contains(&target), "prometheus.yml scrapes {target}");
    }
    let local = Command::new("bash")
        .arg(format!("{REPO}/deploy/scripts/prometheus.sh"))
        .arg("config")
        .output()
        .expect("prometheus.sh config");
    assert!(local.status.success());
    let local = String::from_utf8(local.stdout).expect("utf-8");
    for service in [
        "bus1",
        "bus2",
        "bus3",
        "collector",
        "collector-billing",
        "taskpool-core",
    ] {
        assert!(
            !local.contains(&format!("\"{service}:")),
            "prometheus.sh config replaces {service}: {local}"
        );
    }
    assert!(local.contains("\"127.0.0.1:7202\""), "{local}");
}

#[test]
fn the_compose_file_refuses_to_start_without_its_secrets() {
    let out = compose(&["config", "-q"], &SECRETS.map(|(k, _)| k));
    assert!(!out.status.success(), "no default secrets");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TASKPOOL_BUS_PEER_SECRET") || err.contains("POSTGRES_PASSWORD"),
        "{err}"
    );
    assert!(err.contains(".env"), "says where to set them: {err}");
    // Each one alone missing stops it too, and is named.
    for (var, _) in SECRETS {
        let out = compose(&["config", "-q"], &[var]);
        assert!(!out.status.success(), "{var} has no default");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "names {var}: {err}");
    }
}
