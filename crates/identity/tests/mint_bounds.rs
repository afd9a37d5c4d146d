//! What identity mints is bounded by what it keeps and by what verifiers accept:
//!
//! - the mint quota counts a capability for as long as its issuance record is kept
//!   (expiry + the revocation retention), at run time and when rebuilt at start, so a
//!   lineage of one-second children cannot pile up records beyond the quota;
//! - identity refuses to sign a token longer than any verifier accepts
//!   (`strata_cap::MAX_TOKEN_LEN`), before anything is recorded or counted.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_identity::mint_quota::MintLimits;
use strata_identity::{Identity, IdentityConfig};
use strata_ipc::PeerCred;
use strata_proto::methods::identity::{DelegateParams, IssueParams, IssueResult, MAX_RIGHTS};
use strata_proto::{ErrorBody, ErrorCode};

const CALLER: PeerCred = PeerCred {
    pid: Some(1),
    uid: 47_200,
    gid: 47_200,
};

/// The retention the tests run with: short, so a place is freed within the test.
const RETENTION: Duration = Duration::from_secs(4);

fn open(dir: &Path, limits: MintLimits) -> Identity {
    let policy = dir.join("issuance.toml");
    std::fs::write(
        &policy,
        format!(
            "[[grant]]\nuids = [{}]\nservices = [\"fs\"]\nrights = [\"fs.*\"]\n\
             path_prefixes = [\"/srv\"]\nmax_ttl_seconds = 600\n",
            CALLER.uid
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("run")).unwrap();
    Identity::open(
        &IdentityConfig {
            runtime_dir: dir.join("run"),
            state_dir: dir.join("state"),
            node_id: "test".into(),
            policy: Some(policy),
            revocation_retention: RETENTION,
            mint_limits: limits,
            verifier_uids: Vec::new(),
        },
        std::sync::Arc::new(strata_cap::SystemClock::new()),
    )
    .unwrap()
}

fn params(rights: Vec<String>, ttl: i64) -> IssueParams {
    IssueParams {
        service: "fs".into(),
        rights: Some(rights),
        path_prefix: Some("/srv".into()),
        ttl_seconds: Some(ttl),
        ..IssueParams::default()
    }
}

fn code(e: strata_identity::IdentityError) -> (ErrorCode, String) {
    let body = ErrorBody::from(e);
    let field = body.details["field"].as_str().unwrap_or("").to_owned();
    (body.code, field)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Waits (polling the clock, with a deadline) until the unix time is past `t`.
fn until_past(t: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while unix_now() <= t {
        assert!(std::time::Instant::now() < deadline, "clock stuck");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn an_expired_delegation_counts_until_its_record_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let limits = MintLimits {
        per_uid: 100,
        per_lineage: 2,
        total: 1000,
    };
    let identity = open(dir.path(), limits);
    let root = identity
        .issue(&CALLER, params(vec!["fs.read".into()], 600))
        .await
        .unwrap();
    async fn delegate(
        identity: &Identity,
        token: &str,
    ) -> Result<IssueResult, strata_identity::IdentityError> {
        identity
            .delegate(
                &CALLER,
                DelegateParams {
                    token: token.to_owned(),
                    ttl_seconds: Some(1),
                    ..DelegateParams::default()
                },
            )
            .await
    }
    let mut last_expiry = 0;
    for _ in 0..2 {
        last_expiry = delegate(&identity, &root.token)
            .await
            .expect("within the quota")
            .expires;
    }
    let e = delegate(&identity, &root.token).await.unwrap_err();
    assert_eq!(code(e).0, ErrorCode::ResourceExhausted);

    // Expired, but the records are kept for the retention: still counted.
    until_past(last_expiry);
    let r = delegate(&identity, &root.token).await;
    assert!(
        unix_now() <= last_expiry + RETENTION.as_secs() as i64,
        "the test was too slow to check within the retention"
    );
    assert_eq!(
        r.map(|i| i.cap_id).map_err(|e| code(e).0),
        Err(ErrorCode::ResourceExhausted),
        "an expired child whose record is still kept freed its place"
    );
    // The same rule when the counts are rebuilt at start.
    drop(identity);
    let identity = open(dir.path(), limits);
    assert_eq!(
        delegate(&identity, &root.token)
            .await
            .map(|i| i.cap_id)
            .map_err(|e| code(e).0),
        Err(ErrorCode::ResourceExhausted),
        "the rebuild at start freed places whose records are still kept"
    );
    // Past expiry + retention the place is free again.
    until_past(last_expiry + RETENTION.as_secs() as i64);
    delegate(&identity, &root.token)
        .await
        .expect("a place is free once the record's retention is over");
}

/// `n` distinct fs rights of about `len` bytes each.
fn long_rights(n: usize, len: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("fs.r{i:03}");
            format!("{name}{}", "x".repeat(len - name.len()))
        })
        .collect()
}

#[tokio::test]
async fn a_token_longer_than_verifiers_accept_is_not_signed_recorded_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let identity = open(
        dir.path(),
        MintLimits {
            per_uid: 1,
            per_lineage: 10,
            total: 10,
        },
    );
    // Within the parse-time bounds (64 rights of at most 128 bytes), but the token would
    // be far past 8 KiB.
    let e = identity
        .issue(&CALLER, params(long_rights(MAX_RIGHTS, 120), 60))
        .await
        .unwrap_err();
    assert_eq!(
        code(e),
        (ErrorCode::InvalidArgument, "rights".to_owned()),
        "identity signed a token no verifier accepts"
    );
    // Not counted: the caller's one place is still free.
    let ok = identity
        .issue(&CALLER, params(vec!["fs.read".into()], 60))
        .await
        .expect("the refused token took no place in the quota");
    assert!(ok.token.len() <= strata_cap::MAX_TOKEN_LEN);
    // Admins too: identity never signs what verifiers refuse.
    let admin = PeerCred {
        pid: Some(1),
        uid: 0,
        gid: 0,
    };
    let e = identity
        .issue(&admin, params(long_rights(MAX_RIGHTS, 120), 60))
        .await
        .unwrap_err();
    assert_eq!(code(e).0, ErrorCode::InvalidArgument);
    // 64 short rights fit.
    let fits = identity
        .issue(&admin, params(long_rights(MAX_RIGHTS, 16), 60))
        .await
        .expect("64 short rights fit in a token");
    assert!(fits.token.len() <= strata_cap::MAX_TOKEN_LEN);
}
