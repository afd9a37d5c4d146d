//! fs's own Landlock sandbox: once applied, the process can read beneath the export roots
//! and nothing else, so even a bug in fs's path handling cannot read other files. It keeps
//! full access to its runtime directory (its socket, identity's socket and public key) and
//! its state directory (the audit log).
//!
//! Landlock restricts the calling thread and the threads it creates afterwards, so
//! [`restrict_self`] must run before the async runtime or any other thread starts.

use crate::error::FsError;
use landlock::{
    make_bitflags, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use std::path::Path;

/// What Landlock does for this process, as reported by `sys.health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockState {
    /// Every file-system right this crate knows is restricted.
    Enforced,
    /// Enforced with the subset of rights the running kernel supports.
    Partial,
    /// The kernel has no Landlock (or it is disabled at boot): fs runs unconfined.
    Unsupported,
    /// Not applied (fs was started with the sandbox turned off, or it is a library user).
    Off,
}

impl LandlockState {
    /// Whether the kernel is confining this process.
    pub fn is_active(self) -> bool {
        matches!(self, LandlockState::Enforced | LandlockState::Partial)
    }

    /// The state's name, as `sys.health` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            LandlockState::Enforced => "enforced",
            LandlockState::Partial => "partial",
            LandlockState::Unsupported => "unsupported",
            LandlockState::Off => "off",
        }
    }
}

/// Restrict this process to reading beneath `read_only` and to full access beneath
/// `read_write`. Every path must exist. Call before starting threads.
pub fn restrict_self(
    read_only: &[&Path],
    read_write: &[&Path],
    write_files: &[&Path],
) -> Result<LandlockState, FsError> {
    let failed = |e: &dyn std::fmt::Display| FsError::Sandbox(e.to_string());
    // Handle every right the crate knows; on an older kernel the crate drops the ones it
    // lacks (best effort) and reports the ruleset as partially enforced.
    let all = AccessFs::from_all(ABI::V10);
    let read = make_bitflags!(AccessFs::{ReadFile | ReadDir});
    // For single files (the audit log): the file rights only, so a rule on a file never
    // grants anything in its directory.
    let write_file = make_bitflags!(AccessFs::{ReadFile | WriteFile});
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(|e| failed(&e))?
        .create()
        .map_err(|e| failed(&e))?;
    for (paths, access) in [
        (read_only, read),
        (read_write, all),
        (write_files, write_file),
    ] {
        for path in paths {
            let fd =
                PathFd::new(path).map_err(|e| failed(&format_args!("{}: {e}", path.display())))?;
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| failed(&format_args!("{}: {e}", path.display())))?;
        }
    }
    let status = ruleset.restrict_self().map_err(|e| failed(&e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockState::Enforced,
        RulesetStatus::PartiallyEnforced => LandlockState::Partial,
        RulesetStatus::NotEnforced => LandlockState::Unsupported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Landlock confines the thread that applies it (and threads it starts), so the test
    /// applies it on a thread of its own and leaves the rest of the test process alone.
    #[test]
    fn confines_reads_to_the_roots_and_writes_to_the_state_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, state, outside) = (
            tmp.path().join("root"),
            tmp.path().join("state"),
            tmp.path().join("outside"),
        );
        for dir in [&root, &state, &outside] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("f"), b"x").unwrap();
        }
        let confined = std::thread::spawn(move || {
            let run = state.join("run");
            std::fs::create_dir(&run).unwrap();
            let log = state.join("audit.log");
            std::fs::write(&log, b"").unwrap();
            let state_now = restrict_self(&[&root], &[&run], &[&log]).unwrap();
            assert!(state_now.is_active(), "{state_now:?}");
            assert_eq!(std::fs::read(root.join("f")).unwrap(), b"x");
            std::fs::read_dir(&root).unwrap();
            let denied = |r: std::io::Result<()>| {
                r.unwrap_err().kind() == std::io::ErrorKind::PermissionDenied
            };
            assert!(denied(std::fs::read(outside.join("f")).map(drop)));
            assert!(denied(std::fs::read_dir(&outside).map(drop)));
            assert!(denied(std::fs::write(root.join("new"), b"y")));
            // Appending, as the audit log does (truncating is not granted).
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(b"ok\n").unwrap();
            std::fs::write(run.join("sock"), b"ok").unwrap();
            // The rest of the state dir (identity's key lives there) is out of reach.
            assert!(denied(std::fs::read(state.join("f")).map(drop)));
            assert!(denied(std::fs::write(state.join("other"), b"y")));
        });
        confined.join().unwrap();
        // This thread was never confined.
        std::fs::read(tmp.path().join("outside/f")).unwrap();
    }
}
