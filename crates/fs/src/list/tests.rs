use super::*;

#[test]
fn cursors_round_trip_any_name() {
    for name in [&b"a"[..], b"\xff\xfe not utf-8", &[b'z'; 255]] {
        assert_eq!(decode_cursor(&encode_cursor(name)).unwrap(), name);
    }
    for bad in ["", "!!!", "Lw", "AA"] {
        // "Lw" is "/", "AA" is a NUL byte.
        assert!(decode_cursor(bad).is_err(), "{bad}");
    }
    assert!(decode_cursor(&"A".repeat(400)).is_err());
}

#[test]
fn names_are_shown_and_escaped_as_serde_would() {
    let mut all: Vec<u8> = (1u8..0x80).collect();
    all.extend_from_slice(b"\xc3\xa9 \xff\xfe mid \xe2\x82 \xf0\x9f\x98\x80 end\x7f");
    for name in [&all[..], b"plain", b"\xff", b"a\"b\\c", b""] {
        let shown = String::from_utf8_lossy(name);
        let want = serde_json::to_string(&shown).unwrap();
        let mut got = String::new();
        push_shown_name(&mut got, name);
        assert_eq!(format!("\"{got}\""), want, "{name:?}");
        assert_eq!(shown_json_len(name), want.len() - 2, "{name:?}");
    }
}

#[test]
fn a_page_past_its_deadline_is_handed_over_and_one_within_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        std::fs::write(dir.path().join(format!("f{i:02}")), "").unwrap();
    }
    let run = |deadline| {
        // A fresh descriptor each time, as every listing opens its own.
        let fd: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let mut buffer = Vec::new();
        let mut names = SmallestNames::default();
        let mut seen = 0;
        let page = Page {
            limit: 50,
            room: 1 << 20,
            scan_max: INLINE_SCAN_MAX,
            deadline,
        };
        let out = list_dir(&fd, None, page, &mut buffer, &mut names, &mut |_| seen += 1);
        (out.unwrap(), seen)
    };
    // A deadline already past: nothing answered (the pool redoes the page).
    let past = std::time::Instant::now() - std::time::Duration::from_secs(1);
    assert_eq!(run(Some(past)).0, None);
    // No deadline (the pool), or one far off: the whole page.
    assert_eq!(run(None), (Some(None), 40));
    let later = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    assert_eq!(run(Some(later)), (Some(None), 40));
}
