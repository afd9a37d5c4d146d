//! journald's native protocol, the encoding of one entry
//! (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>): each field is `KEY=value\n`, or,
//! when the value holds a newline, `KEY\n`, its length as a 64-bit little-endian
//! integer, the value, and `\n`.
//!
//! Hand-written because none of the well-kept crates fits: `tracing-journald` and
//! `systemd-journal-logger` send the process's own `tracing`/`log` events with one
//! `SYSLOG_IDENTIFIER` per logger, and they and `libsystemd`'s `journal_send` all send
//! to the fixed `/run/systemd/journal/socket`, where the test cannot play journald. The
//! format is these twenty lines.

/// Append the field `key` (upper case, digits and `_`, not starting with `_`: the
/// caller's constants) with `value` to `out`.
pub(crate) fn field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    debug_assert!(key
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
    out.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}
