//! The `strata-notes` binary on its own: it serves `<runtime dir>/notes.sock`, answers
//! `sys.health` (not ok while no identity has given its guard the revocation list), and
//! SIGTERM ends it cleanly: exit 0, socket removed. Without a routed fs capability it
//! refuses to start, saying why.

use serde_json::Value;
use std::process::Stdio;
use strata_testkit::{call, wait_until, Proc, Sandbox, DEADLINE};

#[test]
fn serves_its_socket_and_stops_cleanly_on_sigterm() {
    let sb = Sandbox::new();
    let creds = sb.root().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("fs"), "v2.public.not-checked-until-used").unwrap();
    let data = sb.root().join("data");
    let mut cmd = sb.command("strata-notes");
    cmd.env("CREDENTIALS_DIRECTORY", &creds)
        .arg("--data-dir")
        .arg(&data);
    let mut notes = Proc::spawn("strata-notes", &mut cmd);
    let socket = sb.socket("notes");
    let mut health = Value::Null;
    wait_until("notes answers sys.health", DEADLINE, || {
        match call(&socket, "sys.health", Value::Null, None) {
            Ok(v) => {
                health = v;
                true
            }
            Err(_) => false,
        }
    });
    assert_eq!(health["result"]["service"], "notes", "{health}");
    assert_eq!(health["result"]["status"], "unavailable", "{health}");
    assert!(
        health["result"]["status_reason"]
            .as_str()
            .unwrap()
            .contains("revocation list"),
        "{health}"
    );
    assert!(data.is_dir(), "the data directory was created");
    // A protected method with no token: refused, and the service goes on.
    let r = call(&socket, "notes.list", serde_json::json!({}), None).unwrap();
    assert_eq!(r["error"]["name"], "UNAUTHENTICATED", "{r}");

    notes.signal(libc::SIGTERM);
    let status = notes
        .wait_timeout(DEADLINE)
        .expect("notes exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket is removed on the way out");
}

#[test]
fn refuses_to_start_without_a_routed_fs_capability() {
    let sb = Sandbox::new();
    let out = sb
        .command("strata-notes")
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("--data-dir")
        .arg(sb.root().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CREDENTIALS_DIRECTORY"), "{stderr}");
}

#[test]
fn refuses_bounds_past_what_one_list_frame_holds_and_a_symlinked_data_dir() {
    let sb = Sandbox::new();
    let creds = sb.root().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("fs"), "v2.public.not-checked-until-used").unwrap();
    let data = sb.root().join("data");
    // Each run must exit refusing; one that serves instead is killed at the deadline.
    let run = |args: &[&str], dir: &std::path::Path| {
        let stderr = sb.root().join("stderr");
        let mut cmd = sb.command("strata-notes");
        cmd.env("CREDENTIALS_DIRECTORY", &creds)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut notes = Proc::spawn("strata-notes", &mut cmd);
        let status = notes.wait_timeout(DEADLINE);
        assert!(status.is_some_and(|s| !s.success()), "{args:?} accepted");
        std::fs::read_to_string(&stderr).unwrap()
    };
    let e = run(&["--max-notes", "10001"], &data);
    assert!(e.contains("--max-notes must be 1 to 10000"), "{e}");
    let e = run(
        &["--max-notes", "10", "--max-notes-per-caller", "11"],
        &data,
    );
    assert!(e.contains("--max-notes-per-caller"), "{e}");
    std::fs::create_dir(&data).unwrap();
    let link = sb.root().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let e = run(&[], &link);
    assert!(e.contains("a symlink is refused"), "{e}");
}
