//! `fs.stat`: size, type, modification time and permission bits of a path.

use crate::error::FsError;
use crate::path::RequestPath;
use crate::roots::{lookup_error, open_beneath};
use crate::service::{Caller, FsService};
use rustix::fd::AsFd;
use rustix::fs::{FileType, OFlags};
use strata_cap::Timestamp;
use strata_proto::methods::fs::{StatParams, StatResult};

impl FsService {
    /// `fs.stat`: what is at `path` (empty or `.` for the prefix itself).
    ///
    /// The path is resolved like any other (symlinks followed only while they stay beneath
    /// the prefix) and opened with `O_PATH`, which reads no data and cannot block, so any
    /// file type may be described.
    pub fn stat(&self, caller: &Caller, params: &StatParams) -> Result<StatResult, FsError> {
        let path = RequestPath::parse(&params.path)?;
        let prefix_dir = self.prefix_dir(caller)?;
        let fd = open_beneath(prefix_dir.as_fd(), path.as_kernel_path(), OFlags::PATH)
            .map_err(|e| lookup_error(e, path.as_str()))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| FsError::Internal(e.into()))?;
        let modified = Timestamp::from_unix_nanos(
            i128::from(stat.st_mtime) * 1_000_000_000 + i128::from(stat.st_mtime_nsec),
        );
        Ok(StatResult {
            size: stat.st_size as u64,
            is_dir: FileType::from_raw_mode(stat.st_mode) == FileType::Directory,
            modified: modified.to_string(),
            mode: stat.st_mode & 0o7777,
        })
    }
}
