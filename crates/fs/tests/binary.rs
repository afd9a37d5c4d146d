//! The real `strata-fs` binary, with the real `strata-identity` minting and revoking
//! tokens, on a temporary runtime directory: decoy working directory, Landlock, the
//! guard's start-up and revocation behaviour, fds closed in the fs process on revocation,
//! and the audit log.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use strata_testkit::{call, healthy, wait_until, Proc, Sandbox, DEADLINE};

struct Stack {
    sandbox: Sandbox,
    /// Export root; tokens get `<root>/data`.
    root: PathBuf,
    /// fs's working directory, full of decoys.
    decoy: PathBuf,
    identity: Option<Proc>,
    fs: Proc,
}

impl Stack {
    fn start(with_identity: bool) -> Stack {
        let sandbox = Sandbox::new();
        let base = sandbox.root().canonicalize().unwrap();
        let root = base.join("export");
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::write(root.join("data/hello.txt"), b"hello from the prefix").unwrap();
        std::fs::write(root.join("data/sub/inner"), b"inner").unwrap();
        std::fs::write(root.join("secret-in-root"), b"not in the prefix").unwrap();
        let decoy = base.join("decoy");
        std::fs::create_dir_all(decoy.join("data")).unwrap();
        std::fs::write(decoy.join("hello.txt"), b"DECOY").unwrap();
        std::fs::write(decoy.join("decoy.txt"), b"DECOY").unwrap();
        std::fs::write(decoy.join("data/hello.txt"), b"DECOY").unwrap();

        let identity = with_identity.then(|| {
            let p = Proc::spawn(
                "identity",
                sandbox.command("strata-identity").stderr(Stdio::null()),
            );
            wait_until("identity answers", DEADLINE, || {
                healthy(&sandbox.socket("identity"))
            });
            p
        });
        let fs = Proc::spawn(
            "fs",
            sandbox
                .command("strata-fs")
                .arg("--export-root")
                .arg(&root)
                .env("STRATA_LOG", "warn")
                .current_dir(&decoy),
        );
        wait_until("fs answers", DEADLINE, || healthy(&sandbox.socket("fs")));
        Stack {
            sandbox,
            root,
            decoy,
            identity,
            fs,
        }
    }

    fn prefix(&self) -> String {
        self.root.join("data").to_str().unwrap().to_owned()
    }

    fn identity(&self, method: &str, params: Value) -> Value {
        call(&self.sandbox.socket("identity"), method, params, None).unwrap()
    }

    /// A token for fs with `rights` on the stack's prefix.
    fn token(&self, rights: &[&str]) -> (String, String) {
        let r = self.identity(
            "identity.issue",
            json!({"service": "fs", "rights": rights, "path_prefix": self.prefix()}),
        );
        assert_eq!(r["ok"], true, "{r}");
        (
            r["result"]["token"].as_str().unwrap().to_owned(),
            r["result"]["cap_id"].as_str().unwrap().to_owned(),
        )
    }

    fn fs(&self, method: &str, params: Value, token: Option<&str>) -> Value {
        call(&self.sandbox.socket("fs"), method, params, token).unwrap()
    }

    /// fs's descriptors that refer to `path`, counted in /proc.
    fn fs_fds_on(&self, path: &Path) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.fs.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    fn audit(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.sandbox.state_dir().join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn code(reply: &Value) -> u64 {
    assert_eq!(reply["ok"], false, "expected an error: {reply}");
    reply["error"]["code"].as_u64().unwrap()
}

const ALL: &[&str] = &["fs.open", "fs.read", "fs.list", "fs.stat"];

#[test]
fn serves_the_prefix_and_never_the_working_directory() {
    let s = Stack::start(true);
    let health = s.fs("sys.health", json!({}), None);
    assert_eq!(health["result"]["landlock"], true, "{health}");
    assert_eq!(health["result"]["export_roots"], 1);
    let (token, _) = s.token(ALL);
    let t = Some(token.as_str());

    let opened = s.fs("fs.open", json!({"path": "hello.txt"}), t);
    let handle = opened["result"]["handle"].as_str().unwrap().to_owned();
    let read = s.fs("fs.read", json!({"handle": handle}), t);
    assert_eq!(read["result"]["data"], "hello from the prefix", "{read}");
    assert_eq!(read["result"]["eof"], true);
    let closed = s.fs("fs.close", json!({"handle": handle}), t);
    assert_eq!(closed["result"]["status"], "closed");

    // The decoys in fs's working directory are invisible.
    assert_eq!(code(&s.fs("fs.open", json!({"path": "decoy.txt"}), t)), 4);
    let listed = s.fs("fs.list", json!({"path": ""}), t);
    let names: Vec<&str> = listed["result"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello.txt", "sub"]);
    let stat = s.fs("fs.stat", json!({"path": "sub"}), t);
    assert_eq!(stat["result"]["is_dir"], true, "{stat}");
    assert!(s.decoy.join("decoy.txt").exists());

    // Out of the prefix, even inside the export root.
    assert_eq!(
        code(&s.fs("fs.open", json!({"path": "../secret-in-root"}), t)),
        3
    );
    assert_eq!(code(&s.fs("fs.open", json!({"path": "/etc/passwd"}), t)), 3);
}

#[test]
fn requests_are_authorized_and_denials_audited() {
    let s = Stack::start(true);
    let (open_only, cap) = s.token(&["fs.open"]);
    let handle = s.fs("fs.open", json!({"path": "hello.txt"}), Some(&open_only))["result"]
        ["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    // No token; a token without the right; a garbage token.
    assert_eq!(
        code(&s.fs("fs.open", json!({"path": "hello.txt"}), None)),
        2
    );
    assert_eq!(
        code(&s.fs("fs.read", json!({"handle": handle}), Some(&open_only))),
        3
    );
    assert_eq!(code(&s.fs("fs.list", json!({}), Some(&open_only))), 3);
    assert_eq!(
        code(&s.fs("fs.open", json!({"path": "x"}), Some("v2.public.junk"))),
        2
    );
    // A token for another service.
    let r = s.identity(
        "identity.issue",
        json!({"service": "registry", "rights": ["registry.list"]}),
    );
    let other = r["result"]["token"].as_str().unwrap();
    assert_eq!(code(&s.fs("fs.stat", json!({}), Some(other))), 3);
    // Another capability's handle.
    let (reader, _) = s.token(ALL);
    assert_eq!(
        code(&s.fs("fs.read", json!({"handle": handle}), Some(&reader))),
        3
    );
    // fs.close needs only the owning capability.
    let closed = s.fs("fs.close", json!({"handle": handle}), Some(&open_only));
    assert_eq!(closed["ok"], true, "{closed}");
    // Bad params are named.
    let bad = s.fs(
        "fs.read",
        json!({"handle": "h", "offset": -1}),
        Some(&reader),
    );
    assert_eq!(code(&bad), 1);
    assert_eq!(bad["error"]["details"]["field"], "offset");

    wait_until("audit lines", DEADLINE, || {
        let lines = s.audit();
        let denials = lines.iter().filter(|l| l["event"] == "auth.denied").count();
        let opens = lines
            .iter()
            .filter(|l| l["event"] == "fs.open" && l["cap_id"] == cap.as_str())
            .count();
        let summaries = lines.iter().filter(|l| l["event"] == "fs.read").count();
        denials >= 6 && opens == 1 && summaries == 1
    });
    assert!(s
        .audit()
        .iter()
        .all(|l| !l.to_string().contains("v2.public")));
}

#[test]
fn revocation_closes_descriptors_in_the_fs_process() {
    let s = Stack::start(true);
    let file = s.root.join("data/hello.txt");
    let (token, cap) = s.token(ALL);
    let (other, _) = s.token(ALL);
    let handles: Vec<String> = (0..3)
        .map(|_| {
            s.fs("fs.open", json!({"path": "hello.txt"}), Some(&token))["result"]["handle"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let kept = s.fs("fs.open", json!({"path": "hello.txt"}), Some(&other));
    assert_eq!(kept["ok"], true);
    assert_eq!(s.fs_fds_on(&file), 4);

    let revoked = s.identity("identity.revoke", json!({"cap_id": cap}));
    assert_eq!(revoked["ok"], true, "{revoked}");
    // Identity answers once fs's guard has the revocation: from then on nothing works,
    // and the descriptors go as soon as fs has processed the notice.
    for h in &handles {
        assert_eq!(
            code(&s.fs("fs.read", json!({"handle": h}), Some(&token))),
            2
        );
    }
    wait_until("fds closed", std::time::Duration::from_secs(2), || {
        s.fs_fds_on(&file) == 1
    });
    assert_eq!(
        code(&s.fs("fs.open", json!({"path": "hello.txt"}), Some(&token))),
        2
    );
}

#[test]
fn protected_requests_wait_for_identity_but_health_does_not() {
    let s = Stack::start(false);
    let health = s.fs("sys.health", json!({}), None);
    assert_eq!(health["ok"], true);
    assert_eq!(health["result"]["revocations_synced"], false, "{health}");
    let r = s.fs(
        "fs.open",
        json!({"path": "hello.txt"}),
        Some("v2.public.whatever"),
    );
    assert_eq!(code(&r), 6);
}

#[test]
fn fs_keeps_serving_with_the_list_it_has_while_identity_is_down() {
    let mut s = Stack::start(true);
    let (token, _) = s.token(ALL);
    let t = Some(token.as_str());
    let opened = s.fs("fs.open", json!({"path": "hello.txt"}), t);
    let handle = opened["result"]["handle"].as_str().unwrap().to_owned();
    drop(s.identity.take());
    let read = s.fs("fs.read", json!({"handle": handle}), t);
    assert_eq!(read["result"]["data"], "hello from the prefix", "{read}");
    let listed = s.fs("fs.list", json!({}), t);
    assert_eq!(listed["ok"], true, "{listed}");
}
