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

const SEND: Admit = Admit {
    note: None,
    send: true,
};
const SUPPRESS: Admit = Admit {
    note: None,
    send: false,
};

#[test]
fn the_bucket_admits_a_burst_then_its_rate_and_counts_the_rest() {
    let start = std::time::Instant::now();
    let mut limit = RateLimit::new(start);
    for _ in 0..RATE_BURST {
        assert_eq!(limit.admit(start), SEND);
    }
    for _ in 0..7 {
        assert_eq!(limit.admit(start), SUPPRESS);
    }
    // A second later RATE_PER_SEC more entries pass: the note that says what was left
    // out takes the first, then RATE_PER_SEC - 1 lines.
    let later = start + Duration::from_secs(1);
    assert_eq!(
        limit.admit(later),
        Admit {
            note: Some(7),
            send: true
        }
    );
    for _ in 2..RATE_PER_SEC {
        assert_eq!(limit.admit(later), SEND);
    }
    assert_eq!(limit.admit(later), SUPPRESS);
    // A long quiet spell refills no more than the burst.
    let much_later = later + Duration::from_secs(3600);
    assert_eq!(
        limit.admit(much_later),
        Admit {
            note: Some(1),
            send: true
        }
    );
    for _ in 2..RATE_BURST {
        assert_eq!(limit.admit(much_later), SEND);
    }
    assert_eq!(limit.admit(much_later), SUPPRESS);
}

#[test]
fn a_flood_stays_within_the_documented_share_notes_included_and_every_line_is_counted() {
    // 10,000 lines a second for 90 s, at fixed instants.
    let start = std::time::Instant::now();
    let step = Duration::from_micros(100);
    let lines: u64 = 900_000;
    let mut limit = RateLimit::new(start);
    let mut entries = Vec::new(); // when each journal entry (line or note) went
    let (mut sent, mut told, mut notes) = (0u64, 0u64, 0u64);
    for i in 0..lines {
        let now = start + step * u32::try_from(i).unwrap();
        let Admit { note, send } = limit.admit(now);
        if let Some(n) = note {
            told += n;
            notes += 1;
            entries.push(now);
        }
        if send {
            sent += 1;
            entries.push(now);
        }
    }
    // The service dies in mid-flood: the rest of the count is said at once.
    let end = start + step * u32::try_from(lines).unwrap();
    let last = limit.flush(end).expect("the count left at the end is said");
    told += last;
    notes += 1;
    entries.push(end);
    assert_eq!(limit.flush(end), None, "said once");
    assert_eq!(
        sent + told,
        lines,
        "every line is sent or counted in a note"
    );
    // At most one note per NOTE_INTERVAL (and the one at the end).
    assert!(notes <= 90 / NOTE_INTERVAL.as_secs() + 2, "{notes} notes");
    // In any 30 s window, lines and notes together are within the documented figure.
    let window = Duration::from_secs(30);
    let share = u64::from(RATE_BURST) + u64::from(RATE_PER_SEC) * 30 + 1;
    let mut first = 0;
    let mut most = 0;
    for (i, at) in entries.iter().enumerate() {
        while *at - entries[first] >= window {
            first += 1;
        }
        most = most.max(i + 1 - first);
    }
    assert!(
        most as u64 <= share,
        "{most} entries in 30 s, share {share}"
    );
}

#[test]
fn after_a_flood_the_count_comes_with_the_next_line_once_the_interval_passed() {
    let start = std::time::Instant::now();
    let mut limit = RateLimit::with(start, 1, 2);
    assert_eq!(limit.admit(start), SEND);
    assert_eq!(limit.admit(start), SEND);
    for _ in 0..5 {
        assert_eq!(limit.admit(start), SUPPRESS);
    }
    // The first note goes at the first token.
    let t1 = start + Duration::from_secs(1);
    assert_eq!(
        limit.admit(t1),
        Admit {
            note: Some(5),
            send: false
        }
    );
    // The next has to wait NOTE_INTERVAL, however many tokens there are.
    let t2 = t1 + Duration::from_secs(2);
    assert_eq!(limit.admit(t2), SEND);
    assert_eq!(limit.admit(t2), SEND);
    assert_eq!(limit.admit(t2), SUPPRESS);
    let t3 = t1 + NOTE_INTERVAL;
    assert_eq!(
        limit.admit(t3),
        Admit {
            note: Some(2),
            send: true
        }
    );
    assert_eq!(limit.flush(t3), None, "nothing left to say");
}

#[tokio::test]
async fn the_count_of_a_service_that_stops_in_a_flood_is_said_when_its_output_ends() {
    let journald = FakeJournald::bind();
    let journal = leak(Journal::to_socket(&journald.path).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sink = std::sync::Arc::new(LogSink::with_journal(
        dir.path(),
        "fs",
        &LogSettings::default(),
        Some(journal),
    ));
    // No refill, so the count is exact.
    *sink.journal_limit() = RateLimit::with(std::time::Instant::now(), 0, 3);
    let output: String = (0..5).map(|i| format!("line {i}\n")).collect();
    crate::logs::capture(
        output.as_bytes(),
        Stream::Stdout,
        std::sync::Arc::clone(&sink),
    )
    .await;
    for i in 0..3 {
        assert_eq!(get(&journald.next(), "MESSAGE"), format!("line {i}"));
    }
    let note = journald.next();
    assert!(
        get(&note, "MESSAGE").starts_with("suppressed 2 lines "),
        "{}",
        get(&note, "MESSAGE")
    );
    assert_eq!(get(&note, "STRATA_STREAM"), "supervisor");
    // The note borrowed the one token it may: with the bucket below empty, the next
    // end says nothing (the count waits for a token).
    sink.push(Stream::Stdout, "line 5".into());
    sink.output_ended();
    sink.push(Stream::Supervisor, "exited".into());
    assert_eq!(get(&journald.next(), "MESSAGE"), "exited");
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
