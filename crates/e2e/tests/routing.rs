//! Capability routing (issue 18), end to end: the supervisor obtains the capabilities a
//! manifest service declares, delivers them into `<runtime dir>/credentials/<svc>/`,
//! rotates them and revokes them with the run, against the real identity and fs.
//!
//! - delivery: a service running as `nobody` gets exactly its two declared capabilities
//!   (modes, owners, `CREDENTIALS_DIRECTORY`, no token in its environ or command line, the
//!   token's claims equal the manifest, a right not declared is PERMISSION_DENIED at fs),
//!   and `supervisor.svc.caps` / `strata-ctl svc caps` list the cap_ids in the files;
//! - rotation with a 12 s ttl and 3 s grace: the file changes before the first token expires,
//!   a client re-reading the file before each request never fails, the old token is
//!   revoked after the grace;
//! - stop, crash (SIGKILL) and quarantine each revoke the run's tokens and a child delegated
//!   from one at once, remove the files, and a new run gets new cap_ids;
//! - identity down: the service waits in Starting with `waiting` naming identity, then
//!   starts with fresh credentials once identity is back.
//!
//! Every test needs root (services run as `nobody`; CI runs as root). Each has its own
//! node; they run in parallel.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_e2e::{Stack, SERVICES};
use strata_testkit::{call, skip_unless_root, wait_until, Proc, Sandbox, DEADLINE};

const NOBODY: u32 = 65534;
const UNAUTHENTICATED: i64 = 2;
const PERMISSION_DENIED: i64 = 3;
/// How long a revocation may take to reach fs. Revocations wait for trusted verifiers
/// (fs runs as root), so it is immediate; this is only a generous bound for a slow CI.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(15);

/// A node started from a manifest: registry, identity and fs as in every e2e stack, plus
/// `extra` (more `[[service]]` tables; `{export}` and `{out}` in it are replaced by the
/// exported directory and a directory anyone may write).
struct Node {
    stack: Stack,
    /// A directory `nobody` may write (for services that report what they got).
    out: PathBuf,
}

impl Node {
    fn start(extra: &str) -> Node {
        let sb = Sandbox::new();
        // Services run as nobody: they must be able to reach their credentials directory.
        sb.open_to_all();
        let export = sb.root().join("export");
        for dir in ["data", "files", "other"] {
            std::fs::create_dir_all(export.join(dir)).unwrap();
        }
        std::fs::write(export.join("data/a.txt"), "alpha").unwrap();
        std::fs::write(export.join("files/f.txt"), "file").unwrap();
        let out = sb.root().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut text = String::new();
        for name in SERVICES {
            let bin = strata_testkit::binary(&format!("strata-{name}"));
            text.push_str(&format!(
                "[[service]]\nname = \"{name}\"\nexec = {:?}\n",
                bin.display().to_string()
            ));
            if name == "fs" {
                text.push_str(&format!(
                    "depends_on = [\"identity\"]\nenv = {{ STRATA_FS_EXPORT_ROOTS = {:?} }}\n",
                    export.display().to_string()
                ));
            }
        }
        text.push_str(
            &extra
                .replace("{export}", &export.display().to_string())
                .replace("{out}", &out.display().to_string()),
        );
        let manifest = sb.root().join("manifest.toml");
        std::fs::write(&manifest, text).unwrap();
        let mut cmd = sb.command("strata-supervisor");
        cmd.arg("--config").arg(&manifest);
        for (var, bin) in [
            ("STRATA_REGISTRY_BIN", "strata-registry"),
            ("STRATA_IDENTITY_BIN", "strata-identity"),
            ("STRATA_FS_BIN", "strata-fs"),
        ] {
            cmd.env(var, strata_testkit::binary(bin));
        }
        let supervisor = Proc::spawn("strata-supervisor", &mut cmd);
        let stack = Stack {
            sb,
            supervisor,
            export,
            ctl_env: Vec::new(),
        };
        stack.wait_all_healthy();
        Node { stack, out }
    }

    fn sock(&self, service: &str) -> PathBuf {
        self.stack.sb.socket(service)
    }

    fn prefix(&self, dir: &str) -> String {
        self.stack.export.join(dir).display().to_string()
    }

    /// `<runtime dir>/credentials/<name>`.
    fn cred_dir(&self, name: &str) -> PathBuf {
        self.stack.sb.runtime_dir().join("credentials").join(name)
    }

    /// The token in `<credentials>/<svc>/<cap>`, if the file is there.
    fn token(&self, svc: &str, cap: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.cred_dir(svc).join(cap)).ok()?;
        Some(text.trim().to_owned())
    }

    /// A supervisor method's whole answer.
    fn supervisor(&self, method: &str, params: Value) -> Value {
        call(&self.sock("supervisor"), method, params, None).expect("supervisor answers")
    }

    fn status(&self, name: &str) -> Value {
        let r = self.supervisor("supervisor.svc.status", json!({"name": name}));
        assert_eq!(r["ok"], true, "{r}");
        r["result"].clone()
    }

    fn list_entry(&self, name: &str) -> Value {
        let list = self.stack.services().expect("svc.list answers");
        list.into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in svc.list"))
    }

    fn node_id(&self) -> String {
        let r = self.supervisor("supervisor.status", json!({}));
        r["result"]["node_id"].as_str().expect("node_id").to_owned()
    }

    fn wait_state(&self, name: &str, state: &str) -> Value {
        let until = Instant::now() + DEADLINE;
        loop {
            let last = self.status(name);
            if last["state"] == state {
                return last;
            }
            assert!(
                Instant::now() < until,
                "{name} not {state} within {DEADLINE:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn control(&self, method: &str, params: Value) -> Value {
        let r = self.supervisor(method, params);
        assert_eq!(r["ok"], true, "{method}: {r}");
        r["result"].clone()
    }

    /// `identity.introspect`'s result for `token`.
    fn introspect(&self, token: &str) -> Value {
        let r = call(
            &self.sock("identity"),
            "identity.introspect",
            json!({"token": token}),
            None,
        )
        .expect("identity answers");
        assert_eq!(r["ok"], true, "{r}");
        r["result"].clone()
    }

    /// A child of `token` with `rights`, from identity.delegate: (token, cap_id).
    fn delegate(&self, token: &str, rights: &[&str]) -> (String, String) {
        let r = call(
            &self.sock("identity"),
            "identity.delegate",
            json!({"token": token, "rights": rights}),
            None,
        )
        .expect("identity answers");
        assert_eq!(r["ok"], true, "delegate: {r}");
        (
            r["result"]["token"].as_str().unwrap().to_owned(),
            r["result"]["cap_id"].as_str().unwrap().to_owned(),
        )
    }

    /// One fs request with `token`; the whole answer.
    fn fs(&self, token: &str, method: &str, params: Value) -> Value {
        call(&self.sock("fs"), method, params, Some(token)).expect("fs answers")
    }

    /// Poll until fs refuses every one of `tokens` as UNAUTHENTICATED.
    fn wait_refused(&self, what: &str, tokens: &[&str]) {
        let until = Instant::now() + REVOCATION_DEADLINE;
        loop {
            let answers: Vec<Value> = tokens
                .iter()
                .map(|t| self.fs(t, "fs.stat", json!({"path": "."})))
                .collect();
            if answers.iter().all(|r| code(r) == Some(UNAUTHENTICATED)) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{what}: fs still accepts a token of the ended run after {REVOCATION_DEADLINE:?}: {answers:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `supervisor.svc.caps`'s capabilities.
    fn caps(&self, name: &str) -> Vec<Value> {
        let r = self.supervisor("supervisor.svc.caps", json!({"name": name}));
        assert_eq!(r["ok"], true, "svc.caps: {r}");
        assert_eq!(r["result"]["name"], name, "{r}");
        r["result"]["capabilities"]
            .as_array()
            .expect("capabilities")
            .clone()
    }
}

fn code(r: &Value) -> Option<i64> {
    r["error"]["code"].as_i64()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A claims timestamp (RFC 3339) in unix seconds.
fn unix(t: &Value) -> i64 {
    serde_json::from_value::<strata_cap::Timestamp>(t.clone())
        .unwrap_or_else(|e| panic!("not a timestamp ({e}): {t}"))
        .unix_seconds()
}

/// SIGKILL a service's process (not our child, so std cannot).
// Unsafe: kill(2) of a pid the supervisor spawned.
#[allow(unsafe_code)]
fn sigkill(pid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the service's.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill {pid}");
}

fn jti(node: &Node, token: &str) -> String {
    node.introspect(token)["claims"]["jti"]
        .as_str()
        .expect("claims.jti")
        .to_owned()
}

/// `/proc/<pid>/<what>` split at NULs.
fn proc_strings(pid: i64, what: &str) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/{what}")).expect("read /proc");
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A long-running service as nobody with readiness `started` and `caps` (TOML
/// `[[service.capability]]` tables).
fn sleeper(name: &str, tuning: &str, caps: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nexec = \"/bin/sleep\"\nargs = [\"3600\"]\n\
         user = \"nobody\"\nreadiness = \"started\"\n{tuning}\n{caps}\n"
    )
}

/// Two capabilities: `data` (list and stat in `data/`, rate limited, 10 min) and `files`
/// (open and read in `files/`).
const TWO_CAPS: &str = "[[service.capability]]\nname = \"data\"\nservice = \"fs\"\n\
     rights = [\"fs.list\", \"fs.stat\"]\npath_prefix = \"{export}/data\"\n\
     rate_limit = \"500rps\"\nttl = \"10m\"\n\
     [[service.capability]]\nname = \"files\"\nservice = \"fs\"\n\
     rights = [\"fs.open\", \"fs.read\"]\npath_prefix = \"{export}/files\"\nttl = \"1h\"\n";

#[test]
fn a_service_gets_exactly_the_capabilities_its_manifest_declares() {
    if skip_unless_root("a_service_gets_exactly_the_capabilities_its_manifest_declares") {
        return;
    }
    let node = Node::start(&sleeper("alpha", "", TWO_CAPS));
    let alpha = node.wait_state("alpha", "Healthy");
    let pid = alpha["pid"].as_i64().expect("alpha has a pid");
    assert_eq!(alpha["capabilities"], 2, "svc.status: {alpha}");
    assert!(alpha.get("waiting").is_none_or(Value::is_null), "{alpha}");
    assert_eq!(node.list_entry("alpha")["capabilities"], 2);

    // The directory: 0700, nobody's, holding exactly the two files, each 0400 and nobody's.
    let dir = node.cred_dir("alpha");
    let meta = std::fs::symlink_metadata(&dir).expect("credentials dir exists");
    assert!(meta.is_dir(), "{} is not a directory", dir.display());
    assert_eq!(meta.mode() & 0o7777, 0o700, "credentials dir mode");
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "dir owner");
    let names: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["data".to_owned(), "files".to_owned()])
    );
    for name in &names {
        let m = std::fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(m.is_file(), "{name} is not a regular file");
        assert_eq!(m.mode() & 0o7777, 0o400, "{name} mode");
        assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "{name} owner");
    }
    let data = node.token("alpha", "data").unwrap();
    let files = node.token("alpha", "files").unwrap();
    // The service's uid can read them (as the process would).
    let read_as_nobody = std::process::Command::new("/bin/cat")
        .arg(dir.join("data"))
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let modes: Vec<String> = [node.stack.sb.runtime_dir(), dir.parent().unwrap().into()]
        .iter()
        .map(|d| {
            let m = std::fs::metadata(d).unwrap();
            format!(
                "{} {:o} {}:{}",
                d.display(),
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )
        })
        .collect();
    assert!(
        read_as_nobody.status.success(),
        "nobody cannot read its own credential ({}; on the way: {modes:?})",
        String::from_utf8_lossy(&read_as_nobody.stderr).trim()
    );
    assert_eq!(String::from_utf8_lossy(&read_as_nobody.stdout).trim(), data);

    // The process: CREDENTIALS_DIRECTORY names the dir; no token in environ or cmdline.
    let environ = proc_strings(pid, "environ");
    let cred_var: Vec<&String> = environ
        .iter()
        .filter(|v| v.starts_with("CREDENTIALS_DIRECTORY="))
        .collect();
    assert_eq!(cred_var.len(), 1, "environ: {environ:?}");
    let named = Path::new(&cred_var[0]["CREDENTIALS_DIRECTORY=".len()..]);
    assert_eq!(
        std::fs::canonicalize(named).unwrap(),
        std::fs::canonicalize(&dir).unwrap(),
        "CREDENTIALS_DIRECTORY"
    );
    let cmdline = proc_strings(pid, "cmdline");
    for (what, strings) in [("environ", &environ), ("cmdline", &cmdline)] {
        for s in strings.iter() {
            assert!(
                !s.contains(&data) && !s.contains(&files) && !s.contains("v4.public."),
                "a token in the process's {what}"
            );
        }
    }
    // Nor in the service's log.
    let log = std::fs::read_to_string(node.stack.log_path("alpha")).unwrap_or_default();
    assert!(
        !log.contains(&data) && !log.contains(&files),
        "a token in alpha's log"
    );

    // The claims are the manifest's.
    let sub = format!("svc:alpha@{}", node.node_id());
    for (token, rights, dir, rate, ttl) in [
        (&data, ["fs.list", "fs.stat"], "data", Some("500rps"), 600),
        (&files, ["fs.open", "fs.read"], "files", None, 3600),
    ] {
        let i = node.introspect(token);
        assert_eq!(i["valid"], true, "{i}");
        assert_eq!(i["revoked"], false, "{i}");
        let c = &i["claims"];
        assert_eq!(c["sub"], sub.as_str(), "{c}");
        assert_eq!(c["service"], "fs", "{c}");
        let got: BTreeSet<&str> = c["rights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(got, BTreeSet::from(rights), "{c}");
        // Legacy `actions`, which identity writes beside `rights`, name the same rights.
        let actions: BTreeSet<String> = c["actions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| format!("fs.{}", a.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            actions.iter().all(|a| got.contains(a.as_str())),
            "actions beyond the rights: {c}"
        );
        assert_eq!(
            c["constraints"]["path_prefix"],
            node.prefix(dir).as_str(),
            "{c}"
        );
        match rate {
            Some(r) => assert_eq!(c["constraints"]["rate_limit"], r, "{c}"),
            None => assert!(c["constraints"].get("rate_limit").is_none(), "{c}"),
        }
        assert_eq!(unix(&c["exp"]) - unix(&c["iat"]), ttl, "ttl: {c}");
        assert!(c["parents"].as_array().is_none_or(Vec::is_empty), "{c}");
    }

    // What was declared works...
    let r = node.fs(&data, "fs.list", json!({"path": "."}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["entries"][0]["name"], "a.txt", "{r}");
    let r = node.fs(&files, "fs.open", json!({"path": "f.txt"}));
    assert_eq!(r["ok"], true, "{r}");
    let handle = r["result"]["handle"].as_str().unwrap().to_owned();
    let r = node.fs(&files, "fs.read", json!({"handle": handle}));
    assert_eq!(r["result"]["data"], "file", "{r}");
    // ...and nothing else: a right not declared is PERMISSION_DENIED.
    for (token, method, params) in [
        (&data, "fs.open", json!({"path": "a.txt"})),
        (&files, "fs.list", json!({"path": "."})),
        (&files, "fs.stat", json!({"path": "f.txt"})),
    ] {
        let r = node.fs(token, method, params);
        assert_eq!(code(&r), Some(PERMISSION_DENIED), "{method}: {r}");
    }

    // svc.caps lists what is in the files (never a token).
    let caps = node.caps("alpha");
    assert!(!Value::Array(caps.clone()).to_string().contains(&data));
    let listed: Vec<(&str, &str)> = caps
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["cap_id"].as_str().unwrap()))
        .collect();
    let (data_id, files_id) = (jti(&node, &data), jti(&node, &files));
    assert_eq!(
        listed,
        vec![("data", data_id.as_str()), ("files", files_id.as_str())],
        "{caps:?}"
    );
    let d = &caps[0];
    let di = node.introspect(&data);
    assert_eq!(d["service"], "fs");
    let rights: BTreeSet<&str> = d["rights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rights, BTreeSet::from(["fs.list", "fs.stat"]), "{d}");
    assert_eq!(
        d["constraints"]["path_prefix"],
        node.prefix("data").as_str()
    );
    assert_eq!(d["constraints"]["rate_limit"], "500rps");
    assert_eq!(d["expires"], unix(&di["claims"]["exp"]), "{d}");
    assert_eq!(d["issued"], unix(&di["claims"]["iat"]), "{d}");
    assert_eq!(d["rotations"], 0, "{d}");
    assert!(d["last_rotation"].is_null(), "{d}");

    // strata-ctl svc caps prints the same cap_ids.
    let out = node.stack.ctl(&["svc", "caps", "alpha", "-o", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "strata-ctl svc caps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&data_id) && stdout.contains(&files_id),
        "{stdout}"
    );
    assert!(!stdout.contains(&data) && !stdout.contains(&files));
    let out = node.stack.ctl(&["svc", "caps", "alpha"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        human.contains(&data_id) && human.contains(&files_id),
        "{human}"
    );
}

#[test]
fn stop_and_crash_revoke_the_run_and_its_children_at_once() {
    if skip_unless_root("stop_and_crash_revoke_the_run_and_its_children_at_once") {
        return;
    }
    // A backoff, so the restart (with new files) comes a little after the crash.
    let tuning = "backoff = { base = \"2s\", factor = 1.0, max = \"2s\" }";
    let node = Node::start(&sleeper("alpha", tuning, TWO_CAPS));
    let before = node.wait_state("alpha", "Healthy");
    let dir = node.cred_dir("alpha");

    // Crash: SIGKILL the process.
    let data = node.token("alpha", "data").unwrap();
    let files = node.token("alpha", "files").unwrap();
    let (child, _) = node.delegate(&data, &["fs.list"]);
    let r = node.fs(&child, "fs.list", json!({"path": "."}));
    assert_eq!(r["ok"], true, "the child works before the crash: {r}");
    let old_ids = BTreeSet::from([jti(&node, &data), jti(&node, &files)]);
    let pid = before["pid"].as_i64().unwrap() as i32;
    sigkill(pid);
    // The old tokens are removed with the run: the file is gone, or (when this thread
    // was not scheduled within the backoff) already holds the restart's new token. No
    // assumption on how soon this test runs after the crash.
    wait_until(
        "alpha's old credentials removed after the crash",
        DEADLINE,
        || {
            node.token("alpha", "data").is_none_or(|t| t != data)
                && node.token("alpha", "files").is_none_or(|t| t != files)
        },
    );
    node.wait_refused("crash", &[&data, &files, &child]);
    for t in [&data, &files, &child] {
        assert_eq!(node.introspect(t)["revoked"], true);
    }
    // The restart gets new capabilities.
    let until = Instant::now() + DEADLINE;
    let after = loop {
        let s = node.status("alpha");
        if s["state"] == "Healthy" && s["pid"].as_i64().is_some_and(|p| p as i32 != pid) {
            break s;
        }
        assert!(Instant::now() < until, "alpha not restarted: {s}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(after["capabilities"], 2, "{after}");
    let data = node.token("alpha", "data").expect("a new data file");
    let files = node.token("alpha", "files").expect("a new files file");
    let new_ids = BTreeSet::from([jti(&node, &data), jti(&node, &files)]);
    assert!(old_ids.is_disjoint(&new_ids), "{old_ids:?} / {new_ids:?}");
    let r = node.fs(&data, "fs.list", json!({"path": "."}));
    assert_eq!(r["ok"], true, "the new token works: {r}");

    // Stop: svc.stop.
    let (child, _) = node.delegate(&files, &["fs.open"]);
    let r = node.fs(&child, "fs.open", json!({"path": "f.txt"}));
    assert_eq!(r["ok"], true, "{r}");
    node.control("supervisor.svc.stop", json!({"name": "alpha"}));
    node.wait_refused("stop", &[&data, &files, &child]);
    wait_until(
        "alpha's credentials removed after the stop",
        REVOCATION_DEADLINE,
        || !dir.exists(),
    );
    assert!(
        node.caps("alpha").is_empty(),
        "svc.caps of a stopped service"
    );
    let s = node.status("alpha");
    assert!(s["capabilities"].as_u64().unwrap_or(0) == 0, "{s}");

    // A start after the stop gets new ones again.
    node.control("supervisor.svc.start", json!({"name": "alpha"}));
    let data2 = node.token("alpha", "data").expect("data after the start");
    assert!(!new_ids.contains(&jti(&node, &data2)));
    assert!(!old_ids.contains(&jti(&node, &data2)));
}

#[test]
fn quarantine_revokes_every_run_and_its_children() {
    if skip_unless_root("quarantine_revokes_every_run_and_its_children") {
        return;
    }
    // Each run says it is up (`run-<pid>`), waits for the test's go, then fails; two
    // crashes quarantine it. The test reads the run's token from the credentials file
    // meanwhile.
    let script = ": > \\\"$OUT/run-$$\\\"; \
                  while [ ! -e \\\"$OUT/go-$$\\\" ]; do sleep 0.05; done; exit 1";
    let flaky = format!(
        "[[service]]\nname = \"flaky\"\nexec = \"/bin/sh\"\nargs = [\"-c\", \"{script}\"]\n\
         user = \"nobody\"\nreadiness = \"started\"\n\
         env = {{ OUT = \"{{out}}\", PATH = \"/usr/bin:/bin\" }}\n\
         backoff = {{ base = \"100ms\", factor = 1.0, max = \"100ms\" }}\n\
         quarantine = {{ crashes = 2, window = \"1m\" }}\n\
         [[service.capability]]\nname = \"data\"\nservice = \"fs\"\nrights = [\"fs.stat\"]\n\
         path_prefix = \"{{export}}/data\"\n"
    );
    let node = Node::start(&flaky);
    let mut handled = BTreeSet::new();
    let mut all_tokens = Vec::new();
    // Runs until the supervisor quarantines it (two crashes; a few more allowed in case
    // the threshold is counted differently, but the state must come).
    for run in 1..=4 {
        // The next run, or the quarantine.
        let mut found = None;
        let mut quarantined = false;
        wait_until(
            &format!("run {run} of flaky reports its token, or quarantine"),
            DEADLINE,
            || {
                found = std::fs::read_dir(&node.out)
                    .unwrap()
                    .flatten()
                    .find_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let pid = name.strip_prefix("run-")?.to_owned();
                        (!handled.contains(&pid)).then_some(pid)
                    });
                quarantined = node.status("flaky")["state"] == "Quarantined";
                found.is_some() || quarantined
            },
        );
        let Some(pid) = found.filter(|_| !quarantined) else {
            break;
        };
        handled.insert(pid.clone());
        let s = node.status("flaky");
        assert_eq!(
            s["pid"].to_string(),
            pid,
            "run {run} is the current one: {s}"
        );
        let token = node
            .token("flaky", "data")
            .unwrap_or_else(|| panic!("run {run} has no credential file"));
        let r = node.fs(&token, "fs.stat", json!({"path": "."}));
        assert_eq!(r["ok"], true, "run {run}'s token works while it runs: {r}");
        let (child, _) = node.delegate(&token, &["fs.stat"]);
        std::fs::write(node.out.join(format!("go-{pid}")), "").unwrap();
        node.wait_refused(&format!("run {run} ended"), &[&token, &child]);
        all_tokens.push(token);
    }
    assert!(
        all_tokens.len() >= 2,
        "quarantined after {} runs",
        all_tokens.len()
    );
    let s = node.wait_state("flaky", "Quarantined");
    assert!(s["pid"].is_null(), "{s}");
    wait_until("flaky's credentials removed", REVOCATION_DEADLINE, || {
        !node.cred_dir("flaky").exists()
    });
    assert!(node.caps("flaky").is_empty());
    for t in &all_tokens {
        assert_eq!(node.introspect(t)["revoked"], true);
    }
    let ids: BTreeSet<String> = all_tokens.iter().map(|t| jti(&node, t)).collect();
    assert_eq!(
        ids.len(),
        all_tokens.len(),
        "each run got its own capability"
    );
}

#[test]
fn rotation_replaces_the_file_before_expiry_without_failing_a_request() {
    if skip_unless_root("rotation_replaces_the_file_before_expiry_without_failing_a_request") {
        return;
    }
    let caps = "[[service.capability]]\nname = \"data\"\nservice = \"fs\"\n\
                rights = [\"fs.list\"]\npath_prefix = \"{export}/data\"\n\
                ttl = \"12s\"\ngrace = \"3s\"\n";
    let node = Node::start(&sleeper("rotor", "", caps));
    node.wait_state("rotor", "Healthy");
    let first = node.token("rotor", "data").expect("the first token");
    let first_claims = node.introspect(&first)["claims"].clone();
    let first_exp = unix(&first_claims["exp"]);
    let first_id = first_claims["jti"].as_str().unwrap().to_owned();

    // A client following rotations: re-read the file before every request.
    let until = Instant::now() + Duration::from_secs(45);
    let (mut requests, mut rotated_at, mut old_revoked) = (0u32, None, false);
    let mut after_revocation = 0;
    while after_revocation < 20 {
        assert!(
            Instant::now() < until,
            "rotation not complete within 45 s: rotated at {rotated_at:?}, old revoked {old_revoked}"
        );
        let token = node
            .token("rotor", "data")
            .expect("the credential file is always there");
        let r = node.fs(&token, "fs.list", json!({"path": "."}));
        assert_eq!(
            r["ok"], true,
            "request {requests} failed (rotated at {rotated_at:?}): {r}"
        );
        requests += 1;
        if rotated_at.is_none() && token != first {
            let now = now_unix();
            assert!(
                now < first_exp,
                "the file changed at {now}, not before the first token expired at {first_exp}"
            );
            rotated_at = Some(now);
        }
        if rotated_at.is_some() && !old_revoked {
            old_revoked = node.introspect(&first)["revoked"] == true;
        }
        if old_revoked {
            after_revocation += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The old token is refused now that its grace has passed.
    let r = node.fs(&first, "fs.list", json!({"path": "."}));
    assert_eq!(code(&r), Some(UNAUTHENTICATED), "the old token: {r}");
    // svc.caps reports the rotation and the cap_id now in the file.
    let now_in_file = node.token("rotor", "data").unwrap();
    let caps = node.caps("rotor");
    assert_eq!(caps.len(), 1, "{caps:?}");
    assert_eq!(caps[0]["cap_id"], jti(&node, &now_in_file).as_str());
    assert_ne!(caps[0]["cap_id"], first_id.as_str());
    assert!(caps[0]["rotations"].as_u64().unwrap() >= 1, "{:?}", caps[0]);
    assert!(caps[0]["last_rotation"].is_i64(), "{:?}", caps[0]);
    let m = std::fs::symlink_metadata(node.cred_dir("rotor").join("data")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o400, "the replaced file's mode");
    assert_eq!(
        (m.uid(), m.gid()),
        (NOBODY, NOBODY),
        "the replaced file's owner"
    );
    eprintln!("{requests} requests across the rotation, none failed");
}

#[test]
fn a_service_waits_in_starting_while_identity_is_down() {
    if skip_unless_root("a_service_waits_in_starting_while_identity_is_down") {
        return;
    }
    let caps = "[[service.capability]]\nname = \"data\"\nservice = \"fs\"\n\
                rights = [\"fs.list\"]\npath_prefix = \"{export}/data\"\n";
    let node = Node::start(&sleeper("gamma", "", caps));
    node.wait_state("gamma", "Healthy");
    let old = node.token("gamma", "data").unwrap();
    let old_id = jti(&node, &old);
    node.control("supervisor.svc.stop", json!({"name": "gamma"}));
    node.control("supervisor.svc.stop", json!({"name": "identity"}));
    node.wait_state("identity", "Stopped");

    // Started while identity is down, it waits in Starting and says why.
    let socket = node.sock("supervisor");
    let starter = std::thread::spawn(move || {
        call(
            &socket,
            "supervisor.svc.start",
            json!({"name": "gamma"}),
            None,
        )
    });
    let until = Instant::now() + DEADLINE;
    let waiting = loop {
        let s = node.status("gamma");
        if s["state"] == "Starting" && s["waiting"].is_string() {
            break s;
        }
        assert!(Instant::now() < until, "gamma not waiting in Starting: {s}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let why = waiting["waiting"].as_str().unwrap();
    assert!(why.contains("identity"), "waiting: {why}");
    assert!(
        waiting["pid"].is_null(),
        "no process while waiting: {waiting}"
    );
    let listed = node.list_entry("gamma");
    assert_eq!(listed["state"], "Starting", "{listed}");
    assert!(
        listed["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("identity")),
        "svc.list: {listed}"
    );
    assert!(
        node.token("gamma", "data").is_none(),
        "a file while waiting"
    );

    // identity back: gamma starts with fresh credentials.
    node.control("supervisor.svc.start", json!({"name": "identity"}));
    let started = starter.join().unwrap().expect("svc.start answers");
    assert_eq!(started["ok"], true, "svc.start gamma: {started}");
    let s = node.wait_state("gamma", "Healthy");
    assert!(s.get("waiting").is_none_or(Value::is_null), "{s}");
    assert!(s["pid"].is_i64(), "{s}");
    assert_eq!(s["capabilities"], 1, "{s}");
    let new = node.token("gamma", "data").expect("a fresh file");
    let fresh = node.introspect(&new);
    assert_eq!(fresh["valid"], true, "{fresh}");
    assert_ne!(fresh["claims"]["jti"], old_id.as_str());
    assert_eq!(
        node.introspect(&old)["revoked"],
        true,
        "the stopped run's token"
    );
    // And it works at fs (stopped with identity; started again).
    node.control("supervisor.svc.start", json!({"name": "fs"}));
    let r = node.fs(&new, "fs.list", json!({"path": "."}));
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn a_service_confined_by_landlock_reads_its_credentials() {
    if skip_unless_root("a_service_confined_by_landlock_reads_its_credentials") {
        return;
    }
    // A kernel without Landlock does not start a confined service (it fails closed), so
    // this fails there rather than passing unconfined; CI's kernel has it.
    // It may read only the system's programs and libraries and write only `{out}`; its
    // credentials directory is none of them, so only the supervisor's rule lets it read.
    let service = "[[service]]\nname = \"delta\"\nexec = \"/bin/sh\"\n\
        args = [\"-c\", \"cat \\\"$CREDENTIALS_DIRECTORY/data\\\" > {out}/delta.token && exec sleep 3600\"]\n\
        user = \"nobody\"\nreadiness = \"started\"\nrestart = \"never\"\n\
        sandbox = { landlock = { read = [\"/usr\", \"/lib\", \"/lib64\", \"/bin\", \"/etc\"], write = [\"{out}\"] } }\n\
        [[service.capability]]\nname = \"data\"\nservice = \"fs\"\n\
        rights = [\"fs.list\"]\npath_prefix = \"{export}/data\"\n";
    let node = Node::start(service);
    let copied = node.out.join("delta.token");
    wait_until("delta to copy its credential", DEADLINE, || {
        std::fs::read_to_string(&copied).is_ok_and(|t| !t.trim().is_empty())
    });
    let token = node.token("delta", "data").expect("delta's credential");
    assert_eq!(
        std::fs::read_to_string(&copied).unwrap().trim(),
        token,
        "the confined service read its own credential"
    );
    let s = node.status("delta");
    assert!(
        s["applied"]["landlock"]["abi"]
            .as_u64()
            .is_some_and(|abi| abi >= 1),
        "delta was confined: {s}"
    );
}
