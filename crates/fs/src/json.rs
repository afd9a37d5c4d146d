//! The JSON fs writes itself on its hot paths (`fs.read`, `fs.list`): string escaping
//! exactly as serde_json does it, and its length, checked against serde_json in the
//! tests.
//!
//! serde_json looks up every byte of a string in a table; file contents are mostly plain
//! text with nothing to escape, so [`push_escaped`] checks eight bytes at a time and
//! copies whole runs.

use serde_json::value::RawValue;

/// Bytes `b` takes inside a JSON string as serde_json writes it.
pub(crate) fn byte_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 2,
        0x00..=0x1f => 6,
        _ => 1,
    }
}

/// Bytes `s` takes inside a JSON string (without the quotes).
pub(crate) fn string_len(s: &[u8]) -> usize {
    s.iter().map(|&b| byte_len(b)).sum()
}

/// `json`, which fs wrote itself, as a [`RawValue`] without parsing it again.
///
/// [`RawValue::from_string`] validates the whole text (for a 4 KiB `fs.read` answer that
/// scan cost more than writing it). serde_json's own [`serde_json::value::to_raw_value`]
/// does not validate: it serializes, and a struct named with serde_json's raw-value marker
/// is written verbatim. Only text this module's writers produced is passed here; the
/// tests of `fs.read` and `fs.list` compare it with serde's encoding byte for byte, which
/// would also catch serde_json ever changing the marker (the text would come back wrapped
/// in an object).
pub(crate) fn trusted_raw(json: &str) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(&Verbatim(json))
}

/// The marker serde_json's serializer writes verbatim (its `RawValue`'s own).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

struct Verbatim<'a>(&'a str);

impl serde::Serialize for Verbatim<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        s.serialize_field(RAW_VALUE_TOKEN, self.0)?;
        s.end()
    }
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any of the eight bytes in `w` is below 0x20, `"` or `\`: the bytes JSON
/// escapes. (The classic "has a byte less than n" / "has a zero byte" tests; exact.)
fn needs_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q & HIGHS;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b & HIGHS;
    (below_space | quote | backslash) != 0
}

/// Append `s` escaped as serde_json escapes it inside a string: `"` and `\`, the short
/// forms `\b \t \n \f \r`, other control characters as `\u00xx`, everything else as is.
pub(crate) fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    // Start of the run not yet copied.
    let mut plain = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_ne_bytes(word.try_into().unwrap_or([0; 8]));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        // Every byte escaped is ASCII, so these are character boundaries.
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        i += 1;
        plain = i;
    }
    out.push_str(&s[plain..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_text_is_passed_through_unchanged() {
        for json in [r#"{"a":[1,"x\"y"],"b":null}"#, r#""\u00e9""#, "[]"] {
            let raw = trusted_raw(json).unwrap();
            assert_eq!(raw.get(), json);
            assert_eq!(raw.get(), RawValue::from_string(json.into()).unwrap().get());
        }
    }

    #[test]
    fn lengths_match_serde_json() {
        let all: Vec<u8> = (0u8..0x80).collect();
        let s = std::str::from_utf8(&all).unwrap();
        let encoded = serde_json::to_string(s).unwrap();
        assert_eq!(string_len(&all), encoded.len() - 2);
    }

    #[test]
    fn escaping_matches_serde_json_at_every_offset() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain text that is long enough for several words".into(),
            "é ü ☃ 😀 and \u{7f}".into(),
        ];
        // Every ASCII byte, alone and at each position of an 8-byte word.
        for b in 0u8..0x80 {
            for at in 0..17 {
                let mut s = "a".repeat(at);
                s.push(char::from(b));
                s.push_str("bcdefghijklmnop");
                samples.push(s);
            }
        }
        for s in &samples {
            let mut got = String::from("\"");
            push_escaped(&mut got, s);
            got.push('"');
            assert_eq!(got, serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(string_len(s.as_bytes()), got.len() - 2, "{s:?}");
        }
    }
}
