//! Landlock file-system rules for a service, through the raw system calls.
//!
//! The supervisor builds the ruleset (opening each allowed path) before fork; the child
//! only calls `landlock_restrict_self` between fork and exec, which is a single system
//! call and safe there. Every file-system right the running kernel knows is handled, so
//! anything not granted beneath a listed path is denied.

// Unsafe: the Landlock system calls (landlock_create_ruleset, _add_rule,
// _restrict_self) and O_PATH opens, which neither std nor libc wraps safely.
#![allow(unsafe_code)]

use crate::manifest::LandlockRules;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;
/// Rights that make sense on a regular file (the kernel refuses the others there).
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[derive(Debug, thiserror::Error)]
/// Why a Landlock ruleset could not be built.
pub enum LandlockError {
    #[error("Landlock is not available on this kernel ({0})")]
    /// The kernel has no Landlock (or it is disabled).
    Unsupported(std::io::Error),
    #[error("cannot create a Landlock ruleset: {0}")]
    /// The ruleset could not be created.
    Create(std::io::Error),
    #[error("cannot open Landlock path {path}: {source}")]
    /// An allowed path could not be opened.
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("cannot add Landlock rule for {path}: {source}")]
    /// A rule could not be added.
    AddRule {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The Landlock ABI version of the running kernel, or why there is none.
pub fn abi_version() -> Result<u32, std::io::Error> {
    // SAFETY: the documented version query: NULL attr, size 0, VERSION flag.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(v as u32)
    }
}

/// Every file-system right known to ABI `abi`.
fn handled_rights(abi: u32) -> u64 {
    let mut rights = (1u64 << 13) - 1; // ABI 1: EXECUTE ..= MAKE_SYM
    if abi >= 2 {
        rights |= 1 << 13; // REFER
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    if abi >= 5 {
        rights |= IOCTL_DEV;
    }
    rights
}

/// A ready ruleset, to be applied in the child.
#[derive(Debug)]
pub struct Ruleset {
    fd: OwnedFd,
    abi: u32,
}

impl Ruleset {
    /// Build the ruleset for `rules`: read+execute beneath `read`, everything beneath
    /// `write`.
    pub fn build(rules: &LandlockRules) -> Result<Ruleset, LandlockError> {
        let abi = abi_version().map_err(LandlockError::Unsupported)?;
        let handled = handled_rights(abi);
        let attr = RulesetAttr {
            handled_access_fs: handled,
            handled_access_net: 0,
            scoped: 0,
        };
        // Older kernels know a shorter struct; give them only the part they know.
        let size = if abi >= 4 {
            std::mem::size_of::<RulesetAttr>()
        } else {
            std::mem::size_of::<u64>()
        };
        // SAFETY: attr is a valid landlock_ruleset_attr of at least `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(LandlockError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let ruleset = Ruleset { fd, abi };
        let read = EXECUTE | READ_FILE | READ_DIR;
        for path in &rules.read {
            ruleset.allow(path, read & handled)?;
        }
        for path in &rules.write {
            ruleset.allow(path, handled)?;
        }
        Ok(ruleset)
    }

    fn allow(&self, path: &Path, rights: u64) -> Result<(), LandlockError> {
        let open_err = |source| LandlockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| open_err(std::io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: a NUL-terminated path; O_PATH opens without reading.
        let raw = unsafe { libc::open(c_path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(open_err(std::io::Error::last_os_error()));
        }
        // SAFETY: open just returned this descriptor.
        let parent = unsafe { OwnedFd::from_raw_fd(raw) };
        let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
        let allowed = if is_dir { rights } else { rights & FILE_RIGHTS };
        let rule = PathBeneathAttr {
            allowed_access: allowed,
            parent_fd: parent.as_raw_fd(),
        };
        // SAFETY: a valid ruleset fd and a valid landlock_path_beneath_attr.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if r < 0 {
            return Err(LandlockError::AddRule {
                path: path.to_path_buf(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The Landlock ABI version the kernel offers.
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// The ruleset's descriptor, for `landlock_restrict_self` in the child.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Apply a ruleset to the calling process. Async-signal-safe (one system call), for use
/// between fork and exec, after `PR_SET_NO_NEW_PRIVS`.
pub fn restrict_self(ruleset_fd: RawFd) -> std::io::Result<()> {
    // SAFETY: a ruleset fd built by `Ruleset::build`; flags must be 0.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset_fd, 0u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_rights_grow_with_the_abi() {
        assert_eq!(handled_rights(1), 0x1fff);
        assert_eq!(handled_rights(2), 0x3fff);
        assert_eq!(handled_rights(3), 0x7fff);
        assert_eq!(handled_rights(5), 0xffff);
        assert_eq!(handled_rights(7), 0xffff);
    }

    #[test]
    fn a_ruleset_builds_for_existing_paths_and_not_for_missing_ones() {
        if abi_version().is_err() {
            strata_testkit::skip(
                "a_ruleset_builds_for_existing_paths_and_not_for_missing_ones",
                "Landlock unavailable",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let rules = LandlockRules {
            read: vec![PathBuf::from("/usr"), file],
            write: vec![dir.path().to_path_buf()],
        };
        let r = Ruleset::build(&rules).unwrap();
        assert!(r.abi() >= 1);
        let missing = LandlockRules {
            read: vec![dir.path().join("missing")],
            write: vec![],
        };
        assert!(matches!(
            Ruleset::build(&missing),
            Err(LandlockError::Open { .. })
        ));
    }
}
