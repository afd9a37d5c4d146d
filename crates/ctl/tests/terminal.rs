//! What `strata-ctl` does to the terminal it prints on: a hostile server's strings are
//! escaped, a reader that goes away (`| head -1`) ends it quietly with 0 (and stops
//! `svc logs -f`), an argument that is not UTF-8 is a usage error, and a socket it may
//! not open says so (77) with a hint about the socket group.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use strata_ipc::{Call, Router, Server, ServerConfig};
use strata_proto::methods::supervisor::{
    LogLine, LogStream, Reload, ReloadReport, ReloadResult, SvcLogs, SvcLogsResult, SvcState,
    SvcStatus, SvcStatusResult, SvcStop, SvcStopResult,
};
use strata_proto::ErrorBody;
use strata_testkit::{healthy, wait_until, Proc, Sandbox, DEADLINE};

/// What a hostile server puts in every string: a terminal title change and a bell.
const HOSTILE: &str = "fs\x1b]0;pwned\x07";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A supervisor that answers with [`HOSTILE`] strings, on `sb`'s supervisor socket,
/// served from its own thread until the test ends.
fn hostile_supervisor(sb: &Sandbox) {
    let path = sb.socket("supervisor");
    let router = Router::new("supervisor", "0")
        .method::<SvcStatus, _, _, _>(|_c: Call, _p| async move {
            Ok::<_, ErrorBody>(SvcStatusResult {
                name: HOSTILE.into(),
                state: SvcState::Healthy,
                pid: Some(1),
                since: 1,
                since_ms: 1000,
                restarts: 0,
                crashes_in_window: 0,
                last_exit: None,
                applied: None,
                exec: Some(HOSTILE.into()),
                args: Some(vec![HOSTILE.into()]),
                readiness: HOSTILE.into(),
                restart: "always".into(),
                depends_on: vec![HOSTILE.into()],
                dependents: vec![],
                socket: Some(HOSTILE.into()),
                log_file: HOSTILE.into(),
                waiting: Some(HOSTILE.into()),
                capabilities: Some(1),
            })
        })
        .method::<SvcLogs, _, _, _>(
            |_c: Call, p: strata_proto::methods::supervisor::SvcLogsParams| async move {
                Ok::<_, ErrorBody>(SvcLogsResult {
                    name: p.name.into_string(),
                    lines: (0..p.lines.min(2000))
                        .map(|i| LogLine {
                            ts_ms: 1000 + i as u64,
                            stream: LogStream::Stdout,
                            text: format!("{HOSTILE} {i}"),
                        })
                        .collect(),
                })
            },
        )
        .method::<Reload, _, _, _>(|_c: Call, _p| async move {
            Ok::<_, ErrorBody>(ReloadResult {
                status: "reloaded".into(),
                report: ReloadReport {
                    added: vec![HOSTILE.into()],
                    ..ReloadReport::default()
                },
            })
        })
        .method::<SvcStop, _, _, _>(|_c: Call, _p| async move {
            Ok::<_, ErrorBody>(SvcStopResult {
                status: "stopped".into(),
                also_stopped: vec![HOSTILE.into()],
            })
        });
    let at = path.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let server = Server::bind(ServerConfig::new(&at), router).unwrap();
                server.serve(std::future::pending()).await;
            });
    });
    wait_until("the hostile supervisor", DEADLINE, || healthy(&path));
}

#[test]
fn a_hostile_servers_strings_are_printed_escaped() {
    let sb = Sandbox::new();
    hostile_supervisor(&sb);
    for args in [
        &["svc", "status", "fs"][..],
        &["reload"],
        &["svc", "stop", "fs"],
        &["svc", "logs", "fs", "-n", "3"],
    ] {
        let out = sb.run("strata-ctl", args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let shown = text(&out.stdout);
        assert!(
            !shown.contains('\x1b') && !shown.contains('\x07'),
            "{args:?}: {shown:?}"
        );
        assert!(shown.contains("fs\\x1b]0;pwned\\x07"), "{args:?}: {shown}");
    }
}

/// `strata-ctl args` with its stdout a pipe whose reader is already gone.
fn into_a_closed_pipe(cmd: &mut Command) -> Proc {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped());
    Proc::spawn("strata-ctl", cmd)
}

fn finish(mut p: Proc, what: &str) -> Output {
    if p.wait_timeout(DEADLINE).is_none() {
        panic!("{what} is still running after its reader went away");
    }
    p.take_child().wait_with_output().unwrap()
}

#[test]
fn a_reader_that_goes_away_ends_it_quietly() {
    let sb = Sandbox::new();
    hostile_supervisor(&sb);
    for args in [
        &["svc", "status", "fs", "-n", "2000"][..],
        &["-o", "json", "svc", "logs", "fs"],
        &["completions", "bash"],
        // Following stops at the first write that fails, instead of polling forever.
        &["svc", "logs", "fs", "-f"],
        &["-o", "json", "svc", "logs", "fs", "-f"],
    ] {
        let mut cmd = sb.command("strata-ctl");
        cmd.args(args);
        let out = finish(into_a_closed_pipe(&mut cmd), &format!("{args:?}"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn an_argument_that_is_not_utf8_is_a_usage_error_or_a_path() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let bad = OsStr::from_bytes(b"\xff");
    let out = sb
        .command("strata-ctl")
        .arg("svc")
        .arg("status")
        .arg(bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    // A token file's path need not be UTF-8.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(OsStr::from_bytes(b"tok\xff"));
    std::fs::write(&file, "not-a-token\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = sb
        .command("strata-ctl")
        .arg("--token-file")
        .arg(&file)
        .args(["cap", "inspect"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // The file was read: what fails is reaching identity (not started here).
    assert_eq!(out.status.code(), Some(69), "{err}");
}

#[test]
fn a_socket_it_may_not_open_is_denied_with_a_hint_about_the_group() {
    let sb = Sandbox::new();
    sb.open_to_all();
    let path = sb.socket("supervisor");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Nobody may write to it (connect needs write permission); root is not bound by
    // that, so as root the command runs as nobody.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = sb.command("strata-ctl");
    cmd.args(["svc", "list"]);
    if strata_testkit::is_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains(&format!("permission denied on {}", path.display()))
            && err.contains("are you in the socket group?"),
        "{err}"
    );
}

#[test]
fn an_error_told_to_a_closed_stderr_keeps_its_exit_status() {
    // No supervisor: the command fails with 69, and says so to a stderr nobody reads.
    let sb = Sandbox::new();
    for closed_stdout in [false, true] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = sb.command("strata-ctl");
        cmd.args(["svc", "status", "fs"]).stderr(writer);
        if closed_stdout {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            cmd.stdout(writer);
        } else {
            cmd.stdout(Stdio::piped());
        }
        let out = finish(Proc::spawn("strata-ctl", &mut cmd), "svc status");
        assert_eq!(
            out.status.code(),
            Some(69),
            "closed stdout too: {closed_stdout}"
        );
    }
}
