//! For unit tests: an identity on a temporary directory whose clock only moves when told.

use crate::mint_quota::MintLimits;
use crate::{Identity, IdentityConfig};
use std::sync::Arc;
use std::time::Duration;
use strata_cap::{ManualClock, Timestamp};
use strata_ipc::PeerCred;

/// 2026-01-01T00:00:00Z, where every test clock starts.
pub(crate) const T0: i64 = 1_767_225_600;

/// A caller no grant but the test policy's names, and not an admin.
pub(crate) const CALLER: PeerCred = PeerCred {
    pid: Some(1),
    uid: 47_300,
    gid: 47_300,
};

/// Root: an admin.
pub(crate) const ROOT: PeerCred = PeerCred {
    pid: Some(1),
    uid: 0,
    gid: 0,
};

/// An identity (and the directory it lives in) reading the time from the returned clock,
/// with `retention`, and a policy letting [`CALLER`] have `fs` rights under `/srv` for at
/// most 600 seconds.
pub(crate) fn identity(retention: Duration) -> (Identity, Arc<ManualClock>, tempfile::TempDir) {
    identity_with(retention, MintLimits::default())
}

/// [`identity`] with the mint quota's `limits`.
pub(crate) fn identity_with(
    retention: Duration,
    limits: MintLimits,
) -> (Identity, Arc<ManualClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("issuance.toml");
    std::fs::write(
        &policy,
        format!(
            "[[grant]]\nuids = [{}]\nservices = [\"fs\"]\nrights = [\"fs.*\"]\n\
             path_prefixes = [\"/srv\"]\nmax_ttl_seconds = 600\n",
            CALLER.uid
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(T0)));
    let identity = Identity::open(
        &IdentityConfig {
            runtime_dir: dir.path().join("run"),
            state_dir: dir.path().join("state"),
            node_id: "test".into(),
            policy: Some(policy),
            revocation_retention: retention,
            mint_limits: limits,
            verifier_uids: Vec::new(),
        },
        Arc::clone(&clock) as Arc<dyn strata_cap::Clock>,
    )
    .unwrap();
    (identity, clock, dir)
}
