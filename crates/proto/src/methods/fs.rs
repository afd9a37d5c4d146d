//! `fs.*`: capability-gated file access.

use super::{method, StatusResult};
use serde::{Deserialize, Serialize};

fn default_mode() -> String {
    "r".to_owned()
}

fn default_read_size() -> u64 {
    4096
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenParams {
    /// Relative to the token's `path_prefix`.
    pub path: String,
    #[serde(default = "default_mode")]
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenResult {
    pub handle: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadParams {
    pub handle: String,
    #[serde(default)]
    pub offset: u64,
    #[serde(default = "default_read_size")]
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadResult {
    pub data_b64: String,
    pub bytes_read: u64,
    pub eof: bool,
    /// The same bytes as a string, present only when they are valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    pub entries: Vec<DirEntry>,
    /// Present when more entries may follow: pass it as `cursor` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloseParams {
    pub handle: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatParams {
    /// Relative path; empty or `.` is the prefix itself.
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatResult {
    pub size: u64,
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
