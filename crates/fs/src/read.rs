//! `fs.read`: positional reads from an open handle, sized to fit one frame.
//!
//! ## The size limit
//!
//! A read's bytes travel twice in the response: always as `data_b64` (4 bytes per 3), and
//! as `data` when they are valid UTF-8 (one byte per byte, unless JSON must escape them).
//! [`MAX_READ_SIZE`] is 384 KiB: 393,216 bytes take 524,288 bytes of base64 plus at most
//! 393,216 bytes of plain text, 917,504 in all, which leaves more than 128 KiB of the
//! 1 MiB frame for the envelope and the echoed `req_id`.
//!
//! Text full of control characters can need up to 6 bytes per byte in `data` (`\u0000`).
//! Rather than fail such a read, fs returns fewer bytes than asked: the largest prefix
//! whose response fits (a short read, `eof` false). Clients read until `eof`, advancing
//! `offset` by `bytes_read`, and so never notice.

use crate::base64;
use crate::error::FsError;
use crate::handles::OpenHandle;
use crate::json;
use crate::service::{Caller, FsService};
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use strata_proto::methods::fs::{ReadParams, ReadResult};
use strata_proto::MAX_FRAME;

/// Largest `size` an `fs.read` may ask for (384 KiB; see the module docs).
pub const MAX_READ_SIZE: u64 = 384 * 1024;

/// Offsets past this are past the end of any file Linux can hold (and near the limit of
/// `pread`'s signed offset): such reads return nothing, with `eof`.
const MAX_OFFSET: u64 = (i64::MAX as u64) - MAX_READ_SIZE - 1;

/// Bytes of a read response that are not `data_b64`, `data` or `req_id`, rounded up
/// generously: `{"v":1,"req_id":"","ok":true,"result":{"data_b64":"","bytes_read":393216,
/// "eof":false,"data":""}}` is under 100.
const ENVELOPE_OVERHEAD: usize = 256;

/// A thread keeps its read buffer for the next read up to this size; a larger one (a big
/// read, on a blocking thread) is freed after use.
const KEEP_BUFFER: usize = 64 * 1024 + 1;

thread_local! {
    /// The buffer each thread reads into, reused from one read to the next.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Room left for `data_b64` and `data` in the response to a request with this `req_id`.
pub fn reply_room(req_id: &str) -> usize {
    MAX_FRAME.saturating_sub(ENVELOPE_OVERHEAD + json::string_len(req_id.as_bytes()))
}

impl FsService {
    /// `fs.read`: up to `size` bytes at `offset` from a handle the caller's capability
    /// owns. `room` is the space the response may use for the bytes (see [`reply_room`]).
    ///
    /// `eof` is true when the read reached the end of the file as it stood when read, so
    /// the chunk that ends at the last byte says so: fs reads one byte more than asked
    /// and reports whether it was there.
    pub fn read(
        &self,
        caller: &Caller,
        params: &ReadParams,
        room: usize,
    ) -> Result<ReadResult, FsError> {
        self.read_with(caller, params, room, |bytes, eof, text| ReadResult {
            data_b64: base64::encode(bytes),
            bytes_read: bytes.len() as u64,
            eof,
            data: text.map(str::to_owned),
        })
    }

    /// [`FsService::read`]'s result as the JSON of `fs::ReadResult`, written straight from
    /// the read buffer (what the router sends; tested equal to serde's encoding).
    pub fn read_json(
        &self,
        caller: &Caller,
        params: &ReadParams,
        room: usize,
    ) -> Result<Box<RawValue>, FsError> {
        self.read_with(caller, params, room, encode_json)?
    }

    /// The read itself, into this thread's buffer; `answer` gets the bytes that fit, `eof`,
    /// and the bytes as text when they are UTF-8.
    fn read_with<R>(
        &self,
        caller: &Caller,
        params: &ReadParams,
        room: usize,
        answer: impl FnOnce(&[u8], bool, Option<&str>) -> R,
    ) -> Result<R, FsError> {
        if params.size > MAX_READ_SIZE {
            return Err(FsError::InvalidParam {
                field: "size",
                reason: format!(
                    "{} is larger than the maximum, {MAX_READ_SIZE}",
                    params.size
                ),
            });
        }
        let handle = self.owned_handle(caller, &params.handle)?;
        let size = params.size as usize;
        READ_BUFFER.with(|buffer| {
            let mut buf = std::mem::take(&mut *buffer.borrow_mut());
            buf.clear();
            let mut eof = true;
            if params.offset <= MAX_OFFSET {
                // One byte more than asked says whether the file goes on, without a stat.
                buf.resize(size + 1, 0);
                let got = match read_at(&handle.file, &mut buf, params.offset) {
                    Ok(got) => got,
                    Err(e) => {
                        *buffer.borrow_mut() = buf;
                        return Err(e);
                    }
                };
                eof = got <= size;
                buf.truncate(got.min(size));
            }
            // Validated once: as text when it is UTF-8, else as bytes.
            let (outcome, buf) = match String::from_utf8(buf) {
                Ok(mut text) => {
                    let outcome = self.fit(&handle, text.as_bytes(), true, room).map(|fits| {
                        if fits < text.len() {
                            // A character boundary (see fitting_len).
                            text.truncate(fits);
                            eof = false;
                        }
                        answer(text.as_bytes(), eof, Some(&text))
                    });
                    (outcome, text.into_bytes())
                }
                Err(e) => {
                    let mut bytes = e.into_bytes();
                    let outcome = self.fit(&handle, &bytes, false, room).map(|fits| {
                        if fits < bytes.len() {
                            bytes.truncate(fits);
                            eof = false;
                        }
                        answer(&bytes, eof, None)
                    });
                    (outcome, bytes)
                }
            };
            if buf.capacity() <= KEEP_BUFFER {
                *buffer.borrow_mut() = buf;
            }
            outcome
        })
    }

    /// How many of `bytes` the response has room for (see [`fitting_len`]); counted as read.
    fn fit(
        &self,
        handle: &OpenHandle,
        bytes: &[u8],
        text: bool,
        room: usize,
    ) -> Result<usize, FsError> {
        let fits = fitting_len(bytes, text, room);
        if fits == 0 && !bytes.is_empty() {
            return Err(FsError::InvalidParam {
                field: "req_id",
                reason: "is too long to leave room for any data in the response".into(),
            });
        }
        handle.note_read(fits as u64);
        self.metrics.bytes_read.add(fits as u64);
        Ok(fits)
    }
}

/// The `fs.read` result as JSON text, written directly rather than through serde.
///
/// `data_b64` is most of every response and base64 never needs escaping, but serde_json
/// checks every byte of every string it writes; writing the field as is, and `data`
/// through [`json::push_escaped`], costs a fraction of serde's encoding; the text is handed
/// on without being parsed again ([`json::trusted_raw`]).
fn encode_json(bytes: &[u8], eof: bool, text: Option<&str>) -> Result<Box<RawValue>, FsError> {
    let text_len = text.map_or(0, |t| t.len() + 16);
    let mut out = String::with_capacity(base64::encoded_len(bytes.len()) + text_len + 80);
    out.push_str("{\"data_b64\":\"");
    base64::encode_append(bytes, &mut out);
    out.push_str("\",\"bytes_read\":");
    let _ = write!(out, "{}", bytes.len());
    out.push_str(if eof {
        ",\"eof\":true"
    } else {
        ",\"eof\":false"
    });
    if let Some(text) = text {
        out.push_str(",\"data\":\"");
        json::push_escaped(&mut out, text);
        out.push('"');
    }
    out.push('}');
    json::trusted_raw(&out).map_err(|e| FsError::Internal(std::io::Error::other(e)))
}

/// Fill `buf` from `offset` with positional reads (the file offset is never used, so
/// concurrent reads of one handle do not disturb each other). Short only at end of file.
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> Result<usize, FsError> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FsError::Internal(e)),
        }
    }
    Ok(filled)
}

/// How many of `bytes` can be returned within `room`: all of them when they fit, else the
/// longest prefix that fits even if it is sent twice (base64 and escaped text), cut back to
/// a whole UTF-8 character.
fn fitting_len(bytes: &[u8], text: bool, room: usize) -> usize {
    // No byte takes more than 6 in `data`: when even that fits, nothing need be counted.
    let worst = base64::encoded_len(bytes.len()) + if text { 6 * bytes.len() } else { 0 };
    if worst <= room {
        return bytes.len();
    }
    let full = base64::encoded_len(bytes.len()) + if text { json::string_len(bytes) } else { 0 };
    if full <= room {
        return bytes.len();
    }
    let mut text_len = 0;
    let mut n = 0;
    for &b in bytes {
        let next_text = text_len + json::byte_len(b);
        if base64::encoded_len(n + 1) + next_text > room {
            break;
        }
        text_len = next_text;
        n += 1;
    }
    // Do not split a character: a cut one would turn text into "not UTF-8".
    match std::str::from_utf8(&bytes[..n]) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::methods::fs::ReadResult;

    fn response_len(bytes: &[u8], req_id: &str) -> usize {
        let result = ReadResult {
            data_b64: base64::encode(bytes),
            bytes_read: bytes.len() as u64,
            eof: false,
            data: std::str::from_utf8(bytes).ok().map(str::to_owned),
        };
        let response = strata_proto::Response::success(req_id, result);
        serde_json::to_vec(&response).unwrap().len()
    }

    #[test]
    fn a_maximal_read_fits_a_frame() {
        let text = vec![b'a'; MAX_READ_SIZE as usize];
        assert_eq!(fitting_len(&text, true, reply_room("r1")), text.len());
        assert!(response_len(&text, "r1") <= MAX_FRAME);
        let binary: Vec<u8> = (0..MAX_READ_SIZE).map(|i| (i % 256) as u8).collect();
        assert_eq!(fitting_len(&binary, false, reply_room("r1")), binary.len());
        assert!(response_len(&binary, "r1") <= MAX_FRAME);
    }

    #[test]
    fn escaped_text_is_shortened_to_fit() {
        let nuls = vec![0u8; MAX_READ_SIZE as usize];
        let n = fitting_len(&nuls, true, reply_room("r1"));
        assert!(n > 100_000 && n < nuls.len(), "{n}");
        assert!(response_len(&nuls[..n], "r1") <= MAX_FRAME);
        // A long req_id leaves less room, and it is accounted for.
        let req_id = "\u{1}".repeat(100_000);
        let n = fitting_len(&nuls, true, reply_room(&req_id));
        assert!(response_len(&nuls[..n], &req_id) <= MAX_FRAME);
    }

    #[test]
    fn shortening_never_splits_a_character() {
        let text = "é".repeat(10);
        let n = fitting_len(text.as_bytes(), true, 4 * 8 + 7);
        assert!(text.is_char_boundary(n));
        assert!(base64::encoded_len(n) + n <= 39);
    }

    #[test]
    fn the_hand_written_json_is_what_serde_would_write() {
        let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let text = "plain text, \"quoted\", a \\ and a tab\t, \u{1}, é ☃ 😀\n".repeat(60);
        let samples = [
            &b""[..],
            b"plain",
            b"\x00\"\\\n\xc3\xa9",
            b"\xff\xfe",
            &binary,
            text.as_bytes(),
        ];
        for bytes in samples {
            for eof in [false, true] {
                let text = std::str::from_utf8(bytes).ok();
                let result = ReadResult {
                    data_b64: base64::encode(bytes),
                    bytes_read: bytes.len() as u64,
                    eof,
                    data: text.map(str::to_owned),
                };
                let fast = encode_json(bytes, eof, text).unwrap();
                assert_eq!(fast.get(), serde_json::to_string(&result).unwrap());
            }
        }
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64::encoded_len(0), 0);
        assert_eq!(base64::encoded_len(4), 8);
    }
}
