//! `fs.*`: capability-gated file access.

use super::{method, StatusResult};
use serde::{Deserialize, Serialize};

fn default_mode() -> String {
    "r".to_owned()
}

fn default_read_size() -> u64 {
    4096
}

/// `fs.open`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenParams {
    /// Relative to the token's `path_prefix`.
    pub path: String,
    /// `r` (the only mode served today).
    #[serde(default = "default_mode")]
    pub mode: String,
}

/// `fs.open`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenResult {
    /// The handle to read and close with (usable only with the capability that opened it).
    pub handle: String,
}

/// `fs.read`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadParams {
    /// A handle from `fs.open`.
    pub handle: String,
    /// Where to read from, in bytes (0 when absent).
    #[serde(default)]
    pub offset: u64,
    /// How many bytes at most (4096 when absent).
    #[serde(default = "default_read_size")]
    pub size: u64,
}

/// `fs.read`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadResult {
    /// The bytes read, base64 (standard alphabet, padded).
    pub data_b64: String,
    /// How many bytes were read.
    pub bytes_read: u64,
    /// Whether the read reached the end of the file.
    pub eof: bool,
    /// The same bytes as a string, present only when they are valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// `fs.list`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListParams {
    /// Relative directory; empty or `.` is the prefix itself.
    #[serde(default)]
    pub path: String,
    /// Most entries to return (the server applies its default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's name (not a path).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Its size in bytes.
    pub size: u64,
}

/// `fs.list`'s result: one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    /// This page's entries.
    pub entries: Vec<DirEntry>,
    /// Present when more entries may follow: pass it as `cursor` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `fs.close`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloseParams {
    /// The handle to close.
    pub handle: String,
}

/// `fs.stat`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatParams {
    /// Relative path; empty or `.` is the prefix itself.
    #[serde(default)]
    pub path: String,
}

/// `fs.stat`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatResult {
    /// Size in bytes.
    pub size: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Last modification time, RFC 3339 in UTC.
    pub modified: String,
    /// Permission bits (`st_mode & 0o7777`), e.g. 420 for `0644`.
    pub mode: u32,
}

method!(
    /// Open a file beneath the token's prefix.
    Open,
    "fs.open",
    OpenParams,
    OpenResult
);
method!(
    /// Read from an open handle.
    Read,
    "fs.read",
    ReadParams,
    ReadResult
);
method!(
    /// List a directory beneath the token's prefix.
    List,
    "fs.list",
    ListParams,
    ListResult
);
method!(
    /// Close a handle opened with the same capability.
    Close,
    "fs.close",
    CloseParams,
    StatusResult
);
method!(
    /// Size, type, modification time and permission bits of a path beneath the prefix.
    Stat,
    "fs.stat",
    StatParams,
    StatResult
);
