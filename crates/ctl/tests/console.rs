//! `strata-ctl console` against a fake supervisor served in-process, spoken to with raw
//! HTTP/1.1 over a TcpStream: the printed URL, the one-time secret and its cookie, the
//! Host, Origin and CSRF checks, the security headers, the JSON API (reaching the
//! supervisor, errors mapped to HTTP), the audit and log streams, the bounds, and the
//! refusal of a non-loopback address.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_ipc::{Call, Router, Server, ServerConfig};
use strata_proto::methods::supervisor::{
    LogLine, LogStream, NodeStatus, SvcInfo, SvcList, SvcListResult, SvcLogs, SvcLogsParams,
    SvcLogsResult, SvcNameParams, SvcRestart, SvcRestartParams, SvcState, SvcStatus,
};
use strata_proto::methods::{NoParams, StatusResult};
use strata_proto::{ErrorBody, ErrorCode};
use strata_testkit::{healthy, wait_until, Proc, Sandbox, DEADLINE};

/// A supervisor that knows registry, identity and fs (fs's pid is this test's, so /proc
/// has numbers for it) and counts the restarts it is asked for.
fn fake_supervisor(sb: &Sandbox) -> Arc<AtomicUsize> {
    let restarts = Arc::new(AtomicUsize::new(0));
    let path = sb.socket("supervisor");
    let counted = Arc::clone(&restarts);
    let own = path.to_str().unwrap().to_owned();
    let router = Router::new("supervisor", "0")
        .method::<strata_proto::methods::supervisor::Status, _, _, _>(
            |_c: Call, _p: NoParams| async move {
                Ok::<_, ErrorBody>(NodeStatus {
                    node_id: "node-1".into(),
                    uptime_sec: 5,
                    extra: Default::default(),
                })
            },
        )
        .method::<SvcList, _, _, _>(move |_c: Call, _p: NoParams| {
            let own = own.clone();
            async move {
                // fs's socket is this fake's own: its sys.metrics counts the console's calls.
                let svc = |name: &str, pid: Option<u32>, deps: &[&str]| {
                    let socket = (name == "fs").then(|| own.clone());
                    let extra = serde_json::json!({"restarts": 2, "since": 1_767_225_600,
                    "depends_on": deps, "socket": socket, "capabilities": 0, "waiting": null});
                    SvcInfo {
                        name: name.into(),
                        state: SvcState::Healthy,
                        pid,
                        extra: extra.as_object().unwrap().clone(),
                    }
                };
                Ok::<_, ErrorBody>(SvcListResult {
                    services: vec![
                        svc("registry", None, &[]),
                        svc("identity", None, &["registry"]),
                        svc("fs", Some(std::process::id()), &["identity"]),
                    ],
                })
            }
        })
        .method::<SvcStatus, _, _, _>(|_c: Call, _p: SvcNameParams| async move {
            Err::<strata_proto::methods::supervisor::SvcStatusResult, _>(ErrorBody::new(
                ErrorCode::NotFound,
                "no such service",
            ))
        })
        .method::<SvcRestart, _, _, _>(move |_c: Call, p: SvcRestartParams| {
            let counted = Arc::clone(&counted);
            async move {
                assert_eq!(p.name, "fs");
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ErrorBody>(StatusResult::new("restarted"))
            }
        })
        .method::<SvcLogs, _, _, _>(|_c: Call, p: SvcLogsParams| async move {
            let line = |i: u64| LogLine {
                ts_ms: i,
                stream: LogStream::Stdout,
                text: format!("line {i}"),
            };
            Ok::<_, ErrorBody>(SvcLogsResult {
                name: p.name.into_string(),
                lines: vec![line(1), line(2)],
            })
        });
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let server = Server::bind(ServerConfig::new(&path), router).unwrap();
                server.serve(std::future::pending()).await;
            });
    });
    let path = sb.socket("supervisor");
    wait_until("the fake supervisor", DEADLINE, || healthy(&path));
    restarts
}

/// A running console: its guard, its address and the secret of its URL.
struct Console {
    _proc: Proc,
    addr: String,
    secret: String,
}

fn console(sb: &Sandbox) -> Console {
    console_with(sb, &[])
}

/// A console started with `args` before `console`.
fn console_with(sb: &Sandbox, args: &[&str]) -> Console {
    console_full(sb, args, &[])
}

/// A console started with `args` before `console` and `own` after it.
fn console_full(sb: &Sandbox, args: &[&str], own: &[&str]) -> Console {
    let out = sb.root().join("console.out");
    let mut cmd = sb.command("strata-ctl");
    cmd.args(args)
        .arg("console")
        .args(own)
        .stdout(std::fs::File::create(&out).unwrap());
    let proc = Proc::spawn("strata-ctl console", &mut cmd);
    let mut printed = String::new();
    wait_until("the console's URL", DEADLINE, || {
        printed = std::fs::read_to_string(&out).unwrap_or_default();
        printed.ends_with('\n')
    });
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let url = printed
        .trim_end()
        .strip_prefix("Console: http://")
        .unwrap_or_else(|| panic!("{printed}"));
    let (addr, secret) = url.split_once("/?secret=").unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    Console {
        _proc: proc,
        addr: addr.to_owned(),
        secret: secret.to_owned(),
    }
}

/// An answer: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn parse(raw: &str) -> Answer {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Send `raw` and read the whole answer (the console closes after each).
fn send(addr: &str, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse(&String::from_utf8_lossy(&out))
}

/// A request with the right Host and `headers`.
fn request(c: &Console, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", c.addr);
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("Content-Length: 0\r\n\r\n");
    send(&c.addr, raw.as_bytes())
}

/// Exchange the secret: the cookie's `name=value`.
fn sign_in(c: &Console) -> String {
    let a = request(c, "GET", &format!("/?secret={}", c.secret), &[]);
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a.header("set-cookie").unwrap();
    assert!(
        cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

#[test]
fn the_secret_works_once_and_every_check_holds() {
    let sb = Sandbox::new();
    let restarts = fake_supervisor(&sb);
    let c = console(&sb);
    assert_eq!(request(&c, "GET", "/", &[]).status, 401);
    assert_eq!(request(&c, "GET", "/?secret=wrong", &[]).status, 401);
    // A foreign Host is refused before the secret is looked at (DNS rebinding).
    let mut raw = format!(
        "GET /?secret={} HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        c.secret
    );
    let foreign = send(&c.addr, raw.as_bytes());
    assert_eq!(foreign.status, 403);
    assert!(!foreign.body.contains("evil"), "{}", foreign.body);
    let cookie = sign_in(&c);
    let again = request(&c, "GET", &format!("/?secret={}", c.secret), &[]);
    assert_eq!(again.status, 401, "one time only");

    let page = request(&c, "GET", "/", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200);
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(page.header(name), Some(value), "{name}");
        assert_eq!(again.header(name), Some(value), "{name} on a refusal");
    }
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'none'"));
    raw = format!("GET / HTTP/1.1\r\nHost: evil.example\r\nCookie: {cookie}\r\n\r\n");
    assert_eq!(
        send(&c.addr, raw.as_bytes()).status,
        403,
        "Host with a cookie"
    );

    let session = request(&c, "GET", "/api/session", &[("Cookie", &cookie)]).json();
    assert_eq!(session["node_id"], "node-1");
    let csrf = session["csrf"].as_str().unwrap().to_owned();

    let restart = "/api/services/fs/restart";
    assert_eq!(
        request(&c, "POST", restart, &[("Cookie", &cookie)]).status,
        403
    );
    let wrong = [("Cookie", cookie.as_str()), ("X-CSRF-Token", "nope")];
    assert_eq!(request(&c, "POST", restart, &wrong).status, 403);
    let foreign_origin = [
        ("Cookie", cookie.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
        ("Origin", "http://evil.example"),
    ];
    assert_eq!(request(&c, "POST", restart, &foreign_origin).status, 403);
    assert_eq!(
        restarts.load(Ordering::SeqCst),
        0,
        "nothing refused reached it"
    );
    let origin = format!("http://{}", c.addr);
    let right = [
        ("Cookie", cookie.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
        ("Origin", origin.as_str()),
    ];
    let done = request(&c, "POST", restart, &right);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["status"], "restarted");
    assert_eq!(
        restarts.load(Ordering::SeqCst),
        1,
        "the restart reached the supervisor"
    );

    let node = request(&c, "GET", "/api/node", &[("Cookie", &cookie)]).json();
    let names: Vec<&str> = node["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["registry", "identity", "fs"]);
    let fs = &node["services"][2];
    assert_eq!(fs["state"], "Healthy");
    assert_eq!(fs["depends_on"], serde_json::json!(["identity"]));
    assert!(fs["rss_bytes"].as_u64().is_some_and(|r| r > 0), "{fs}");
    assert!(
        fs["request_rate"].is_null(),
        "the first answer has no rate: {fs}"
    );
    let node = request(&c, "GET", "/api/node", &[("Cookie", &cookie)]).json();
    let rate = &node["services"][2]["request_rate"];
    assert!(rate.as_f64().is_some_and(|r| r > 0.0), "{node}");
    assert!(
        node["services"][0]["request_rate"].is_null(),
        "no socket: {node}"
    );

    // Protocol errors as HTTP: NOT_FOUND from the supervisor, no identity at all.
    let missing = request(&c, "GET", "/api/services/nope", &[("Cookie", &cookie)]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "NOT_FOUND");
    let caps = request(&c, "GET", "/api/caps", &[("Cookie", &cookie)]);
    assert_eq!(caps.status, 503, "{}", caps.body);
    assert_eq!(caps.json()["error"]["code"], "UNAVAILABLE");
    assert_eq!(
        request(&c, "GET", "/api/services/Bad..name", &[("Cookie", &cookie)]).status,
        400
    );
}

/// Open an event stream; `until` reads it until `want` holds of what came (or panics).
fn stream(c: &Console, path: &str, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(&c.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        c.addr
    );
    s.write_all(raw.as_bytes()).unwrap();
    s
}

fn until(s: &mut TcpStream, seen: &mut String, want: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    while !want(seen) {
        assert!(Instant::now() < deadline, "timed out; got {seen}");
        match s.read(&mut buf) {
            Ok(0) => panic!("the stream ended: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

#[test]
fn the_audit_stream_follows_the_log_across_rotations() {
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    let log = sb.state_dir().join("audit.log");
    append(
        &log,
        r#"{"source":"fs","event":"auth.denied","n":"before"}"#,
    );
    let c = console(&sb);
    let cookie = sign_in(&c);
    let mut s = stream(&c, "/api/audit?service=fs", &cookie);
    let mut seen = String::new();
    until(&mut s, &mut seen, |t| t.contains(r#""n":"before""#));
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    append(
        &log,
        r#"{"source":"identity","event":"cap.issued","n":"other"}"#,
    );
    append(&log, r#"{"source":"fs","event":"fs.open","n":"appended"}"#);
    until(&mut s, &mut seen, |t| t.contains(r#""n":"appended""#));
    // Truncated in place, as the audit crate rotates it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(
        &log,
        r#"{"service":"fs","event":"x","n":"after-truncation"}"#,
    );
    until(&mut s, &mut seen, |t| t.contains("after-truncation"));
    // Replaced by another file.
    let new = sb.state_dir().join("audit.new");
    append(&new, r#"{"source":"fs","event":"x","n":"replaced"}"#);
    std::fs::rename(&new, &log).unwrap();
    until(&mut s, &mut seen, |t| t.contains(r#""n":"replaced""#));
    assert!(!seen.contains("other"), "the filter holds: {seen}");

    // The log stream: the supervisor's lines as events.
    let mut logs = stream(&c, "/api/services/fs/logs", &cookie);
    let mut seen = String::new();
    until(&mut logs, &mut seen, |t| t.contains(r#""line":"line 2""#));
    assert!(
        seen.contains(r#"data: {"line":"line 1","stream":"stdout""#),
        "{seen}"
    );
}

#[test]
fn oversized_requests_are_refused() {
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    let c = console(&sb);
    let cookie = sign_in(&c);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nX-Big: {}\r\n\r\n",
        c.addr,
        "a".repeat(9 * 1024)
    );
    let a = send(&c.addr, big.as_bytes());
    assert!(a.status == 431 || a.status == 0, "{}", a.status);
    let mut many = format!("GET / HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n", c.addr);
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let a = send(&c.addr, many.as_bytes());
    assert!(a.status == 431 || a.status == 0, "{}", a.status);
    let csrf = request(&c, "GET", "/api/session", &[("Cookie", &cookie)]).json()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = "x".repeat(2048);
    let post = format!(
        "POST /api/services/fs/restart HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\nContent-Length: {}\r\n\r\n{body}",
        c.addr,
        body.len()
    );
    assert_eq!(send(&c.addr, post.as_bytes()).status, 413);
    let long = format!("/api/audit?event={}", "e".repeat(129));
    assert_eq!(
        request(&c, "GET", &long, &[("Cookie", &cookie)]).status,
        400
    );
    // Still serving.
    assert_eq!(
        request(&c, "GET", "/app.js", &[("Cookie", &cookie)]).status,
        200
    );
}

#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let sb = Sandbox::new();
    let errs = sb.root().join("console.err");
    let outs = sb.root().join("console.out");
    let mut cmd = sb.command("strata-ctl");
    cmd.args(["console", "--listen", "0.0.0.0:0"])
        .stdout(std::fs::File::create(&outs).unwrap())
        .stderr(std::fs::File::create(&errs).unwrap());
    let mut refused = Proc::spawn("strata-ctl console", &mut cmd);
    let status = refused
        .wait_timeout(DEADLINE)
        .expect("refused at once, not served");
    assert_eq!(status.code(), Some(2));
    let err = std::fs::read_to_string(&errs).unwrap();
    assert!(err.contains("--allow-remote"), "{err}");
    assert_eq!(std::fs::read_to_string(&outs).unwrap(), "");

    // An unspecified address is refused even with --allow-remote: the Host a browser
    // sends could never equal it.
    for unspecified in ["0.0.0.0:0", "[::]:0"] {
        let mut cmd = sb.command("strata-ctl");
        cmd.args(["console", "--listen", unspecified, "--allow-remote"])
            .stdout(std::fs::File::create(&outs).unwrap())
            .stderr(std::fs::File::create(&errs).unwrap());
        let mut refused = Proc::spawn("strata-ctl console", &mut cmd);
        let status = refused
            .wait_timeout(DEADLINE)
            .expect("refused at once, not served");
        assert_eq!(status.code(), Some(2), "{unspecified}");
        let err = std::fs::read_to_string(&errs).unwrap();
        assert!(err.contains("one IP address"), "{err}");
        assert_eq!(std::fs::read_to_string(&outs).unwrap(), "");
    }

    // A concrete non-loopback address of this host: the source of a route outward (a UDP
    // connect sends nothing).
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let ip = match udp.connect("192.0.2.1:9").and_then(|()| udp.local_addr()) {
        Ok(a) if !a.ip().is_loopback() && !a.ip().is_unspecified() => a.ip(),
        _ => {
            strata_testkit::skip(
                "a_non_loopback_address_needs_allow_remote",
                "this host has no non-loopback IPv4 address to listen on",
            );
            return;
        }
    };
    let mut cmd = sb.command("strata-ctl");
    cmd.args(["console", "--listen", &format!("{ip}:0"), "--allow-remote"])
        .stdout(std::fs::File::create(&outs).unwrap())
        .stderr(std::fs::File::create(&errs).unwrap());
    let _proc = Proc::spawn("strata-ctl console", &mut cmd);
    wait_until("the URL", DEADLINE, || {
        std::fs::read_to_string(&outs)
            .is_ok_and(|t| t.starts_with(&format!("Console: http://{ip}:")))
    });
    let warned = std::fs::read_to_string(&errs).unwrap();
    assert!(
        warned.contains("warning")
            && warned.contains("not loopback")
            && warned.contains("not limited to your own uid"),
        "{warned}"
    );
}

/// Run `script` in bash as uid/gid 65534 (nobody), its stdout into `out`.
fn as_nobody(sb: &Sandbox, script: &str, out: &Path) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", script])
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out).unwrap());
    let _ = sb;
    Proc::spawn("bash as nobody", &mut cmd)
}

#[test]
fn on_loopback_only_the_consoles_own_uid_is_served() {
    if strata_testkit::skip_unless_root("on_loopback_only_the_consoles_own_uid_is_served") {
        return;
    }
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    let c = console(&sb);
    let (ip, port) = c.addr.split_once(':').unwrap();
    // Another user, with the secret (raced from the browser's command line, say), gets
    // no answer at all: the connection is closed unread.
    let out = sb.root().join("nobody.out");
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{port} || exit 9; printf 'GET /?secret={} HTTP/1.1\\r\\nHost: {}\\r\\n\\r\\n' >&3; cat <&3; echo done",
        c.secret, c.addr
    );
    let mut nobody = as_nobody(&sb, &script, &out);
    let status = nobody
        .wait_timeout(DEADLINE)
        .expect("the connection is closed");
    assert!(status.success(), "{status:?}");
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, "done\n", "another uid was answered: {got}");
    // Nor can it hold the console's connection slots: with more connections than there
    // are slots held open by nobody, the console still answers its own user at once.
    let held = sb.root().join("held.out");
    let script = format!(
        "for i in $(seq 80); do exec {{fd}}<>/dev/tcp/{ip}/{port} || exit 9; done; echo held; exec sleep 120"
    );
    let _holder = as_nobody(&sb, &script, &held);
    wait_until("nobody's connections", DEADLINE, || {
        std::fs::read_to_string(&held).is_ok_and(|t| t == "held\n")
    });
    // The secret was not used up by nobody's try.
    let cookie = sign_in(&c);
    assert_eq!(
        request(&c, "GET", "/api/session", &[("Cookie", &cookie)]).status,
        200
    );
}

/// The token the caps test's console is given.
const TOKEN: &str = "v4.local.the-users-own-token";

/// An identity whose issued capabilities come in two pages, and that records every
/// revocation with the token it came with.
/// The revocations a fake identity saw: cap_id and the token sent with it.
type Revocations = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn fake_identity(sb: &Sandbox) -> Revocations {
    use strata_proto::methods::identity::{
        Issued, IssuedCap, IssuedParams, IssuedResult, Revoke, RevokeParams, RevokeResult,
    };
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&revoked);
    let cap = |n: u32, parents: Vec<String>| IssuedCap {
        cap_id: format!("{n:032x}"),
        parents,
        expires: 1_767_225_600,
        issued_at: None,
        service: Some("fs".into()),
        rights: Some(vec!["fs.read".into()]),
        path_prefix: None,
        rate_limit: None,
        subject: None,
        revoked: false,
    };
    let router = Router::new("identity", "0")
        .method::<Issued, _, _, _>(move |_c: Call, p: IssuedParams| async move {
            assert_eq!(p.limit, Some(1000));
            Ok::<_, ErrorBody>(match p.after.as_deref() {
                None => IssuedResult {
                    caps: vec![cap(1, vec![]), cap(2, vec![format!("{:032x}", 1)])],
                    next: Some(format!("{:032x}", 2)),
                },
                Some(after) if after == format!("{:032x}", 2) => IssuedResult {
                    caps: vec![cap(3, vec![])],
                    next: None,
                },
                Some(_) => return Err(ErrorBody::new(ErrorCode::InvalidArgument, "bad after")),
            })
        })
        .method::<Revoke, _, _, _>(move |c: Call, p: RevokeParams| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .unwrap()
                    .push((p.cap_id, c.token().map(str::to_owned)));
                Ok::<_, ErrorBody>(RevokeResult {
                    status: "revoked".into(),
                    confirmed: 1,
                    unconfirmed: 0,
                })
            }
        });
    let path = sb.socket("identity");
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let server = Server::bind(ServerConfig::new(&path), router).unwrap();
                server.serve(std::future::pending()).await;
            });
    });
    let path = sb.socket("identity");
    wait_until("the fake identity", DEADLINE, || healthy(&path));
    revoked
}

#[test]
fn caps_are_gathered_page_by_page_and_a_revoke_carries_the_users_token() {
    use std::os::unix::fs::OpenOptionsExt;
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    let revoked = fake_identity(&sb);
    let token_file = sb.root().join("token");
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&token_file)
        .unwrap()
        .write_all(TOKEN.as_bytes())
        .unwrap();
    let c = console_with(&sb, &["--token-file", token_file.to_str().unwrap()]);
    let cookie = sign_in(&c);
    let caps = request(&c, "GET", "/api/caps", &[("Cookie", &cookie)]);
    assert_eq!(caps.status, 200, "{}", caps.body);
    let v = caps.json();
    let ids: Vec<&str> = v["caps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cap_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "both pages: {v}");
    assert_eq!(v["truncated"], false);
    assert_eq!(v["caps"][1]["parents"][0], format!("{:032x}", 1));
    let session = request(&c, "GET", "/api/session", &[("Cookie", &cookie)]);
    let csrf = session.json()["csrf"].as_str().unwrap().to_owned();
    let with = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let bad = request(&c, "POST", "/api/caps/NOT-A-CAP/revoke", &with);
    assert_eq!(bad.status, 400);
    let id = format!("{:032x}", 2);
    let done = request(&c, "POST", &format!("/api/caps/{id}/revoke"), &with);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["status"], "revoked");
    assert_eq!(
        *revoked.lock().unwrap(),
        [(id, Some(TOKEN.to_owned()))],
        "called with the user's token"
    );
    for answer in [&caps, &session, &done] {
        assert!(!answer.body.contains(TOKEN), "a token reached the browser");
    }
}

#[test]
fn caps_stop_after_twenty_pages() {
    use strata_proto::methods::identity::{Issued, IssuedCap, IssuedParams, IssuedResult};
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    // An identity whose pages never end (one cap each, always a `next`).
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let router =
        Router::new("identity", "0").method::<Issued, _, _, _>(move |_c: Call, p: IssuedParams| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let n = p
                    .after
                    .as_deref()
                    .map_or(0, |a| u128::from_str_radix(a, 16).unwrap() + 1);
                Ok::<_, ErrorBody>(IssuedResult {
                    caps: vec![IssuedCap {
                        cap_id: format!("{n:032x}"),
                        parents: vec![],
                        expires: 1_767_225_600,
                        issued_at: None,
                        service: None,
                        rights: None,
                        path_prefix: None,
                        rate_limit: None,
                        subject: None,
                        revoked: false,
                    }],
                    next: Some(format!("{n:032x}")),
                })
            }
        });
    let path = sb.socket("identity");
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let server = Server::bind(ServerConfig::new(&path), router).unwrap();
                server.serve(std::future::pending()).await;
            });
    });
    wait_until("the endless identity", DEADLINE, || {
        healthy(&sb.socket("identity"))
    });
    let c = console(&sb);
    let cookie = sign_in(&c);
    let before = calls.load(Ordering::SeqCst);
    let caps = request(&c, "GET", "/api/caps", &[("Cookie", &cookie)]);
    assert_eq!(caps.status, 200, "{}", caps.body);
    let v = caps.json();
    assert_eq!(v["truncated"], true, "{v}");
    assert_eq!(v["caps"].as_array().unwrap().len(), 20);
    assert_eq!(calls.load(Ordering::SeqCst) - before, 20);
}

/// Serve `router` as `name` in the sandbox, on its own thread.
fn serve(sb: &Sandbox, name: &str, router: Router) {
    let path = sb.socket(name);
    let bound = path.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let server = Server::bind(ServerConfig::new(&bound), router).unwrap();
                server.serve(std::future::pending()).await;
            });
    });
    wait_until(name, DEADLINE, || healthy(&path));
}

#[test]
fn the_cluster_answer_has_the_registrys_etcd_contact_and_an_etcd_error_not_a_failed_page() {
    let sb = Sandbox::new();
    fake_supervisor(&sb);
    serve(
        &sb,
        "identity",
        Router::new("identity", "0").health_extra(|| {
            serde_json::json!({"cluster": {"node": "node-1", "loaded": true, "etcd_connected": true}})
                .as_object()
                .unwrap()
                .clone()
        }),
    );
    serve(
        &sb,
        "registry",
        Router::new("registry", "0").metrics(|snap| {
            snap.gauge("strata_cluster_etcd_contact_age_seconds", "age", 41.0)
                .gauge("strata_cluster_lease_held", "held", 1.0)
                .gauge("strata_cluster_etcd_connected", "connected", 0.0);
        }),
    );
    // Nothing listens on port 1: etcd cannot be read.
    let c = console_full(&sb, &["--timeout", "1"], &["--etcd", "http://127.0.0.1:1"]);
    let cookie = sign_in(&c);
    let answer = request(&c, "GET", "/api/cluster", &[("Cookie", &cookie)]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v = answer.json();
    assert_eq!(v["configured"], true, "{v}");
    assert_eq!(v["contact_age_s"], 41.0, "{v}");
    assert_eq!(v["lease_held"], true, "{v}");
    assert_eq!(v["etcd_connected"], false, "{v}");
    assert!(v["nodes_error"].is_string(), "{v}");
    assert!(v.get("nodes").is_none(), "{v}");
}
