//! `fs.list`: a directory beneath the prefix, sorted by name, one page at a time.
//!
//! A page holds at most `limit` entries ([`DEFAULT_LIST_LIMIT`] when absent, at most
//! [`MAX_LIST_LIMIT`]) and, when more may follow, a `next_cursor` to pass back as `cursor`.
//! The cursor is the last name returned (raw bytes, base64url), so paging is exact even
//! for names that are not UTF-8 and needs no server-side state: each page reads the
//! directory once, keeping only the `limit + 1` smallest names after the cursor
//! ([`select::SmallestNames`]), so memory is bounded by the page, not the directory.
//!
//! Entries describe themselves, not what they point to: a symlink is listed as a
//! non-directory with the size of its target path, so listing never reveals anything
//! about a file outside the prefix. A page also stops early, with a cursor, if the next
//! entry would not fit in the response frame.
//!
//! Cost: the directory is read with `getdents64` into a per-thread buffer and each listed
//! entry is described by one `fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW)` relative to the
//! directory already open (no path walk per entry). Names are kept in a per-thread arena
//! and the answer is written as JSON directly ([`FsService::list_json`]), so a page costs
//! no allocation per entry, and handed to the router without being parsed again. A page of
//! a directory of at most [`INLINE_SCAN_MAX`] entries beneath a local export root with
//! nothing mounted beneath it runs on the async worker ([`FsService::list_json_inline`]),
//! saving the two thread switches of the blocking pool; the rest is kernel work (one
//! `fstatat` per entry, `getdents64`, the open). Listing the prefix itself opens it once, readable, instead of
//! as an `O_PATH` handle and then again.

mod select;
#[cfg(test)]
mod tests;

use crate::error::FsError;
use crate::json;
use crate::path::RequestPath;
use crate::read::reply_room;
use crate::roots::{lookup_error, open_beneath_with};
use crate::service::{Caller, FsService};
use ct_codecs::{Base64UrlSafeNoPadding, Decoder, Encoder};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{statat, AtFlags, FileType, OFlags, RawDir, ResolveFlags};
use rustix::io::Errno;
use select::SmallestNames;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::mem::MaybeUninit;
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

/// Bytes of `getdents64` output read at a time.
const DIR_BUFFER: usize = 32 * 1024;

/// Room left for entries in the response to a request with this `req_id`.
pub fn list_room(req_id: &str) -> usize {
    reply_room(req_id).saturating_sub(LIST_OVERHEAD)
}

/// What one thread reuses from one listing to the next.
struct Scratch {
    dir_buffer: Vec<MaybeUninit<u8>>,
    names: SmallestNames,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        dir_buffer: Vec::new(),
        names: SmallestNames::default(),
    });
}

/// Whether a listing runs on the blocking pool or inline on an async worker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pool,
    Inline,
}

/// What one page may hold and read.
#[derive(Clone, Copy)]
struct Page {
    /// Entries at most.
    limit: usize,
    /// Response bytes for the entries.
    room: usize,
    /// Directory entries read at most (`.` and `..` included) before giving up.
    scan_max: usize,
    /// When to give up (inline only): a slow disk (a cold cache, a failing sector) hands
    /// the listing to the pool rather than hold an async worker.
    deadline: Option<std::time::Instant>,
}

/// The longest an inline listing works on an async worker before it hands the request to
/// the blocking pool (checked every [`BUDGET_CHECK_EVERY`] entries), where the whole page
/// is done again. A warm 50-entry page takes about 0.1 ms.
pub const INLINE_BUDGET: std::time::Duration = std::time::Duration::from_millis(1);
const BUDGET_CHECK_EVERY: usize = 16;

/// An inline listing reads at most this many directory entries (`.` and `..` included)
/// before handing the request to the blocking pool: with one `fstatat` per listed entry
/// that bounds the time an async worker spends on it to well under a millisecond.
pub const INLINE_SCAN_MAX: usize = 512;

/// One listed entry, as [`FsService::list_each`] hands it over.
struct Listed<'a> {
    name: &'a [u8],
    is_dir: bool,
    size: u64,
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
        let mut entries = Vec::new();
        let next_cursor = self
            .list_each(caller, params, room, Mode::Pool, |e| {
                entries.push(DirEntry {
                    name: String::from_utf8_lossy(e.name).into_owned(),
                    is_dir: e.is_dir,
                    size: e.size,
                })
            })?
            .unwrap_or_default();
        Ok(ListResult {
            entries,
            next_cursor,
        })
    }

    /// [`FsService::list`]'s page as the JSON of `fs::ListResult`, written directly (what
    /// the router sends; tested equal to serde's encoding).
    pub fn list_json(
        &self,
        caller: &Caller,
        params: &ListParams,
        room: usize,
    ) -> Result<Box<RawValue>, FsError> {
        self.list_json_in(caller, params, room, Mode::Pool)?
            .ok_or_else(|| FsError::Internal(std::io::Error::other("listing not finished")))
    }

    /// [`FsService::list_json`] on the calling thread (an async worker), when that is safe
    /// and bounded: the prefix's export root is local with nothing mounted beneath it and
    /// the mount table is unchanged ([`crate::mounts`]), the directory is reached without
    /// crossing a mount (`RESOLVE_NO_XDEV`), and it holds at most [`INLINE_SCAN_MAX`]
    /// entries. `None`: not so (nothing was answered); run [`FsService::list_json`] on the
    /// blocking pool instead. The answer, when there is one, is the pool path's.
    pub fn list_json_inline(
        &self,
        caller: &Caller,
        params: &ListParams,
        room: usize,
    ) -> Option<Result<Box<RawValue>, FsError>> {
        let prefix = caller.claims.path_prefix()?;
        if !self.roots.lists_inline(prefix) {
            return None;
        }
        match self.list_json_in(caller, params, room, Mode::Inline) {
            Ok(Some(json)) => Some(Ok(json)),
            Ok(None) => None,
            // EXDEV under RESOLVE_NO_XDEV may be a mount on the way: the pool decides.
            Err(FsError::Escapes { .. } | FsError::PrefixThroughSymlink { .. }) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The page as JSON; `None` if `mode` is inline and the directory is too large for it.
    fn list_json_in(
        &self,
        caller: &Caller,
        params: &ListParams,
        room: usize,
        mode: Mode,
    ) -> Result<Option<Box<RawValue>>, FsError> {
        let mut json = String::with_capacity(4096);
        json.push_str("{\"entries\":[");
        let mut first = true;
        let listed = self.list_each(caller, params, room, mode, |e| {
            if !first {
                json.push(',');
            }
            first = false;
            json.push_str("{\"name\":\"");
            push_shown_name(&mut json, e.name);
            json.push_str(if e.is_dir {
                "\",\"is_dir\":true,\"size\":"
            } else {
                "\",\"is_dir\":false,\"size\":"
            });
            let _ = write!(json, "{}}}", e.size);
        })?;
        let Some(next_cursor) = listed else {
            return Ok(None);
        };
        json.push(']');
        if let Some(cursor) = next_cursor {
            // base64url: nothing to escape.
            json.push_str(",\"next_cursor\":\"");
            json.push_str(&cursor);
            json.push('"');
        }
        json.push('}');
        json::trusted_raw(&json)
            .map(Some)
            .map_err(|e| FsError::Internal(std::io::Error::other(e)))
    }

    /// The page's entries, in order, to `emit`; returns the `next_cursor`, or `None` if
    /// `mode` is inline and the directory has more than [`INLINE_SCAN_MAX`] entries or the
    /// page took longer than [`INLINE_BUDGET`] (what was emitted is then to be dropped).
    fn list_each(
        &self,
        caller: &Caller,
        params: &ListParams,
        room: usize,
        mode: Mode,
        mut emit: impl FnMut(Listed<'_>),
    ) -> Result<Option<Option<String>>, FsError> {
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
        let (extra, scan_max) = match mode {
            Mode::Pool => (ResolveFlags::empty(), usize::MAX),
            Mode::Inline => (ResolveFlags::NO_XDEV, INLINE_SCAN_MAX),
        };
        let dir = self.open_listed_dir(caller, &path, extra)?;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch { dir_buffer, names } = &mut *scratch;
            let outcome = list_dir(
                &dir,
                after.as_deref(),
                Page {
                    limit,
                    room,
                    scan_max,
                    deadline: (mode == Mode::Inline)
                        .then(|| std::time::Instant::now() + INLINE_BUDGET),
                },
                dir_buffer,
                names,
                &mut emit,
            );
            names.trim();
            outcome
        })
    }

    /// The directory to list, opened readable: the prefix itself, or `path` beneath it.
    /// `extra` resolve rules apply to both lookups (`RESOLVE_NO_XDEV` inline).
    fn open_listed_dir(
        &self,
        caller: &Caller,
        path: &RequestPath,
        extra: ResolveFlags,
    ) -> Result<OwnedFd, FsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK;
        let prefix = caller.claims.path_prefix().ok_or(FsError::NoPrefix)?;
        if path.is_prefix_itself() {
            return self.roots.open_prefix_with(prefix, flags, extra);
        }
        let prefix_dir =
            self.roots
                .open_prefix_with(prefix, OFlags::PATH | OFlags::DIRECTORY, extra)?;
        open_beneath_with(prefix_dir.as_fd(), path.as_kernel_path(), flags, extra).map_err(|e| {
            match e {
                Errno::NOTDIR => FsError::NotDirectory {
                    path: path.as_str().to_owned(),
                },
                other => lookup_error(other, path.as_str()),
            }
        })
    }
}

/// Read `dir`, choose the page (the `limit` smallest names after `after`), describe each
/// entry and emit it while it fits in `room`. Returns the `next_cursor`.
fn list_dir(
    dir: &OwnedFd,
    after: Option<&[u8]>,
    page: Page,
    dir_buffer: &mut Vec<MaybeUninit<u8>>,
    names: &mut SmallestNames,
    emit: &mut impl FnMut(Listed<'_>),
) -> Result<Option<Option<String>>, FsError> {
    let Page {
        limit,
        room,
        scan_max,
        deadline,
    } = page;
    let over_budget = |i: usize| {
        i % BUDGET_CHECK_EVERY == BUDGET_CHECK_EVERY - 1
            && deadline.is_some_and(|d| std::time::Instant::now() > d)
    };
    if dir_buffer.len() < DIR_BUFFER {
        dir_buffer.resize(DIR_BUFFER, MaybeUninit::uninit());
    }
    // The `limit + 1` smallest names after the cursor; the extra one says "more".
    names.reset(limit + 1);
    let mut entries = RawDir::new(dir.as_fd(), dir_buffer);
    let mut scanned = 0usize;
    while let Some(entry) = entries.next() {
        let entry = entry.map_err(|e| FsError::Internal(e.into()))?;
        scanned += 1;
        if scanned > scan_max || over_budget(scanned) {
            return Ok(None);
        }
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || after.is_some_and(|after| name <= after) {
            continue;
        }
        names.push(name);
    }
    names.finish();
    let mut more = names.len() > limit;
    let mut used = 0;
    let mut last: Option<&[u8]> = None;
    for i in 0..names.len().min(limit) {
        if over_budget(i) {
            return Ok(None);
        }
        let name = names.get(i);
        // The entry itself, never what a symlink points to.
        let stat = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            // Removed since it was read: skip it.
            Err(Errno::NOENT) => {
                last = Some(name);
                continue;
            }
            // A directory fs may read but not search (no `x`), or its sandbox: refused,
            // as every other permission the file system denies.
            Err(Errno::ACCESS | Errno::PERM) => {
                return Err(FsError::AccessDenied {
                    path: String::from_utf8_lossy(name).into_owned(),
                })
            }
            Err(e) => return Err(FsError::Internal(e.into())),
        };
        let cost = ENTRY_OVERHEAD + shown_json_len(name);
        if used + cost > room {
            more = true;
            break;
        }
        used += cost;
        last = Some(name);
        emit(Listed {
            name,
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
    Ok(Some(if more { last.map(encode_cursor) } else { None }))
}

/// The bytes `name` takes in the response: shown as text, each invalid UTF-8 sequence
/// replaced by U+FFFD (as `String::from_utf8_lossy` does), escaped as JSON.
fn shown_json_len(name: &[u8]) -> usize {
    // Almost every name is UTF-8: one validation pass, no chunking.
    if let Ok(text) = std::str::from_utf8(name) {
        return json::string_len(text.as_bytes());
    }
    name.utf8_chunks()
        .map(|chunk| {
            let valid: usize = chunk.valid().bytes().map(json::byte_len).sum();
            valid + if chunk.invalid().is_empty() { 0 } else { 3 }
        })
        .sum()
}

/// Append `name` shown as text (see [`shown_json_len`]) inside a JSON string, escaped
/// exactly as serde_json escapes.
fn push_shown_name(out: &mut String, name: &[u8]) {
    if let Ok(text) = std::str::from_utf8(name) {
        return json::push_escaped(out, text);
    }
    for chunk in name.utf8_chunks() {
        json::push_escaped(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
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
