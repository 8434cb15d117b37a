//! docker-compose.yml cannot run here (no Docker engine), so Debian's `docker-compose config`
//! checks it, and this test holds its settings to the local stack's.

use std::collections::BTreeMap;
use std::process::Command;

use testkit::engine::REPO;

const SECRETS: [(&str, &str); 5] = [
    ("TASKPOOL_BUS_TOKEN", "bus-token-for-the-test"),
    ("TASKPOOL_HOOK_SECRET", "hook-secret-for-the-test"),
    ("TASKPOOL_JWT_SECRET", "jwt-secret-for-the-test-0123456789"),
    ("POSTGRES_PASSWORD", "postgres-password-for-the-test"),
    ("CAMUNDA_ADMIN_PASSWORD", "demo"),
];

fn compose(args: &[&str], secrets: bool) -> std::process::Output {
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
        if secrets {
            cmd.env(k, v);
        }
    }
    cmd.output().unwrap_or_else(|e| {
        panic!("docker-compose: {e}; install it with `apt-get install docker-compose` (scripts/test does)")
    })
}

/// `docker-compose config`'s output, as service → its lines (indented by four).
fn services(config: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_services = false;
    let mut current = None;
    for line in config.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
        } else if in_services && line.starts_with("  ") && !line.starts_with("   ") {
            let name = line.trim().trim_end_matches(':').to_owned();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(name) = &current {
            out.get_mut(name)
                .expect("service")
                .push(line.trim().to_owned());
        }
    }
    out
}

/// The value of `KEY: value` among a service's lines.
fn setting<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("{key}: ");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim_matches('"'))
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

#[test]
fn the_compose_file_is_valid_and_matches_the_local_stack() {
    let out = compose(&["config"], true);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = String::from_utf8(out.stdout).expect("utf-8");
    let services = services(&config);
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bus1",
            "bus2",
            "bus3",
            "camunda",
            "collector",
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
        ("taskpool-core", 7301),
        ("camunda", 8080),
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
        if name != "demo" {
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
    assert_eq!(
        setting(&services["camunda"], "CAMUNDA_BPM_ADMINUSER_ID"),
        Some(script_default("camunda.sh", "CAMUNDA_ADMIN_USER").as_str())
    );
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
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "multi-stage");
    assert!(
        dockerfile.contains("\nUSER taskpool"),
        "runs as a non-root user"
    );
}

#[test]
fn the_compose_file_refuses_to_start_without_its_secrets() {
    let out = compose(&["config", "-q"], false);
    assert!(!out.status.success(), "no default secrets");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TASKPOOL_BUS_TOKEN") || err.contains("POSTGRES_PASSWORD"),
        "{err}"
    );
    assert!(err.contains(".env"), "says where to set them: {err}");
}
