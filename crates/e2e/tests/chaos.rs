//! Chaos under load: 16 clients issue, delegate, open, read, list and revoke over raw
//! protocol connections while one of registry, identity and fs is SIGKILLed at random
//! about every 2 s and the supervisor restarts it.
//!
//! Runs for 60 s (`STRATA_CHAOS_SECS` for longer). Checked throughout, and asserted at the
//! end (every violation is listed):
//! - no request succeeds with a token whose revocation identity had acknowledged
//!   (`identity.revoke` answered ok) before the request was sent — checked right after
//!   each acknowledgement, and later at random across clients and restarts, against fs
//!   and through `identity.introspect`;
//! - every killed service is Healthy again (with a new pid) within the deadline;
//! - clients see well-formed responses (right `v`, echoed `req_id`, `result` xor `error`,
//!   a known code with its name, a frame within 1 MiB) or connection errors, nothing else;
//!   bytes read are the file's bytes;
//! - fs never holds more descriptors than its open handles plus a constant;
//! - no service log reports a panic;
//! - once the node is dropped, nothing from the supervisor's process tree is left.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_e2e::{descendants, open_fds, wait_gone, Stack, SERVICES};

const CLIENTS: usize = 16;
const FILES: usize = 8;
/// Descriptors fs may hold beyond one per open handle: its own (std streams, listener,
/// epoll, audit log, export root, identity feed), one connection per client, the
/// supervisor's probes and ours.
const FD_SLACK: usize = 32 + 2 * CLIENTS;
/// Longest a killed service may take to be Healthy again.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
/// Fast restarts and no quarantine, so a service killed over and over keeps coming back.
const TUNING: &str =
    "backoff = { base = \"50ms\", factor = 1.0, max = \"50ms\", reset_after = \"1s\" }\n\
                      quarantine = { crashes = 0, window = \"1m\" }";

fn file_name(i: usize) -> String {
    format!("f{i}.txt")
}

fn file_bytes(i: usize) -> Vec<u8> {
    format!("file {i}: chaos payload\n")
        .repeat(i * 97 + 1)
        .into_bytes()
}

/// xorshift64*: a small, seedable generator (the e2e crate has no rand).
struct Rng(u64);

impl Rng {
    fn seeded(stream: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng((nanos ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A token whose revocation identity acknowledged.
#[derive(Clone)]
struct Revoked {
    token: String,
    cap_id: String,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    conn_errors: AtomicU64,
    revocations_acked: AtomicU64,
    revocations_checked: AtomicU64,
    reads_verified: AtomicU64,
    /// (method, error name) → count.
    errors: Mutex<BTreeMap<(String, String), u64>>,
    violations: Mutex<Vec<String>>,
    /// Every acknowledged revocation, for later checks by any client.
    revoked: Mutex<Vec<Revoked>>,
}

impl Tally {
    fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }
}

/// What a request came back with.
enum Reply {
    Ok(Value),
    /// A well-formed protocol error: (code, name).
    Error(u64, String),
    /// The connection failed (refused, reset, closed, timed out).
    Down,
}

/// One persistent connection to a service socket, re-established after failures.
struct Conn {
    socket: PathBuf,
    stream: Option<UnixStream>,
    next_id: u64,
    prefix: String,
}

impl Conn {
    fn new(socket: PathBuf, prefix: String) -> Conn {
        Conn {
            socket,
            stream: None,
            next_id: 0,
            prefix,
        }
    }

    fn call(&mut self, tally: &Tally, method: &str, params: Value, token: Option<&str>) -> Reply {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        self.next_id += 1;
        let req_id = format!("{}-{}", self.prefix, self.next_id);
        let mut req = json!({"v": 1, "req_id": req_id, "method": method, "params": params});
        if let Some(t) = token {
            req["auth"] = json!({ "token": t });
        }
        let payload = serde_json::to_vec(&req).unwrap();
        let reply = match self.exchange(&payload) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                // A frame header declaring more than 1 MiB.
                self.stream = None;
                tally.violation(format!("{method}: response frame over 1 MiB"));
                return Reply::Down;
            }
            Err(_) => {
                self.stream = None;
                tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                return Reply::Down;
            }
        };
        match check_envelope(&reply, &req_id) {
            Ok(Reply::Ok(result)) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                Reply::Ok(result)
            }
            Ok(Reply::Error(code, name)) => {
                *tally
                    .errors
                    .lock()
                    .unwrap()
                    .entry((method.to_owned(), name.clone()))
                    .or_default() += 1;
                Reply::Error(code, name)
            }
            Ok(Reply::Down) => unreachable!("check_envelope never answers Down"),
            Err(why) => {
                self.stream = None;
                tally.violation(format!(
                    "{method}: malformed response ({why}): {}",
                    String::from_utf8_lossy(&reply[..reply.len().min(300)])
                ));
                Reply::Down
            }
        }
    }

    /// Send one frame and read one back. `Ok(None)`: the reply declared an oversize frame.
    fn exchange(&mut self, payload: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        if self.stream.is_none() {
            let s = UnixStream::connect(&self.socket)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.set_write_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().unwrap();
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        stream.write_all(&frame)?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 20 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf)?;
        Ok(Some(buf))
    }
}

/// A response must be exactly what api/protocol.md describes.
fn check_envelope(bytes: &[u8], req_id: &str) -> Result<Reply, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v["v"] != 1 {
        return Err("`v` is not 1".into());
    }
    if v["req_id"] != req_id {
        return Err(format!("req_id {} instead of {req_id}", v["req_id"]));
    }
    match (&v["ok"], v.get("result"), v.get("error")) {
        (Value::Bool(true), Some(result), None) => Ok(Reply::Ok(result.clone())),
        (Value::Bool(false), None, Some(error)) => {
            let code = error["code"].as_u64().ok_or("error without a code")?;
            let name = error["name"].as_str().ok_or("error without a name")?;
            let expected = [
                "INVALID_ARGUMENT",
                "UNAUTHENTICATED",
                "PERMISSION_DENIED",
                "NOT_FOUND",
                "INTERNAL",
                "UNAVAILABLE",
                "RESOURCE_EXHAUSTED",
                "CONFLICT",
            ];
            if !(1..=8).contains(&code) || expected[code as usize - 1] != name {
                return Err(format!("error code {code} named {name}"));
            }
            if !error["message"].is_string() || !error["details"].is_object() {
                return Err("error without a message or details object".into());
            }
            Ok(Reply::Error(code, name.to_owned()))
        }
        _ => Err("not exactly one of result/error matching ok".into()),
    }
}

/// Everything a client needs.
struct Client {
    id: usize,
    rng: Rng,
    identity: Conn,
    fs: Conn,
    export: String,
    tally: Arc<Tally>,
}

impl Client {
    fn new(id: usize, stack: &Stack, tally: Arc<Tally>) -> Client {
        Client {
            id,
            rng: Rng::seeded(id as u64 + 1),
            identity: Conn::new(stack.sb.socket("identity"), format!("c{id}-id")),
            fs: Conn::new(stack.sb.socket("fs"), format!("c{id}-fs")),
            export: stack.export.display().to_string(),
            tally,
        }
    }

    /// One round: issue, delegate, open/read/list, revoke, then check what was revoked.
    fn round(&mut self) {
        let tally = Arc::clone(&self.tally);
        let Some((root_token, root_cap)) = self.mint(
            "identity.issue",
            json!({"service": "fs", "rights": ["fs.open", "fs.read", "fs.list", "fs.stat"],
                   "path_prefix": self.export, "ttl_seconds": 600}),
        ) else {
            return;
        };
        let child = self.mint(
            "identity.delegate",
            json!({"token": root_token, "rights": ["fs.open", "fs.read"], "ttl_seconds": 300}),
        );
        // Opens and reads with either capability; some handles are closed, the rest die
        // with their capability.
        let mut handles: Vec<(String, String)> = Vec::new();
        for _ in 0..1 + self.rng.below(4) {
            let token = match (&child, self.rng.chance(50)) {
                (Some((t, _)), true) => t.clone(),
                _ => root_token.clone(),
            };
            let i = self.rng.below(FILES);
            if let Reply::Ok(r) = self.fs.call(
                &tally,
                "fs.open",
                json!({"path": file_name(i)}),
                Some(&token),
            ) {
                let handle = r["handle"].as_str().unwrap_or_default().to_owned();
                self.read_and_verify(&token, &handle, i);
                if self.rng.chance(30) {
                    self.fs
                        .call(&tally, "fs.close", json!({"handle": handle}), Some(&token));
                } else {
                    handles.push((token, handle));
                }
            }
        }
        if self.rng.chance(50) {
            if let Reply::Ok(r) =
                self.fs
                    .call(&tally, "fs.list", json!({"path": "."}), Some(&root_token))
            {
                let n = r["entries"].as_array().map_or(0, Vec::len);
                if n != FILES {
                    tally.violation(format!("fs.list shows {n} entries, not {FILES}"));
                }
            }
        }
        // Revoke the child alone, or the root (which takes the child with it).
        let revoke_root = child.is_none() || self.rng.chance(50);
        let (cap, mut gone) = if revoke_root {
            let mut gone = vec![Revoked {
                token: root_token.clone(),
                cap_id: root_cap.clone(),
            }];
            if let Some((t, c)) = &child {
                gone.push(Revoked {
                    token: t.clone(),
                    cap_id: c.clone(),
                });
            }
            (root_cap.clone(), gone)
        } else {
            let (t, c) = child.clone().unwrap();
            (
                c.clone(),
                vec![Revoked {
                    token: t,
                    cap_id: c,
                }],
            )
        };
        match self
            .identity
            .call(&tally, "identity.revoke", json!({"cap_id": cap}), None)
        {
            Reply::Ok(_) => {}
            // Not acknowledged: nothing may be assumed either way.
            _ => return,
        }
        tally.revocations_acked.fetch_add(1, Ordering::Relaxed);
        // Sent after the acknowledgement: every one must fail.
        for r in &gone {
            self.must_fail("fs.list", json!({"path": "."}), &r.token);
        }
        for (token, handle) in &handles {
            if gone.iter().any(|r| &r.token == token) {
                self.must_fail(
                    "fs.read",
                    json!({"handle": handle, "size": 16}),
                    &token.clone(),
                );
            }
        }
        tally.revoked.lock().unwrap().append(&mut gone);
    }

    /// Issue or delegate; `(token, cap_id)` when identity answered ok.
    fn mint(&mut self, method: &str, params: Value) -> Option<(String, String)> {
        match self.identity.call(&self.tally, method, params, None) {
            Reply::Ok(r) => Some((
                r["token"].as_str()?.to_owned(),
                r["cap_id"].as_str()?.to_owned(),
            )),
            _ => None,
        }
    }

    fn read_and_verify(&mut self, token: &str, handle: &str, i: usize) {
        let tally = Arc::clone(&self.tally);
        if let Reply::Ok(r) = self.fs.call(
            &tally,
            "fs.read",
            json!({"handle": handle, "size": 65536}),
            Some(token),
        ) {
            let expected = file_bytes(i);
            let data = r["data"].as_str().unwrap_or_default().as_bytes();
            if data != expected || r["eof"] != true || r["bytes_read"] != expected.len() {
                tally.violation(format!(
                    "fs.read of {} returned {} bytes (eof {}), not the file's {}",
                    file_name(i),
                    data.len(),
                    r["eof"],
                    expected.len()
                ));
            } else {
                tally.reads_verified.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A request with a token whose revocation was acknowledged: anything but ok.
    fn must_fail(&mut self, method: &str, params: Value, token: &str) {
        let tally = Arc::clone(&self.tally);
        match self.fs.call(&tally, method, params, Some(token)) {
            Reply::Ok(r) => tally.violation(format!(
                "client {}: {method} succeeded with a token revoked before it was sent: {r}",
                self.id
            )),
            Reply::Error(..) => {
                tally.revocations_checked.fetch_add(1, Ordering::Relaxed);
            }
            Reply::Down => {}
        }
    }

    /// Try a token revoked earlier (by any client, maybe before restarts) at fs, and ask
    /// identity whether it still knows it is revoked.
    fn recheck_old_revocation(&mut self) {
        let old = {
            let list = self.tally.revoked.lock().unwrap();
            if list.is_empty() {
                return;
            }
            list[self.rng.below(list.len())].clone()
        };
        self.must_fail("fs.stat", json!({"path": "."}), &old.token);
        let tally = Arc::clone(&self.tally);
        if let Reply::Ok(r) = self.identity.call(
            &tally,
            "identity.introspect",
            json!({"token": old.token}),
            None,
        ) {
            if r["revoked"] == true && r["valid"] == false {
                tally.revocations_checked.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.violation(format!(
                    "identity.introspect of revoked cap {} says {r}",
                    old.cap_id
                ));
            }
        }
    }
}

fn chaos_secs() -> u64 {
    std::env::var("STRATA_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// fs's descriptors beyond its open handles, sampled so that handles opening or closing
/// meanwhile cannot make it look worse than it is. `None` if fs is between lives.
fn fd_excess(stack: &Stack, fs_socket: &Path) -> Option<(usize, usize, usize)> {
    let pid = stack.pid("fs")?;
    let before = open_fds(pid)?;
    let health = strata_testkit::call(fs_socket, "sys.health", json!({}), None).ok()?;
    let handles = health["result"]["open_handles"].as_u64()? as usize;
    let after = open_fds(pid)?;
    if stack.pid("fs") != Some(pid) {
        return None;
    }
    let fds = before.min(after);
    Some((fds.saturating_sub(handles), fds, handles))
}

#[test]
fn chaos_under_load_loses_no_revocation() {
    let secs = chaos_secs();
    let stack = Stack::start_tuned(TUNING);
    for i in 0..FILES {
        std::fs::write(stack.export.join(file_name(i)), file_bytes(i)).unwrap();
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let mut client = Client::new(id, &stack, Arc::clone(&tally));
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let before = client.tally.ok.load(Ordering::Relaxed);
                    client.round();
                    client.recheck_old_revocation();
                    // Nothing answered (a service is restarting): do not spin.
                    if client.tally.ok.load(Ordering::Relaxed) == before {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

    let fs_socket = stack.sb.socket("fs");
    let mut rng = Rng::seeded(0xC4A05);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut kills: BTreeMap<&str, u64> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let (mut fd_samples, mut max_excess, mut at_max) = (0u64, 0usize, (0usize, 0usize));
    let mut bag: Vec<&str> = Vec::new();
    while Instant::now() < deadline {
        // About 2 s between kills; fs's descriptors are sampled meanwhile.
        let next_kill = Instant::now() + Duration::from_millis(1500 + rng.below(1000) as u64);
        while Instant::now() < next_kill {
            if let Some((excess, fds, handles)) = fd_excess(&stack, &fs_socket) {
                fd_samples += 1;
                if excess > max_excess {
                    (max_excess, at_max) = (excess, (fds, handles));
                }
                if excess > FD_SLACK {
                    tally.violation(format!(
                        "fs holds {fds} descriptors for {handles} open handles (slack {FD_SLACK})"
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if Instant::now() >= deadline {
            break;
        }
        // Random order, each service once per three kills, so none is left out.
        if bag.is_empty() {
            bag = SERVICES.to_vec();
        }
        let victim = bag.swap_remove(rng.below(bag.len()));
        match stack.kill_and_time_restart(victim, RECOVERY_DEADLINE) {
            Ok(took) => {
                *kills.entry(victim).or_default() += 1;
                slowest = slowest.max(took);
            }
            Err(why) => {
                tally.violation(why);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client thread panicked");
    }
    stack.wait_all_healthy();
    for line in stack.panics_in_logs() {
        tally.violation(format!("panic in a log: {line}"));
    }

    // Nothing of the node may outlive it.
    let tree = descendants(stack.supervisor.pid());
    let tree_size = tree.len();
    if tree_size < SERVICES.len() {
        tally.violation(format!(
            "the supervisor's tree has only {tree_size} processes"
        ));
    }
    drop(stack);
    let orphans = wait_gone(&tree, Duration::from_secs(10));
    for orphan in &orphans {
        tally.violation(format!("orphan left after the node stopped: {orphan:?}"));
    }

    let t = &tally;
    let total_kills: u64 = kills.values().sum();
    let errors = t.errors.lock().unwrap();
    let mut by_code: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, name), n) in errors.iter() {
        *by_code.entry(name.as_str()).or_default() += n;
    }
    let violations = t.violations.lock().unwrap();
    eprintln!(
        "chaos summary: {secs} s, {CLIENTS} clients\n\
         \x20 requests: {} (ok {}, protocol errors {:?}, connection errors {})\n\
         \x20 reads verified byte for byte: {}\n\
         \x20 kills survived: {total_kills} {kills:?}, slowest return to Healthy {} ms\n\
         \x20 revocations acknowledged: {}, requests with revoked tokens checked: {}\n\
         \x20 fs descriptors beyond handles: max {max_excess} ({} fds, {} handles) over {fd_samples} samples (limit {FD_SLACK})\n\
         \x20 processes in the node's tree at the end: {tree_size}, left 10 s after it was dropped: {}\n\
         \x20 violations: {}",
        t.requests.load(Ordering::Relaxed),
        t.ok.load(Ordering::Relaxed),
        by_code,
        t.conn_errors.load(Ordering::Relaxed),
        t.reads_verified.load(Ordering::Relaxed),
        slowest.as_millis(),
        t.revocations_acked.load(Ordering::Relaxed),
        t.revocations_checked.load(Ordering::Relaxed),
        at_max.0,
        at_max.1,
        orphans.len(),
        violations.len(),
    );
    assert!(violations.is_empty(), "violations: {violations:#?}");
    // The run must have exercised what it claims to.
    // A cycle is ~2 s of sampling plus a return to Healthy, which a loaded machine can
    // stretch: one kill per 10 s is the least that still exercises every service.
    assert!(
        total_kills >= secs / 10,
        "only {total_kills} kills in {secs} s"
    );
    assert!(t.revocations_acked.load(Ordering::Relaxed) > 0);
    assert!(t.revocations_checked.load(Ordering::Relaxed) > 0);
    assert!(fd_samples > 0, "fs's descriptors were never sampled");
}
