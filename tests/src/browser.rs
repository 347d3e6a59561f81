//! Headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`, which
//! `./scripts/stack.sh install` installs (never a browser download). `CHROMIUM` and
//! `CHROMEDRIVER` name other binaries. A phone is a real device emulation (chromedriver's
//! `mobileEmulation`: viewport, pixel ratio, touch, mobile layout), not a narrow window: a
//! headless window is never narrower than 500 px.
//!
//! Fails loudly when either binary is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

/// The browser binary: `CHROMIUM`, or `chromium` found on `PATH` (chromedriver wants a path).
pub fn chromium() -> String {
    if let Ok(binary) = std::env::var("CHROMIUM") {
        return binary;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .map(|found| found.display().to_string())
        .unwrap_or_else(|| {
            panic!(
                "no chromium on PATH: `./scripts/stack.sh install` installs Debian's chromium \
                 and chromium-driver; CHROMIUM names another binary"
            )
        })
}

pub fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

/// What the browser pretends to be.
#[derive(Debug, Clone, Copy)]
pub enum Screen {
    /// A desktop window of this size.
    Desktop { width: u32, height: u32 },
    /// A phone of this viewport (CSS pixels), emulated.
    Phone { width: u32, height: u32 },
}

pub const DESKTOP: Screen = Screen::Desktop { width: 1280, height: 900 };
pub const PHONE: Screen = Screen::Phone { width: 390, height: 844 };

/// One browser session and the chromedriver serving it (killed on drop).
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    profile: PathBuf,
}

impl Browser {
    pub async fn start(screen: Screen) -> Browser {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            listener.local_addr().expect("its address").port()
        };
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver ({}) did not start: {e}. `./scripts/stack.sh install` installs \
                     Debian's chromium and chromium-driver; CHROMEDRIVER names another binary",
                    chromedriver()
                )
            });
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(response) = http.get(format!("{base}/status")).send().await {
                if response.status().is_success() {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not answer on {base}");
        let profile = std::env::temp_dir().join(format!("ringledger-chromium-{port}"));
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--hide-scrollbars".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut options = json!({ "binary": chromium() });
        match screen {
            Screen::Desktop { width, height } => {
                args.push(format!("--window-size={width},{height}"));
            }
            Screen::Phone { width, height } => {
                options["mobileEmulation"] = json!({
                    "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0 }
                });
            }
        }
        options["args"] = json!(args);
        let capabilities = json!({
            "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": options } }
        });
        let mut browser = Browser { driver, base, session: String::new(), http, profile };
        let created = browser.request(reqwest::Method::POST, "/session", Some(capabilities)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let status = response.status();
        let value: Value = response.json().await.expect("a WebDriver answer");
        assert!(status.is_success(), "WebDriver {path}: {status} {value}");
        value.get("value").cloned().unwrap_or(value)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Open `url` and wait for it to load.
    pub async fn goto(&self, url: &str) {
        self.request(
            reqwest::Method::POST,
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        )
        .await;
    }

    /// Open a local file.
    pub async fn open_file(&self, path: &Path) {
        self.goto(&format!("file://{}", path.display())).await;
    }

    /// Run `script` (a function body: `return ...`) in the page; what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.request(reqwest::Method::POST, &self.session_path("/execute/sync"), Some(body)).await
    }

    /// The viewport as a PNG, written to `path`; its bytes.
    pub async fn screenshot(&self, path: &Path) -> Vec<u8> {
        let encoded =
            self.request(reqwest::Method::GET, &self.session_path("/screenshot"), None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 PNG"))
            .expect("a PNG");
        std::fs::write(path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        bytes
    }

    /// The WebDriver id of the first element matching `css` (fails when there is none).
    pub async fn find(&self, css: &str) -> String {
        let body = json!({ "using": "css selector", "value": css });
        let found =
            self.request(reqwest::Method::POST, &self.session_path("/element"), Some(body)).await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        let body = json!({ "using": "css selector", "value": css });
        let found =
            self.request(reqwest::Method::POST, &self.session_path("/elements"), Some(body)).await;
        found.as_array().map_or(0, Vec::len)
    }

    /// Replace the text of the input matching `css`, as a user types it.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let base = self.session_path(&format!("/element/{element}"));
        self.request(reqwest::Method::POST, &format!("{base}/clear"), Some(json!({}))).await;
        self.request(
            reqwest::Method::POST,
            &format!("{base}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Click the element matching `css` (a navigation it starts is waited for).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        let path = self.session_path(&format!("/element/{element}/click"));
        self.request(reqwest::Method::POST, &path, Some(json!({}))).await;
    }

    /// The visible text of the element matching `css`, once the page has loaded (asked again
    /// while a navigation replaces the page under it).
    pub async fn text(&self, css: &str) -> String {
        let body = json!({ "using": "css selector", "value": css });
        for _ in 0..50 {
            if self.eval("return document.readyState;").await == "complete" {
                let url = format!("{}{}", self.base, self.session_path("/element"));
                let found: Value = self
                    .http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("WebDriver")
                    .json()
                    .await
                    .expect("JSON");
                let element = found["value"]
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(Value::as_str);
                if let Some(element) = element {
                    let path = self.session_path(&format!("/element/{element}/text"));
                    let response = self
                        .http
                        .get(format!("{}{path}", self.base))
                        .send()
                        .await
                        .expect("WebDriver");
                    if response.status().is_success() {
                        let text: Value = response.json().await.expect("JSON");
                        return text["value"].as_str().unwrap_or_default().to_string();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element {css} on a loaded page")
    }

    /// Wait (up to 10 s) until the element matching `css` shows `needle`; its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            if self.count(css).await > 0 {
                last = self.text(css).await;
                if last.contains(needle) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never showed {needle:?}; last: {last}")
    }

    /// Wait (up to 10 s) until an element matches `css`.
    pub async fn wait_for(&self, css: &str) {
        for _ in 0..100 {
            if self.count(css).await > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nothing matched {css}")
    }

    pub async fn url(&self) -> String {
        self.request(reqwest::Method::GET, &self.session_path("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The value of the cookie `name` the browser holds for the current page, if any.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let cookies = self.request(reqwest::Method::GET, &self.session_path("/cookie"), None).await;
        cookies.as_array()?.iter().find(|c| c["name"] == name)?["value"]
            .as_str()
            .map(str::to_string)
    }

    /// Run `script` asynchronously: it calls `done(value)` (its last argument) when finished.
    pub async fn eval_async(&self, script: &str) -> Value {
        let body = json!({ "script": format!("const done = arguments[arguments.length - 1]; {script}"), "args": [] });
        self.request(reqwest::Method::POST, &self.session_path("/execute/async"), Some(body)).await
    }

    /// Inject axe-core (`.tools/axe-core`, installed by `scripts/stack.sh install`, or
    /// `AXE_CORE_JS`) and run it on the page: the serious and critical violations, as
    /// `rule: what` lines.
    pub async fn accessibility_violations(&self) -> Vec<String> {
        let path = std::env::var("AXE_CORE_JS").map(PathBuf::from).unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/axe-core/package/axe.min.js")
        });
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "axe-core not found at {} ({e}): `./scripts/stack.sh install` installs it",
                path.display()
            )
        });
        // Injected as the page's own script would be refused by its content security policy;
        // WebDriver's scripts are not subject to it.
        self.eval(&format!("{source}\n;return true;")).await;
        let result = self
            .eval_async(
                "axe.run(document, { resultTypes: ['violations'] }).then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')) })))).catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: [] }]));",
            )
            .await;
        result
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| format!("{}: {} at {}", v["id"], v["help"], v["nodes"]))
            .collect()
    }

    pub async fn close(mut self) {
        let path = self.session_path("");
        let _ = self.http.delete(format!("{}{path}", self.base)).send().await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The directory test runs write screenshots to, for review: `target/screenshots/`.
pub fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots");
    dir.canonicalize().expect("its path")
}
