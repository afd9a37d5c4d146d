//! Issue 13, finding 2: the directory a token's `path_prefix` names is the one its string
//! names. fs opens the prefix beneath its export root without following any symlink, so
//! the string containment identity applies at issuance and delegation is sound: a prefix
//! through a symlink (made by the holder, or already in the root) is refused, never
//! followed to a directory its issuer never granted.
//!
//! Real `strata-identity` (with an issuance policy) and `strata-fs` binaries.

use serde_json::{json, Value};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use strata_testkit::{call, healthy, skip_unless_root, wait_until, Proc, Sandbox, DEADLINE};

struct Stack {
    sandbox: Sandbox,
    /// The export root.
    root: PathBuf,
    _identity: Proc,
    _fs: Proc,
}

impl Stack {
    /// identity with `policy`, fs exporting `<sandbox>/export` laid out by `layout`.
    fn start(policy: &str, layout: impl FnOnce(&std::path::Path)) -> Stack {
        let sandbox = Sandbox::new();
        sandbox.open_to_all();
        let root = sandbox.root().canonicalize().unwrap().join("export");
        std::fs::create_dir_all(&root).unwrap();
        layout(&root);
        let policy_path = sandbox.root().join("issuance.toml");
        std::fs::write(&policy_path, policy.replace("ROOT", root.to_str().unwrap())).unwrap();
        let identity = Proc::spawn(
            "identity",
            sandbox
                .command("strata-identity")
                .args(["--socket-mode", "666", "--policy"])
                .arg(&policy_path)
                .stderr(Stdio::null()),
        );
        wait_until("identity answers", DEADLINE, || {
            healthy(&sandbox.socket("identity"))
        });
        let fs = Proc::spawn(
            "fs",
            sandbox
                .command("strata-fs")
                .arg("--export-root")
                .arg(&root)
                .env("STRATA_LOG", "warn"),
        );
        wait_until("fs answers", DEADLINE, || healthy(&sandbox.socket("fs")));
        Stack {
            sandbox,
            root,
            _identity: identity,
            _fs: fs,
        }
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_owned()
    }

    fn identity(&self, method: &str, params: Value) -> Value {
        call(&self.sandbox.socket("identity"), method, params, None).unwrap()
    }

    /// `identity.issue` as uid/gid 65534 (user "A" of the policy).
    fn issue_as_a(&self, params: Value) -> Value {
        let out = self
            .sandbox
            .command("strata-ctl")
            .args(["identity.issue", &params.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)))
    }

    fn fs(&self, method: &str, params: Value, token: &str) -> Value {
        call(&self.sandbox.socket("fs"), method, params, Some(token)).unwrap()
    }

    /// Open and read `path` with `token`: the bytes, or the error code.
    fn read(&self, token: &str, path: &str) -> Result<String, u64> {
        let opened = self.fs("fs.open", json!({"path": path}), token);
        if opened["ok"] != true {
            return Err(opened["error"]["code"].as_u64().unwrap());
        }
        let handle = opened["result"]["handle"].as_str().unwrap();
        let read = self.fs("fs.read", json!({"handle": handle}), token);
        assert_eq!(read["ok"], true, "{read}");
        Ok(read["result"]["data"].as_str().unwrap().to_owned())
    }
}

fn token_of(r: &Value) -> String {
    assert_eq!(r["ok"], true, "{r}");
    r["result"]["token"].as_str().unwrap().to_owned()
}

#[test]
fn a_holder_cannot_widen_its_grant_with_a_symlink_inside_it() {
    if skip_unless_root("a_holder_cannot_widen_its_grant_with_a_symlink_inside_it") {
        return;
    }
    // User A is granted ROOT/users/a; B's files are next door.
    let s = Stack::start(
        "[[grant]]\nuids = [65534]\nservices = [\"fs\"]\nrights = [\"fs.open\", \"fs.read\", \"fs.list\", \"fs.stat\"]\n\
         path_prefixes = [\"ROOT/users/a\"]\nmax_ttl_seconds = 600\n",
        |root| {
            std::fs::create_dir_all(root.join("users/a")).unwrap();
            std::fs::create_dir_all(root.join("users/b")).unwrap();
            std::fs::write(root.join("users/a/mine"), "A's file").unwrap();
            std::fs::write(root.join("users/b/secret"), "B's secret").unwrap();
            // What A does in its own directory.
            symlink("../b", root.join("users/a/x")).unwrap();
        },
    );
    let params = |prefix: &str| {
        json!({"service": "fs", "rights": ["fs.open", "fs.read", "fs.list", "fs.stat"],
               "path_prefix": prefix, "ttl_seconds": 600})
    };
    // A's own token works, and does not follow x out of users/a.
    let own = token_of(&s.issue_as_a(params(&s.path("users/a"))));
    assert_eq!(s.read(&own, "mine").as_deref(), Ok("A's file"));
    assert_eq!(s.read(&own, "x/secret"), Err(3));

    // A token for ROOT/users/a/x: the string is inside the grant, the directory is not.
    let r = s.issue_as_a(params(&s.path("users/a/x")));
    if r["ok"] == true {
        let via_link = token_of(&r);
        let got = s.read(&via_link, "secret");
        assert_eq!(
            got,
            Err(3),
            "a token for users/a/x (x -> ../b) read B's file: {got:?}"
        );
        for (method, params) in [
            ("fs.list", json!({})),
            ("fs.stat", json!({"path": "secret"})),
        ] {
            let r = s.fs(method, params, &via_link);
            assert_eq!(r["error"]["code"], 3, "{method}: {r}");
        }
    } else {
        assert_eq!(r["error"]["code"], 3, "{r}");
    }
}

#[test]
fn a_delegated_child_reads_nothing_its_parent_is_refused() {
    if skip_unless_root("a_delegated_child_reads_nothing_its_parent_is_refused") {
        return;
    }
    // An existing in-root symlink: ROOT/data/link -> ../other, outside the parent's prefix.
    let s = Stack::start("", |root| {
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        std::fs::write(root.join("data/sub/f"), "in the prefix").unwrap();
        std::fs::write(root.join("other/f"), "outside the parent's prefix").unwrap();
        symlink("../other", root.join("data/link")).unwrap();
        // A symlink that stays inside the prefix is no way in either, as a prefix.
        symlink("sub", root.join("data/inner")).unwrap();
    });
    let parent = token_of(&s.identity(
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.open", "fs.read", "fs.list", "fs.stat"],
               "path_prefix": s.path("data")}),
    ));
    assert_eq!(s.read(&parent, "link/f"), Err(3));
    assert_eq!(s.read(&parent, "sub/f").as_deref(), Ok("in the prefix"));

    let child = s.identity(
        "identity.delegate",
        json!({"token": parent, "path_prefix": s.path("data/link")}),
    );
    if child["ok"] == true {
        let child = token_of(&child);
        let got = s.read(&child, "f");
        assert_eq!(
            got,
            Err(3),
            "a child for data/link read what its parent is refused: {got:?}"
        );
        let listed = s.fs("fs.list", json!({}), &child);
        assert_eq!(listed["error"]["code"], 3, "{listed}");
    } else {
        assert_eq!(child["error"]["code"], 3, "{child}");
    }
    // Through an in-prefix symlink: refused as a prefix too (no prefix component may be a
    // symlink), though the parent reads the same file through it.
    let inner = token_of(&s.identity(
        "identity.delegate",
        json!({"token": parent, "path_prefix": s.path("data/inner")}),
    ));
    assert_eq!(s.read(&inner, "f"), Err(3));
    // A real directory beneath the parent's prefix works.
    let sub = token_of(&s.identity(
        "identity.delegate",
        json!({"token": parent, "path_prefix": s.path("data/sub")}),
    ));
    assert_eq!(s.read(&sub, "f").as_deref(), Ok("in the prefix"));
}
