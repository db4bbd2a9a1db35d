//! Headless Chromium driven through chromedriver, over the W3C WebDriver protocol, with a
//! WebAuthn virtual authenticator (the WebDriver extension of the WebAuthn specification).
//!
//! Written by hand over reqwest, about a hundred lines: the WebDriver client crates do not
//! offer the virtual-authenticator commands, and the protocol is plain JSON over HTTP.
//! Waiting is WebDriver's own implicit wait (an element is looked for until it appears), never
//! a sleep.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    /// chromedriver's and Chromium's `TMPDIR`: Chromium leaves a folder of its own there (its
    /// singleton socket) even when it quits cleanly. Removed when the browser is dropped,
    /// after the processes (a field drops after `Drop::drop` has run).
    _tmp: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session has chromedriver quit Chromium and remove its profile folder;
        // killing chromedriver alone left Chromium running after the tests. Drop cannot await,
        // so the request goes from a thread of its own.
        let session = self.session.clone();
        let _ = std::thread::spawn(move || end_session(&session)).join();
        // chromedriver answers before Chromium has finished exiting (and removing its profile
        // folder): wait up to five seconds for the group to hold chromedriver alone.
        let group = self.driver.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while others_in_group(group) > 0 && Instant::now() < deadline {
            // Polling for processes to exit, not timing anything.
            std::thread::sleep(Duration::from_millis(20));
        }
        // Then whatever is left of chromedriver's process group, Chromium's processes with it
        // (a test that panicked mid-way, a session that would not end).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        let _ = self.driver.wait();
    }
}

/// How many processes other than `group`'s leader are in that process group, from /proc.
fn others_in_group(group: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != group)
        .filter(|pid| {
            // The fifth field of /proc/PID/stat is the process group; the second, the
            // command's name in parentheses, may hold spaces, so fields are counted after it.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields = stat.rsplit_once(')')?.1;
                    fields.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(group)
        })
        .count()
}

/// `DELETE` on a WebDriver session URL (`http://127.0.0.1:PORT/session/ID`), waiting up to
/// ten seconds for the answer, which chromedriver gives once Chromium has quit. Plain HTTP/1.1
/// over a socket, by hand: reqwest's blocking client is not among the dependencies, and the
/// tests' async client cannot be awaited in Drop.
fn end_session(url: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let not_http = || std::io::Error::other(format!("not an http URL: {url}"));
    let rest = url.strip_prefix("http://").ok_or_else(not_http)?;
    let (host, path) = rest.split_once('/').ok_or_else(not_http)?;
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // chromedriver keeps the connection open after answering: read up to the answer's end.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        answer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium the size of a 375-px-wide phone.
    pub async fn start() -> Browser {
        Browser::start_sized(375, 812, true).await
    }

    /// Chromium the size of an office screen, for the staff console.
    pub async fn desktop() -> Browser {
        Browser::start_sized(1280, 900, false).await
    }

    async fn start_sized(width: u32, height: u32, phone: bool) -> Browser {
        let port = free_port();
        let tmp = tempfile::tempdir().expect("a temporary folder for Chromium");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            // A process group of its own, which Chromium's processes join: see Drop.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) is installed");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        // chromedriver answers /status once it listens; give it ten seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            // Polling for readiness, not timing anything.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut chrome = json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", format!("--window-size={width},{height}"), "--lang=ja"],
        });
        if phone {
            chrome["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0}});
        }
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": chrome
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        let browser = Browser {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            _tmp: tmp,
        };
        browser
            .call("POST", "/timeouts", json!({"implicit": 10_000}))
            .await;
        browser
    }

    /// Waits until the element `css` selects shows `needle` (a form posted and its answer
    /// loaded): polls the page, up to ten seconds, and says what it saw last.
    pub async fn wait_for_text(&self, css: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let script =
            "var e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
        loop {
            let seen = self
                .try_call(
                    "POST",
                    "/execute/sync",
                    json!({"script": script, "args": [css]}),
                )
                .await;
            let text = seen
                .as_ref()
                .ok()
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?}; last seen {seen:?}"
            );
            // Polling for a condition, not timing anything.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the portal page `name` (its template, e.g. `sign_in`) is the one shown.
    pub async fn wait_for_page(&self, name: &str) {
        let script =
            "var e = document.querySelector('main#page'); return e ? e.dataset.page : null;";
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self
                .try_call(
                    "POST",
                    "/execute/sync",
                    json!({"script": script, "args": []}),
                )
                .await;
            if seen.as_ref().ok().and_then(|v| v.as_str()) == Some(name) {
                return;
            }
            if Instant::now() >= deadline {
                let text = self
                    .try_call(
                        "POST",
                        "/execute/sync",
                        json!({"script": "return location.href + ' ' + document.body.innerText;", "args": []}),
                    )
                    .await;
                panic!("never reached the {name} page; last {seen:?}: {text:?}");
            }
            // Polling for a condition, not timing anything.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match answer["value"]["error"].as_str() {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url})).await;
    }

    /// The element `css` selects, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/clear"), json!({}))
            .await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({"text": text}),
        )
        .await;
    }

    /// Types into an element without clearing it first (a file input takes a path this way).
    pub async fn send_keys(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({"text": text}),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/click"), json!({}))
            .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call("GET", &format!("/element/{element}/text"), json!({}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> String {
        let element = self.find(css).await;
        self.call(
            "GET",
            &format!("/element/{element}/attribute/{name}"),
            json!({}),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub async fn page_source(&self) -> String {
        self.call("GET", "/source", json!({}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.call("GET", "/screenshot", json!({})).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Adds a virtual platform authenticator (CTAP2, internal transport, resident keys, user
    /// verification); `verifying: false` makes its user verification fail, as a user pressing
    /// Cancel at the fingerprint prompt does. Returns its id.
    pub async fn add_authenticator(&self, verifying: bool) -> String {
        self.call(
            "POST",
            "/webauthn/authenticator",
            json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": verifying,
            }),
        )
        .await
        .as_str()
        .unwrap()
        .to_owned()
    }

    pub async fn remove_authenticator(&self, id: &str) {
        self.call(
            "DELETE",
            &format!("/webauthn/authenticator/{id}"),
            json!({}),
        )
        .await;
    }

    /// Puts a credential (as `credentials` lists it) on an authenticator: the same person's
    /// key plugged in again.
    pub async fn add_credential(&self, id: &str, credential: &Value) {
        self.call(
            "POST",
            &format!("/webauthn/authenticator/{id}/credential"),
            credential.clone(),
        )
        .await;
    }

    /// The credentials an authenticator holds.
    pub async fn credentials(&self, id: &str) -> Vec<Value> {
        self.call(
            "GET",
            &format!("/webauthn/authenticator/{id}/credentials"),
            json!({}),
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// Runs `script` in the page (`arguments` are `args`) and returns what it returned; an
    /// async script calls its last argument with the result.
    pub async fn run_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/async",
            json!({"script": script, "args": args}),
        )
        .await
    }

    pub async fn delete_cookies(&self) {
        self.call("DELETE", "/cookie", json!({})).await;
    }
}
