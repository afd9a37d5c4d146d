use super::*;
use crate::logs::{LogSink, MAX_LINE};
use crate::manifest::LogSettings;
use std::time::Duration;

/// Decode a native entry, independently of the encoder.
fn parse(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data.iter().position(|b| *b == b'\n' || *b == b'=').unwrap();
        let key = String::from_utf8(data[..end].to_vec()).unwrap();
        let rest = &data[end + 1..];
        if data[end] == b'=' {
            let nl = rest.iter().position(|b| *b == b'\n').unwrap();
            fields.push((key, rest[..nl].to_vec()));
            data = &rest[nl + 1..];
        } else {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            assert_eq!(rest[8 + len], b'\n');
            fields.push((key, rest[8..8 + len].to_vec()));
            data = &rest[8 + len + 1..];
        }
    }
    fields
}

fn get<'a>(fields: &'a [(String, Vec<u8>)], key: &str) -> &'a str {
    let (_, v) = fields.iter().find(|(k, _)| k == key).unwrap();
    std::str::from_utf8(v).unwrap()
}

#[test]
fn a_value_with_a_newline_is_length_prefixed() {
    let mut out = Vec::new();
    native::field(&mut out, "MESSAGE", b"two\nlines");
    native::field(&mut out, "PRIORITY", b"6");
    let mut expected = b"MESSAGE\n".to_vec();
    expected.extend_from_slice(&9u64.to_le_bytes());
    expected.extend_from_slice(b"two\nlines\nPRIORITY=6\n");
    assert_eq!(out, expected);
    let fields = parse(&out);
    assert_eq!(get(&fields, "MESSAGE"), "two\nlines");
}

#[test]
fn the_priority_comes_from_an_sd_daemon_prefix_or_the_stream() {
    assert_eq!(
        priority_of(Stream::Stdout, "<3>disk gone"),
        (3, "disk gone")
    );
    assert_eq!(priority_of(Stream::Stderr, "<7>"), (7, ""));
    // A service may lower its priority, never raise it above err.
    assert_eq!(
        priority_of(Stream::Stdout, "<0>EMERGENCY"),
        (3, "EMERGENCY")
    );
    assert_eq!(priority_of(Stream::Stderr, "<1>alert"), (3, "alert"));
    assert_eq!(priority_of(Stream::Stderr, "<2>crit"), (3, "crit"));
    assert_eq!(priority_of(Stream::Stdout, "hello"), (6, "hello"));
    assert_eq!(priority_of(Stream::Stderr, "hello"), (4, "hello"));
    assert_eq!(priority_of(Stream::Supervisor, "started"), (5, "started"));
    // Not a prefix: kept as written.
    assert_eq!(priority_of(Stream::Stdout, "<8>x"), (6, "<8>x"));
    assert_eq!(priority_of(Stream::Stdout, "<12>x"), (6, "<12>x"));
    assert_eq!(priority_of(Stream::Stdout, "<3"), (6, "<3"));
}

struct FakeJournald {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeJournald {
    fn bind() -> FakeJournald {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeJournald {
            socket,
            path,
            _dir: dir,
        }
    }

    fn next(&self) -> Vec<(String, Vec<u8>)> {
        let mut buf = vec![0u8; 1 << 20];
        let n = self.socket.recv(&mut buf).unwrap();
        parse(&buf[..n])
    }
}

fn leak(journal: Journal) -> &'static Journal {
    Box::leak(Box::new(journal))
}

#[test]
fn a_sink_sends_each_line_with_its_service_stream_and_priority() {
    let journald = FakeJournald::bind();
    let journal = leak(Journal::to_socket(&journald.path).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sink = LogSink::with_journal(dir.path(), "fs", &LogSettings::default(), Some(journal));
    sink.push(Stream::Stdout, "hello".into());
    sink.push(Stream::Stderr, "<2>on fire".into());
    let first = journald.next();
    assert_eq!(get(&first, "MESSAGE"), "hello");
    assert_eq!(get(&first, "PRIORITY"), "6");
    assert_eq!(get(&first, "SYSLOG_IDENTIFIER"), "strata-fs");
    assert_eq!(get(&first, "STRATA_SERVICE"), "fs");
    assert_eq!(get(&first, "STRATA_STREAM"), "stdout");
    let second = journald.next();
    assert_eq!(get(&second, "MESSAGE"), "on fire");
    assert_eq!(get(&second, "PRIORITY"), "3", "crit is cut to err");
    assert_eq!(get(&second, "STRATA_STREAM"), "stderr");
    // The file and the ring keep the line as written.
    assert_eq!(sink.tail(1, usize::MAX)[0].text, "<2>on fire");
    assert_eq!(journal.dropped(), 0);
}

#[test]
fn a_longest_line_fits_one_datagram() {
    let journald = FakeJournald::bind();
    let journal = Journal::to_socket(&journald.path).unwrap();
    // The worst a captured line becomes: MAX_LINE invalid bytes, each now U+FFFD.
    let line = "\u{FFFD}".repeat(MAX_LINE);
    journal.send_line("fs", Stream::Stdout, &line);
    assert_eq!(get(&journald.next(), "MESSAGE"), line);
    assert_eq!(journal.dropped(), 0);
}

#[test]
fn a_missing_or_full_journal_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Journal::to_socket(dir.path().join("nobody-here")).unwrap();
    missing.send_line("fs", Stream::Stdout, "lost");
    missing.send_line("fs", Stream::Stdout, "lost too");
    assert_eq!(missing.dropped(), 2);

    // A journald that reads nothing: its queue fills, then entries are dropped, and
    // the sender never waits (a blocking send would hang this loop).
    let journald = FakeJournald::bind();
    let full = Journal::to_socket(&journald.path).unwrap();
    let line = "x".repeat(1024);
    let mut sent = 0u64;
    while full.dropped() == 0 {
        full.send_line("fs", Stream::Stdout, &line);
        sent += 1;
        assert!(sent < 1_000_000, "the queue never filled");
    }
    // What was queued is intact.
    assert_eq!(get(&journald.next(), "MESSAGE"), line);
}

#[test]
fn an_entry_too_large_for_a_datagram_is_cut_and_says_so() {
    let journald = FakeJournald::bind();
    let journal = Journal::to_socket(&journald.path).unwrap();
    // Larger than any socket send buffer the kernel gives by default (wmem_default).
    let line = "y".repeat(8 << 20);
    journal.send_line("fs", Stream::Stdout, &line);
    let fields = journald.next();
    let message = get(&fields, "MESSAGE");
    assert!(
        message.starts_with(&"y".repeat(CUT_MESSAGE_AT)),
        "{}",
        message.len()
    );
    assert!(
        message.ends_with(&format!(
            " [cut: {} of {} bytes]",
            line.len() - CUT_MESSAGE_AT,
            line.len()
        )),
        "{}",
        &message[CUT_MESSAGE_AT..]
    );
    assert_eq!(journal.dropped(), 0);
}

#[tokio::test]
async fn only_the_start_of_a_real_line_carries_a_priority() {
    let journald = FakeJournald::bind();
    let journal = leak(Journal::to_socket(&journald.path).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sink = std::sync::Arc::new(LogSink::with_journal(
        dir.path(),
        "fs",
        &LogSettings::default(),
        Some(journal),
    ));
    // A line split at MAX_LINE whose rest looks like a prefix, then a real one.
    let mut output = "a".repeat(MAX_LINE).into_bytes();
    output.extend_from_slice(b"<3>not a prefix\n<0>EMERGENCY\n");
    crate::logs::capture(&output[..], Stream::Stdout, sink).await;
    let first = journald.next();
    assert_eq!(get(&first, "MESSAGE").len(), MAX_LINE);
    let rest = journald.next();
    assert_eq!(get(&rest, "MESSAGE"), "<3>not a prefix");
    assert_eq!(get(&rest, "PRIORITY"), "6");
    let real = journald.next();
    assert_eq!(get(&real, "MESSAGE"), "EMERGENCY");
    assert_eq!(get(&real, "PRIORITY"), "3");
}

#[test]
fn the_bucket_admits_a_burst_then_its_rate_and_counts_the_rest() {
    let start = std::time::Instant::now();
    let mut limit = RateLimit::new(start);
    for _ in 0..RATE_BURST {
        assert_eq!(limit.admit(start), Admit::Send { suppressed: 0 });
    }
    for _ in 0..7 {
        assert_eq!(limit.admit(start), Admit::Suppress);
    }
    // A second later RATE_PER_SEC more pass; the first says what was left out.
    let later = start + Duration::from_secs(1);
    assert_eq!(limit.admit(later), Admit::Send { suppressed: 7 });
    for _ in 1..RATE_PER_SEC {
        assert_eq!(limit.admit(later), Admit::Send { suppressed: 0 });
    }
    assert_eq!(limit.admit(later), Admit::Suppress);
    // A long quiet spell refills no more than the burst.
    let much_later = later + Duration::from_secs(3600);
    for _ in 0..RATE_BURST {
        assert!(matches!(limit.admit(much_later), Admit::Send { .. }));
    }
    assert_eq!(limit.admit(much_later), Admit::Suppress);
}

#[test]
fn a_chatty_service_is_limited_in_the_journal_only_and_told_once() {
    let journald = FakeJournald::bind();
    let journal = leak(Journal::to_socket(&journald.path).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sink = LogSink::with_journal(dir.path(), "fs", &LogSettings::default(), Some(journal));
    // No refill but by hand, so the count is exact.
    *sink.journal_limit() = RateLimit::with(std::time::Instant::now(), 0, 3);
    for i in 0..5 {
        sink.push(Stream::Stdout, format!("line {i}"));
    }
    // The supervisor's own notes are not limited.
    sink.push(Stream::Supervisor, "crashed".into());
    for i in 0..3 {
        assert_eq!(get(&journald.next(), "MESSAGE"), format!("line {i}"));
    }
    assert_eq!(get(&journald.next(), "MESSAGE"), "crashed");
    sink.journal_limit().fill();
    sink.push(Stream::Stdout, "after".into());
    let note = journald.next();
    assert!(
        get(&note, "MESSAGE").starts_with("suppressed 2 lines "),
        "{}",
        get(&note, "MESSAGE")
    );
    assert_eq!(get(&note, "STRATA_STREAM"), "supervisor");
    assert_eq!(get(&journald.next(), "MESSAGE"), "after");
    // The ring (and the file) keep every line.
    assert_eq!(sink.tail(100, usize::MAX).len(), 7);
    assert_eq!(journal.dropped(), 0);
}
