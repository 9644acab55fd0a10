//! A real headless Chromium for tests, driven over WebDriver (chromedriver + fantoccini) with
//! a small blocking API: [`launch`], then [`Browser::open`], [`Browser::upload`],
//! [`Browser::wait_for`], [`Browser::text`], [`Browser::resize`], [`Browser::script`] and
//! [`Browser::screenshot`].
//!
//! Without Chromium or chromedriver, [`launch`] prints that the test is skipped and returns
//! `None`, unless `DEEPCAT_REQUIRE_BROWSER=1` (set in CI), where it panics instead.

use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium's flags: headless, and nothing that reaches out to the network on its own (this
/// network refuses those connections, and a test must not depend on them).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// How long a page element may take to appear.
pub const WAIT: Duration = Duration::from_secs(30);

/// One browser session; dropping it ends the session, the driver and the browser.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Starts Chromium under chromedriver, or `None` when either is missing (see the module doc).
pub fn launch() -> Option<Browser> {
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        let required = std::env::var("DEEPCAT_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "DEEPCAT_REQUIRE_BROWSER=1 but chromium or chromedriver is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipping: no chromium and chromedriver found (apt-get install chromium chromium-driver)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let driver = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("a profile folder");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": chromium, "args": args}),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = runtime.block_on(async {
        // chromedriver takes a moment to listen.
        let start = Instant::now();
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if start.elapsed() > WAIT => panic!("cannot start chromium: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    Some(Browser {
        runtime,
        client: Some(client),
        driver,
        _profile: profile,
    })
}

impl Browser {
    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until drop")
    }

    /// Loads `url` and waits for the page to load.
    pub fn open(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Gives `file` to the `<input type=file>` matching the CSS `selector`, as a user choosing
    /// it would.
    pub fn upload(&self, selector: &str, file: &Path) {
        let path = file.canonicalize().expect("the file exists");
        self.runtime.block_on(async {
            let input = self
                .client()
                .find(Locator::Css(selector))
                .await
                .unwrap_or_else(|e| panic!("no {selector}: {e}"));
            input
                .send_keys(&path.to_string_lossy())
                .await
                .unwrap_or_else(|e| panic!("cannot upload to {selector}: {e}"));
        });
    }

    /// Waits (up to [`WAIT`]) until an element matches the CSS `selector`.
    pub fn wait_for(&self, selector: &str) {
        self.runtime.block_on(async {
            self.client()
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css(selector))
                .await
                .unwrap_or_else(|e| panic!("{selector} did not appear: {e}"));
        });
    }

    /// Clicks the first element matching the CSS `selector`, as a user would (WebDriver's
    /// click: the element must be visible and not covered).
    pub fn click(&self, selector: &str) {
        self.runtime.block_on(async {
            let e = self
                .client()
                .find(Locator::Css(selector))
                .await
                .unwrap_or_else(|e| panic!("no {selector}: {e}"));
            e.click()
                .await
                .unwrap_or_else(|e| panic!("cannot click {selector}: {e}"));
        });
    }

    /// Waits (up to [`WAIT`]) until the script `body` returns `true`.
    pub fn wait_until(&self, body: &str) {
        let start = Instant::now();
        while self.script(body) != serde_json::Value::Bool(true) {
            assert!(
                start.elapsed() < WAIT,
                "still not true after {WAIT:?}: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The visible text of the first element matching the CSS `selector`.
    pub fn text(&self, selector: &str) -> String {
        self.runtime.block_on(async {
            let e = self
                .client()
                .find(Locator::Css(selector))
                .await
                .unwrap_or_else(|e| panic!("no {selector}: {e}"));
            e.text()
                .await
                .unwrap_or_else(|e| panic!("no text in {selector}: {e}"))
        })
    }
}

impl Browser {
    /// Sets the viewport to `width`×`height` CSS pixels (headless Chromium's window is all
    /// viewport) and returns the width the page now sees (`innerWidth`).
    pub fn resize(&self, width: u32, height: u32) -> u32 {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .unwrap_or_else(|e| panic!("cannot resize to {width}×{height}: {e}"));
        let seen = self.script("return window.innerWidth;");
        seen.as_u64().expect("innerWidth is a number") as u32
    }

    /// Runs `body` (a function body: `return` gives the result) in the page.
    pub fn script(&self, body: &str) -> serde_json::Value {
        self.runtime
            .block_on(self.client().execute(body, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// The viewport as PNG bytes.
    pub fn screenshot(&self) -> Vec<u8> {
        self.runtime
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("no screenshot: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
