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
