//! `fs.*`: capability-gated file access.

use super::method;
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
