//! The notes example end to end, under the supervisor, from `examples/notes/manifest.toml`
//! (its paths replaced by the sandbox's): identity, fs exporting notes' data directory,
//! notes with its routed fs capability, and `notes-client`, a manifest service that only
//! holds a routed `notes` capability (`notes.put`, `notes.get`). The test runs
//! `strata-notes-client` with that service's `CREDENTIALS_DIRECTORY`: a put and a get
//! through the real stack (the get read back through fs), a right the capability lacks
//! (`notes.list`: PERMISSION_DENIED, exit 77), and the capability revoked by its cap_id
//! (UNAUTHENTICATED, exit 77).

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use strata_testkit::{call, wait_until, Proc, Sandbox, DEADLINE};

const SERVICES: [&str; 5] = ["registry", "identity", "fs", "notes", "notes-client"];

struct Node {
    sb: Sandbox,
    _supervisor: Proc,
}

impl Node {
    fn start() -> Node {
        let sb = Sandbox::new();
        let data = sb.root().join("notes-data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let example = strata_testkit::workspace_root().join("examples/notes/manifest.toml");
        let notes_bin = strata_testkit::binary("strata-notes");
        strata_testkit::binary("strata-notes-client");
        let manifest = std::fs::read_to_string(example)
            .unwrap()
            .replace("/var/lib/strata-notes", data.to_str().unwrap())
            .replace(
                "exec = \"strata-notes\"",
                &format!("exec = {:?}", notes_bin.display().to_string()),
            );
        let path = sb.root().join("manifest.toml");
        std::fs::write(&path, manifest).unwrap();
        let mut cmd = sb.command("strata-supervisor");
        cmd.arg("--config").arg(&path);
        for (var, bin) in [
            ("STRATA_REGISTRY_BIN", "strata-registry"),
            ("STRATA_IDENTITY_BIN", "strata-identity"),
            ("STRATA_FS_BIN", "strata-fs"),
        ] {
            cmd.env(var, strata_testkit::binary(bin));
        }
        let node = Node {
            _supervisor: Proc::spawn("strata-supervisor", &mut cmd),
            sb,
        };
        wait_until("every service Healthy", DEADLINE, || {
            node.services().is_some_and(|list| {
                SERVICES.iter().all(|name| {
                    list.iter()
                        .any(|s| s["name"] == *name && s["state"] == "Healthy")
                })
            })
        });
        node
    }

    fn services(&self) -> Option<Vec<Value>> {
        let r = self
            .call("supervisor", "supervisor.svc.list", Value::Null)
            .ok()?;
        r["result"]["services"].as_array().cloned()
    }

    fn call(&self, service: &str, method: &str, params: Value) -> std::io::Result<Value> {
        call(&self.sb.socket(service), method, params, None)
    }

    fn data(&self) -> std::path::PathBuf {
        self.sb.root().join("notes-data")
    }

    /// The one capability routed to `service`.
    fn routed(&self, service: &str) -> Value {
        let r = self
            .call(
                "supervisor",
                "supervisor.svc.caps",
                json!({"name": service}),
            )
            .unwrap();
        let caps = r["result"]["capabilities"]
            .as_array()
            .expect("capabilities");
        assert_eq!(caps.len(), 1, "{r}");
        caps[0].clone()
    }

    /// `strata-notes-client` with the credentials the supervisor routed to notes-client.
    fn client(&self, args: &[&str]) -> Output {
        let creds = self.sb.runtime_dir().join("credentials/notes-client");
        self.sb
            .command("strata-notes-client")
            .env("CREDENTIALS_DIRECTORY", &creds)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run strata-notes-client")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn notes_and_its_client_under_the_supervisor() {
    let node = Node::start();
    // What the supervisor routed: notes' fs capability is confined to its data dir.
    let fs_cap = node.routed("notes");
    assert_eq!(fs_cap["service"], "fs", "{fs_cap}");
    assert_eq!(
        fs_cap["constraints"]["path_prefix"],
        node.data().to_str().unwrap(),
        "{fs_cap}"
    );
    let client_cap = node.routed("notes-client");
    assert_eq!(client_cap["rights"], json!(["notes.get", "notes.put"]));

    // A put and a get through the real stack: written by notes, read back through fs.
    let out = node.client(&["put", "todo", "buy milk"]);
    assert!(out.status.success(), "put: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "created todo (8 bytes)\n");
    assert_eq!(mode(&node.data().join("todo")), 0o600);
    let out = node.client(&["get", "todo"]);
    assert!(out.status.success(), "get: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "buy milk\n");

    // A right the client's capability lacks.
    let out = node.client(&["list"]);
    assert_eq!(out.status.code(), Some(77), "list: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("PERMISSION_DENIED"),
        "{}",
        text(&out.stderr)
    );

    // Revoked by its cap_id: the next call is refused.
    let cap_id = client_cap["cap_id"].as_str().unwrap();
    let r = node
        .call("identity", "identity.revoke", json!({"cap_id": cap_id}))
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    // At once when notes confirmed within identity's 2 s; a notes stalled longer on a
    // loaded machine catches up from the feed.
    let mut out = node.client(&["get", "todo"]);
    wait_until("notes to refuse the revoked capability", DEADLINE, || {
        out = node.client(&["get", "todo"]);
        out.status.code() != Some(0)
    });
    assert_eq!(
        out.status.code(),
        Some(77),
        "get after revoke: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        text(&out.stderr)
    );
    // notes itself is unaffected: its own capability still reads through fs.
    let health = node.call("notes", "sys.health", Value::Null).unwrap();
    assert_eq!(health["result"]["status"], "ok", "{health}");
}
