//! The quota of live capabilities a non-admin may make identity mint survives a restart:
//! the counts are rebuilt from the issuance records, so restarting identity (which a
//! caller may be able to provoke) does not hand every caller a fresh quota while its
//! earlier capabilities still live.

use std::path::Path;
use std::time::Duration;
use strata_identity::mint_quota::MintLimits;
use strata_identity::{Identity, IdentityConfig};
use strata_ipc::PeerCred;
use strata_proto::methods::identity::IssueParams;
use strata_proto::ErrorCode;

const CALLER: PeerCred = PeerCred {
    pid: Some(1),
    uid: 47_100,
    gid: 47_100,
};

fn open(dir: &Path) -> Identity {
    let policy = dir.join("issuance.toml");
    std::fs::write(
        &policy,
        format!(
            "[[grant]]\nuids = [{}]\nservices = [\"fs\"]\nrights = [\"fs.read\"]\n\
             path_prefixes = [\"/srv\"]\nmax_ttl_seconds = 600\n",
            CALLER.uid
        ),
    )
    .unwrap();
    Identity::open(
        &IdentityConfig {
            runtime_dir: dir.join("run"),
            state_dir: dir.join("state"),
            node_id: "test".into(),
            policy: Some(policy),
            revocation_retention: Duration::from_secs(600),
            mint_limits: MintLimits {
                per_uid: 3,
                per_lineage: 2,
                total: 100,
            },
            verifier_uids: Vec::new(),
        },
        std::sync::Arc::new(strata_cap::SystemClock::new()),
    )
    .unwrap()
}

async fn issue(identity: &Identity) -> Result<String, ErrorCode> {
    let params = IssueParams {
        service: "fs".into(),
        rights: Some(vec!["fs.read".into()]),
        actions: None,
        path_prefix: Some("/srv".into()),
        ttl_seconds: Some(600),
        rate_limit: None,
        subject: None,
    };
    identity
        .issue(&CALLER, params)
        .await
        .map(|r| r.cap_id)
        .map_err(|e| strata_proto::ErrorBody::from(e).code)
}

#[tokio::test]
async fn the_mint_quota_is_counted_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let identity = open(dir.path());
    for _ in 0..3 {
        issue(&identity).await.expect("within the quota");
    }
    assert_eq!(
        issue(&identity).await,
        Err(ErrorCode::ResourceExhausted),
        "past the quota"
    );
    drop(identity);

    let identity = open(dir.path());
    assert_eq!(
        issue(&identity).await,
        Err(ErrorCode::ResourceExhausted),
        "a restart must not give the caller a fresh quota"
    );
}
