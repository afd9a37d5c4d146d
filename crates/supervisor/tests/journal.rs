//! Service output to the journal: the test plays journald, binding the datagram socket
//! the supervisor is pointed at (`STRATA_JOURNAL_SOCKET`), starts a supervisor as
//! systemd would (`JOURNAL_STREAM` set) with a service that writes to stdout and stderr,
//! and checks each line arrives as a native entry with its service, stream and priority,
//! while the service's log file keeps every line as before.

mod common;

use common::{supervisor_command, Sup};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use strata_testkit::{wait_until, Proc, Sandbox, DEADLINE};

/// Decode one native-protocol entry: `KEY=value\n`, or `KEY\n` + u64 LE length +
/// value + `\n`.
fn parse(mut data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data
            .iter()
            .position(|b| *b == b'\n' || *b == b'=')
            .expect("a field ends in = or a newline");
        let key = String::from_utf8(data[..end].to_vec()).unwrap();
        let rest = &data[end + 1..];
        let (value, next) = if data[end] == b'=' {
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .expect("final newline");
            (&rest[..nl], &rest[nl + 1..])
        } else {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            assert_eq!(rest[8 + len], b'\n', "newline after a binary value");
            (&rest[8..8 + len], &rest[8 + len + 1..])
        };
        fields.push((key, String::from_utf8(value.to_vec()).unwrap()));
        data = next;
    }
    fields
}

fn field<'a>(entry: &'a [(String, String)], key: &str) -> Option<&'a str> {
    entry
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

const MANIFEST: &str = r#"
[[service]]
name = "chatty"
exec = "/bin/sh"
args = ["-c", "echo 'out line'; echo 'err line' >&2; echo '<3>marked error' >&2; echo 'multi word  spaced'; exec sleep 1000"]
readiness = "started"
"#;

#[test]
fn service_lines_reach_the_journal_with_service_stream_and_priority() {
    let sandbox = Sandbox::new();
    let journal_path = sandbox.root().join("journal.sock");
    let journald = UnixDatagram::bind(&journal_path).unwrap();
    journald
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let manifest = sandbox.root().join("manifest.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let mut cmd = supervisor_command(&sandbox);
    cmd.arg("--config")
        .arg(&manifest)
        .env("JOURNAL_STREAM", "8:12345")
        .env("STRATA_JOURNAL_SOCKET", &journal_path)
        .env_remove("NOTIFY_SOCKET");
    let proc = Proc::spawn("strata-supervisor", &mut cmd);
    let sup = Sup {
        sandbox,
        proc,
        manifest,
    };
    let socket = sup.socket();
    wait_until("the supervisor's control socket", DEADLINE, || {
        strata_testkit::healthy(&socket)
    });

    // Every chatty entry, until the four lines are in.
    let mut entries: Vec<Vec<(String, String)>> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let until = Instant::now() + DEADLINE;
    let wanted = ["out line", "err line", "marked error", "multi word  spaced"];
    while !wanted
        .iter()
        .all(|w| entries.iter().any(|e| field(e, "MESSAGE") == Some(*w)))
    {
        assert!(
            Instant::now() < until,
            "not every line reached the journal: {entries:?}"
        );
        match journald.recv(&mut buf) {
            Ok(n) => entries.push(parse(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    let entry = |message: &str| {
        entries
            .iter()
            .find(|e| field(e, "MESSAGE") == Some(message))
            .unwrap()
    };
    for (message, stream, priority) in [
        ("out line", "stdout", "6"),
        ("err line", "stderr", "4"),
        ("marked error", "stderr", "3"),
        ("multi word  spaced", "stdout", "6"),
    ] {
        let e = entry(message);
        assert_eq!(field(e, "STRATA_SERVICE"), Some("chatty"), "{e:?}");
        assert_eq!(
            field(e, "SYSLOG_IDENTIFIER"),
            Some("strata-chatty"),
            "{e:?}"
        );
        assert_eq!(field(e, "STRATA_STREAM"), Some(stream), "{e:?}");
        assert_eq!(field(e, "PRIORITY"), Some(priority), "{e:?}");
    }
    // The supervisor's note that it started the service is there too, as a notice.
    assert!(
        entries
            .iter()
            .any(|e| field(e, "STRATA_STREAM") == Some("supervisor")
                && field(e, "PRIORITY") == Some("5")
                && field(e, "MESSAGE").is_some_and(|m| m.starts_with("started /bin/sh"))),
        "{entries:?}"
    );

    // The log file is written as before, the prefix kept as the service wrote it.
    let log = sup.sandbox.state_dir().join("logs").join("chatty.log");
    wait_until("the log file has every line", DEADLINE, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("stdout multi word  spaced"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stderr <3>marked error\n"), "{text}");
}
