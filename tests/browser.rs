//! The web client (web/) in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver, with the fantoccini crate), against the server binary serving the
//! page and `/ws` on a loopback port, with a terminal-protocol client on the TCP port beside
//! it. Two browser users and a TCP user chat in a room and directly, a script in a message
//! shows as text, and a server restart shows the reconnecting state and then recovers.
//!
//! Without `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`, or
//! the paths in `CHROMIUM` and `CHROMEDRIVER`) each test prints `skipped: …` and passes, unless
//! `ACTOR_CHAT_REQUIRE_BROWSER=1` (as `.ci/run` sets), when it fails. Nothing is ever
//! downloaded: the browser runs with background networking, component updates and sync off and
//! a host resolver that knows only loopback, so the page could not reach another host even if
//! it tried. Each test waits with explicit WebDriver waits (an element or a text, with a
//! timeout), never a sleep, and saves a screenshot of every page under
//! `target/tmp/browser-screenshots/` when it fails.

mod common;

use std::{
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{process::ServerProcess, temp::TempDir, Client};
use fantoccini::{elements::Element, error::CmdError, Locator};
use futures_util::FutureExt;
use serde_json::{json, Value};

/// How long one wait for an element or a text may take.
const WAIT: Duration = Duration::from_secs(10);

/// The most one test may take, screenshots on failure included.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

/// One browser test at a time: each runs two Chromium instances, and the machine may have only
/// two cores; run side by side they would be slow enough to make the waits meaningless. (A
/// tokio mutex: it is held across awaits, each test on a runtime of its own, and a failed test
/// does not poison it.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// -------------------------------------------------------------------------------------------
// The browser

/// The two programs, or `None` (after saying why) when they are missing and not required.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium =
        PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    let driver =
        PathBuf::from(std::env::var_os("CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into()));
    let missing: Vec<String> = [&chromium, &driver]
        .into_iter()
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let why = format!(
        "{} not found (Debian packages chromium and chromium-driver)",
        missing.join(" and ")
    );
    assert!(
        std::env::var("ACTOR_CHAT_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "ACTOR_CHAT_REQUIRE_BROWSER=1 but {why}"
    );
    println!("skipped: {why}");
    None
}

/// A chromedriver on a free loopback port, killed when dropped, with a temporary folder for the
/// browsers' profiles.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    profiles: TempDir,
}

impl Driver {
    fn start(chromium: PathBuf, chromedriver: &Path) -> Driver {
        // Port 0: chromedriver picks a free port and says which on its first lines.
        let mut child = Command::new(chromedriver)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", chromedriver.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            // Read to the end, so that chromedriver never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    if let Some(tx) = port_tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromedriver says which port it listens on");
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            profiles: TempDir::new("browser"),
        }
    }

    /// A new browser window with a fresh profile; `phone` makes it 390 px wide (a phone's
    /// width, through Chromium's mobile emulation).
    async fn open(&self, name: &str, phone: bool) -> Page {
        let profile = self.profiles.0.join(name);
        std::fs::create_dir_all(&profile).expect("a profile folder");
        let mut options = json!({
            "binary": self.chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                // Every name but loopback fails to resolve: no request can leave the machine.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1200,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if phone {
            options["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": 390, "height": 800, "pixelRatio": 1.0 } });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("a browser session for {name}: {error}"));
        Page {
            client,
            name: name.to_owned(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// -------------------------------------------------------------------------------------------
// One page

/// One browser window showing the web client.
#[derive(Clone)]
struct Page {
    client: fantoccini::Client,
    name: String,
}

impl Page {
    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("{}: open {url}: {error}", self.name));
    }

    /// The element `css` selects, waiting for it to appear.
    async fn wait_css(&self, css: &str) -> Element {
        self.wait(Locator::Css(css), css).await
    }

    /// The element `xpath` selects, waiting for it to appear.
    async fn wait_xpath(&self, xpath: &str) -> Element {
        self.wait(Locator::XPath(xpath), xpath).await
    }

    async fn wait(&self, locator: Locator<'_>, what: &str) -> Element {
        self.wait_within(WAIT, locator, what).await
    }

    async fn wait_within(&self, limit: Duration, locator: Locator<'_>, what: &str) -> Element {
        match self.client.wait().at_most(limit).for_element(locator).await {
            Ok(element) => element,
            Err(CmdError::WaitTimeout) => {
                panic!("{}: nothing matched {what} within {limit:?}", self.name)
            }
            Err(error) => panic!("{}: waiting for {what}: {error}", self.name),
        }
    }

    /// Types `text` into the element `css` selects, then Enter.
    async fn enter(&self, css: &str, text: &str) {
        let field = self.wait_css(css).await;
        field
            .send_keys(&format!("{text}{ENTER}"))
            .await
            .unwrap_or_else(|error| panic!("{}: type into {css}: {error}", self.name));
    }

    async fn click(&self, css: &str) {
        self.wait_css(css)
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("{}: click {css}: {error}", self.name));
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|error| panic!("{}: run {script}: {error}", self.name))
    }

    /// Logs in as this page's name and waits for the chat view.
    async fn log_in(&self, url: &str) {
        self.goto(url).await;
        self.enter("#login-name", &self.name).await;
        self.wait_css("body[data-phase='chat'] #conn-state[data-state='online']")
            .await;
    }

    /// Joins `room` from the message box, as a keyboard user would, and waits for its tab.
    async fn join(&self, room: &str) {
        self.enter("#composer-input", &format!("/join {room}"))
            .await;
        self.wait_css(&format!(".tab.active[data-key='#{}']", room.to_lowercase()))
            .await;
    }

    /// Sends `text` to the open conversation.
    async fn say(&self, text: &str) {
        self.enter("#composer-input", text).await;
    }

    /// Waits for a message from `from` that reads exactly `text` in the conversation `key`
    /// (`#room` or `@name`, lowercase).
    async fn expect_message(&self, key: &str, from: &str, text: &str) -> Element {
        self.wait_xpath(&format!(
            "//section[@data-key={}]//li[contains(@class,'chat')][span[@class='from']={}][span[@class='text']={}]",
            xpath_literal(key),
            xpath_literal(from),
            xpath_literal(text)
        ))
        .await
    }

    async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self.client.screenshot().await.map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| e.to_string())
    }
}

/// `text` as an XPath string literal, whatever quotes it holds.
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        return format!("'{text}'");
    }
    if !text.contains('"') {
        return format!("\"{text}\"");
    }
    let parts: Vec<String> = text.split('\'').map(|part| format!("'{part}'")).collect();
    format!("concat({})", parts.join(", \"'\", "))
}

/// Runs one test's body with its pages; on a panic or a timeout, saves a screenshot of every
/// page under `target/tmp/browser-screenshots/` and fails with where they are.
async fn checked(test: &str, pages: &[&Page], body: impl Future<Output = ()>) {
    let outcome = tokio::time::timeout(TEST_LIMIT, AssertUnwindSafe(body).catch_unwind()).await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(panic)) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned()),
        ),
        Err(_) => Some(format!("the test took more than {TEST_LIMIT:?}")),
    };
    if let Some(why) = failure {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let mut saved = Vec::new();
        for page in pages {
            let path = dir.join(format!("{test}-{}.png", page.name));
            match page.screenshot(&path).await {
                Ok(()) => saved.push(path.display().to_string()),
                Err(error) => saved.push(format!("(no screenshot of {}: {error})", page.name)),
            }
        }
        close(pages).await;
        panic!("{test}: {why}\nscreenshots: {}", saved.join(", "));
    }
    close(pages).await;
}

async fn close(pages: &[&Page]) {
    for page in pages {
        let _ = page.client.clone().close().await;
    }
}

// -------------------------------------------------------------------------------------------
// The server

/// The server binary with its HTTP listener on `http` (port 0: any free port) and a SQLite
/// store in `dir`, so that history shows in the page.
struct WebServer {
    process: ServerProcess,
    http: SocketAddr,
}

impl WebServer {
    fn start(dir: &TempDir, http: u16) -> WebServer {
        let url = format!("sqlite://{}", dir.0.join("chat.db").display());
        let mut command = ServerProcess::with_store("config/default.toml", &url);
        command.env("CHAT__HTTP__BIND", format!("127.0.0.1:{http}"));
        let mut process = ServerProcess::spawn(command);
        // Logged after the plain port's line, which `spawn` has read.
        let line = process
            .wait_for_log("http listening on ")
            .expect("the server logs its HTTP address");
        let http = line
            .rsplit("http listening on ")
            .next()
            .and_then(|addr| addr.trim().parse().ok())
            .unwrap_or_else(|| panic!("an address in {line:?}"));
        WebServer { process, http }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.http)
    }

    /// SIGTERM, and the exit waited for.
    fn stop(mut self) {
        self.process.signal(libc::SIGTERM);
        assert!(
            self.process.wait_exit().is_some(),
            "the server exits after SIGTERM"
        );
    }
}

/// Everything one test needs: the server, a chromedriver, and the guard that keeps the browser
/// tests one at a time. `None` when the browser is missing (and not required).
async fn setup() -> Option<(
    tokio::sync::MutexGuard<'static, ()>,
    TempDir,
    WebServer,
    Driver,
)> {
    let (chromium, chromedriver) = browser_tools()?;
    let guard = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("web");
    let server = WebServer::start(&dir, 0);
    let driver = Driver::start(chromium, &chromedriver);
    Some((guard, dir, server, driver))
}

// -------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn two_browsers_and_a_terminal_client_chat_in_a_room_and_directly() {
    let Some((_guard, _dir, server, driver)) = setup().await else {
        return;
    };
    let alice = driver.open("alice", false).await;
    let bob = driver.open("bob", true).await;
    let url = server.url();
    let tcp = server.process.addr;
    let pages = [&alice, &bob];
    let (a, b) = (alice.clone(), bob.clone());
    checked("chat", &pages, async move {
        let (alice, bob) = (a, b);
        alice.log_in(&url).await;
        // A taken name is refused in words, and the form stays for another try.
        bob.goto(&url).await;
        bob.enter("#login-name", "Alice").await;
        bob.wait_xpath("//p[@id='login-error'][.='The name \"Alice\" is already taken.']")
            .await;
        bob.js("document.getElementById('login-name').value = ''").await;
        bob.enter("#login-name", "bob").await;
        bob.wait_css("body[data-phase='chat'] #conn-state[data-state='online']")
            .await;
        let mut carol = Client::login(tcp, "carol").await;

        // The online list: both pages see everyone.
        for page in [&alice, &bob] {
            for name in ["alice", "bob", "carol"] {
                page.wait_css(&format!("#users li[data-name='{name}']")).await;
            }
        }

        // A room, with two browser users and a TCP user.
        alice.join("lobby").await;
        bob.join("lobby").await;
        carol.send("join|lobby").await;
        loop {
            if carol.recv().await.starts_with("members|lobby|") {
                break;
            }
        }
        alice.say("hello from alice | with a bar").await;
        bob.expect_message("#lobby", "alice", "hello from alice | with a bar")
            .await;
        expect_line(&mut carol, "say|lobby|alice|hello from alice | with a bar").await;
        bob.say("hi from bob's phone").await;
        alice.expect_message("#lobby", "bob", "hi from bob's phone").await;
        expect_line(&mut carol, "say|lobby|bob|hi from bob's phone").await;
        carol.send("say|lobby|and carol, from a terminal").await;
        alice
            .expect_message("#lobby", "carol", "and carol, from a terminal")
            .await;
        bob.expect_message("#lobby", "carol", "and carol, from a terminal")
            .await;
        // One's own message shows too, though the server does not echo it.
        alice
            .expect_message("#lobby", "alice", "hello from alice | with a bar")
            .await;

        // Direct messages, both ways, between each pair that includes a browser.
        carol.send("talk|alice|psst, alice").await;
        // Not the open tab: a new tab with an unread count.
        alice
            .wait_css(".tab[data-key='@carol'] .unread:not([hidden])")
            .await;
        let badge = alice
            .wait_css(".tab[data-key='@carol'] .unread")
            .await
            .text()
            .await
            .expect("the badge's text");
        assert_eq!(badge, "1");
        alice.click(".tab[data-key='@carol'] .tab-label").await;
        alice.expect_message("@carol", "carol", "psst, alice").await;
        alice
            .wait_css(".tab[data-key='@carol'] .unread[hidden]")
            .await;
        alice.say("got it, carol").await;
        expect_line(&mut carol, "talk|alice|got it, carol").await;
        bob.enter("#composer-input", "/msg alice a direct one from bob")
            .await;
        alice
            .wait_css(".tab[data-key='@bob'] .unread:not([hidden])")
            .await;
        alice.click(".tab[data-key='@bob'] .tab-label").await;
        alice
            .expect_message("@bob", "bob", "a direct one from bob")
            .await;
        alice.say("and back to bob").await;
        bob.expect_message("@alice", "alice", "and back to bob").await;
        bob.enter("#composer-input", "/msg carol bob to carol").await;
        expect_line(&mut carol, "talk|bob|bob to carol").await;
        carol.send("talk|bob|carol to bob").await;
        bob.expect_message("@carol", "carol", "carol to bob").await;

        // Every message has a time.
        let untimed = alice
            .js("return [...document.querySelectorAll('.msg .time')].filter(t => !/^\\d\\d:\\d\\d/.test(t.textContent)).length")
            .await;
        assert_eq!(untimed, json!(0));
        // Nothing was fetched from anywhere but the page's own server.
        let foreign = alice
            .js("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin + '/'))")
            .await;
        assert_eq!(foreign, json!([]));
        // Up recalls what was sent in this conversation.
        bob.click(".tab[data-key='#lobby'] .tab-label").await;
        bob.wait_css("#composer-input")
            .await
            .send_keys("\u{E013}")
            .await
            .expect("press Up");
        let recalled = bob
            .js("return document.getElementById('composer-input').value")
            .await;
        assert_eq!(recalled, json!("hi from bob's phone"));
    })
    .await;
    drop(driver);
    server.stop();
}

#[tokio::test]
async fn a_script_in_a_message_shows_as_text() {
    let Some((_guard, _dir, server, driver)) = setup().await else {
        return;
    };
    let alice = driver.open("alice", false).await;
    let bob = driver.open("bob", false).await;
    let url = server.url();
    let tcp = server.process.addr;
    let pages = [&alice, &bob];
    let (a, b) = (alice.clone(), bob.clone());
    checked("injection", &pages, async move {
        let (alice, bob) = (a, b);
        const IMG: &str = "<img src=x onerror=alert(1)>";
        const SCRIPT: &str = "<script>alert(2)</script><b>bold?</b>";
        alice.log_in(&url).await;
        bob.log_in(&url).await;
        // Were anything to run, it would leave a mark as well as an alert.
        for page in [&alice, &bob] {
            page.js("window.alert = () => { document.documentElement.dataset.alerted = 'yes'; }")
                .await;
        }
        let mut carol = Client::login(tcp, "carol").await;
        alice.join("lobby").await;
        carol.send("join|lobby").await;
        loop {
            if carol.recv().await.starts_with("members|lobby|") {
                break;
            }
        }
        carol.send(&format!("say|lobby|{IMG}")).await;
        carol.send(&format!("talk|alice|{SCRIPT}")).await;
        alice.expect_message("#lobby", "carol", IMG).await;
        alice.click(".tab[data-key='@carol'] .tab-label").await;
        alice.expect_message("@carol", "carol", SCRIPT).await;
        // From a browser too: bob sends it, alice reads it.
        bob.enter("#composer-input", &format!("/msg alice {IMG}"))
            .await;
        alice
            .wait_css(".tab[data-key='@bob'] .unread:not([hidden])")
            .await;
        alice.click(".tab[data-key='@bob'] .tab-label").await;
        alice.expect_message("@bob", "bob", IMG).await;
        bob.expect_message("@alice", "bob", IMG).await;

        for page in [&alice, &bob] {
            let made = page
                .js("return document.querySelectorAll('img, script:not([src]), .msg b').length")
                .await;
            assert_eq!(made, json!(0), "{}: the markup became elements", page.name);
            let alerted = page
                .js("return document.documentElement.dataset.alerted || 'no'")
                .await;
            assert_eq!(alerted, json!("no"), "{}: a script ran", page.name);
            match page.client.get_alert_text().await {
                Err(CmdError::Standard(error))
                    if error.error == fantoccini::error::ErrorStatus::NoSuchAlert => {}
                other => panic!("{}: an alert is open: {other:?}", page.name),
            }
        }
    })
    .await;
    drop(driver);
    server.stop();
}

#[tokio::test]
async fn a_server_restart_shows_reconnecting_and_then_recovers() {
    let Some((_guard, dir, server, driver)) = setup().await else {
        return;
    };
    let alice = driver.open("alice", false).await;
    let a = alice.clone();
    checked("restart", &[&alice], async move {
        let alice = a;
        let url = server.url();
        let http = server.http.port();
        alice.log_in(&url).await;
        alice.join("lobby").await;
        alice.say("before the restart").await;
        alice
            .expect_message("#lobby", "alice", "before the restart")
            .await;

        tokio::task::spawn_blocking(move || server.stop())
            .await
            .expect("the server stops");
        // The page says so, and does not let a message be typed into the void.
        alice
            .wait_css("#conn-state[data-state='reconnecting']")
            .await;
        alice
            .wait_xpath("//div[@id='conn-banner'][contains(., 'Reconnecting in')]")
            .await;
        alice.wait_css("#send[disabled]").await;

        // The same HTTP port (the page's address), a new TCP port.
        let (server, _dir) = tokio::task::spawn_blocking(move || (WebServer::start(&dir, http), dir))
            .await
            .expect("the server starts again");
        // The next attempt may be a back-off step away (15 s at most, as the page is written).
        let online = "#conn-state[data-state='online']";
        alice
            .wait_within(Duration::from_secs(20), Locator::Css(online), online)
            .await;
        alice.wait_css("#conn-banner[hidden]").await;
        // Logged in again and back in the room: the room's history is read again (the server
        // answers `history` only to members), and it has the line from before the restart.
        alice
            .wait_xpath("//section[@data-key='#lobby']//li[contains(@class,'history')][span[@class='text']='before the restart']")
            .await;
        let mut carol = Client::login(server.process.addr, "carol").await;
        carol.send("join|lobby").await;
        expect_line(&mut carol, "ok|join|lobby").await;
        expect_line(&mut carol, "members|lobby|alice,carol").await;
        carol.send("say|lobby|welcome back").await;
        alice.expect_message("#lobby", "carol", "welcome back").await;
        alice.say("thanks").await;
        expect_line(&mut carol, "say|lobby|alice|thanks").await;
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .expect("the server stops");
    })
    .await;
    drop(driver);
}

#[tokio::test]
async fn a_registered_name_asks_for_its_password() {
    let Some((_guard, _dir, server, driver)) = setup().await else {
        return;
    };
    let alice = driver.open("alice", false).await;
    let url = server.url();
    let tcp = server.process.addr;
    let a = alice.clone();
    checked("accounts", &[&alice], async move {
        let alice = a;
        alice.goto(&url).await;
        alice.click("#register-toggle").await;
        alice
            .wait_css("#login-name")
            .await
            .send_keys("alice")
            .await
            .expect("type the name");
        alice
            .enter("#login-password", "correct horse battery")
            .await;
        alice
            .wait_css("body[data-phase='chat'] #conn-state[data-state='online']")
            .await;
        alice.click("#logout").await;
        alice.wait_css("body[data-phase='login']").await;
        // The name is reserved now: someone else is refused, in words.
        let mut mallory = Client::connect(tcp).await;
        mallory.send("login|alice").await;
        expect_line(&mut mallory, "error|password-required|alice").await;
        // The page asks for the password, and says when it is wrong.
        alice.js("document.getElementById('login-name').value = ''").await;
        alice.enter("#login-name", "alice").await;
        alice
            .wait_xpath("//p[@id='login-error'][.='The name \"alice\" is registered: it needs its password.']")
            .await;
        alice.enter("#login-password", "wrong guess").await;
        alice
            .wait_xpath("//p[@id='login-error'][.='Wrong password for \"alice\" (or no such account).']")
            .await;
        alice.js("document.getElementById('login-password').value = ''").await;
        alice
            .enter("#login-password", "correct horse battery")
            .await;
        alice
            .wait_css("body[data-phase='chat'] #conn-state[data-state='online']")
            .await;
        alice.wait_css("#users li[data-name='alice']").await;
        // The password is nowhere but in the page's memory.
        let kept = alice
            .js("return JSON.stringify(localStorage) + document.cookie + location.href + document.getElementById('login-password').value")
            .await;
        assert!(
            !kept.as_str().unwrap_or_default().contains("correct horse"),
            "{kept}"
        );
    })
    .await;
    drop(driver);
    server.stop();
}

/// Reads lines until `line` comes (skipping presence notices and the like).
async fn expect_line(client: &mut Client, line: &str) {
    loop {
        let got = client.recv().await;
        if got == line {
            return;
        }
        assert!(
            got.starts_with("login|")
                || got.starts_with("logout|")
                || got.starts_with("join|")
                || got.starts_with("leave|"),
            "expected {line:?}, got {got:?}"
        );
    }
}
