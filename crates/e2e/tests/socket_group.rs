//! Access for non-root users through the socket group (issue 17, scope 3): with
//! `--socket-group`, the runtime directory is `0750 root:<group>` and every socket
//! `0660 root:<group>`, so a user in the group can connect and gets exactly what the
//! issuance policy grants its uid, and the same user outside the group cannot connect.
//!
//! The users are made-up ids the test switches to with util-linux's `setpriv` (root is
//! needed for that, and to give files to a group it is not in). The group is a bare
//! numeric gid, which the supervisor accepts as it is, so the test touches no group
//! database; names are resolved by the same code as a service's `group` (a supervisor
//! unit test covers that, and the last test here an unknown name).
//!
//! The processes acting as those users are this test binary again (`child_calls`): it
//! makes the calls it is given through `strata_testkit::call`, the independent client,
//! and prints each answer, or the errno of a connection that failed.
//!
//! The NixOS unit (nix/module.nix) has no CAP_CHOWN: it makes the supervisor a member of
//! the socket group instead (SupplementaryGroups), since an owner may give its own file to
//! a group it is in without the capability, and CAP_CHOWN in the hands of every service
//! running as root would let one give any file it reaches to anyone. The last tests start
//! the node the same way through `setpriv`: CAP_CHOWN gone, with and without the group.

use serde_json::{json, Value};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use strata_e2e::Stack;
use strata_testkit::{binary, skip_unless_root, Proc, Sandbox, DEADLINE};

/// The user the issuance policy grants something.
const USER: u32 = 47_101;
/// The socket group (no entry in /etc/group needed: a numeric gid is taken as it is).
const GROUP: u32 = 47_150;
const PERMISSION_DENIED: i64 = 3;
const CALLS_VAR: &str = "STRATA_TEST_SOCKET_GROUP_CALLS";
const RESULT: &str = "CALL_RESULT ";

/// The child half: when started by [`as_user`], make each call of `$CALLS_VAR` (socket,
/// method, params, token) and print one `CALL_RESULT {..}` line per call. On its own
/// (the variable unset, as in every ordinary run) it does nothing.
#[test]
fn child_calls() {
    let Ok(calls) = std::env::var(CALLS_VAR) else {
        return;
    };
    let calls: Vec<Value> = serde_json::from_str(&calls).unwrap();
    for c in calls {
        let socket = Path::new(c["socket"].as_str().unwrap());
        let token = c["token"].as_str();
        let result = match strata_testkit::call(
            socket,
            c["method"].as_str().unwrap(),
            c["params"].clone(),
            token,
        ) {
            Ok(answer) => json!({"answer": answer}),
            Err(e) => json!({"errno": e.raw_os_error(), "error": e.to_string()}),
        };
        println!("{RESULT}{result}");
    }
}

/// Run `calls` as [`USER`], with `groups` as its supplementary groups (primary gid =
/// uid), and return one result per call.
fn as_user(groups: &[u32], calls: &[Value]) -> Vec<Value> {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    let out = cmd
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_calls", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(CALLS_VAR, Value::from(calls.to_vec()).to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = stdout
        .lines()
        // The harness may print `test child_calls ... ` first on the same line.
        .filter_map(|l| l.find(RESULT).map(|at| &l[at + RESULT.len()..]))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), calls.len(), "{stdout}");
    results
}

fn call(socket: &Path, method: &str, params: Value, token: Option<&str>) -> Value {
    json!({"socket": socket, "method": method, "params": params, "token": token})
}

/// The answer of a call that connected.
fn answer(result: &Value) -> &Value {
    assert!(
        result["answer"].is_object(),
        "the call did not connect: {result}"
    );
    &result["answer"]
}

fn error_code(result: &Value) -> Option<i64> {
    answer(result)["error"]["code"].as_i64()
}

#[test]
fn a_member_of_the_socket_group_gets_what_the_policy_grants_and_a_non_member_cannot_connect() {
    if skip_unless_root(
        "a_member_of_the_socket_group_gets_what_the_policy_grants_and_a_non_member_cannot_connect",
    ) {
        return;
    }
    // fs exports a directory of the test's own, which the policy names.
    let files = tempfile::tempdir().unwrap();
    let export = files.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let policy = files.path().join("issuance.toml");
    std::fs::write(
        &policy,
        format!(
            "[[grant]]\nuids = [{USER}]\nservices = [\"fs\"]\nrights = [\"fs.list\", \"fs.stat\"]\n\
             path_prefixes = [{:?}]\nmax_ttl_seconds = 600\n",
            export.display().to_string()
        ),
    )
    .unwrap();
    let stack = Stack::start_with_env(vec![
        ("STRATA_SOCKET_GROUP".into(), GROUP.to_string()),
        (
            "STRATA_ISSUANCE_POLICY".into(),
            policy.display().to_string(),
        ),
        (
            "STRATA_FS_EXPORT_ROOTS".into(),
            export.display().to_string(),
        ),
    ]);
    std::fs::write(stack.export.join("hello.txt"), b"hello group\n").unwrap();
    // Other users may walk to the runtime directory; from there its own mode decides.
    std::fs::set_permissions(stack.sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let run = stack.sb.runtime_dir();
    let meta = std::fs::metadata(&run).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o750, 0, GROUP),
        "the runtime directory"
    );
    for service in ["supervisor", "registry", "identity", "fs"] {
        let meta = std::fs::symlink_metadata(stack.sb.socket(service)).unwrap();
        assert!(meta.file_type().is_socket(), "{service}");
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o660, 0, GROUP),
            "{service}.sock"
        );
    }

    let identity = stack.sb.socket("identity");
    let fs = stack.sb.socket("fs");
    let export = stack.export.display().to_string();
    let issue = |actions: &[&str]| {
        call(
            &identity,
            "identity.issue",
            json!({"service": "fs", "actions": actions, "path_prefix": export, "ttl_seconds": 60}),
            None,
        )
    };

    // In the group: what the policy grants, and not one right more.
    let results = as_user(&[GROUP], &[issue(&["list", "stat"]), issue(&["read"])]);
    let granted = answer(&results[0]);
    assert_eq!(granted["ok"], true, "{granted}");
    let token = granted["result"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        error_code(&results[1]),
        Some(PERMISSION_DENIED),
        "fs.read is not granted: {}",
        results[1]
    );
    let results = as_user(
        &[GROUP],
        &[
            call(&fs, "fs.list", json!({"path": "."}), Some(&token)),
            call(&fs, "fs.open", json!({"path": "hello.txt"}), Some(&token)),
            call(
                &stack.sb.socket("supervisor"),
                "supervisor.svc.stop",
                json!({"name": "fs"}),
                None,
            ),
        ],
    );
    let listed = answer(&results[0]);
    assert_eq!(listed["ok"], true, "{listed}");
    assert!(listed["result"]["entries"]
        .to_string()
        .contains("hello.txt"));
    assert_eq!(
        error_code(&results[1]),
        Some(PERMISSION_DENIED),
        "the token does not carry fs.open: {}",
        results[1]
    );
    // Connecting is all the group gives: controlling the node is still root's.
    assert_eq!(
        error_code(&results[2]),
        Some(PERMISSION_DENIED),
        "{}",
        results[2]
    );

    // The same uid outside the group: not one socket can be reached.
    let sockets = ["supervisor", "registry", "identity", "fs"];
    let calls: Vec<Value> = sockets
        .iter()
        .map(|s| call(&stack.sb.socket(s), "sys.health", json!({}), None))
        .collect();
    for (service, result) in sockets.iter().zip(as_user(&[], &calls)) {
        assert_eq!(
            result["errno"],
            libc::EACCES,
            "{service}.sock reached without the group: {result}"
        );
    }
    assert_eq!(stack.services().unwrap().len(), 3, "the node is untouched");
}

/// Start `cmd` (a supervisor that is expected to stop by itself at start) with its
/// stderr in a file of `sb`, and wait for it up to the deadline: its exit status and
/// stderr. One still running then is killed (the guard's drop) and fails the test.
fn run_to_exit(sb: &Sandbox, name: &str, cmd: &mut Command) -> (ExitStatus, String) {
    let log = sb.root().join(format!("{name}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut proc = Proc::spawn(name, cmd);
    let status = proc.wait_timeout(DEADLINE);
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{name} is still running after {DEADLINE:?} (it should have stopped at start): {err}"
        );
    };
    (status, err)
}

#[test]
fn an_unknown_socket_group_stops_the_supervisor_at_start() {
    let sb = Sandbox::new();
    let mut cmd = sb.command("strata-supervisor");
    cmd.args(["--socket-group", "strata-no-such-group-17"]);
    let (status, err) = run_to_exit(&sb, "strata-supervisor", &mut cmd);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("unknown group `strata-no-such-group-17`") && err.contains("socket group"),
        "{err}"
    );
    assert!(
        !sb.socket("supervisor").exists(),
        "nothing is bound without the group"
    );
}

/// CAP_CHOWN, bit 0 of the capability sets in `/proc/<pid>/status`.
const CAP_CHOWN: u64 = 1 << 0;

/// `/proc/<pid>/status`'s capability set `field` (`CapEff`, `CapBnd`, ...).
fn capabilities(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The supervisor as root, as the NixOS unit starts it: CAP_CHOWN dropped from the
/// bounding and inheritable sets (so no exec gives it back: not the supervisor's
/// effective set, not its services'), `groups` its only supplementary groups, and
/// `--socket-group` [`GROUP`]; its sibling binaries from this build, fs exporting
/// `export`.
fn supervisor_without_cap_chown(sb: &Sandbox, groups: &[u32], export: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set", "-chown", "--inh-caps", "-chown"]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg("--")
        .arg(binary("strata-supervisor"))
        .args(["--socket-group", &GROUP.to_string()])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("STRATA_RUNTIME_DIR", sb.runtime_dir())
        .env("STRATA_STATE_DIR", sb.state_dir())
        .env("STRATA_FS_EXPORT_ROOTS", export)
        .stdin(Stdio::null());
    for (var, bin) in [
        ("STRATA_REGISTRY_BIN", "strata-registry"),
        ("STRATA_IDENTITY_BIN", "strata-identity"),
        ("STRATA_FS_BIN", "strata-fs"),
    ] {
        cmd.env(var, binary(bin));
    }
    cmd
}

#[test]
fn without_cap_chown_a_member_of_the_socket_group_gives_it_the_runtime_dir_and_every_socket() {
    const TEST: &str =
        "without_cap_chown_a_member_of_the_socket_group_gives_it_the_runtime_dir_and_every_socket";
    if skip_unless_root(TEST) {
        return;
    }
    let sb = Sandbox::new();
    let export = sb.root().join("export");
    std::fs::create_dir(&export).unwrap();
    let mut cmd = supervisor_without_cap_chown(&sb, &[GROUP], &export);
    let supervisor = Proc::spawn("strata-supervisor", &mut cmd);
    let stack = Stack {
        sb,
        supervisor,
        export,
        ctl_env: Vec::new(),
    };
    stack.wait_all_healthy();

    // Nothing of the node holds CAP_CHOWN, nor can gain it back.
    let mut pids = vec![("supervisor", stack.supervisor.pid())];
    for name in strata_e2e::SERVICES {
        pids.push((name, stack.pid(name).expect("a running service's pid")));
    }
    for (name, pid) in pids {
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                capabilities(pid, set) & CAP_CHOWN,
                0,
                "{name} (pid {pid}) has CAP_CHOWN in {set}"
            );
        }
    }

    let meta = std::fs::metadata(stack.sb.runtime_dir()).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o750, 0, GROUP),
        "the runtime directory"
    );
    for service in ["supervisor", "registry", "identity", "fs"] {
        let meta = std::fs::symlink_metadata(stack.sb.socket(service)).unwrap();
        assert!(meta.file_type().is_socket(), "{service}");
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o660, 0, GROUP),
            "{service}.sock"
        );
    }
    // And they work as sockets of the group: a member connects.
    std::fs::set_permissions(stack.sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let health = call(&stack.sb.socket("identity"), "sys.health", json!({}), None);
    let results = as_user(&[GROUP], &[health]);
    assert_eq!(answer(&results[0])["ok"], true, "{}", results[0]);
}

#[test]
fn without_cap_chown_or_the_socket_group_the_supervisor_stops_at_start_and_says_why() {
    const TEST: &str =
        "without_cap_chown_or_the_socket_group_the_supervisor_stops_at_start_and_says_why";
    if skip_unless_root(TEST) {
        return;
    }
    // The runtime directory as systemd makes it (root:root): the supervisor cannot give
    // it to the group.
    let sb = Sandbox::new();
    let export = sb.root().join("export");
    std::fs::create_dir(&export).unwrap();
    let mut cmd = supervisor_without_cap_chown(&sb, &[], &export);
    let (status, err) = run_to_exit(&sb, "strata-supervisor", &mut cmd);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cannot give {} to the socket group (gid {GROUP};",
            sb.runtime_dir().display()
        )) && err.contains("SupplementaryGroups")
            && err.contains("Operation not permitted"),
        "{err}"
    );
    assert!(!sb.socket("supervisor").exists(), "{err}");

    // The runtime directory already the group's (systemd-tmpfiles' `d ... root <group>`):
    // the directory needs no chown, the first socket does, and the start stops there.
    let sb = Sandbox::new();
    std::os::unix::fs::chown(sb.runtime_dir(), None, Some(GROUP)).unwrap();
    let mut cmd = supervisor_without_cap_chown(&sb, &[], &export);
    let (status, err) = run_to_exit(&sb, "strata-supervisor", &mut cmd);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("cannot give it to uid 0 and group {GROUP}"))
            && err.contains("a group it is a member of"),
        "{err}"
    );
    let bound: Vec<_> = std::fs::read_dir(sb.runtime_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert_eq!(bound, Vec::<String>::new(), "{err}");
}
