//! `fs.open` and `fs.close`.

use crate::error::FsError;
use crate::handles::{HandleId, OpenHandle};
use crate::path::RequestPath;
use crate::roots::{kind_name, lookup_error, open_beneath};
use crate::service::{Caller, CloseReason, FsService};
use rustix::fd::AsFd;
use rustix::fs::{FileType, OFlags};
use serde_json::json;
use strata_proto::methods::fs::{CloseParams, OpenParams, OpenResult};
use strata_proto::methods::StatusResult;

impl FsService {
    /// `fs.open`: open a regular file beneath the caller's prefix, read-only, and bind a new
    /// handle to the caller's capability.
    ///
    /// The file is opened with `O_NONBLOCK`, so a FIFO (or a device) cannot stall the
    /// request, and `O_NOCTTY`; its type is then checked on the descriptor itself, so what
    /// is checked is what was opened. Everything but a regular file is refused.
    pub fn open(&self, caller: &Caller, params: &OpenParams) -> Result<OpenResult, FsError> {
        if params.mode != "r" {
            // Not echoed: the caller knows what it sent, and it may be any size.
            return Err(FsError::InvalidParam {
                field: "mode",
                reason: "is not supported; fs opens files read-only (mode \"r\")".into(),
            });
        }
        let path = RequestPath::parse_file(&params.path)?;
        let prefix_dir = self.prefix_dir(caller)?;
        let fd = open_beneath(
            prefix_dir.as_fd(),
            path.as_kernel_path(),
            OFlags::RDONLY | OFlags::NONBLOCK,
        )
        .map_err(|e| lookup_error(e, path.as_str()))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| FsError::Internal(e.into()))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => {
                return Err(FsError::IsDirectory {
                    path: path.as_str().to_owned(),
                })
            }
            other => {
                return Err(FsError::NotRegular {
                    path: path.as_str().to_owned(),
                    kind: kind_name(other),
                })
            }
        }
        let handle = OpenHandle::new(
            std::fs::File::from(fd),
            caller.claims.clone(),
            caller.peer,
            caller.holder.clone(),
            path.as_str().to_owned(),
        )?;
        let handle = self.handles.insert(handle)?;
        // A revocation that arrived between the guard's check and the insert above found
        // no handle to close; look again now that the handle is visible.
        if self.revocations.is_revoked(&caller.claims) {
            self.handles.remove(&handle.id);
            return Err(FsError::Revoked);
        }
        self.audit.record(
            "fs.open",
            caller.peer.as_ref(),
            json!({
                "cap_id": caller.claims.jti.to_string(),
                "sub": caller.claims.sub,
                "remote": caller.remote,
                "prefix": caller.claims.path_prefix().map(|p| p.as_str()),
                "path": path.as_str(),
                "handle": handle.id.short(),
            }),
        );
        Ok(OpenResult {
            handle: handle.id.to_string(),
        })
    }

    /// `fs.close`: close a handle the caller's capability owns. Its reads are audited as
    /// one summary line.
    pub fn close(&self, caller: &Caller, params: &CloseParams) -> Result<StatusResult, FsError> {
        let handle = self.owned_handle(caller, &params.handle)?;
        if let Some(gone) = self.handles.remove(&handle.id) {
            self.summarise(&[gone], CloseReason::Closed);
        }
        Ok(StatusResult::new("closed"))
    }

    /// The handle named `text`, if it is open and the caller's capability owns it and has
    /// not expired.
    pub(crate) fn owned_handle(
        &self,
        caller: &Caller,
        text: &str,
    ) -> Result<std::sync::Arc<OpenHandle>, FsError> {
        let unknown = || FsError::UnknownHandle {
            handle: shown(text),
        };
        let id = HandleId::parse(text).ok_or_else(unknown)?;
        let handle = self.handles.get(&id).ok_or_else(unknown)?;
        if !handle.is_owned_by(&caller.claims) {
            return Err(FsError::NotYourHandle {
                handle: shown(text),
            });
        }
        if handle.expired_at(self.clock.now()) {
            if let Some(gone) = self.handles.remove(&id) {
                self.summarise(&[gone], CloseReason::Expired);
            }
            return Err(FsError::HandleExpired {
                handle: shown(text),
            });
        }
        Ok(handle)
    }
}

/// A handle string as echoed in an error: escaped, and cut short if it is not even close
/// to a real id.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(40)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if text.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}
