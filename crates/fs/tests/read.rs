//! fs.read: binary safety, large files in chunks, eof, and param validation.

mod common;

use common::{decode_b64, read_all, read_params, Fixture};
use serde_json::json;
use strata_fs::MAX_READ_SIZE;
use strata_proto::methods::fs::ReadParams;
use strata_proto::{parse_params, ErrorCode};

fn room() -> usize {
    strata_fs::reply_room("t")
}

#[test]
fn all_256_byte_values_round_trip() {
    let f = Fixture::new();
    let bytes: Vec<u8> = (0..=255u8).collect();
    f.write("bytes.bin", &bytes);
    let c = f.caller();
    let handle = f.open(&c, "bytes.bin").unwrap();
    let r =
        f.fs.read(&c, &read_params(&handle, 0, 4096), room())
            .unwrap();
    assert_eq!(decode_b64(&r.data_b64), bytes);
    assert_eq!(r.bytes_read, 256);
    assert!(r.eof);
    // Not UTF-8: no `data`, and the JSON says so by leaving it out.
    assert_eq!(r.data, None);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json.get("data").is_none());
}

#[test]
fn utf8_text_comes_back_as_data_too() {
    let f = Fixture::new();
    f.write("t.txt", "héllo\n\u{0}\"wörld\"".as_bytes());
    let c = f.caller();
    let handle = f.open(&c, "t.txt").unwrap();
    let r =
        f.fs.read(&c, &read_params(&handle, 0, 4096), room())
            .unwrap();
    assert_eq!(r.data.as_deref(), Some("héllo\n\u{0}\"wörld\""));
}

/// 100 MiB of pseudo-random bytes, read in maximal chunks: every byte right, and `eof`
/// set on exactly the chunk that ends at the last byte.
#[test]
fn a_100_mib_file_reads_back_exactly_in_chunks() {
    const SIZE: usize = 100 * 1024 * 1024;
    let f = Fixture::new();
    let mut bytes = vec![0u8; SIZE];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    f.write("big.bin", &bytes);
    let c = f.caller();
    let handle = f.open(&c, "big.bin").unwrap();
    let mut offset = 0u64;
    let mut chunks = 0;
    loop {
        let r =
            f.fs.read(&c, &read_params(&handle, offset, MAX_READ_SIZE), room())
                .unwrap();
        let got = decode_b64(&r.data_b64);
        let o = offset as usize;
        assert!(
            got == bytes[o..o + got.len()],
            "bytes differ at chunk from {offset}"
        );
        offset += r.bytes_read;
        chunks += 1;
        assert_eq!(r.eof, offset == SIZE as u64, "eof at {offset}");
        if r.eof {
            break;
        }
    }
    assert_eq!(offset, SIZE as u64);
    assert_eq!(chunks, SIZE.div_ceil(MAX_READ_SIZE as usize));
    // Past the end: nothing, and eof.
    let r =
        f.fs.read(&c, &read_params(&handle, offset + 10, 10), room())
            .unwrap();
    assert_eq!((r.bytes_read, r.eof), (0, true));
}

#[test]
fn eof_is_exact_for_aligned_and_empty_files() {
    let f = Fixture::new();
    f.write("8k", &[7u8; 8192]);
    f.write("empty", b"");
    let c = f.caller();
    let h = f.open(&c, "8k").unwrap();
    let first = f.fs.read(&c, &read_params(&h, 0, 4096), room()).unwrap();
    assert!(!first.eof);
    let second = f.fs.read(&c, &read_params(&h, 4096, 4096), room()).unwrap();
    assert!(second.eof && second.bytes_read == 4096);
    let h = f.open(&c, "empty").unwrap();
    let r = f.fs.read(&c, &read_params(&h, 0, 4096), room()).unwrap();
    assert!(r.eof && r.bytes_read == 0 && r.data.as_deref() == Some(""));
    assert_eq!(read_all(&f.fs, &c, &h, 7), b"");
    // Absurd offsets are simply past the end.
    for offset in [i64::MAX as u64, u64::MAX] {
        let r =
            f.fs.read(&c, &read_params(&h, offset, 4096), room())
                .unwrap();
        assert!(r.eof && r.bytes_read == 0, "{offset}");
    }
    let h = f.open(&c, "8k").unwrap();
    let r = f.fs.read(&c, &read_params(&h, 8191, 0), room()).unwrap();
    assert!(!r.eof && r.bytes_read == 0);
    let r = f.fs.read(&c, &read_params(&h, 8192, 0), room()).unwrap();
    assert!(r.eof);
}

#[test]
fn size_defaults_to_4096_and_is_capped() {
    let f = Fixture::new();
    f.write("10k", &[b'a'; 10_000]);
    let c = f.caller();
    let h = f.open(&c, "10k").unwrap();
    let params: ReadParams = parse(json!({ "handle": h })).unwrap();
    assert_eq!((params.offset, params.size), (0, 4096));
    let r = f.fs.read(&c, &params, room()).unwrap();
    assert_eq!(r.bytes_read, 4096);
    let e =
        f.fs.read(&c, &read_params(&h, 0, MAX_READ_SIZE + 1), room())
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("size"), "{e}");
}

#[test]
fn bad_offsets_and_sizes_are_invalid_and_named() {
    for (field, value) in [
        ("offset", json!(-1)),
        ("offset", json!(1.5)),
        ("offset", json!("10")),
        ("offset", json!(null)),
        ("size", json!(-4096)),
        ("size", json!(0.5)),
        ("size", json!("big")),
        ("size", json!([1])),
    ] {
        let mut params = json!({"handle": "h"});
        params[field] = value.clone();
        let e = parse(params).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{field}={value}");
        assert_eq!(e.details, json!({ "field": field }), "{field}={value}");
        assert!(e.message.contains(field), "{}", e.message);
    }
}

fn parse(params: serde_json::Value) -> Result<ReadParams, strata_proto::ErrorBody> {
    let raw = serde_json::value::to_raw_value(&params).unwrap();
    parse_params(Some(&raw))
}
