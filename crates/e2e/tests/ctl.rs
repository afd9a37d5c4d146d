//! `strata-ctl` subcommands against a whole node.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;
use strata_e2e::Stack;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn subcommands_against_a_live_node() {
    let stack = Stack::start();
    let blob: Vec<u8> = (0..3 * 256 * 1024 + 17)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    std::fs::write(stack.export.join("blob.bin"), &blob).unwrap();
    std::fs::create_dir(stack.export.join("sub")).unwrap();

    let out = stack.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("local-0"));

    let out = stack.ctl(&["svc", "list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    for name in ["registry", "identity", "fs"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(name) && l.contains("Healthy")),
            "{table}"
        );
    }

    let prefix = stack.export.to_str().unwrap();
    let out = stack.ctl(&[
        "cap",
        "issue",
        "--service",
        "fs",
        "--right",
        "fs.list",
        "--right",
        "fs.open",
        "--right",
        "fs.read",
        "--right",
        "fs.stat",
        "--prefix",
        prefix,
        "--ttl",
        "10m",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();

    let out = stack.ctl(&["--token", &token, "fs", "ls"]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("blob.bin") && listing.contains("sub/"),
        "{listing}"
    );
    let out = stack.ctl(&["--token", &token, "fs", "stat", "blob.bin", "--json"]);
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stat["size"], blob.len());
    // cat streams every chunk as raw bytes.
    let out = stack.ctl(&["--token", &token, "fs", "cat", "blob.bin"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == blob,
        "cat returned {} bytes, expected {}",
        out.stdout.len(),
        blob.len()
    );
    let out = stack.ctl(&["--token", &token, "fs", "cat", "../etc/passwd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("PERMISSION_DENIED: "),
        "{}",
        text(&out.stderr)
    );

    // Logs, restart, and logs -f picking up the restarted service's output.
    let out = stack.ctl(&["svc", "logs", "fs", "-n", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!out.stdout.is_empty());
    let mut follow = stack
        .sb
        .command("strata-ctl")
        .args(["svc", "logs", "registry", "-n", "1", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let old_pid = stack.pid("registry");
    let out = stack.ctl(&["svc", "restart", "registry"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(stack.pid("registry"), old_pid);
    // The restarted registry logs "listening" again; the follower must print it.
    let mut stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            // The old registry's last words, then the new one starting up.
            if seen.contains("stopped") && seen.contains("listening") {
                let _ = tx.send(seen.clone());
                break;
            }
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    let _ = follow.kill();
    let _ = follow.wait();
    let seen = got.expect("svc logs -f did not show the restarted registry's output");
    assert!(seen.find("stopped") < seen.rfind("listening"), "{seen}");
}
