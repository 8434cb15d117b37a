//! A headless Chromium (Debian's `chromium` and `chromium-driver`) driven over the W3C
//! WebDriver protocol, which is plain JSON over HTTP to chromedriver.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{free_port, wait_for, Service};

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Service,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let driver = std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let installed = std::path::Path::new(&chromium).exists()
            && std::process::Command::new(&driver)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
        assert!(
            installed,
            "{chromium} or {driver} not found: install them with `apt-get install chromium chromium-driver` (scripts/test does)"
        );
        let port = free_port();
        let service = Service::start(
            "chromedriver",
            driver,
            vec![format!("--port={port}")],
            Vec::new(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_for("chromedriver ready", Duration::from_secs(30), || async {
            let r = http.get(format!("{base}/status")).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.path().display())],
        }}}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session answer");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused a session: {r}"))
            .to_owned();
        Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: service,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> (bool, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.expect("webdriver request");
        let ok = r.status().is_success();
        let v: Value = r.json().await.unwrap_or_default();
        (ok, v["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        let (ok, v) = self
            .command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
        assert!(ok, "open {url}: {v}");
    }

    /// Waits until an element matching `css` is displayed; returns its reference.
    pub async fn element(&self, css: &str) -> String {
        wait_for(
            &format!("element {css}"),
            Duration::from_secs(30),
            || async {
                let body = json!({"using": "css selector", "value": css});
                let (ok, v) = self.command(reqwest::Method::POST, "/element", body).await;
                let id = v[ELEMENT].as_str().filter(|_| ok)?.to_owned();
                let path = format!("/element/{id}/displayed");
                let (_, shown) = self.command(reqwest::Method::GET, &path, Value::Null).await;
                (shown == true).then_some(id)
            },
        )
        .await
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        let path = format!("/element/{id}/value");
        let (ok, v) = self
            .command(reqwest::Method::POST, &path, json!({ "text": text }))
            .await;
        assert!(ok, "type into {css}: {v}");
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        let path = format!("/element/{id}/click");
        let (ok, v) = self.command(reqwest::Method::POST, &path, json!({})).await;
        assert!(ok, "click {css}: {v}");
    }

    /// Ends the session, which closes Chromium.
    pub async fn quit(self) {
        let _ = self.command(reqwest::Method::DELETE, "", Value::Null).await;
    }
}
