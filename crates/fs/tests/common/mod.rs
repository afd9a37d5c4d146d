//! Shared set-up for the fs tests that drive [`FsService`] directly: a temporary tree with an
//! export root, a prefix inside it and secrets outside it, claims built by hand, and a
//! revocation set standing in for the guard.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_audit::Audit;
use strata_cap::{CapId, Claims, Clock, Constraints, ManualClock, Timestamp};
use strata_fs::{Caller, ExportRoots, FsService, HandleLimits, RevocationCheck};
use strata_proto::methods::fs::{OpenParams, ReadParams};
use strata_proto::ErrorCode;

/// Revoked cap ids; a capability is revoked if it or any ancestor is in the set.
#[derive(Default)]
pub struct Revoked(Mutex<HashSet<CapId>>);

impl Revoked {
    pub fn add(&self, cap: CapId) {
        self.0.lock().unwrap().insert(cap);
    }
}

impl RevocationCheck for Revoked {
    fn is_revoked(&self, claims: &Claims) -> bool {
        let set = self.0.lock().unwrap();
        set.contains(&claims.jti) || claims.parents.iter().any(|p| set.contains(p))
    }
}

/// ```text
/// <tmp>/root/            export root
/// <tmp>/root/data/       the prefix tokens get (`prefix()`)
/// <tmp>/outside/secret   must never be readable
/// <tmp>/state/           audit log
/// ```
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub fs: Arc<FsService>,
    pub revoked: Arc<Revoked>,
    pub clock: Arc<ManualClock>,
}

pub const SECRET: &[u8] = b"SECRET: outside the prefix";

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_limits(HandleLimits::default())
    }

    pub fn with_limits(limits: HandleLimits) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("root/data")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), SECRET).unwrap();
        let roots = ExportRoots::open(&[base.join("root")]).unwrap();
        let audit = Audit::open(&base.join("state"), "fs").unwrap();
        let revoked = Arc::new(Revoked::default());
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let fs = Arc::new(FsService::with_clock(
            roots,
            limits,
            audit,
            revoked.clone(),
            clock.clone() as Arc<dyn Clock>,
        ));
        Fixture {
            tmp,
            base,
            fs,
            revoked,
            clock,
        }
    }

    /// The prefix directory on disk.
    pub fn prefix(&self) -> PathBuf {
        self.base.join("root/data")
    }

    /// A file beneath the prefix with these bytes.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.prefix().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A caller holding every fs right for the fixture's prefix.
    pub fn caller(&self) -> Caller {
        self.caller_for(Some(&self.prefix()))
    }

    pub fn caller_for(&self, prefix: Option<&Path>) -> Caller {
        Caller::new(Arc::new(claims(prefix, &self.clock, &[])), None)
    }

    /// Everything the audit log holds so far, one JSON value per line.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.fs.audit().flush();
        let text = std::fs::read_to_string(self.base.join("state/audit.log")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn open(&self, caller: &Caller, path: &str) -> Result<String, ErrorCode> {
        self.fs
            .open(caller, &open_params(path))
            .map(|r| r.handle)
            .map_err(|e| e.code())
    }

    /// Open, read everything, close.
    pub fn slurp(&self, caller: &Caller, path: &str) -> Result<Vec<u8>, ErrorCode> {
        let handle = self.open(caller, path)?;
        let bytes = read_all(&self.fs, caller, &handle, 64 * 1024);
        self.fs
            .close(caller, &strata_proto::methods::fs::CloseParams { handle })
            .unwrap();
        Ok(bytes)
    }
}

/// Claims for service fs with every fs right, valid for an hour from the clock's now.
pub fn claims(prefix: Option<&Path>, clock: &ManualClock, parents: &[CapId]) -> Claims {
    let now = clock.now();
    Claims {
        jti: CapId::random().unwrap(),
        sub: "uid:1000".into(),
        iss: "identity@test".into(),
        aud: "strata".into(),
        iat: now,
        exp: now.saturating_add(Duration::from_secs(3600)),
        nbf: None,
        service: "fs".into(),
        actions: vec![],
        rights: ["fs.open", "fs.read", "fs.list", "fs.stat"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect(),
        constraints: Constraints {
            path_prefix: prefix.map(|p| p.to_str().unwrap().parse().unwrap()),
            rate_limit: None,
            shared_rate_limits: vec![],
        },
        parents: parents.to_vec(),
    }
}

pub fn open_params(path: &str) -> OpenParams {
    OpenParams {
        path: path.to_owned(),
        mode: "r".into(),
    }
}

pub fn read_params(handle: &str, offset: u64, size: u64) -> ReadParams {
    ReadParams {
        handle: handle.to_owned(),
        offset,
        size,
    }
}

/// Read a handle to its end in `chunk`-byte reads, checking each result's consistency.
pub fn read_all(fs: &FsService, caller: &Caller, handle: &str, chunk: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let r = fs
            .read(
                caller,
                &read_params(handle, out.len() as u64, chunk),
                strata_fs::reply_room("t"),
            )
            .unwrap();
        let bytes = decode_b64(&r.data_b64);
        assert_eq!(bytes.len() as u64, r.bytes_read);
        out.extend_from_slice(&bytes);
        if r.eof {
            return out;
        }
        assert!(
            r.bytes_read > 0,
            "a read that is not at eof returned nothing"
        );
    }
}

pub fn decode_b64(text: &str) -> Vec<u8> {
    base64_simd::STANDARD.decode_to_vec(text).unwrap()
}

/// How many of this process's file descriptors refer to `path`.
pub fn fds_open_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}
