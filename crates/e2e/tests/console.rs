//! The web console (`strata-ctl console`) in a real browser: Debian's chromium, headless,
//! driven through chromedriver (WebDriver) by fantoccini.
//!
//! One walk through the pages against a whole node: the graph shows the three services
//! Healthy; fs SIGKILLed goes through a restart back to Healthy; the service page follows
//! fs's log and restarts it from its button; a capability issued and delegated with
//! strata-ctl appears as a parent with its child nested; the child revoked from the page
//! (two clicks) is marked revoked and then refused by fs; the audit page filters to the
//! denial. Then plain HTTP requests check what the console refuses: no session, a foreign
//! `Host`, a reused secret, a POST without (or with a wrong) CSRF token or from a foreign
//! `Origin`. A screenshot of each page goes to `<target>/console-screenshots/`.
//!
//! A second test reads the pages' files: no inline code the CSP forbids, no HTML built
//! from strings.

use fantoccini::{key::Key, Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use strata_e2e::Stack;
use strata_testkit::{Proc, Sandbox};

const TEST: &str = "console_in_a_real_browser";
/// What the test waits on in the browser: generous, the CI machine is slow.
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn console_in_a_real_browser() {
    let (Some(chromium), Some(driver)) = (
        find_program(&["chromium", "chromium-browser"]),
        find_program(&["chromedriver"]),
    ) else {
        strata_testkit::skip(
            TEST,
            "needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver; \
             scripts/install-test-deps.sh)",
        );
        return;
    };
    step("start");
    // Built (if stale) before anything starts, so no deadline below covers a build.
    for bin in [
        "strata-supervisor",
        "strata-registry",
        "strata-identity",
        "strata-fs",
        "strata-ctl",
    ] {
        strata_testkit::binary(bin);
    }
    step("binaries built");
    let stack = Stack::start();
    step("node Healthy");
    std::fs::write(stack.export.join("hello.txt"), b"hello console\n").unwrap();
    let (_console, url) = start_console(&stack);
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|host| host.parse().ok())
        .unwrap_or_else(|| panic!("the printed URL has no 127.0.0.1:PORT: {url}"));
    let shots = screenshot_dir();
    let (_driver, port) = start_chromedriver(&driver, &stack.sb);
    step("console and chromedriver up");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let browser = connect_browser(port, &chromium, &stack.sb).await;
        step("browser started");
        let result = walk(&browser, &stack, &url, &shots).await;
        if result.is_err() {
            // What the page looked like when it went wrong, next to the good ones.
            if let Ok(png) = browser.screenshot().await {
                let _ = std::fs::write(shots.join("console-failure.png"), png);
            }
        }
        let cookie = browser.get_named_cookie("strata_console").await;
        let _ = browser.close().await;
        if let Err(e) = result {
            panic!("{e}");
        }
        // The session cookie as the browser keeps it: script cannot read it, and no other
        // site's request carries it.
        let cookie = cookie.expect("the browser holds the session cookie");
        assert_eq!(cookie.http_only(), Some(true), "{cookie}");
        assert_eq!(
            format!("{:?}", cookie.same_site()),
            "Some(Strict)",
            "{cookie}"
        );
        refusals(addr, &url, cookie.value(), &stack);
    });
    eprintln!("screenshots in {}", shots.display());
}

/// The pages keep to what the console's CSP allows and never parse data as markup: no
/// inline script or style, no event-handler attributes, no HTML from strings. (The browser
/// would refuse inline code anyway; this says which line broke it, without a browser.)
#[test]
fn console_pages_hold_no_inline_code_and_no_markup_from_data() {
    let dir = strata_testkit::workspace_root().join("crates/ctl/src/console/assets");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let (html, js, css) = (read("index.html"), read("app.js"), read("app.css"));
    for (i, line) in html.lines().enumerate() {
        let l = line.to_ascii_lowercase();
        let inline_script = l.contains("<script") && !l.contains("<script src=\"/app.js\"");
        let handler = l
            .split_whitespace()
            .any(|w| w.starts_with("on") && w.contains('='));
        assert!(
            !(inline_script || handler || l.contains("style=") || l.contains("<style")),
            "index.html:{}: inline code the CSP forbids: {line}",
            i + 1
        );
    }
    for word in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        ".style.",
    ] {
        assert!(
            !js.contains(word),
            "app.js uses {word}: build the DOM from text"
        );
    }
    assert!(
        !css.contains("url(http") && !css.contains("@import"),
        "app.css loads from elsewhere"
    );
}

/// The pages, in the order a person would use them. An error says what was not seen.
async fn walk(c: &Client, stack: &Stack, url: &str, shots: &Path) -> Result<(), String> {
    // The one-time URL: exchanged for the cookie, redirected to `/`, the node page.
    c.goto(url).await.map_err(|e| format!("open {url}: {e}"))?;
    wait_for(c, "main#page[data-page=\"node\"][data-ready=\"true\"]").await?;
    for name in strata_e2e::SERVICES {
        wait_for(
            c,
            &format!("svg#graph g.svc[data-service=\"{name}\"][data-state=\"Healthy\"]"),
        )
        .await?;
    }
    // fs depends on identity: one edge, from identity to fs.
    wait_for(c, "svg#graph .dep[data-from=\"identity\"][data-to=\"fs\"]").await?;

    // SIGKILL fs: the graph shows it leave Healthy (data-seen-states keeps what fell
    // between two polls) and come back with a new pid.
    let old_pid = stack.pid("fs").ok_or("fs has no pid")?;
    kill(old_pid);
    let fs = "svg#graph g.svc[data-service=\"fs\"]";
    let seen = wait_attr(c, fs, "data-seen-states", |seen| {
        let states: Vec<&str> = seen.split_whitespace().collect();
        states.len() >= 3
            && states.last() == Some(&"Healthy")
            && states
                .iter()
                .any(|s| ["Crashed", "Restarting", "Starting"].contains(s))
    })
    .await?;
    let new_pid = wait_attr(c, fs, "data-pid", |p| {
        !p.is_empty() && p != old_pid.to_string()
    })
    .await?;
    eprintln!("fs after SIGKILL of {old_pid}: {seen} (pid {new_pid})");
    save(c, shots, "node").await?;
    step("node page seen");

    // The service page: the box is a link; the log follows; restart from the button.
    find(c, fs)
        .await?
        .click()
        .await
        .map_err(|e| format!("click fs: {e}"))?;
    wait_for(c, "main#page[data-page=\"service\"][data-ready=\"true\"] section#service[data-service=\"fs\"][data-state=\"Healthy\"]").await?;
    wait_text(c, "pre#log", |t| {
        t.contains("listening") || t.lines().count() >= 3
    })
    .await?;
    let before = stack.pid("fs");
    find(c, "button[data-action=\"restart\"]")
        .await?
        .click()
        .await
        .map_err(|e| format!("click restart: {e}"))?;
    wait_text(c, "#action-result", |t| t.contains("restarted")).await?;
    if stack.pid("fs") == before {
        return Err("the restart button answered but fs kept its pid".into());
    }
    wait_for(c, "section#service[data-state=\"Healthy\"]").await?;
    save(c, shots, "service").await?;
    step("service page seen");

    // A capability and a child delegated from it, made with strata-ctl.
    let prefix = stack.export.display().to_string();
    let parent = issued(
        stack,
        &[
            "cap",
            "issue",
            "--service",
            "fs",
            "--right",
            "fs.stat",
            "--right",
            "fs.list",
            "--prefix",
            &prefix,
            "--ttl",
            "10m",
            "--json",
        ],
    );
    let child = issued(
        stack,
        &[
            "--token", &parent.0, "cap", "delegate", "--right", "fs.stat", "--ttl", "5m", "--json",
        ],
    );
    if fs_stat(stack, &child.0) != Some(0) {
        return Err("fs refused the child token before it was revoked".into());
    }
    find(c, "nav a[data-page=\"caps\"]")
        .await?
        .click()
        .await
        .map_err(|e| format!("click caps: {e}"))?;
    wait_for(c, "main#page[data-page=\"caps\"][data-ready=\"true\"]").await?;
    let (p_id, c_id) = (&parent.1, &child.1);
    let nested = format!(
        "ul#cap-tree li.cap[data-cap-id=\"{p_id}\"][data-revoked=\"false\"] > ul > li.cap[data-cap-id=\"{c_id}\"][data-revoked=\"false\"]"
    );
    wait_for(c, &nested).await?;

    // Revoke the child from the page: the first click only asks to confirm.
    let button =
        format!("li.cap[data-cap-id=\"{c_id}\"] > .cap-head button.revoke[data-cap-id=\"{c_id}\"]");
    find(c, &button)
        .await?
        .click()
        .await
        .map_err(|e| format!("click revoke: {e}"))?;
    wait_text(c, &format!("{button}[data-confirm=\"true\"]"), |t| {
        t == "Confirm revoke"
    })
    .await?;
    if fs_stat(stack, &child.0) != Some(0) {
        return Err("one click on Revoke revoked the capability".into());
    }
    find(c, &button)
        .await?
        .click()
        .await
        .map_err(|e| format!("confirm revoke: {e}"))?;
    wait_for(
        c,
        &format!("li.cap[data-cap-id=\"{c_id}\"][data-revoked=\"true\"]"),
    )
    .await?;
    wait_for(
        c,
        &format!("li.cap[data-cap-id=\"{p_id}\"][data-revoked=\"false\"]"),
    )
    .await?;
    save(c, shots, "caps").await?;
    step("caps page seen");
    // fs refuses the child now (77: PERMISSION_DENIED or UNAUTHENTICATED), the parent not.
    poll("fs to refuse the revoked child", || {
        fs_stat(stack, &child.0) == Some(77)
    })?;
    if fs_stat(stack, &parent.0) != Some(0) {
        return Err("revoking the child revoked its parent".into());
    }

    // The audit page, filtered to denials: fs's refusal of the child is there, highlighted.
    find(c, "nav a[data-page=\"audit\"]")
        .await?
        .click()
        .await
        .map_err(|e| format!("click audit: {e}"))?;
    wait_for(c, "main#page[data-page=\"audit\"][data-ready=\"true\"]").await?;
    wait_for(c, "ol#audit-stream li.event").await?;
    let filter = find(c, "input[name=\"event\"]").await?;
    filter
        .send_keys(&format!("auth.denied{}", char::from(Key::Enter)))
        .await
        .map_err(|e| format!("type the filter: {e}"))?;
    wait_for(
        c,
        "ol#audit-stream li.event.denied[data-event=\"auth.denied\"]",
    )
    .await?;
    let events = c
        .find_all(Locator::Css("ol#audit-stream li.event"))
        .await
        .map_err(|e| e.to_string())?;
    for e in events {
        if e.attr("data-event").await.ok().flatten().as_deref() != Some("auth.denied") {
            return Err("the event filter let another event through".into());
        }
    }
    save(c, shots, "audit").await?;
    step("audit page seen");

    find(c, "nav a[data-page=\"cluster\"]")
        .await?
        .click()
        .await
        .map_err(|e| format!("click cluster: {e}"))?;
    wait_for(c, "main#page[data-page=\"cluster\"][data-ready=\"true\"] section#cluster[data-configured=\"false\"]").await?;
    Ok(())
}

/// What the console refuses, with plain HTTP: the browser is not needed for that.
fn refusals(addr: SocketAddr, url: &str, session: &str, stack: &Stack) {
    let host = addr.to_string();
    let cookie = format!("strata_console={session}");
    let (host, cookie) = (host.as_str(), cookie.as_str());
    // With the cookie and the right Host: the page, with its security headers.
    let (status, head, _) = http(addr, "GET", "/", &[("Host", host), ("Cookie", cookie)]);
    assert_eq!(status, 200, "{head}");
    let head_lower = head.to_ascii_lowercase();
    assert!(
        head_lower.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head_lower.contains("x-frame-options: deny"), "{head}");
    // No cookie: 401, on a page and on the API.
    for path in ["/", "/api/node", "/api/caps"] {
        let (status, head, _) = http(addr, "GET", path, &[("Host", host)]);
        assert_eq!(status, 401, "GET {path} without a session: {head}");
    }
    // A forged cookie is no session either.
    let forged = "strata_console=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (status, _, _) = http(
        addr,
        "GET",
        "/api/node",
        &[("Host", host), ("Cookie", forged)],
    );
    assert_eq!(status, 401, "a made-up session cookie was accepted");
    // A foreign Host (DNS rebinding), even with the cookie: 403, the Host not echoed.
    for bad in [
        "evil.example",
        "evil.example:80",
        &format!("localhost:{}", addr.port()),
    ] {
        let (status, head, body) = http(
            addr,
            "GET",
            "/api/node",
            &[("Host", bad), ("Cookie", cookie)],
        );
        assert_eq!(status, 403, "Host {bad}: {head}");
        assert!(
            !body.contains("evil.example"),
            "the refusal echoes the Host: {body}"
        );
    }
    // The secret worked once; the browser used it.
    let path = url.split_once(host).map(|(_, p)| p).unwrap();
    let (status, _, _) = http(addr, "GET", path, &[("Host", host)]);
    assert_eq!(status, 401, "the one-time secret was accepted twice");
    // A POST needs the session's CSRF token (and, when it says, our Origin). Each refused
    // request must not restart fs.
    let (status, _, body) = http(
        addr,
        "GET",
        "/api/session",
        &[("Host", host), ("Cookie", cookie)],
    );
    assert_eq!(status, 200, "{body}");
    let csrf = serde_json::from_str::<Value>(&body).unwrap()["csrf"]
        .as_str()
        .expect("/api/session has a csrf token")
        .to_owned();
    let csrf = csrf.as_str();
    let pid = stack.pid("fs");
    let restart = "/api/services/fs/restart";
    let origin = format!("http://{host}");
    let origin = origin.as_str();
    for (what, headers) in [
        ("no CSRF token", vec![("Host", host), ("Cookie", cookie)]),
        (
            "a wrong CSRF token",
            vec![
                ("Host", host),
                ("Cookie", cookie),
                ("X-CSRF-Token", "wrong"),
            ],
        ),
        (
            "a foreign Origin",
            vec![
                ("Host", host),
                ("Cookie", cookie),
                ("X-CSRF-Token", csrf),
                ("Origin", "http://evil.example"),
            ],
        ),
        (
            "no cookie",
            vec![("Host", host), ("X-CSRF-Token", csrf), ("Origin", origin)],
        ),
    ] {
        let (status, head, _) = http(addr, "POST", restart, &headers);
        assert!(status == 403 || status == 401, "POST with {what}: {head}");
    }
    assert_eq!(stack.pid("fs"), pid, "a refused POST restarted fs");
    // The right token and Origin: accepted (so the refusals above were about them).
    let (status, head, body) = http(
        addr,
        "POST",
        restart,
        &[
            ("Host", host),
            ("Cookie", cookie),
            ("X-CSRF-Token", csrf),
            ("Origin", origin),
        ],
    );
    assert_eq!(status, 200, "{head}\n{body}");
    assert_ne!(
        stack.pid("fs"),
        pid,
        "the accepted restart did not restart fs"
    );
}

// ---- Processes ----------------------------------------------------------------------

/// `strata-ctl console` on this node (killed on drop), and the URL it printed.
fn start_console(stack: &Stack) -> (Proc, String) {
    let out_path = stack.sb.root().join("console.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut cmd = stack.sb.command("strata-ctl");
    cmd.arg("console").stdout(out).stderr(Stdio::inherit());
    let mut proc = Proc::spawn("strata-ctl console", &mut cmd);
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        // A whole line, so the URL is complete.
        let line = text
            .split_inclusive('\n')
            .find(|l| l.starts_with("Console: ") && l.ends_with('\n'));
        if let Some(line) = line {
            let url = line["Console: ".len()..].trim().to_owned();
            return (proc, url);
        }
        assert!(
            !proc.exited(),
            "strata-ctl console exited before printing its URL"
        );
        assert!(
            Instant::now() < deadline,
            "strata-ctl console printed no URL: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// chromedriver on a free loopback port (killed, with the browsers it started, on drop).
fn start_chromedriver(driver: &Path, sb: &Sandbox) -> (Proc, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(sb.root().join("chromedriver.log")).unwrap();
    let mut cmd = std::process::Command::new(driver);
    cmd.arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let proc = Proc::spawn("chromedriver", &mut cmd);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, port)
}

async fn connect_browser(port: u16, chromium: &Path, sb: &Sandbox) -> Client {
    let profile = sb.root().join("chromium-profile");
    std::fs::create_dir(&profile).unwrap();
    let mut args = vec![
        "--headless=new".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-gpu".to_owned(),
        "--no-first-run".to_owned(),
        "--window-size=1280,800".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    // Chromium refuses to run as root with its sandbox on; CI runs as root.
    if strata_testkit::is_root() {
        args.push("--no-sandbox".to_owned());
    }
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": chromium, "args": args},
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("cannot start chromium through chromedriver: {e}"))
}

// Unsafe: kill(2) of a pid the supervisor spawned (not our Child, so std cannot).
#[allow(unsafe_code)]
fn kill(pid: i32) {
    // SAFETY: signalling a child of our supervisor by pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// `(token, cap_id)` from `strata-ctl cap issue|delegate --json`.
fn issued(stack: &Stack, args: &[&str]) -> (String, String) {
    let out = stack.ctl(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from --json");
    (
        v["token"].as_str().expect("a token").to_owned(),
        v["cap_id"].as_str().expect("a cap_id").to_owned(),
    )
}

/// `strata-ctl fs stat hello.txt` with `token`: its exit status.
fn fs_stat(stack: &Stack, token: &str) -> Option<i32> {
    stack
        .ctl(&["--token", token, "fs", "stat", "hello.txt"])
        .status
        .code()
}

/// Prints how far into the test a step is (where the time goes, on a slow machine).
fn step(what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("console test: {what} at {:.1?}", start.elapsed());
}

fn poll(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

// ---- The browser --------------------------------------------------------------------

async fn find(c: &Client, css: &str) -> Result<fantoccini::elements::Element, String> {
    wait_for(c, css).await
}

/// Polls until `css` matches, for up to [`WAIT`]; the error quotes `#error` and the page.
async fn wait_for(c: &Client, css: &str) -> Result<fantoccini::elements::Element, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(found) = c.find(Locator::Css(css)).await {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not seen within {WAIT:?}: {css}\n{}",
                page_state(c).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `css`'s attribute `name` until `ok` holds; returns its value.
async fn wait_attr(
    c: &Client,
    css: &str,
    name: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        // The element may be redrawn between find and read: read it afresh each time.
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(Some(v)) = e.attr(name).await {
                if ok(&v) {
                    return Ok(v);
                }
                last = Some(v);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{css} [{name}] never as expected; last {last:?}\n{}",
                page_state(c).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> Result<String, String> {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if ok(&t) {
                    return Ok(t);
                }
                last = Some(t);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{css} text never as expected; last {last:?}\n{}",
                page_state(c).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The URL, `#error` and the start of `main` for a failure message.
async fn page_state(c: &Client) -> String {
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    let text = |css: &'static str| async move {
        match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let error = text("#error").await;
    let main: String = text("main#page").await.chars().take(1500).collect();
    format!("at {url}\n#error: {error:?}\nmain: {main}")
}

async fn save(c: &Client, dir: &Path, page: &str) -> Result<(), String> {
    let png = c
        .screenshot()
        .await
        .map_err(|e| format!("screenshot {page}: {e}"))?;
    std::fs::write(dir.join(format!("console-{page}.png")), png).map_err(|e| e.to_string())
}

// ---- Plain HTTP ---------------------------------------------------------------------

/// One HTTP/1.1 request on a fresh connection: `(status, head, body)`.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the console");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from {method} {path}: {text:?}"));
    (status, head.to_owned(), body.to_owned())
}

// ---- Where things are ---------------------------------------------------------------

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `<target>/console-screenshots`: $CARGO_TARGET_DIR, else the directory above this test
/// binary's profile (`target/<profile>/deps/<test>`).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| strata_testkit::workspace_root().join(d))
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.ancestors()
                .nth(3)
                .expect("target/<profile>/deps/<test>")
                .to_path_buf()
        });
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    // An earlier run's failure picture would be taken for this run's.
    let _ = std::fs::remove_file(dir.join("console-failure.png"));
    dir
}
