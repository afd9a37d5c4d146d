//! Where a service built with the kit keeps its socket and its audit log: the flags every
//! Strata service takes, resolved the way the built-in services resolve them.
//!
//! The supervisor gives each service `STRATA_RUNTIME_DIR`, `STRATA_STATE_DIR` and
//! `STRATA_SOCKET_GROUP`, and probes `sys.health` on `<runtime dir>/<name>.sock` unless the
//! manifest's `socket` names another path (then pass the same path as `--socket`).

use crate::ServiceError;
use std::path::PathBuf;
use strata_ipc::{paths, ServerConfig};
use strata_proto::ServiceName;

/// The flags a kit service takes; `#[command(flatten)]` them into the binary's own
/// `clap::Parser` (their names, `--runtime-dir`, `--state-dir`, `--socket` and
/// `--socket-mode`, are then taken).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Runtime directory: the socket, identity's socket (default: $STRATA_RUNTIME_DIR,
    /// /run/strata for root).
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// State directory: the audit log (default: $STRATA_STATE_DIR, /var/lib/strata for
    /// root).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve on this socket instead of `<runtime dir>/<service>.sock` (the manifest's
    /// `socket`, if it sets one).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket, in octal.
    #[arg(long, value_name = "MODE", default_value = "660", value_parser = strata_ipc::parse_socket_mode)]
    pub socket_mode: u32,
}

/// A service's resolved and checked places, made by [`ServiceArgs::settings`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service's name: its methods are `<name>.*`, its tokens are for it.
    pub service: ServiceName,
    /// The runtime directory (checked: see `strata_ipc::paths`).
    pub runtime_dir: PathBuf,
    /// The state directory (checked), where the audit log is.
    pub state_dir: PathBuf,
    /// The socket to serve on.
    pub socket: PathBuf,
    /// The socket's permission bits.
    pub socket_mode: u32,
    /// The group given the socket (`STRATA_SOCKET_GROUP`), if any.
    pub socket_group: Option<u32>,
}

impl ServiceArgs {
    /// Defaults for every flag (the directories from the environment, as with no flags).
    pub fn from_env() -> ServiceArgs {
        ServiceArgs {
            runtime_dir: None,
            state_dir: None,
            socket: None,
            socket_mode: 0o660,
        }
    }

    /// Resolve and check the directories (creating them, 0750 and 0700, if missing) for
    /// the service `service`.
    pub fn settings(self, service: &str) -> Result<Settings, ServiceError> {
        let service = ServiceName::parse(service)?;
        let runtime_dir = paths::resolve_runtime_dir(self.runtime_dir)?;
        let state_dir = paths::resolve_state_dir(self.state_dir)?;
        paths::create_dir(paths::DirKind::Runtime, &runtime_dir, 0o750)?;
        paths::create_dir(paths::DirKind::State, &state_dir, 0o700)?;
        let socket = self
            .socket
            .unwrap_or_else(|| paths::socket_path(&runtime_dir, service.as_str()));
        Ok(Settings {
            service,
            runtime_dir,
            state_dir,
            socket,
            socket_mode: self.socket_mode,
            socket_group: paths::socket_group_from_env()?,
        })
    }
}

impl Settings {
    /// The server's configuration: the socket, its mode and group, the default limits.
    pub fn server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(&self.socket);
        config.socket_mode = self.socket_mode;
        config.socket_group = self.socket_group;
        config
    }

    /// Where another service's socket is by convention (`<runtime dir>/<name>.sock`), e.g.
    /// fs's for a service that reads files through it.
    pub fn socket_of(&self, service: &str) -> PathBuf {
        paths::socket_path(&self.runtime_dir, service)
    }
}
