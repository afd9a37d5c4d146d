//! `--check-config`, manifest refusal, and the built-in graph.

mod common;

use common::{supervisor_command, SUPERVISOR};
use std::process::Command;
use strata_testkit::{binary, wait_until, Proc, Sandbox, DEADLINE};

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, text).unwrap();
    check_file(&path)
}

fn check_file(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(SUPERVISOR)
        .arg("--check-config")
        .arg(path)
        .env_remove("STRATA_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_manifest_is_valid() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifest.toml");
    let (ok, stdout, stderr) = check_file(&example);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("start order: registry, identity, fs, thumbnailer, billing"),
        "{stdout}"
    );
}

#[test]
fn cycles_are_refused_with_their_path() {
    let (ok, _, stderr) = check(
        r#"
        [[service]]
        name = "a"
        exec = "/bin/true"
        depends_on = ["b"]
        [[service]]
        name = "b"
        exec = "/bin/true"
        depends_on = ["a"]
        "#,
    );
    assert!(!ok);
    assert!(stderr.contains("dependency cycle: a -> b -> a"), "{stderr}");
}

#[test]
fn unknown_keys_duplicates_and_unknown_dependencies_are_refused_by_name() {
    let (ok, _, stderr) =
        check("[[service]]\nname = \"a\"\nexec = \"/bin/true\"\nrestart_policy = \"always\"\n");
    assert!(!ok);
    assert!(stderr.contains("restart_policy"), "{stderr}");
    let (ok, _, stderr) = check(
        "[[service]]\nname = \"web\"\nexec = \"/bin/true\"\n[[service]]\nname = \"web\"\nexec = \"/bin/true\"\n",
    );
    assert!(!ok);
    assert!(
        stderr.contains("service `web` is declared more than once"),
        "{stderr}"
    );
    let (ok, _, stderr) =
        check("[[service]]\nname = \"web\"\nexec = \"/bin/true\"\ndepends_on = [\"db\"]\n");
    assert!(!ok);
    assert!(stderr.contains("service `web` depends on `db`"), "{stderr}");
}

#[test]
fn a_running_supervisor_refuses_an_invalid_manifest_at_start() {
    let sandbox = Sandbox::new();
    let path = sandbox.root().join("bad.toml");
    std::fs::write(&path, "[[service]]\nname = \"x\"\n").unwrap();
    let out = supervisor_command(&sandbox)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exec"), "{stderr}");
    assert!(!sandbox.socket("supervisor").exists());
}

#[test]
fn without_a_manifest_the_built_in_graph_runs_and_fs_waits_for_identity() {
    let sandbox = Sandbox::new();
    let mut cmd = supervisor_command(&sandbox);
    cmd.env("STRATA_REGISTRY_BIN", binary("strata-registry"))
        .env("STRATA_IDENTITY_BIN", "/nonexistent/strata-identity")
        .env("STRATA_FS_BIN", "/nonexistent/strata-fs");
    let _proc = Proc::spawn("strata-supervisor", &mut cmd);
    let socket = sandbox.socket("supervisor");
    wait_until("control socket", DEADLINE, || {
        strata_testkit::healthy(&socket)
    });
    // Reuse the helpers on this sandbox.
    let sup = SupView(&socket);
    let names: Vec<String> = sup
        .list()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["registry", "identity", "fs"]);
    wait_until("registry Healthy", DEADLINE, || {
        sup.state("registry") == "Healthy"
    });
    assert!(strata_testkit::healthy(&sandbox.socket("registry")));
    wait_until("identity's first failed start", DEADLINE, || {
        sup.service("identity")["last_exit"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("STRATA_IDENTITY_BIN=/nonexistent/strata-identity"))
    });
    let identity = sup.state("identity");
    assert!(
        ["Restarting", "Crashed", "Starting"].contains(&identity.as_str()),
        "{identity}"
    );
    assert_eq!(
        sup.state("fs"),
        "Declared",
        "fs must not start before identity is Healthy"
    );
    let status =
        strata_testkit::call(&socket, "supervisor.status", serde_json::json!({}), None).unwrap();
    assert_eq!(status["result"]["node_id"], "local-0");
    assert!(status["result"]["manifest"].is_null());
}

/// svc.list access for a supervisor not started through `Sup`.
struct SupView<'a>(&'a std::path::Path);

impl SupView<'_> {
    fn list(&self) -> Vec<serde_json::Value> {
        let r = strata_testkit::call(self.0, "supervisor.svc.list", serde_json::json!({}), None)
            .unwrap();
        r["result"]["services"].as_array().unwrap().clone()
    }
    fn service(&self, name: &str) -> serde_json::Value {
        self.list().into_iter().find(|s| s["name"] == name).unwrap()
    }
    fn state(&self, name: &str) -> String {
        self.service(name)["state"].as_str().unwrap().to_owned()
    }
}

#[test]
fn strata_config_env_names_the_manifest() {
    let sandbox = Sandbox::new();
    let path = sandbox.root().join("m.toml");
    std::fs::write(
        &path,
        "[[service]]\nname = \"solo\"\nexec = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\nreadiness = \"started\"\n",
    )
    .unwrap();
    let mut cmd = supervisor_command(&sandbox);
    cmd.env("STRATA_CONFIG", &path);
    let _proc = Proc::spawn("strata-supervisor", &mut cmd);
    let socket = sandbox.socket("supervisor");
    wait_until("control socket", DEADLINE, || {
        strata_testkit::healthy(&socket)
    });
    let view = SupView(&socket);
    wait_until("solo Healthy", DEADLINE, || view.state("solo") == "Healthy");
}
