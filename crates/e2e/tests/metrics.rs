//! The node's Prometheus endpoint on a live node: `promtool check metrics` accepts a real
//! scrape, every documented family is there with real values, and issuing, reading and
//! revoking move the counters by exactly that much.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use strata_e2e::Stack;
use strata_testkit::{call, wait_until, DEADLINE};

/// The endpoint's request-head bounds (`strata_supervisor::metrics::http::{MAX_HEADER_BYTES,
/// MAX_HEADERS}`; this crate starts the binaries and does not link the supervisor).
const MAX_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

fn free_port() -> SocketAddr {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One HTTP/1.1 request; the status code, the head and the body.
fn http(addr: SocketAddr, request_line: &str) -> (u16, String, String) {
    http_with(addr, request_line, "")
}

/// One HTTP/1.1 request with `headers` (each ending in `\r\n`) added.
fn http_with(addr: SocketAddr, request_line: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "{request_line}\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// Every sample of an exposition: `name{labels}` exactly as printed → value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

thread_local! {
    /// Per endpoint: the sum of `strata_scrape_errors_total` in the last scrape returned.
    static ERRORS_SEEN: std::cell::RefCell<BTreeMap<SocketAddr, f64>> = Default::default();
}

/// A whole scrape: one in which no service's answer was missing. The supervisor gives each
/// service 1 s; on a loaded machine one may miss it (counted in `strata_scrape_errors_total`,
/// its families absent from that scrape), and then the scrape is taken again, for up to
/// [`DEADLINE`].
fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (body, all) = scrape_once(addr);
        let errors: f64 = all
            .iter()
            .filter(|(series, _)| series.starts_with("strata_scrape_errors_total{"))
            .map(|(_, v)| *v)
            .sum();
        let seen = ERRORS_SEEN.with(|m| m.borrow_mut().insert(addr, errors).unwrap_or(0.0));
        // Past the deadline the last scrape is what there is (the caller's lookups say
        // what is missing from it).
        if errors <= seen || std::time::Instant::now() >= deadline {
            return (body, all);
        }
    }
}

fn scrape_once(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (status, head, body) = http(addr, "GET /metrics HTTP/1.1");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let all = samples(&body);
    (body, all)
}

fn value(all: &BTreeMap<String, f64>, series: &str) -> f64 {
    *all.get(series)
        .unwrap_or_else(|| panic!("no series {series} in the scrape"))
}

/// A counter's value, 0 when the series has not appeared yet (an error code is shown once
/// it happened). Only for a count that must have moved, or a poll: a count that must not
/// have moved is read with [`value`], so a series that vanished is not taken for 0.
fn count(all: &BTreeMap<String, f64>, series: &str) -> f64 {
    all.get(series).copied().unwrap_or(0.0)
}

fn requests(service: &str, method: &str, code: &str) -> String {
    format!("strata_requests_total{{service=\"{service}\",code=\"{code}\",method=\"{method}\"}}")
}

fn promtool_check(body: &str) {
    if Command::new("promtool").arg("--version").output().is_err() {
        strata_testkit::skip(
            "metrics::promtool",
            "promtool not installed (Debian package prometheus; scripts/install-test-deps.sh)",
        );
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n--- the scrape:\n{body}",
        out.status
    );
}

const FAMILIES: [&str; 27] = [
    "strata_service_state",
    "strata_service_restarts_total",
    "strata_service_uptime_seconds",
    "strata_service_memory_bytes",
    "strata_service_cpu_seconds_total",
    "strata_supervisor_uptime_seconds",
    "strata_scrape_errors_total",
    "strata_scrape_refused_families_total",
    "strata_requests_total",
    "strata_request_duration_seconds",
    "strata_identity_issued_total",
    "strata_identity_delegated_total",
    "strata_identity_revoked_total",
    "strata_identity_denied_total",
    "strata_identity_revocations",
    "strata_identity_feed_subscribers",
    "strata_identity_feed_max_lag_revocations",
    "strata_fs_open_handles",
    "strata_fs_read_bytes_total",
    "strata_fs_denied_total",
    "strata_fs_file_ops_in_flight",
    "strata_registry_entries",
    // Written as `# TYPE` lines (also for families with no sample yet).
    "strata_service_state gauge",
    "strata_requests_total counter",
    "strata_request_duration_seconds histogram",
    "strata_identity_revocations gauge",
    "strata_fs_read_bytes_total counter",
];

#[test]
fn a_live_node_scrape_passes_promtool_and_counts_exactly() {
    let addr = free_port();
    let stack = Stack::start_with_env(vec![("STRATA_METRICS_LISTEN".into(), addr.to_string())]);
    let contents = b"metrics are counted\n";
    std::fs::write(stack.export.join("m.txt"), contents).unwrap();

    // fs is Healthy once its guard has the revocation list; by then every service answers.
    let healthy = |s: &str| format!("strata_service_state{{service=\"{s}\",state=\"Healthy\"}}");
    let mut before = BTreeMap::new();
    wait_until("every service's families in the scrape", DEADLINE, || {
        before = scrape(addr).1;
        ["registry", "identity", "fs", "supervisor"]
            .iter()
            .all(|s| before.contains_key(&requests(s, "sys.metrics", "OK")))
    });
    let (body, _) = scrape(addr);
    promtool_check(&body);
    for family in FAMILIES {
        let typed = family.contains(' ');
        let present = if typed {
            body.contains(&format!("# TYPE {family}\n"))
        } else {
            body.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} ")))
        };
        assert!(present, "{family} missing from\n{body}");
    }
    for s in ["registry", "identity", "fs"] {
        assert_eq!(value(&before, &healthy(s)), 1.0, "{s}");
        let memory = format!("strata_service_memory_bytes{{service=\"{s}\"}}");
        assert!(value(&before, &memory) > 0.0, "{memory}");
        let cpu = format!("strata_service_cpu_seconds_total{{service=\"{s}\"}}");
        assert!(value(&before, &cpu) >= 0.0, "{cpu}");
        let up = format!("strata_service_uptime_seconds{{service=\"{s}\"}}");
        assert!(value(&before, &up) >= 0.0, "{up}");
        let restarts = format!("strata_service_restarts_total{{service=\"{s}\"}}");
        assert_eq!(value(&before, &restarts), 0.0, "{restarts}");
    }
    let registered = value(
        &before,
        "strata_registry_entries{service=\"registry\",scope=\"local\"}",
    );
    assert!(
        registered >= 2.0,
        "identity and fs registered: {registered}"
    );
    assert!(
        value(
            &before,
            "strata_identity_feed_subscribers{service=\"identity\",trusted=\"true\"}"
        ) >= 1.0,
        "fs's guard follows the feed"
    );
    assert!(value(&before, "strata_supervisor_uptime_seconds") > 0.0);

    // Issue, open, read, a denied open, close nothing, revoke.
    let identity = stack.sb.socket("identity");
    let fs = stack.sb.socket("fs");
    // One refused read before `before`, so the series is there to stay unmoved below.
    let bogus = json!({"handle": "h", "offset": 0, "size": 1});
    let refused = call(&fs, "fs.read", bogus, Some("v2.public.bogus")).unwrap();
    assert_eq!(refused["error"]["name"], "UNAUTHENTICATED", "{refused}");
    let unauthenticated_read = requests("fs", "fs.read", "UNAUTHENTICATED");
    wait_until("the refused read counted", DEADLINE, || {
        before = scrape(addr).1;
        before.contains_key(&unauthenticated_read)
    });
    let issued = call(
        &identity,
        "identity.issue",
        json!({"service": "fs", "actions": ["open", "read"], "path_prefix": stack.export,
               "ttl_seconds": 600}),
        None,
    )
    .unwrap();
    assert_eq!(issued["ok"], true, "{issued}");
    let token = issued["result"]["token"].as_str().unwrap().to_owned();
    let cap_id = issued["result"]["cap_id"].as_str().unwrap().to_owned();
    let path = "m.txt";
    let opened = call(&fs, "fs.open", json!({"path": path}), Some(&token)).unwrap();
    assert_eq!(opened["ok"], true, "{opened}");
    let handle = opened["result"]["handle"].as_str().unwrap().to_owned();
    let read = call(
        &fs,
        "fs.read",
        json!({"handle": handle, "offset": 0, "size": 4096}),
        Some(&token),
    )
    .unwrap();
    assert_eq!(read["ok"], true, "{read}");
    let denied = call(
        &fs,
        "fs.open",
        json!({"path": path}),
        Some("v2.public.bogus"),
    )
    .unwrap();
    assert_eq!(denied["error"]["name"], "UNAUTHENTICATED", "{denied}");
    let mid = scrape(addr).1;
    let revoked = call(
        &identity,
        "identity.revoke",
        json!({"cap_id": cap_id}),
        None,
    )
    .unwrap();
    assert_eq!(revoked["ok"], true, "{revoked}");

    // The revocation closes the handle in fs; wait for that, then compare.
    let handles = "strata_fs_open_handles{service=\"fs\"}";
    assert_eq!(value(&mid, handles), value(&before, handles) + 1.0);
    let mut after = BTreeMap::new();
    wait_until("the revoked capability's handle closed", DEADLINE, || {
        after = scrape(addr).1;
        value(&after, handles) == value(&before, handles)
    });
    // A count that must have moved may be new since `before`; one that must not have
    // moved must be there both times.
    let moved = |series: &str| value(&after, series) - count(&before, series);
    let unmoved = |series: &str| value(&after, series) - value(&before, series);
    let cases: Vec<(String, f64)> = vec![
        (
            "strata_identity_issued_total{service=\"identity\"}".into(),
            1.0,
        ),
        (
            "strata_identity_revoked_total{service=\"identity\"}".into(),
            1.0,
        ),
        (
            "strata_identity_delegated_total{service=\"identity\"}".into(),
            0.0,
        ),
        (
            "strata_identity_revocations{service=\"identity\"}".into(),
            1.0,
        ),
        (
            "strata_fs_read_bytes_total{service=\"fs\"}".into(),
            contents.len() as f64,
        ),
        ("strata_fs_denied_total{service=\"fs\"}".into(), 1.0),
        (requests("identity", "identity.issue", "OK"), 1.0),
        (requests("identity", "identity.revoke", "OK"), 1.0),
        (requests("fs", "fs.open", "OK"), 1.0),
        (requests("fs", "fs.open", "UNAUTHENTICATED"), 1.0),
        (requests("fs", "fs.read", "OK"), 1.0),
        (unauthenticated_read, 0.0),
    ];
    for (series, by) in cases {
        if by == 0.0 {
            assert_eq!(unmoved(&series), 0.0, "{series}");
        } else {
            assert_eq!(moved(&series), by, "{series}");
        }
    }
    let latency_count = "strata_request_duration_seconds_count{service=\"fs\",method=\"fs.read\"}";
    assert_eq!(moved(latency_count), 1.0);
    // Scrape errors are not compared: a service that missed its 1 s on a loaded machine
    // is one (and `scrape` took that scrape again). Refused families are never expected.
    for s in ["registry", "identity", "fs", "supervisor"] {
        let errors = format!("strata_scrape_errors_total{{service=\"{s}\"}}");
        value(&after, &errors);
        let refused = format!("strata_scrape_refused_families_total{{service=\"{s}\"}}");
        assert_eq!(value(&after, &refused), 0.0, "{refused}");
    }
    promtool_check(&scrape(addr).0);
}

#[test]
fn only_get_metrics_is_served_and_sys_metrics_answers_the_services_user() {
    let addr = free_port();
    let stack = Stack::start_with_env(vec![("STRATA_METRICS_LISTEN".into(), addr.to_string())]);
    assert_eq!(http(addr, "GET / HTTP/1.1").0, 404);
    assert_eq!(http(addr, "GET /metrics/x HTTP/1.1").0, 404);
    assert_eq!(http(addr, "POST /metrics HTTP/1.1").0, 405);
    // A request head beyond the bound is refused, and the endpoint still serves.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = stream.write_all(huge.as_bytes());
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(http(addr, "GET /metrics HTTP/1.1").0, 200);
    // A head just inside the byte bound is served.
    let pad = format!("X-Pad: {}\r\n", "a".repeat(MAX_HEADER_BYTES - 1024));
    assert_eq!(http_with(addr, "GET /metrics HTTP/1.1", &pad).0, 200);
    // MAX_HEADERS headers (Host and Connection among them) are served; one more is not.
    let extra = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    let (status, head, _) = http_with(addr, "GET /metrics HTTP/1.1", &extra(MAX_HEADERS - 2));
    assert_eq!(status, 200, "{head}");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{}Connection: close\r\n\r\n",
        extra(MAX_HEADERS - 1)
    );
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");

    // The test runs as the services' own user: sys.metrics answers it, over the socket.
    let r: Value = call(&stack.sb.socket("fs"), "sys.metrics", Value::Null, None).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["result"]["families"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "strata_fs_open_handles"));
    // Another uid is refused: the router's unit tests (crates/ipc/src/router/tests.rs).
}

#[test]
fn idle_and_slow_clients_do_not_keep_a_scrape_out() {
    let addr = free_port();
    let _stack = Stack::start_with_env(vec![("STRATA_METRICS_LISTEN".into(), addr.to_string())]);
    wait_until("the endpoint serves", DEADLINE, || {
        TcpStream::connect(addr).is_ok()
    });
    // More idle connections than the old limit of 16, and one that sends half a head.
    let mut idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
        .unwrap();
    idle.push(slow);
    let (status, head, body) = http(addr, "GET /metrics HTTP/1.1");
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("strata_service_state"), "{body}");
    // Each of them is closed unanswered once its head is late.
    for mut stream in idle {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reply = Vec::new();
        let closed = stream.read_to_end(&mut reply);
        assert!(closed.is_ok(), "still open after {DEADLINE:?}: {closed:?}");
        let reply = String::from_utf8_lossy(&reply);
        assert!(!reply.contains(" 200 "), "{reply}");
    }
    assert_eq!(http(addr, "GET /metrics HTTP/1.1").0, 200);
}

/// A token file of `mode` in a fresh directory, holding `token` and a newline.
fn token_file(token: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, path)
}

#[test]
fn with_a_token_file_only_requests_bearing_the_token_are_served() {
    let token = "kq3-metrics-token-9Zx";
    let (_dir, file) = token_file(token, 0o600);
    let addr = free_port();
    let _stack = Stack::start_with_env(vec![
        ("STRATA_METRICS_LISTEN".into(), addr.to_string()),
        (
            "STRATA_METRICS_TOKEN_FILE".into(),
            file.display().to_string(),
        ),
    ]);
    let get = "GET /metrics HTTP/1.1";
    let (status, head, body) = http(addr, get);
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(!body.contains("strata_"), "{body}");
    for wrong in [
        "Authorization: Bearer kq3-metrics-token-9Zy\r\n".to_owned(),
        "Authorization: Bearer kq3-metrics-token-9Z\r\n".to_owned(),
        format!("Authorization: Basic {token}\r\n"),
        format!("Authorization: Bearer {token}\r\nAuthorization: Bearer x\r\n"),
    ] {
        assert_eq!(http_with(addr, get, &wrong).0, 401, "{wrong}");
    }
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, head, body) = http_with(addr, get, &bearer);
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("strata_service_state"), "{body}");
    let lower = format!("authorization: bearer {token}\r\n");
    assert_eq!(http_with(addr, get, &lower).0, 200);
}

#[test]
fn a_token_file_others_may_read_stops_the_supervisor_at_start_up() {
    let token = "kq3-metrics-token-9Zx";
    let (_dir, file) = token_file(token, 0o640);
    let stderr = supervisor_fails(&[
        ("STRATA_METRICS_LISTEN", free_port().to_string()),
        ("STRATA_METRICS_TOKEN_FILE", file.display().to_string()),
    ]);
    assert!(
        stderr.contains("metrics token file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(token),
        "the token is never logged: {stderr}"
    );
}

#[test]
fn an_address_it_cannot_bind_stops_the_supervisor_at_start_up() {
    let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    let stderr = supervisor_fails(&[("STRATA_METRICS_LISTEN", addr.to_string())]);
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {addr}"))
            && stderr.contains("--metrics-listen"),
        "{stderr}"
    );
    drop(taken);
}

/// A supervisor started with `env` exits unsuccessfully at start-up; what it wrote to
/// stderr.
fn supervisor_fails(env: &[(&str, String)]) -> String {
    let sb = strata_testkit::Sandbox::new();
    let mut cmd = sb.command("strata-supervisor");
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (var, bin) in [
        ("STRATA_REGISTRY_BIN", "strata-registry"),
        ("STRATA_IDENTITY_BIN", "strata-identity"),
        ("STRATA_FS_BIN", "strata-fs"),
    ] {
        cmd.env(var, strata_testkit::binary(bin));
    }
    let mut supervisor = strata_testkit::Proc::spawn("strata-supervisor", &mut cmd);
    let status = supervisor
        .wait_timeout(DEADLINE)
        .expect("the supervisor exits at start-up");
    assert!(!status.success());
    let mut stderr = String::new();
    supervisor
        .take_child()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// `strata-ctl` with no node around it, for the cluster certificates.
fn ctl_ok(args: &[&str]) {
    let out = Command::new(strata_testkit::binary("strata-ctl"))
        .args(args)
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ETCD_ENDPOINTS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata-ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cluster_node_reports_its_etcd_link_and_lease() {
    let Some(mut etcd) = strata_testkit::etcd::Etcd::start_or_skip("metrics::cluster") else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca");
    let node_dir = certs.path().join("a");
    ctl_ok(&["cluster", "init", "--dir", ca.to_str().unwrap()]);
    ctl_ok(&[
        "cluster",
        "add-node",
        "a",
        "--ca-dir",
        ca.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--out",
        node_dir.to_str().unwrap(),
    ]);
    let export = certs.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let endpoint = etcd.endpoint();
    let node = strata_e2e::ClusterNode {
        node: "a",
        etcd: &endpoint,
        tls_dir: &node_dir,
        fs_tcp: free_port(),
        lease_ttl_secs: 3,
        export: &export,
    };
    let addr = free_port();
    let mut env = node.env();
    env.push(("STRATA_METRICS_LISTEN".into(), addr.to_string()));
    let _stack = Stack::start_with_env(env);

    let registry = |family: &str| format!("{family}{{service=\"registry\"}}");
    let connected = registry("strata_cluster_etcd_connected");
    let identity_connected = "strata_cluster_etcd_connected{service=\"identity\"}";
    let lease = registry("strata_cluster_lease_held");
    let age = registry("strata_cluster_etcd_contact_age_seconds");
    let mut all = BTreeMap::new();
    wait_until(
        "the node's etcd link and lease in the scrape",
        DEADLINE,
        || {
            all = scrape(addr).1;
            count(&all, &connected) == 1.0
                && count(&all, identity_connected) == 1.0
                && count(&all, &lease) == 1.0
                && all.contains_key(&age)
        },
    );
    assert!(
        all.contains_key("strata_registry_entries{service=\"registry\",scope=\"remote\"}"),
        "{all:?}"
    );
    promtool_check(&scrape(addr).0);

    // etcd goes away: the watch is down, the last answer grows old, and once it is older
    // than the lease's TTL (3 s) the lease is no longer taken as held.
    etcd.kill();
    let heard = value(&all, &age);
    wait_until(
        "the etcd link down, its last answer older and the lease not held",
        DEADLINE,
        || {
            all = scrape(addr).1;
            value(&all, &connected) == 0.0
                && value(&all, &age) > heard + 1.0
                && value(&all, &lease) == 0.0
        },
    );
}
