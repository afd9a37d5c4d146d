//! `fs.list`: a directory beneath the prefix, sorted by name, one page at a time.
//!
//! A page holds at most `limit` entries ([`DEFAULT_LIST_LIMIT`] when absent, at most
//! [`MAX_LIST_LIMIT`]) and, when more may follow, a `next_cursor` to pass back as `cursor`.
//! The cursor is the last name returned (raw bytes, base64url), so paging is exact even
//! for names that are not UTF-8 and needs no server-side state: each page reads the
//! directory once, keeping only the `limit + 1` smallest names after the cursor, so memory
//! is bounded by the page, not the directory.
//!
//! Entries describe themselves, not what they point to: a symlink is listed as a
//! non-directory with the size of its target path, so listing never reveals anything
//! about a file outside the prefix. A page also stops early, with a cursor, if the next
//! entry would not fit in the response frame.

use crate::error::FsError;
use crate::path::RequestPath;
use crate::read::reply_room;
use crate::roots::{lookup_error, open_beneath};
use crate::service::{Caller, FsService};
use ct_codecs::{Base64UrlSafeNoPadding, Decoder, Encoder};
use rustix::fd::AsFd;
use rustix::fs::{statat, AtFlags, Dir, FileType, OFlags};
use rustix::io::Errno;
use std::collections::BinaryHeap;
use strata_proto::methods::fs::{DirEntry, ListParams, ListResult};

/// Entries per page when `limit` is absent.
pub const DEFAULT_LIST_LIMIT: u64 = 1000;
/// Largest `limit` accepted.
pub const MAX_LIST_LIMIT: u64 = 10_000;

/// Longest file name Linux allows, in bytes (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Room for the result's fixed fields and `next_cursor`, on top of the read envelope.
const LIST_OVERHEAD: usize = 512;

/// What one entry costs in the response besides its name:
/// `{"name":"","is_dir":false,"size":18446744073709551615},` is 55 bytes.
const ENTRY_OVERHEAD: usize = 64;

/// Room left for entries in the response to a request with this `req_id`.
pub fn list_room(req_id: &str) -> usize {
    reply_room(req_id).saturating_sub(LIST_OVERHEAD)
}

impl FsService {
    /// `fs.list`: one page of the directory at `path` (empty or `.` for the prefix itself).
    /// `room` is the space the entries may use in the response (see [`list_room`]).
    pub fn list(
        &self,
        caller: &Caller,
        params: &ListParams,
        room: usize,
    ) -> Result<ListResult, FsError> {
        let limit = match params.limit {
            None => DEFAULT_LIST_LIMIT,
            Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            Some(n) => {
                return Err(FsError::InvalidParam {
                    field: "limit",
                    reason: format!("{n} is outside 1..={MAX_LIST_LIMIT}"),
                })
            }
        } as usize;
        let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
        let path = RequestPath::parse(&params.path)?;
        let prefix_dir = self.prefix_dir(caller)?;
        let fd = open_beneath(
            prefix_dir.as_fd(),
            path.as_kernel_path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
        )
        .map_err(|e| match e {
            Errno::NOTDIR => FsError::NotDirectory {
                path: path.as_str().to_owned(),
            },
            other => lookup_error(other, path.as_str()),
        })?;
        let mut dir = Dir::new(fd).map_err(|e| FsError::Internal(e.into()))?;

        // The `limit + 1` smallest names after the cursor; the extra one says "more".
        let mut smallest: BinaryHeap<Vec<u8>> = BinaryHeap::with_capacity(limit + 1);
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| FsError::Internal(e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if after.as_deref().is_some_and(|after| name <= after) {
                continue;
            }
            if smallest.len() <= limit {
                smallest.push(name.to_vec());
            } else if smallest
                .peek()
                .is_some_and(|largest| name < largest.as_slice())
            {
                smallest.pop();
                smallest.push(name.to_vec());
            }
        }
        let mut more = smallest.len() > limit;
        let mut names = smallest.into_sorted_vec();
        names.truncate(limit);

        let dir_fd = dir.fd().map_err(|e| FsError::Internal(e.into()))?;
        let mut entries = Vec::with_capacity(names.len());
        let mut used = 0;
        let mut last: Option<&[u8]> = None;
        for name in &names {
            // The entry itself, never what a symlink points to.
            let stat = match statat(dir_fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Removed since it was read: skip it.
                Err(Errno::NOENT) => {
                    last = Some(name);
                    continue;
                }
                Err(e) => return Err(FsError::Internal(e.into())),
            };
            let shown = String::from_utf8_lossy(name).into_owned();
            let cost = ENTRY_OVERHEAD + crate::read::json_string_len(shown.as_bytes());
            if used + cost > room {
                more = true;
                break;
            }
            used += cost;
            last = Some(name);
            entries.push(DirEntry {
                name: shown,
                is_dir: FileType::from_raw_mode(stat.st_mode) == FileType::Directory,
                size: stat.st_size as u64,
            });
        }
        if more && last.is_none() {
            return Err(FsError::InvalidParam {
                field: "req_id",
                reason: "is too long to leave room for any entry in the response".into(),
            });
        }
        Ok(ListResult {
            entries,
            next_cursor: if more { last.map(encode_cursor) } else { None },
        })
    }
}

fn encode_cursor(name: &[u8]) -> String {
    // Names are at most 255 bytes, so encoding cannot fail.
    Base64UrlSafeNoPadding::encode_to_string(name).unwrap_or_default()
}

fn decode_cursor(cursor: &str) -> Result<Vec<u8>, FsError> {
    let bad = || FsError::InvalidParam {
        field: "cursor",
        reason: "is not a cursor returned by fs.list".into(),
    };
    if cursor.len() > NAME_MAX.div_ceil(3) * 4 {
        return Err(bad());
    }
    let name = Base64UrlSafeNoPadding::decode_to_vec(cursor, None).map_err(|_| bad())?;
    if name.is_empty() || name.len() > NAME_MAX || name.contains(&b'/') || name.contains(&0) {
        return Err(bad());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
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
}
