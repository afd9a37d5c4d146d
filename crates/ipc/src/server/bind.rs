//! Binding: the socket file and the TCP port.
//!
//! The socket-file rules: the runtime directory is created (0750, and given the socket
//! group when there is one) if missing; a live
//! server on the path is never displaced ([`ServerError::AlreadyRunning`]); a socket file
//! nobody answers on is stale and replaced; anything that is not a socket is left alone
//! ([`ServerError::NotASocket`]); the socket is never reachable with more than its mode
//! ([`bind_socket_file`]), and belongs to the socket group when there is one, so that
//! exactly the group's members (and root) may connect; and on shutdown only the file this
//! server bound is removed.

use super::{Router, ServerError, TcpListen};
use crate::sys::rename_no_replace;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

/// (dev, ino) of the socket file a server bound, so shutdown removes its own and only its
/// own.
pub(super) type SocketId = (u64, u64);

/// Create the directory the socket goes in (0750, parents too) if it is missing, and give
/// it `group` (the directory only: its parents keep this process's group). One that exists
/// is left as it is: whoever made it (the supervisor, systemd) chose its group.
pub(super) fn create_runtime_dir(path: &Path, group: Option<u32>) -> Result<(), ServerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let dir_err = |source| ServerError::RuntimeDir {
                path: dir.to_path_buf(),
                source,
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(dir_err)?;
            if let Some(gid) = group {
                std::os::unix::fs::chown(dir, None, Some(gid))
                    .map_err(|e| dir_err(chown_error(e, None, gid)))?;
            }
        }
    }
    Ok(())
}

/// A chown to `gid` (and `uid`) that failed, saying why it usually does.
fn chown_error(e: io::Error, uid: Option<u32>, gid: u32) -> io::Error {
    let whom = match uid {
        Some(uid) => format!("uid {uid} and group {gid}"),
        None => format!("group {gid}"),
    };
    io::Error::new(
        e.kind(),
        format!(
            "cannot give it to {whom}: {e} (a process without CAP_CHOWN may only give its \
             own files to a group it is a member of)"
        ),
    )
}

/// Bind the server's socket at `path` with `mode`, owned by this process's uid and by
/// `group` when given (see [`bind_socket_file`]); the listener and the bound file's
/// identity.
pub(super) fn listen_unix(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<(UnixListener, SocketId), ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let owner = group.map(|gid| (crate::sys::euid(), gid));
    let listener = bind_socket_file(path, mode, owner, |at| {
        let std_listener = std::os::unix::net::UnixListener::bind(at)?;
        std_listener.set_nonblocking(true)?;
        UnixListener::from_std(std_listener)
    })
    .map_err(bind_err)?;
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// Bind a Unix socket at `path` so that it is never reachable with more than `mode`:
/// `bind` runs on a path inside a fresh directory beside `path` that only this uid can
/// enter (0700), the socket is given `mode` (and `owner`) there, and only then is it
/// renamed into place. `bind` and `chmod` are two steps, and between them the socket has
/// whatever mode the umask leaves; no other user can reach it through the private
/// directory in that time. The rename never replaces an existing file (a server that
/// appeared meanwhile keeps its socket: `AlreadyExists`).
pub fn bind_socket_file<T>(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    bind: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let private = private_dir(dir)?;
    // A short name, so that the path bound first is no longer than `path` itself for any
    // socket name of five bytes or more (sockaddr_un holds 107).
    let temp = private.join("s");
    let placed = (|| {
        let bound = bind(&temp)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&temp, Some(uid), Some(gid))
                .map_err(|e| chown_error(e, Some(uid), gid))?;
        }
        rename_no_replace(&temp, path)?;
        Ok(bound)
    })();
    if placed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let _ = std::fs::remove_dir(&private);
    placed
}

/// A new directory `dir/.sN` (the first N free), mode 0700.
fn private_dir(dir: &Path) -> io::Result<PathBuf> {
    for n in 0..100u32 {
        let candidate = dir.join(format!(".s{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free private directory to bind in under {} (.s0 to .s99 exist)",
            dir.display()
        ),
    ))
}

/// A path we are about to bind: refuse if a live server answers there, remove it if it is
/// a socket nobody listens on.
pub(super) fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AlreadyRunning(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "replacing stale socket file");
            std::fs::remove_file(path).map_err(|source| ServerError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(ServerError::Bind {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// On shutdown: remove the socket file at `path` if it is still the one we bound.
pub(super) fn remove_own_socket(path: &Path, (dev, ino): SocketId) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == dev && m.ino() == ino => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket");
            }
        }
        // Gone already, or replaced by another server: not ours to remove.
        _ => {}
    }
}

/// The bound TCP side of a server.
pub(super) struct TcpSide {
    pub(super) listener: TcpListener,
    pub(super) addr: SocketAddr,
    pub(super) acceptor: TlsAcceptor,
    /// The methods TCP peers may call (besides `sys.health`).
    pub(super) allowed: Arc<HashSet<String>>,
}

impl TcpSide {
    /// Check the allow-list against the router, then bind.
    pub(super) fn bind(listen: &TcpListen, router: &Router) -> Result<TcpSide, ServerError> {
        let routed = router.methods();
        if let Some(unrouted) = listen
            .methods
            .iter()
            .find(|m| !routed.contains(&m.as_str()))
        {
            return Err(ServerError::UnroutedTcpMethod(unrouted.clone()));
        }
        let bind_err = |source| ServerError::BindTcp {
            addr: listen.addr,
            source,
        };
        let std_listener = std::net::TcpListener::bind(listen.addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = std_listener.local_addr().map_err(bind_err)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
        Ok(TcpSide {
            listener,
            addr,
            acceptor: TlsAcceptor::from(Arc::clone(&listen.tls)),
            allowed: Arc::new(listen.methods.iter().cloned().collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn sockets_are_bound_in_a_private_directory_then_moved_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sock");
        let listener = bind_socket_file(&path, 0o640, None, |at| {
            let private = at.parent().unwrap();
            let meta = std::fs::metadata(private).unwrap();
            assert_eq!(meta.mode() & 0o777, 0o700, "{}", private.display());
            assert_eq!(meta.uid(), crate::sys::euid());
            assert!(!path.exists(), "nothing at the final path while binding");
            std::os::unix::net::UnixListener::bind(at)
        })
        .unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o640);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "the private directory is removed");
        // Bound where it now lives: a client connects through the final path.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
    }

    /// With a socket group, a runtime directory made here and the socket are the group's
    /// (`0750`, and the socket's mode); without one, nothing is given away.
    #[tokio::test]
    async fn the_socket_group_gets_the_socket_and_a_runtime_dir_made_for_it() {
        let (uid, own_gid) = crate::sys::uid_gid();
        // Root may give files to any group; another user to its own groups only.
        let gid = if uid == 0 { 4242 } else { own_gid };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/a.sock");
        create_runtime_dir(&path, Some(gid)).unwrap();
        let meta = std::fs::metadata(dir.path().join("run")).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o750, gid));
        let (_listener, _) = listen_unix(&path, 0o660, Some(gid)).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o660, crate::sys::euid(), gid)
        );

        let plain = dir.path().join("plain/b.sock");
        create_runtime_dir(&plain, None).unwrap();
        let (_listener, _) = listen_unix(&plain, 0o660, None).unwrap();
        for p in [plain.parent().unwrap(), &plain] {
            let meta = std::fs::symlink_metadata(p).unwrap();
            assert_eq!(meta.gid(), own_gid, "{}", p.display());
        }
    }

    #[test]
    fn binding_never_replaces_a_file_and_cleans_up_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        std::fs::write(&path, b"someone else's").unwrap();
        let err = bind_socket_file(&path, 0o600, None, |at| {
            std::os::unix::net::UnixListener::bind(at)
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        let err = bind_socket_file(&dir.path().join("y.sock"), 0o600, None, |_| {
            Err::<(), _>(io::Error::other("bind failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "bind failed");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("taken")]);
    }
}
