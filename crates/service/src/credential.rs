//! [`Credential`]: a capability the supervisor routed to this service, read from
//! `$CREDENTIALS_DIRECTORY/<name>` and followed across rotations.
//!
//! The supervisor writes each routed token to its own file (0400, owned by the service's
//! user) and, at about two thirds of its lifetime, replaces it atomically (a new file
//! renamed over the old one), revoking the old token after a grace period. So a service
//! must not read the file once at start-up: [`Credential::token`] checks the file's
//! identity and times (`lstat`: device, inode, size, mtime, ctime) on every use, which is
//! one cheap system call, and reads it again only when they changed.
//!
//! The file is refused if it is a symlink (nobody but the supervisor should have put
//! anything there, and a link could name any file the service can read), not a regular
//! file, or larger than [`MAX_CREDENTIAL_LEN`] (the token limit); it is opened with
//! `O_NOFOLLOW | O_NONBLOCK`, so a link or FIFO swapped in after the check is refused too
//! rather than followed or waited on. The token is never logged, and [`Token`]'s `Debug`
//! does not show it.

use crate::ServiceError;
use std::fmt;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The variable the supervisor sets to the service's credentials directory (as systemd's
/// `LoadCredential=` does).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The largest credential file read: a token's limit, 8 KiB.
pub const MAX_CREDENTIAL_LEN: usize = strata_cap::MAX_TOKEN_LEN;

/// A token read from a credential file. Cheap to clone; its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// The token's text, for the `auth.token` of a request.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Which version of the file a token was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One routed capability, by its name in the manifest (`[[service.capability]] name`).
pub struct Credential {
    name: String,
    path: PathBuf,
    loaded: Mutex<Option<(Stamp, Token)>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The credential `name` in `$CREDENTIALS_DIRECTORY` (which must be an absolute path).
    /// Nothing is read yet: the first [`Credential::token`] reads the file.
    pub fn from_env(name: &str) -> Result<Credential, ServiceError> {
        let dir = std::env::var_os(CREDENTIALS_DIRECTORY)
            .filter(|d| !d.is_empty())
            .ok_or(ServiceError::NoCredentialsDirectory("not set"))?;
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(ServiceError::NoCredentialsDirectory("not an absolute path"));
        }
        Credential::in_dir(&dir, name)
    }

    /// The credential `name` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> Result<Credential, ServiceError> {
        if !is_file_name(name) {
            return Err(ServiceError::CredentialName {
                name: strata_proto::clip(name, 64).to_owned(),
            });
        }
        Ok(Credential {
            name: name.to_owned(),
            path: dir.join(name),
            loaded: Mutex::new(None),
        })
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current token: the one already read while the file is unchanged, else the
    /// file's new content. An error when the file is gone (the service's run ended, and
    /// the supervisor revoked the token and removed it), or refused (see the module docs).
    pub fn token(&self) -> Result<Token, ServiceError> {
        let now = std::fs::symlink_metadata(&self.path).map_err(|e| self.io(e))?;
        self.check_kind(&now)?;
        let stamp = Stamp::of(&now);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, token)) = loaded.as_ref() {
            if *seen == stamp {
                return Ok(token.clone());
            }
        }
        let (stamp, token) = self.read()?;
        *loaded = Some((stamp, token.clone()));
        Ok(token)
    }

    /// Open without following a link or waiting on a FIFO, check what was opened, and
    /// read at most one byte past the limit.
    fn read(&self) -> Result<(Stamp, Token), ServiceError> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    self.refused("it is a symlink")
                } else {
                    self.io(e)
                }
            })?;
        let meta = file.metadata().map_err(|e| self.io(e))?;
        self.check_kind(&meta)?;
        let mut bytes = Vec::with_capacity(meta.len().min(MAX_CREDENTIAL_LEN as u64) as usize);
        file.take(MAX_CREDENTIAL_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(e))?;
        if bytes.len() > MAX_CREDENTIAL_LEN {
            return Err(self.refused("it is larger than 8 KiB, the token limit"));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| self.refused("it is not token text"))?
            .trim_end_matches(['\n', '\r', ' ', '\t']);
        if text.is_empty() {
            return Err(self.refused("it is empty"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.refused("it is not token text"));
        }
        Ok((Stamp::of(&meta), Token(Arc::from(text))))
    }

    fn check_kind(&self, meta: &Metadata) -> Result<(), ServiceError> {
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(self.refused("it is a symlink"));
        }
        if !kind.is_file() {
            return Err(self.refused("it is not a regular file"));
        }
        if meta.len() > MAX_CREDENTIAL_LEN as u64 {
            return Err(self.refused("it is larger than 8 KiB, the token limit"));
        }
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> ServiceError {
        ServiceError::CredentialIo {
            path: self.path.clone(),
            source,
        }
    }

    fn refused(&self, reason: &'static str) -> ServiceError {
        ServiceError::CredentialRefused {
            path: self.path.clone(),
            reason,
        }
    }
}

/// A plain file name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests;
