//! A real Prometheus (Debian's package) scraping a test's services with the jobs of
//! `deploy/prometheus.yml`, the file docker-compose.yml mounts; only the addresses differ.

use std::time::Duration;

use serde_json::Value;
use testkit::engine::REPO;
use testkit::{free_port, wait_for, Service};

pub struct Prometheus {
    pub url: String,
    http: reqwest::Client,
    _service: Service,
    _dir: tempfile::TempDir,
}

/// `deploy/prometheus.yml` with each compose address (`"bus1:7101"`) replaced by the one given,
/// `"localhost:9090"` by Prometheus's own, and scrapes every second so a test need not wait.
pub fn config(targets: &[(&str, String)], own: &str) -> String {
    let path = format!("{REPO}/deploy/prometheus.yml");
    let mut config = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    for (from, to) in targets.iter().chain([&("localhost:9090", own.to_owned())]) {
        let quoted = format!("\"{from}\"");
        assert!(config.contains(&quoted), "{path} has no target {quoted}");
        config = config.replace(&quoted, &format!("\"{to}\""));
    }
    config.replace("scrape_interval: 5s", "scrape_interval: 1s")
}

impl Prometheus {
    /// Starts Prometheus for `targets` (compose address → test address) and waits until ready.
    pub async fn start(targets: &[(&str, String)]) -> Prometheus {
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = format!("127.0.0.1:{}", free_port());
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config(targets, &listen)).expect("write config");
        let found = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{bin} not found: install Prometheus with `apt-get install prometheus` (scripts/test does), or set PROMETHEUS_BIN"
        );
        let args = vec![
            format!("--config.file={}", file.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={listen}"),
        ];
        let service = Service::start("prometheus", bin, args, Vec::new());
        let p = Prometheus {
            url: format!("http://{listen}"),
            http: reqwest::Client::new(),
            _service: service,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", p.url);
        wait_for("Prometheus ready", Duration::from_secs(60), || async {
            let r = p.http.get(&ready).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        p
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// The active targets as (job, health).
    pub async fn targets(&self) -> Vec<(String, String)> {
        let data = self.api("targets?state=active").await.unwrap_or_default();
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (s(&t["labels"]["job"]), s(&t["health"]))
            })
            .collect()
    }

    /// An instant query's samples as (labels, value).
    pub async fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let q: String = url_encode(expr);
        let data = self
            .api(&format!("query?query={q}"))
            .await
            .unwrap_or_default();
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let v = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), v))
            })
            .collect()
    }

    /// Every metric name Prometheus holds.
    pub async fn metric_names(&self) -> Vec<String> {
        let data = self.api("label/__name__/values").await.unwrap_or_default();
        data.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
