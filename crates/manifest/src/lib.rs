//! The supervisor's service manifest: what to run and how to keep it running, parsed and
//! validated. A crate of its own, apart from `strata-supervisor`, so that the manifest
//! fuzz target builds without the supervisor's runtime (etcd, metrics, processes); the
//! supervisor re-exports it as `strata_supervisor::{manifest, units, graph}`.
//!
//! A manifest is TOML (see strata-supervisor's README for every field). The built-in graph
//! that `strata-supervisor` runs without `--config` is a manifest too ([`Manifest::builtin`]),
//! so both go through the same validation and the same code at run time.
//!
//! Parsing refuses unknown keys; [`Manifest::validate`] refuses bad names, duplicate
//! names, unknown dependencies and cycles, each with a message naming the service (and
//! the cycle's path). Validation does not look for binaries: a missing binary is a
//! start-up failure of that one service, reported by the supervisor, not a manifest error.
//! [`units`]: sizes, durations, signals and modes as written in a manifest; [`graph`]:
//! the dependency order.

use crate::units::{ByteSize, CpuMax, HumanDuration, Mode, Signal};
pub use capability::CapabilitySpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Everything wrong with a manifest, in words that name the service at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong kind.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or other origin) the text came from.
        origin: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A service name that breaks the name rule.
    #[error("service name {0:?} is invalid: names match [a-z][a-z0-9-]{{0,62}}")]
    BadName(String),
    /// A service named `supervisor`.
    #[error("service name `{0}` is reserved for the supervisor itself")]
    ReservedName(String),
    /// Two services of one name.
    #[error("service `{0}` is declared more than once")]
    Duplicate(String),
    /// A `depends_on` naming no declared service.
    #[error("service `{service}` depends on `{dependency}`, which is not declared")]
    UnknownDependency {
        /// The service that depends.
        service: String,
        /// The undeclared name it depends on.
        dependency: String,
    },
    /// Services that depend on each other in a circle (the path, back to its start).
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A field with a value out of bounds.
    #[error("service `{service}`: `{field}` {message}")]
    Invalid {
        /// The service.
        service: String,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A `[[service.capability]]` entry, or a service's list of them, that is wrong.
    #[error(transparent)]
    Capability(#[from] capability::CapabilityError),
    /// A `[supervisor]` setting out of bounds.
    #[error("[supervisor] `{field}` {message}")]
    Setting {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A whole manifest: supervisor settings and the services.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `[supervisor]`.
    #[serde(default)]
    pub supervisor: SupervisorSettings,
    /// The `[[service]]` tables, in declaration order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
}

/// `[supervisor]`: settings of the supervisor itself. Read at start-up only; a reload
/// applies service changes, not these.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    /// Permission bits of `supervisor.sock` (default 0660). Who may *control* services is
    /// decided by peer credentials, not by this mode; it only decides who may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket_mode: Option<Mode>,
    /// Where the Prometheus endpoint listens (`127.0.0.1:9469`); off unless set.
    /// `--metrics-listen` / `STRATA_METRICS_LISTEN` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The file (mode 0600 or stricter) holding the bearer token every metrics request
    /// must carry; none unless set. `--metrics-token-file` / `STRATA_METRICS_TOKEN_FILE`
    /// override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<std::path::PathBuf>,
    /// The group that owns every socket and the runtime directory, so its members may
    /// connect. `--socket-group` / `STRATA_SOCKET_GROUP` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// Size past which `<state dir>/audit.log` is rotated (default 64 MiB, at least 4K),
    /// by every process that writes it: the services get it as `STRATA_AUDIT_MAX_BYTES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_max_bytes: Option<ByteSize>,
    /// Rotated audit logs kept, `audit.log.1` … `.N` (default 5, 1 to 1000); services
    /// get it as `STRATA_AUDIT_KEEP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_keep: Option<u32>,
}

impl SupervisorSettings {
    /// The audit log's rotation: these settings, over `STRATA_AUDIT_MAX_BYTES` /
    /// `STRATA_AUDIT_KEEP` in the supervisor's own environment, over the defaults.
    pub fn audit_rotation(&self) -> Result<strata_audit::Rotation, ManifestError> {
        use strata_audit::{Rotation, MAX_KEEP, MIN_MAX_BYTES};
        let base = Rotation::from_env();
        let max_bytes = self.audit_max_bytes.map_or(base.max_bytes(), |b| b.0);
        let keep = self.audit_keep.unwrap_or(base.keep());
        let refuse = |field, message: String| ManifestError::Setting { field, message };
        if max_bytes < MIN_MAX_BYTES {
            return Err(refuse("audit_max_bytes", "must be at least 4K".into()));
        }
        if !(1..=MAX_KEEP).contains(&keep) {
            return Err(refuse("audit_keep", format!("must be 1 to {MAX_KEEP}")));
        }
        Rotation::new(max_bytes, keep).map_err(|m| refuse("audit_max_bytes", m))
    }
}

/// How the supervisor decides a service is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// Its socket answers `sys.health` with `status: ok`.
    Health,
    /// It sends `READY=1` to `$NOTIFY_SOCKET` (systemd's protocol).
    Notify,
    /// The process is running (exec succeeded).
    Started,
}

/// When a service that exited on its own is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit, clean or not.
    Always,
    /// After an exit that is not `exit code 0`.
    OnFailure,
    /// Never: a crash leaves it Crashed.
    Never,
}

/// Exponential backoff between crash restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSettings {
    /// Delay before the first restart.
    pub base: HumanDuration,
    /// Each further consecutive crash multiplies the delay by this (≥ 1).
    pub factor: f64,
    /// Ceiling of the delay.
    pub max: HumanDuration,
    /// After running Healthy this long, the crash history is forgotten.
    pub reset_after: HumanDuration,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        BackoffSettings {
            base: HumanDuration::secs(1),
            factor: 2.0,
            max: HumanDuration::secs(30),
            reset_after: HumanDuration::secs(60),
        }
    }
}

/// When a crash loop is stopped for good (until `supervisor.svc.start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineSettings {
    /// This many crashes within `window` quarantine the service; 0 never quarantines.
    pub crashes: u32,
    /// The window the crashes are counted in.
    pub window: HumanDuration,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        QuarantineSettings {
            crashes: 5,
            window: HumanDuration::secs(120),
        }
    }
}

/// Resource limits. Applied through the service's cgroup when the controller is
/// available, otherwise through rlimits where an equivalent exists; `svc.list` reports
/// which.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `memory.max` (or RLIMIT_AS, which limits address space, without the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<ByteSize>,
    /// `pids.max` (or RLIMIT_NPROC, per user, without the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// `cpu.max` (not enforced without the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<CpuMax>,
}

/// Namespaces a service may be given (created fresh for it; needs root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    /// No network but its own loopback. Path-based Unix sockets keep working.
    Net,
    /// Its own System V IPC and POSIX message queues.
    Ipc,
    /// Its own host and domain name.
    Uts,
}

impl Namespace {
    /// The `CLONE_NEW*` flag for unshare(2).
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Uts => libc::CLONE_NEWUTS,
        }
    }
    /// The name as in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Net => "net",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
        }
    }
}

/// Landlock file-system rules: the service may read (and execute) beneath `read`, and do
/// anything beneath `write`; nothing else. Fails closed: a service asking for Landlock
/// on a kernel without it does not start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockRules {
    /// Trees it may read and execute.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Trees it may do anything in.
    #[serde(default)]
    pub write: Vec<PathBuf>,
}

/// `sandbox`: what a service is confined by besides its user and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// `PR_SET_NO_NEW_PRIVS`: setuid binaries and file capabilities stop working.
    pub no_new_privs: bool,
    /// Namespaces created fresh for it.
    pub namespaces: Vec<Namespace>,
    /// Landlock file-system rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockRules>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            no_new_privs: true,
            namespaces: Vec::new(),
            landlock: None,
        }
    }
}

/// Where a service's output is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Lines kept in memory for `supervisor.svc.logs`.
    pub ring_lines: usize,
    /// `logs/<name>.log` is rotated when it would grow past this.
    pub max_bytes: ByteSize,
    /// Rotated files kept (`<name>.log.1` … `<name>.log.<keep>`).
    pub keep: u32,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            ring_lines: 1000,
            max_bytes: ByteSize(1 << 20),
            keep: 3,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_readiness() -> Readiness {
    Readiness::Health
}
fn default_restart() -> RestartPolicy {
    RestartPolicy::Always
}
fn default_ready_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_health_interval() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_health_timeout() -> HumanDuration {
    HumanDuration::secs(1)
}
fn default_health_failures() -> u32 {
    3
}
fn default_stop_signal() -> Signal {
    Signal::TERM
}
fn default_drain_ms() -> u64 {
    2000
}

/// One `[[service]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name (the name rule; not `supervisor`).
    pub name: String,
    /// A path (relative ones are taken from the manifest's directory) or a bare program
    /// name, looked up like the built-in binaries: `STRATA_*_BIN`, beside the supervisor,
    /// then `PATH`.
    pub exec: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to its clean environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Its working directory (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// Services that must be Healthy before it starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// How it is seen ready (default `health`).
    #[serde(default = "default_readiness")]
    pub readiness: Readiness,
    /// The socket probed by `health` readiness and liveness and registered with the
    /// registry. Default `<runtime dir>/<name>.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Register `unix://<socket>` with the registry while Healthy (services with a
    /// socket: `health` readiness or an explicit `socket`).
    #[serde(default = "default_true")]
    pub register: bool,
    /// Cluster mode: the `ip:port` the service also listens on with mutual TLS. The
    /// supervisor passes it as `STRATA_TCP_LISTEN` and registers `tcp://<ip:port>` as the
    /// endpoint other nodes use, so it must be a particular address (not 0.0.0.0 or ::).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<std::net::SocketAddr>,
    /// How long it has to become ready (default 10 s).
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: HumanDuration,
    /// Liveness: how often a Healthy `health` service is probed; "0" turns it off.
    #[serde(default = "default_health_interval")]
    pub health_interval: HumanDuration,
    /// Deadline of one `sys.health` probe (default 1 s).
    #[serde(default = "default_health_timeout")]
    pub health_timeout: HumanDuration,
    /// Consecutive failed probes that count as a crash.
    #[serde(default = "default_health_failures")]
    pub health_failures: u32,
    /// When an exit is followed by a restart (default `always`).
    #[serde(default = "default_restart")]
    pub restart: RestartPolicy,
    /// Delays between crash restarts.
    #[serde(default)]
    pub backoff: BackoffSettings,
    /// When a crash loop stops for good.
    #[serde(default)]
    pub quarantine: QuarantineSettings,
    /// The signal that asks it to stop (default SIGTERM).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: Signal,
    /// Grace between the stop signal and SIGKILL of the whole group.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// User (name or uid) to run as; the group defaults to the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group (name or gid) to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Confinement.
    #[serde(default)]
    pub sandbox: SandboxSettings,
    /// Where its output is kept.
    #[serde(default)]
    pub logs: LogSettings,
    /// Capabilities routed to it (`[[service.capability]]`).
    #[serde(default, rename = "capability", skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilitySpec>,
}

impl ServiceSpec {
    /// A spec with every optional field at its default.
    pub fn new(name: &str, exec: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_owned(),
            exec: exec.to_owned(),
            args: Vec::new(),
            env: BTreeMap::new(),
            working_dir: None,
            depends_on: Vec::new(),
            readiness: default_readiness(),
            socket: None,
            register: true,
            tcp: None,
            ready_timeout: default_ready_timeout(),
            health_interval: default_health_interval(),
            health_timeout: default_health_timeout(),
            health_failures: default_health_failures(),
            restart: default_restart(),
            backoff: BackoffSettings::default(),
            quarantine: QuarantineSettings::default(),
            stop_signal: default_stop_signal(),
            drain_ms: default_drain_ms(),
            user: None,
            group: None,
            limits: Limits::default(),
            sandbox: SandboxSettings::default(),
            logs: LogSettings::default(),
            capabilities: Vec::new(),
        }
    }

    /// The socket this service answers on, if it has one.
    pub fn socket_path(&self, runtime_dir: &Path) -> Option<PathBuf> {
        match (&self.socket, self.readiness) {
            (Some(path), _) => Some(path.clone()),
            (None, Readiness::Health) => {
                Some(strata_ipc::paths::socket_path(runtime_dir, &self.name))
            }
            (None, _) => None,
        }
    }

    fn invalid(&self, field: &'static str, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid {
            service: self.name.clone(),
            field,
            message: message.into(),
        }
    }

    fn validate_fields(&self) -> Result<(), ManifestError> {
        if self.exec.trim().is_empty() {
            return Err(self.invalid("exec", "must name a program"));
        }
        if let Some(addr) = self.tcp {
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(self.invalid(
                    "tcp",
                    "must be the particular ip:port other nodes reach the service at (not 0.0.0.0, ::, or port 0)",
                ));
            }
        }
        if self.exec.contains('\0') || self.args.iter().any(|a| a.contains('\0')) {
            return Err(self.invalid("exec", "and `args` must not contain NUL bytes"));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(self.invalid("env", format!("has an invalid variable {key:?}")));
            }
        }
        if let Some(dir) = &self.working_dir {
            if !dir.is_absolute() {
                return Err(self.invalid("working_dir", "must be an absolute path"));
            }
        }
        if let Some(socket) = &self.socket {
            if !socket.is_absolute() {
                return Err(self.invalid("socket", "must be an absolute path"));
            }
        }
        if self.ready_timeout.get().is_zero() {
            return Err(self.invalid("ready_timeout", "must be more than 0"));
        }
        if self.health_timeout.get().is_zero() {
            return Err(self.invalid("health_timeout", "must be more than 0"));
        }
        if self.health_failures == 0 {
            return Err(self.invalid("health_failures", "must be at least 1"));
        }
        let b = &self.backoff;
        if !(b.factor.is_finite() && b.factor >= 1.0) {
            return Err(self.invalid("backoff.factor", "must be a number >= 1"));
        }
        if b.max < b.base {
            return Err(self.invalid("backoff.max", "must not be less than backoff.base"));
        }
        if self.quarantine.crashes > 0 && self.quarantine.window.get().is_zero() {
            return Err(self.invalid("quarantine.window", "must be more than 0"));
        }
        for (field, value) in [("user", &self.user), ("group", &self.group)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(self.invalid(field, "must not be empty"));
            }
        }
        if self.limits.memory_max.is_some_and(|m| m.0 < 1 << 20) {
            return Err(self.invalid("limits.memory_max", "must be at least 1M"));
        }
        if self.limits.pids_max == Some(0) {
            return Err(self.invalid("limits.pids_max", "must be at least 1"));
        }
        if let Some(rules) = &self.sandbox.landlock {
            if let Some(p) = rules
                .read
                .iter()
                .chain(&rules.write)
                .find(|p| !p.is_absolute())
            {
                return Err(self.invalid(
                    "sandbox.landlock",
                    format!("paths must be absolute, got {}", p.display()),
                ));
            }
            if !self.sandbox.no_new_privs {
                return Err(self.invalid("sandbox.landlock", "needs sandbox.no_new_privs = true"));
            }
        }
        if self.logs.ring_lines == 0 {
            return Err(self.invalid("logs.ring_lines", "must be at least 1"));
        }
        if self.logs.max_bytes.0 < 4096 {
            return Err(self.invalid("logs.max_bytes", "must be at least 4K"));
        }
        Ok(capability::validate_service(self)?)
    }
}

/// A service name: [`strata_proto::ServiceName`]'s rule, `[a-z][a-z0-9-]{0,62}` (names
/// also become file and cgroup names, so nothing else may pass), and not `supervisor`,
/// which is the supervisor's own.
pub fn check_name(name: &str) -> Result<(), ManifestError> {
    if strata_proto::ServiceName::parse(name).is_err() {
        return Err(ManifestError::BadName(name.to_owned()));
    }
    if name == "supervisor" {
        return Err(ManifestError::ReservedName(name.to_owned()));
    }
    Ok(())
}

impl Manifest {
    /// The graph `strata-supervisor` runs without a manifest: registry, identity, and fs
    /// (after identity is Healthy), each answering `sys.health` on its conventional socket.
    pub fn builtin() -> Manifest {
        let registry = ServiceSpec::new("registry", "strata-registry");
        let mut identity = ServiceSpec::new("identity", "strata-identity");
        let mut fs = ServiceSpec::new("fs", "strata-fs");
        fs.depends_on = vec!["identity".to_owned()];
        // Children get a clean environment; the built-in services' own settings, when
        // the operator set them for the supervisor, are handed to the service they are for.
        let forward = |spec: &mut ServiceSpec, keys: &[&str]| {
            for key in keys {
                if let Ok(value) = std::env::var(key) {
                    spec.env.insert((*key).to_owned(), value);
                }
            }
        };
        forward(
            &mut identity,
            &["STRATA_ISSUANCE_POLICY", "STRATA_REVOCATION_RETENTION"],
        );
        forward(
            &mut fs,
            &[
                "STRATA_FS_EXPORT_ROOTS",
                "STRATA_FS_MAX_HANDLES",
                "STRATA_FS_MAX_HANDLES_PER_CAP",
            ],
        );
        // Cluster mode: fs's mutual-TLS listener for other nodes.
        if let Ok(addr) = std::env::var("STRATA_FS_TCP_LISTEN") {
            match addr.parse() {
                Ok(addr) => fs.tcp = Some(addr),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "STRATA_FS_TCP_LISTEN is not ip:port; fs gets no tcp listener")
                }
            }
        }
        Manifest {
            supervisor: SupervisorSettings::default(),
            services: vec![registry, identity, fs],
        }
    }

    /// Read, parse and validate a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        Manifest::parse(&text, &path.display().to_string(), &base)
    }

    /// Parse, [normalise](Manifest::normalise) and validate manifest text. `origin` names
    /// it in errors; relative `exec` paths are resolved against `base_dir`.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest =
            toml::from_str(text).map_err(|e| capability::parse_error(text, origin, e))?;
        for service in &mut manifest.services {
            if service.exec.contains('/') && !Path::new(&service.exec).is_absolute() {
                service.exec = base_dir.join(&service.exec).display().to_string();
            }
        }
        manifest.normalise();
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check names, fields, dependencies and the absence of cycles.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.supervisor.audit_rotation()?;
        let mut seen = BTreeSet::new();
        for service in &self.services {
            check_name(&service.name)?;
            if !seen.insert(service.name.as_str()) {
                return Err(ManifestError::Duplicate(service.name.clone()));
            }
        }
        capability::check_identity(self)?;
        for service in &self.services {
            service.validate_fields()?;
            for dep in &service.depends_on {
                if !seen.contains(dep.as_str()) {
                    return Err(ManifestError::UnknownDependency {
                        service: service.name.clone(),
                        dependency: dep.clone(),
                    });
                }
            }
        }
        graph::start_order(&self.services).map(|_| ())
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

pub mod capability;
pub mod graph;
pub mod units;

#[cfg(test)]
mod tests;
