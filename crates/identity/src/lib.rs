//! The identity service: the only signer of capabilities.
//!
//! It owns the signing key (0600 in the state dir, created once and reused), issues tokens
//! to callers the issuance policy allows (judged by kernel peer credentials), lets any
//! holder delegate a weaker child, revokes durably, and feeds every verifier the trusted
//! keys and the revocation list through a long poll (`identity.revocations`).
//!
//! A revocation is answered only when it is durable (redb, fsync'd) and every connected
//! trusted verifier (of root, identity's own uid or an operator-listed `--verifier-uids`
//! uid) has acknowledged it by polling again past it (see `strata-guard`), or the
//! acknowledgement timeout passed: the answer's `confirmed`/`unconfirmed` say which.
//! Subscribers of other uids are fed, not waited for, so they cannot delay revocations.
//!
//! Not here: checking tokens for other services (each verifies locally with
//! `strata-guard`), and path resolution (fs).

pub mod cluster;
pub mod feed;
pub mod mint_quota;
pub mod policy;
pub mod store;

use policy::Policy;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use store::{CapRecord, RetiredKey, Store};
use strata_audit::Audit;
use strata_cap::{
    CapId, Claims, Clock, Constraints, PathPrefix, RateLimit, RevocationSet, Right,
    SharedRateLimit, SigningKey, SystemClock, Timestamp, TokenVersion, TrustedKey, TrustedKeys,
    Verifier,
};
use strata_ipc::{Call, PeerCred, Router};
use strata_proto::methods::identity::{
    Delegate, DelegateParams, Introspect, IntrospectParams, IntrospectResult, Issue, IssueParams,
    IssueResult, KeyInfo, Keys, KeysResult, Revocation, Revocations, RevocationsParams,
    RevocationsResult, Revoke, RevokeParams, RevokeResult, Rotate, RotateResult,
    MAX_REVOCATIONS_PAGE,
};
use strata_proto::methods::NoParams;
use strata_proto::{ErrorBody, ErrorCode};
use tokio::sync::{watch, Notify};

/// Lifetime when `ttl_seconds` is absent.
pub const DEFAULT_TTL_SECONDS: i64 = 3600;
/// The longest lifetime anyone, admins included, may obtain: 30 days. A rotated-out key
/// stays trusted this long, so every token it signed can run its course.
pub const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// Most retired keys kept trusted at once (each for [`MAX_TTL_SECONDS`] after its
/// rotation): a rotation beyond is RESOURCE_EXHAUSTED, so the key list every verifier
/// loads (and every feed answer may carry) stays small.
pub const MAX_RETIRED_KEYS: usize = 256;
/// How long a revocation or rotation waits for connected verifiers to acknowledge it.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// A verifier that has not polled for this long is no longer waited for.
const SUBSCRIBER_GRACE: Duration = Duration::from_secs(1);
/// The longest a long poll is held open.
const MAX_POLL_WAIT: Duration = Duration::from_secs(60);
/// Cluster mode: how long a request that needs the cluster's state waits for it to load
/// before answering UNAVAILABLE.
const CLUSTER_LOAD_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Denied(String),
    #[error("no capability `{0}` is known")]
    NotFound(String),
    /// Cluster state (etcd) is needed and not reachable or not loaded yet.
    #[error("{0}")]
    Unavailable(String),
    /// The caller's quota (revocations, feed subscribers) is used up.
    #[error("{0}")]
    Exhausted(String),
    #[error("internal error")]
    Internal(String),
}

impl IdentityError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> IdentityError {
        IdentityError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<store::StoreError> for IdentityError {
    fn from(e: store::StoreError) -> Self {
        IdentityError::Internal(e.to_string())
    }
}

impl From<strata_cap::Error> for IdentityError {
    fn from(e: strata_cap::Error) -> Self {
        match e.code() {
            ErrorCode::Unauthenticated => IdentityError::Unauthenticated(e.to_string()),
            ErrorCode::PermissionDenied | ErrorCode::ResourceExhausted => {
                IdentityError::Denied(e.to_string())
            }
            _ => IdentityError::Internal(e.to_string()),
        }
    }
}

impl From<IdentityError> for ErrorBody {
    fn from(e: IdentityError) -> ErrorBody {
        match &e {
            IdentityError::Invalid { field, .. } => {
                ErrorBody::new(ErrorCode::InvalidArgument, e.to_string())
                    .with_details(json!({ "field": field }))
            }
            IdentityError::Unauthenticated(_) => {
                ErrorBody::new(ErrorCode::Unauthenticated, e.to_string())
            }
            IdentityError::Denied(_) => ErrorBody::new(ErrorCode::PermissionDenied, e.to_string()),
            IdentityError::NotFound(_) => ErrorBody::new(ErrorCode::NotFound, e.to_string()),
            IdentityError::Unavailable(_) => ErrorBody::new(ErrorCode::Unavailable, e.to_string()),
            IdentityError::Exhausted(_) => {
                ErrorBody::new(ErrorCode::ResourceExhausted, e.to_string())
            }
            IdentityError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ErrorBody::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// Where identity keeps things and whom it trusts.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub runtime_dir: PathBuf,
    pub state_dir: PathBuf,
    pub node_id: String,
    /// Issuance policy file; `None` or a missing file means admins only.
    pub policy: Option<PathBuf>,
    /// How long revocations and issuance records are kept after their capability expired
    /// (see [`strata_cap::DEFAULT_REVOCATION_RETENTION`]).
    pub revocation_retention: Duration,
    /// How many live capabilities non-admins may make identity mint
    /// ([`mint_quota::MintLimits::default`] in production).
    pub mint_limits: mint_quota::MintLimits,
    /// Uids whose feed subscribers a revocation waits for, besides root and identity's own
    /// uid (`--verifier-uids`, e.g. the uids of the node's services). Subscribers of any
    /// other uid are fed but not waited for.
    pub verifier_uids: Vec<u32>,
}

pub struct Identity {
    node_id: String,
    own_uid: u32,
    key_path: PathBuf,
    pub_path: PathBuf,
    signer: RwLock<Arc<SigningKey>>,
    verifier: Verifier,
    revoked: RevocationSet,
    store: Store,
    policy: Policy,
    clock: SystemClock,
    audit: Audit,
    /// (latest revocation seq, key epoch); pollers wait on changes.
    events: watch::Sender<(u64, u64)>,
    /// The verifiers following the feed (bounded: see [`feed`]).
    subscribers: Mutex<feed::Subscribers>,
    /// Revocations made by non-admin callers, counted for their quota.
    quota: Mutex<feed::RevocationQuota>,
    acks: Notify,
    /// Serialises rotations.
    rotating: tokio::sync::Mutex<()>,
    /// Cluster mode: the link to etcd (set once by [`Identity::join_cluster`]).
    cluster: std::sync::OnceLock<cluster::ClusterLink>,
    /// Cluster mode: the other nodes' keys from the trust bundle.
    remote_keys: RwLock<Vec<KeyInfo>>,
    /// Cluster mode: this node was removed (`strata-ctl cluster remove-node`); its own
    /// keys are no longer trusted and it issues nothing.
    removed: std::sync::atomic::AtomicBool,
    /// How long after expiry revocations and issuance records are kept.
    retention: Duration,
    /// Live capabilities minted for non-admins, per uid and lineage (issue and delegate).
    minted: mint_quota::MintQuota,
    /// Uids (besides admins) whose subscribers revocations wait for.
    verifier_uids: BTreeSet<u32>,
}

impl Identity {
    /// Open (or create) identity's key and store, load the revocations, and publish
    /// `identity.pub`.
    pub fn open(config: &IdentityConfig) -> anyhow::Result<Identity> {
        use anyhow::Context;
        let dir = config.state_dir.join("identity");
        let state = &config.state_dir;
        std::fs::create_dir_all(state)
            .with_context(|| format!("cannot create state directory {}", state.display()))?;
        // Identity's own directory holds the signing key and the store: its user only.
        store::private_dir(&dir)
            .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
        let key_path = dir.join("signing.key");
        let (signer, origin) = SigningKey::load_or_create(&key_path)?;
        tracing::info!(kid = %signer.kid(TokenVersion::V2), ?origin, "signing key ready");
        let store = Store::open(&dir.join("identity.redb"))?;
        let policy = match &config.policy {
            Some(p) if p.exists() => Policy::load(p)?,
            Some(p) => {
                tracing::warn!(path = %p.display(), "no issuance policy file: only admins may issue");
                Policy::default()
            }
            None => Policy::default(),
        };
        let revoked = RevocationSet::new();
        let records = store.revocations_since(0)?;
        let quota = feed::RevocationQuota::from_records(&records);
        revoked.extend(records.into_iter().filter_map(|r| {
            let cap = r.cap_id.parse::<CapId>().ok()?;
            Some((cap, r.expires.map(Timestamp::from_unix_seconds)))
        }));
        let seq = store.last_seq()?;
        let epoch = store.keys_epoch()?;
        let audit = Audit::open(&config.state_dir, "identity")?;
        let identity = Identity {
            node_id: config.node_id.clone(),
            own_uid: PeerCred::current_process().uid,
            key_path,
            pub_path: config.runtime_dir.join("identity.pub"),
            verifier: Verifier::new(
                Arc::new(TrustedKeys::new([])),
                Verifier::DEFAULT_CACHE_CAPACITY,
            ),
            signer: RwLock::new(Arc::new(signer)),
            revoked,
            store,
            policy,
            clock: SystemClock::new(),
            audit,
            events: watch::channel((seq, epoch)).0,
            subscribers: Mutex::new(feed::Subscribers::default()),
            quota: Mutex::new(quota),
            acks: Notify::new(),
            rotating: tokio::sync::Mutex::new(()),
            cluster: std::sync::OnceLock::new(),
            remote_keys: RwLock::new(Vec::new()),
            removed: std::sync::atomic::AtomicBool::new(false),
            retention: config.revocation_retention,
            minted: mint_quota::MintQuota::new(config.mint_limits),
            verifier_uids: config.verifier_uids.iter().copied().collect(),
        };
        identity.count_live_minted()?;
        identity.refresh_trusted_keys()?;
        identity.publish_public_key()?;
        tracing::info!(
            revocations = identity.revoked.len(),
            seq,
            "revocation list loaded"
        );
        Ok(identity)
    }

    fn signer(&self) -> Arc<SigningKey> {
        Arc::clone(&self.signer.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn is_admin(&self, peer: &PeerCred) -> bool {
        peer.uid == 0 || peer.uid == self.own_uid
    }

    /// Whether revocations wait for `peer`'s feed subscribers: admins and the operator's
    /// `verifier_uids`.
    fn is_trusted_verifier(&self, peer: &PeerCred) -> bool {
        self.is_admin(peer) || self.verifier_uids.contains(&peer.uid)
    }

    /// The last second identity keeps the issuance record (and any revocation) of a
    /// capability expiring at `expires`: pruning drops it after.
    fn kept_until(&self, expires: i64) -> i64 {
        let retention = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        expires.saturating_add(retention)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Unix seconds: capabilities that expired before this no longer need their
    /// revocation or issuance record.
    pub(crate) fn prune_cutoff(&self) -> i64 {
        let retention = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        self.now().unix_seconds().saturating_sub(retention)
    }

    /// Forgets what capabilities that expired more than the retention ago left behind:
    /// their revocations (in memory, on disk and, in cluster mode, in etcd) and issuance
    /// records. Without this both grow with every token ever revoked or issued.
    pub async fn prune_expired(self: &Arc<Self>) {
        let cutoff = self.prune_cutoff();
        let in_memory = self
            .revoked
            .prune_expired(Timestamp::from_unix_seconds(cutoff));
        let this = Arc::clone(self);
        // A durable write transaction: not on the async workers. What non-admin callers
        // revoked and is dropped no longer counts against their quota.
        let stored = tokio::task::spawn_blocking(move || {
            let mut freed = Vec::new();
            let pruned = this
                .store
                .prune_expired_each(cutoff, |r| freed.extend(r.by.clone()))?;
            let mut quota = this.lock_quota();
            freed.iter().for_each(|by| quota.remove(by));
            Ok::<_, store::StoreError>(pruned)
        })
        .await;
        let stored = match stored {
            Ok(Ok(pruned)) => pruned,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot prune expired revocations from the store");
                store::Pruned::default()
            }
            Err(e) => {
                tracing::error!(error = %e, "the store pruning task failed");
                store::Pruned::default()
            }
        };
        let shared = match self.cluster.get() {
            Some(link) => link.prune_expired(cutoff).await,
            None => 0,
        };
        if in_memory + stored.revocations + stored.caps + shared > 0 {
            tracing::info!(
                in_memory,
                stored_revocations = stored.revocations,
                stored_caps = stored.caps,
                etcd = shared,
                cutoff,
                "pruned records of expired capabilities"
            );
        }
    }

    /// Prunes now, then every retention period (at least every second, at most every ten
    /// minutes), for as long as identity lives.
    pub fn spawn_pruner(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let every = self
            .retention
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(identity) = weak.upgrade() else {
                    return;
                };
                identity.prune_expired().await;
            }
        })
    }

    /// Every key verifiers should trust: this node's own (unless it was removed from
    /// the cluster) and, in cluster mode, the other nodes' keys from the trust bundle.
    fn key_infos(&self) -> Result<Vec<KeyInfo>, IdentityError> {
        let mut keys = if self.is_removed() {
            Vec::new()
        } else {
            self.own_key_infos()?
        };
        keys.extend(
            self.remote_keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        Ok(keys)
    }

    fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This node's current key and every retired key still within its window, each
    /// bound to this node's issuer name.
    fn own_key_infos(&self) -> Result<Vec<KeyInfo>, IdentityError> {
        let current = self.signer();
        let mut keys = vec![KeyInfo {
            kid: current.kid(TokenVersion::V2).to_string(),
            public_key: current.public_key().to_base64(),
            not_before: None,
            not_after: None,
            current: true,
            node: Some(self.node_id.clone()),
        }];
        let now = self.now().unix_seconds();
        for (kid, retired) in self.store.retired_keys()? {
            if retired.not_after > now && kid != keys[0].kid {
                keys.push(KeyInfo {
                    kid,
                    public_key: retired.public_key,
                    not_before: None,
                    not_after: Some(Timestamp::from_unix_seconds(retired.not_after).to_string()),
                    current: false,
                    node: Some(self.node_id.clone()),
                });
            }
        }
        Ok(keys)
    }

    fn refresh_trusted_keys(&self) -> Result<(), IdentityError> {
        let trusted = self
            .key_infos()?
            .iter()
            .map(TrustedKey::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.verifier.keys().replace(trusted);
        Ok(())
    }

    fn publish_public_key(&self) -> Result<(), IdentityError> {
        self.signer()
            .public_key()
            .write_file(&self.pub_path)
            .map_err(|e| IdentityError::Internal(format!("cannot write identity.pub: {e}")))
    }

    /// Verify a presented token: signature, key, time window, and revocation of it and
    /// every ancestor.
    fn check_token(&self, token: &str) -> Result<Arc<Claims>, IdentityError> {
        self.cluster_ready()?;
        let now = self.now();
        let claims = self.verifier.verify(token, now)?;
        strata_cap::check_current(&claims, now, &self.revoked)
            .map_err(|d| IdentityError::Unauthenticated(d.reason().to_owned()))?;
        Ok(claims)
    }

    fn is_revoked(&self, claims: &Claims) -> bool {
        self.revoked.covers(claims)
    }

    fn deny(
        &self,
        peer: &PeerCred,
        method: &str,
        reason: String,
        cap: Option<&CapId>,
    ) -> IdentityError {
        self.audit.record(
            "auth.denied",
            Some(peer),
            json!({"method": method, "reason": reason, "cap_id": cap.map(|c| c.to_string())}),
        );
        IdentityError::Denied(reason)
    }

    /// Sign `claims`, refusing (INVALID_ARGUMENT) a token longer than verifiers accept
    /// ([`strata_cap::MAX_TOKEN_LEN`], the one bound they check): nothing is recorded or
    /// counted for it.
    fn sign(&self, claims: &Claims) -> Result<String, IdentityError> {
        if self.is_removed() {
            return Err(IdentityError::Denied(format!(
                "node `{}` was removed from the cluster; it issues no capabilities",
                self.node_id
            )));
        }
        let token = self.signer().sign(claims)?;
        if token.len() > strata_cap::MAX_TOKEN_LEN {
            return Err(IdentityError::invalid(
                "rights",
                format!(
                    "the capability would be a token of {} bytes, more than the {} verifiers \
                     accept; ask for fewer or shorter rights, or a shorter path_prefix",
                    token.len(),
                    strata_cap::MAX_TOKEN_LEN
                ),
            ));
        }
        Ok(token)
    }

    /// Record the issuance of `claims` as `token` (with the non-admin uid it counts
    /// against, if any). A delegation's record is durable when this returns.
    fn record_minted(
        &self,
        claims: &Claims,
        token: String,
        minted_for: Option<u32>,
    ) -> Result<IssueResult, IdentityError> {
        self.store.remember_cap(
            &claims.jti,
            &CapRecord {
                parents: claims.parents.iter().map(ToString::to_string).collect(),
                expires: claims.exp.unix_seconds(),
                minted_for,
            },
        )?;
        Ok(IssueResult {
            token,
            cap_id: claims.jti.to_string(),
            expires: claims.exp.unix_seconds(),
        })
    }

    /// Sign and record `claims`, counted against the caller's quota (and the lineage's,
    /// for a delegation) unless the caller is an admin: RESOURCE_EXHAUSTED past it (see
    /// [`mint_quota`]). A capability counts until its record is pruned (expiry plus the
    /// retention).
    fn mint_counted(
        &self,
        peer: &PeerCred,
        lineage: Option<CapId>,
        claims: &Claims,
    ) -> Result<IssueResult, IdentityError> {
        let token = self.sign(claims)?;
        if self.is_admin(peer) {
            return self.record_minted(claims, token, None);
        }
        let until = self.kept_until(claims.exp.unix_seconds());
        self.minted
            .reserve(self.now().unix_seconds(), peer.uid, lineage, until)
            .map_err(IdentityError::Exhausted)?;
        self.record_minted(claims, token, Some(peer.uid))
            .inspect_err(|_| {
                self.minted.cancel(peer.uid, lineage, until);
            })
    }

    /// Rebuild the mint quota's counts from the store, so a restart does not give every
    /// caller a fresh quota while its earlier capabilities' records are kept: each counts
    /// until pruning would drop it, the rule [`Identity::mint_counted`] holds at run time.
    /// Delegations' records are durable; a crash can forget the last few root issues.
    fn count_live_minted(&self) -> Result<(), IdentityError> {
        let now = self.now().unix_seconds();
        let live = self.store.live_minted_caps(self.prune_cutoff())?;
        let mut over = 0usize;
        for record in &live {
            let Some(uid) = record.minted_for else {
                continue;
            };
            let lineage = record.parents.first().and_then(|p| p.parse::<CapId>().ok());
            if self
                .minted
                .reserve(now, uid, lineage, self.kept_until(record.expires))
                .is_err()
            {
                over += 1;
            }
        }
        if over > 0 {
            tracing::warn!(
                over,
                "live capabilities beyond the mint quota (limits lowered?); they expire as issued"
            );
        }
        tracing::debug!(live = live.len(), "mint quota counts rebuilt");
        Ok(())
    }

    /// `identity.issue`.
    pub fn issue(&self, peer: &PeerCred, p: IssueParams) -> Result<IssueResult, IdentityError> {
        let service = p.service.as_str();
        if !strata_proto::is_service_name(service) {
            return Err(IdentityError::invalid(
                "service",
                "must match [a-z][a-z0-9-]{0,62}",
            ));
        }
        let rights = requested_rights(service, p.rights.as_deref(), p.actions.as_deref())?;
        let path_prefix = parse_prefix(p.path_prefix.as_deref())?;
        let rate_limit = parse_rate(p.rate_limit.as_deref())?;
        let ttl = p.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if ttl <= 0 {
            return Err(IdentityError::invalid(
                "ttl_seconds",
                "must be a positive number of seconds",
            ));
        }
        let max_ttl = if self.is_admin(peer) {
            MAX_TTL_SECONDS
        } else {
            self.policy
                .max_ttl(peer, service)
                .unwrap_or(MAX_TTL_SECONDS)
        };
        if ttl > max_ttl {
            return Err(IdentityError::invalid(
                "ttl_seconds",
                format!("{ttl} exceeds the maximum of {max_ttl} seconds"),
            ));
        }
        let issuer = format!("identity@{}", self.node_id);
        // A grant's max_rate_limit holds across every token the caller obtains under it:
        // each carries the grant's shared bucket (see `policy::grant_bucket`).
        let mut shared_rate_limits = Vec::new();
        if !self.is_admin(peer) {
            let request = policy::Request {
                service,
                rights: &rights,
                path_prefix: path_prefix.as_ref(),
                ttl_seconds: ttl,
                rate_limit,
            };
            match self.policy.check(peer, &request) {
                Err(reason) => return Err(self.deny(peer, "identity.issue", reason, None)),
                Ok((index, grant)) => {
                    if let Some(max) = grant.max_rate_limit {
                        shared_rate_limits.push(SharedRateLimit {
                            bucket: policy::grant_bucket(&issuer, peer.uid, index, grant),
                            rate_limit: max,
                        });
                    }
                }
            }
        }
        let now = self.now();
        let claims = Claims {
            jti: CapId::random()?,
            sub: format!("uid:{}", peer.uid),
            iss: issuer,
            aud: "strata".into(),
            iat: now,
            exp: now.saturating_add(Duration::from_secs(ttl as u64)),
            nbf: None,
            service: service.to_owned(),
            actions: rights.iter().map(|r| r.method().to_owned()).collect(),
            rights,
            constraints: Constraints {
                path_prefix,
                rate_limit,
                shared_rate_limits,
            },
            parents: Vec::new(),
        };
        let issued = self.mint_counted(peer, None, &claims)?;
        self.audit.record(
            "cap.issued",
            Some(peer),
            json!({"cap_id": issued.cap_id, "service": claims.service,
                   "rights": claims.rights, "path_prefix": claims.constraints.path_prefix,
                   "expires": issued.expires}),
        );
        Ok(issued)
    }

    /// `identity.delegate`: a child no stronger than the presented parent. Omitted params
    /// are inherited; the child is then judged by [`strata_cap::attenuates`], the one
    /// rule for delegation, and refused whole if it widens anything.
    pub fn delegate(
        &self,
        peer: &PeerCred,
        p: DelegateParams,
    ) -> Result<IssueResult, IdentityError> {
        let parent = self.check_token(&p.token)?;
        let refuse =
            |reason: String| self.deny(peer, "identity.delegate", reason, Some(&parent.jti));
        // Only the issuing node delegates: a child signed here for another node's token
        // would outlive that node's removal from the cluster (its key leaves the trust
        // bundle, but this node's key would still vouch for the child).
        let own_issuer = format!("identity@{}", self.node_id);
        if parent.iss != own_issuer {
            return Err(refuse(format!(
                "the capability was issued by `{}`; delegate it at that node's identity",
                parent.iss
            )));
        }
        // Malformed params are INVALID_ARGUMENT; what they ask for is judged below.
        let rights = match &p.rights {
            None => parent
                .effective_rights()
                .iter()
                .map(|r| r.parse())
                .collect::<Result<Vec<Right>, _>>()?,
            Some(list) => requested_rights(&parent.service, Some(list), None)?,
        };
        let path_prefix = parse_prefix(p.path_prefix.as_deref())?
            .or_else(|| parent.constraints.path_prefix.clone());
        let rate_limit = parse_rate(p.rate_limit.as_deref())?.or(parent.constraints.rate_limit);
        let now = self.now();
        let exp = match p.ttl_seconds {
            None => parent.exp,
            Some(ttl) if ttl <= 0 => {
                return Err(IdentityError::invalid(
                    "ttl_seconds",
                    "must be a positive number of seconds",
                ))
            }
            Some(ttl) => now.saturating_add(Duration::from_secs(ttl as u64)),
        };
        let mut parents = parent.parents.clone();
        parents.push(parent.jti);
        let claims = Claims {
            jti: CapId::random()?,
            sub: parent.sub.clone(),
            iss: own_issuer,
            aud: parent.aud.clone(),
            iat: now,
            exp,
            nbf: None,
            service: parent.service.clone(),
            actions: rights.iter().map(|r| r.method().to_owned()).collect(),
            rights,
            constraints: Constraints {
                path_prefix,
                rate_limit,
                // The parent's limit, and its ancestors' and grant's, hold across all of
                // its descendants.
                shared_rate_limits: parent.shared_rate_limits_for_child(),
            },
            parents,
        };
        if let Err(widening) = strata_cap::attenuates(&parent, &claims) {
            return Err(refuse(widening.reason().to_owned()));
        }
        let issued = self.mint_counted(peer, Some(*claims.lineage_root()), &claims)?;
        self.audit.record(
            "cap.delegated",
            Some(peer),
            json!({"cap_id": issued.cap_id, "parent": parent.jti.to_string(),
                   "rights": claims.rights, "path_prefix": claims.constraints.path_prefix,
                   "expires": issued.expires}),
        );
        Ok(issued)
    }

    /// `identity.revoke`: durable, then acknowledged by the trusted verifiers (admins' and
    /// `verifier_uids`'); the answer says how many confirmed and how many did not in time.
    pub async fn revoke(
        &self,
        call: &Call,
        p: RevokeParams,
    ) -> Result<RevokeResult, IdentityError> {
        let peer = &local_caller(call)?;
        let cap: CapId = p.cap_id.parse().map_err(|_| {
            IdentityError::invalid("cap_id", "must be a capability id (32 hex digits)")
        })?;
        let known = self.store.cap(&cap)?;
        // Who is held to the revocation quota for this one: `None` for an admin.
        let mut by = None;
        // The expiry of a holder's own token, from its verified claims: the revocation
        // then lapses with it even when identity has no record of the capability (a root
        // issue lost in a crash, or a capability another node issued).
        let mut own_expiry = None;
        if !self.is_admin(peer) {
            let Some(token) = call.token() else {
                return Err(self.deny(
                    peer,
                    "identity.revoke",
                    "revoking needs admin credentials, or the capability or an ancestor of it in `auth.token`".into(),
                    Some(&cap),
                ));
            };
            let holder = self.check_token(token)?;
            let is_self = holder.jti == cap;
            let is_ancestor = known
                .as_ref()
                .is_some_and(|k| k.parents.iter().any(|a| *a == holder.jti.to_string()));
            if !is_self && !is_ancestor {
                return Err(self.deny(
                    peer,
                    "identity.revoke",
                    "the presented token is neither this capability nor an ancestor of it".into(),
                    Some(&cap),
                ));
            }
            if is_self {
                own_expiry = Some(holder.exp.unix_seconds());
            }
            by = Some(store::Revoker {
                uid: peer.uid,
                lineage: holder.parents.first().unwrap_or(&holder.jti).to_string(),
                own: is_self,
            });
        }
        let expires = known.map(|k| k.expires).or(own_expiry);
        let record = self.record_revocation(peer, &cap, expires, by)?;
        self.revoked
            .insert(cap, expires.map(Timestamp::from_unix_seconds));
        self.events
            .send_modify(|(seq, _)| *seq = (*seq).max(record.seq));
        // This node's verifiers and etcd, at the same time.
        let ((confirmed, unconfirmed), published) =
            tokio::join!(self.wait_for_acks(record.seq, 0), async {
                match self.cluster.get() {
                    None => Ok(()),
                    Some(link) => link.publish_revocation(&record).await,
                }
            });
        self.audit.record(
            "cap.revoked",
            Some(peer),
            json!({"cap_id": cap.to_string(), "seq": record.seq,
                   "verifiers_acknowledged": confirmed, "verifiers_unconfirmed": unconfirmed,
                   "cluster": match &published { Ok(()) => "recorded".to_owned(), Err(e) => format!("not recorded: {e}") }}),
        );
        if let Err(e) = published {
            return Err(IdentityError::Unavailable(format!(
                "revoked and enforced on node `{}`, but NOT yet cluster-wide: {e}. It will be \
                 published when etcd is reachable again; repeat the revocation to confirm",
                self.node_id
            )));
        }
        Ok(RevokeResult {
            status: "revoked".to_owned(),
            confirmed: confirmed as u64,
            unconfirmed: unconfirmed as u64,
        })
    }

    /// Records the revocation of `cap` durably, within the quota of `by` (a non-admin
    /// caller). Revoking what is already revoked is answered with the existing record and
    /// costs no quota.
    fn record_revocation(
        &self,
        peer: &PeerCred,
        cap: &CapId,
        expires: Option<i64>,
        by: Option<store::Revoker>,
    ) -> Result<store::RevocationRecord, IdentityError> {
        // Held across the check and the write, so two revocations cannot both take the
        // last unit of a quota.
        let mut quota = self.lock_quota();
        if let Some(existing) = self.store.revocation_of(cap)? {
            return Ok(existing);
        }
        if let Some(by) = &by {
            if let Err(reason) = quota.admit(by) {
                drop(quota);
                self.audit.record(
                    "revoke.quota_exceeded",
                    Some(peer),
                    json!({"cap_id": cap.to_string(), "lineage": by.lineage}),
                );
                return Err(IdentityError::Exhausted(reason));
            }
        }
        let record = self
            .store
            .revoke(cap, expires, self.now().unix_seconds(), by)?;
        // Only a new record made by this call carries `by` (one learnt from the cluster
        // in between does not).
        if let Some(by) = &record.by {
            quota.add(by);
        }
        Ok(record)
    }

    fn lock_quota(&self) -> std::sync::MutexGuard<'_, feed::RevocationQuota> {
        self.quota.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `identity.introspect`.
    pub fn introspect(&self, p: IntrospectParams) -> IntrospectResult {
        let now = self.now();
        let kid = kid_of(&p.token);
        match self.verifier.verify_uncached(&p.token, now) {
            Ok(claims) => {
                let expired = claims.exp <= now;
                let early = claims.nbf.is_some_and(|nbf| nbf > now);
                let revoked = self.is_revoked(&claims);
                let reason = if revoked {
                    Some("revoked".to_owned())
                } else if expired {
                    Some("expired".to_owned())
                } else if early {
                    Some("not valid yet".to_owned())
                } else {
                    None
                };
                IntrospectResult {
                    claims: serde_json::to_value(&claims).unwrap_or(serde_json::Value::Null),
                    valid: reason.is_none(),
                    expired,
                    revoked,
                    kid,
                    reason,
                }
            }
            Err(e) => IntrospectResult {
                claims: serde_json::Value::Null,
                valid: false,
                expired: false,
                revoked: false,
                kid,
                reason: Some(e.to_string()),
            },
        }
    }

    /// `identity.keys`.
    pub fn keys(&self) -> Result<KeysResult, IdentityError> {
        Ok(KeysResult {
            keys: self.key_infos()?,
            keys_epoch: self.events.borrow().1,
        })
    }

    /// `identity.rotate` (admin): a new current key; the old one stays trusted for
    /// [`MAX_TTL_SECONDS`] so every token it signed runs its course.
    pub async fn rotate(&self, peer: &PeerCred) -> Result<RotateResult, IdentityError> {
        if !self.is_admin(peer) {
            return Err(self.deny(
                peer,
                "identity.rotate",
                "only admins may rotate the signing key".into(),
                None,
            ));
        }
        let _one = self.rotating.lock().await;
        let now = self.now().unix_seconds();
        let retired_in_window = self
            .store
            .retired_keys()?
            .iter()
            .filter(|(_, k)| k.not_after > now)
            .count();
        if retired_in_window >= MAX_RETIRED_KEYS {
            return Err(IdentityError::Exhausted(format!(
                "{MAX_RETIRED_KEYS} retired keys are still trusted (each for {} days after \
                 its rotation); no further rotation until the oldest lapses",
                MAX_TTL_SECONDS / 86_400
            )));
        }
        let old = self.signer();
        let old_kid = old.kid(TokenVersion::V2).to_string();
        let next_path = self.key_path.with_extension("key.next");
        let _ = std::fs::remove_file(&next_path);
        let next = SigningKey::create(&next_path)?;
        let retired = RetiredKey {
            public_key: old.public_key().to_base64(),
            not_after: self.now().unix_seconds() + MAX_TTL_SECONDS,
        };
        // Retire the old key first: if we crash before the rename, the old key is still
        // current and merely also listed as retired, which changes nothing.
        let epoch = self.store.retire_key(&old_kid, &retired)?;
        std::fs::rename(&next_path, &self.key_path)
            .and_then(|_| sync_dir(self.key_path.parent().unwrap_or(Path::new("."))))
            .map_err(|e| IdentityError::Internal(format!("cannot install the new key: {e}")))?;
        let kid = next.kid(TokenVersion::V2).to_string();
        *self.signer.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.refresh_trusted_keys()?;
        self.publish_public_key()?;
        self.events.send_modify(|(_, e)| *e = epoch);
        if let Some(link) = self.cluster.get() {
            link.keys_changed();
        }
        self.wait_for_acks(0, epoch).await;
        self.audit.record(
            "key.rotated",
            Some(peer),
            json!({"kid": kid, "retired": old_kid}),
        );
        Ok(RotateResult {
            kid,
            keys_epoch: epoch,
        })
    }

    /// `identity.revocations`: answer at once if the caller is behind, else hold the poll
    /// until something changes or `wait_ms` passes. Polling with `since = n` acknowledges
    /// everything up to `n`. An answer is one page of at most `limit` entries (at most
    /// [`MAX_REVOCATIONS_PAGE`]): while it says `more`, the caller asks again at once with
    /// the `seq` it was given.
    pub async fn revocations(
        &self,
        call: &Call,
        p: RevocationsParams,
    ) -> Result<RevocationsResult, IdentityError> {
        if let Some(link) = self.cluster.get() {
            if !link.is_loaded() {
                let wait = Duration::from_millis(p.wait_ms).min(MAX_POLL_WAIT);
                tokio::select! {
                    _ = tokio::time::timeout(wait, link.wait_loaded()) => {}
                    _ = call.stopping() => {}
                }
            }
        }
        self.cluster_ready()?;
        let peer = local_caller(call)?;
        let same_store = p
            .store_id
            .as_deref()
            .is_none_or(|s| s == self.store.store_id());
        let since = if same_store { p.since } else { 0 };
        let key = feed::SubscriberKey {
            uid: peer.uid,
            pid: peer.pid.unwrap_or(0),
            name: p.subscriber,
        };
        let _poll = self.poll_begins(key, self.is_trusted_verifier(&peer), since, p.keys_epoch)?;
        let mut rx = self.events.subscribe();
        let behind = |&(seq, epoch): &(u64, u64)| seq > since || epoch != p.keys_epoch;
        if !behind(&rx.borrow_and_update()) && p.wait_ms > 0 {
            let wait = Duration::from_millis(p.wait_ms).min(MAX_POLL_WAIT);
            // Answer early when identity is shutting down, so the poll does not hold the
            // shutdown up; the verifier then finds identity gone and catches up later.
            tokio::select! {
                _ = tokio::time::timeout(wait, rx.wait_for(behind)) => {}
                _ = call.stopping() => {}
            }
        }
        // The newest sequence number first, then the page: the page holds everything up
        // to it that fits.
        let (seq, epoch) = *self.events.borrow();
        let limit = p.limit.unwrap_or(MAX_REVOCATIONS_PAGE) as usize;
        let mut page = self.store.revocations_page(since, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let last = page.last().map(|r| r.seq);
        let cursor = match last {
            Some(last) if more => last,
            Some(last) => last.max(seq),
            None => seq,
        };
        Ok(RevocationsResult {
            store_id: self.store.store_id().to_owned(),
            seq: cursor,
            full: since == 0,
            revocations: page
                .into_iter()
                .map(|r| Revocation {
                    seq: r.seq,
                    cap_id: r.cap_id,
                    expires: r.expires,
                })
                .collect(),
            more,
            keys_epoch: epoch,
            keys: (epoch != p.keys_epoch)
                .then(|| self.key_infos())
                .transpose()?,
        })
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, feed::Subscribers> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A poll of `key` begins, acknowledging `seq` and `epoch`; refused beyond the
    /// caller's subscriber quota. `trusted`: revocations wait for it. The guard ends the
    /// poll when dropped.
    fn poll_begins(
        &self,
        key: feed::SubscriberKey,
        trusted: bool,
        seq: u64,
        epoch: u64,
    ) -> Result<PollGuard<'_>, IdentityError> {
        let noted = self
            .lock_subscribers()
            .poll_begins(&key, trusted, seq, epoch, Instant::now())
            .map_err(|e| IdentityError::Exhausted(e.0))?;
        if noted == feed::Noted::Advanced {
            self.acks.notify_waiters();
        }
        Ok(PollGuard {
            identity: self,
            key,
        })
    }

    /// Wait until every live trusted subscriber has acknowledged `seq` and `epoch`, or
    /// [`ACK_TIMEOUT`]. Returns how many acknowledged and how many did not in time.
    /// Woken only when a subscriber acknowledges more or stops polling; each look walks
    /// the bounded table once.
    async fn wait_for_acks(&self, seq: u64, epoch: u64) -> (usize, usize) {
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let notified = self.acks.notified();
            let (acked, pending, sample) =
                self.lock_subscribers()
                    .acks(seq, epoch, SUBSCRIBER_GRACE, Instant::now(), 8);
            if pending == 0 {
                return (acked, 0);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    pending,
                    ?sample,
                    seq,
                    epoch,
                    "verifiers did not acknowledge in time"
                );
                return (acked, pending);
            }
        }
    }
}

/// Ends a subscriber's poll when dropped (answered or abandoned).
struct PollGuard<'a> {
    identity: &'a Identity,
    key: feed::SubscriberKey,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let stopped = self
            .identity
            .lock_subscribers()
            .poll_ends(&self.key, Instant::now());
        if stopped {
            self.identity.acks.notify_waiters();
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Rights from `rights` and legacy `actions`, all for `service`, deduplicated, sorted.
fn requested_rights(
    service: &str,
    rights: Option<&[String]>,
    actions: Option<&[String]>,
) -> Result<Vec<Right>, IdentityError> {
    let mut out = BTreeSet::new();
    for r in rights.unwrap_or_default() {
        let right: Right = r.parse().map_err(|_| {
            IdentityError::invalid("rights", format!("`{r}` is not a right like `fs.read`"))
        })?;
        if right.service() != service {
            return Err(IdentityError::invalid(
                "rights",
                format!(
                    "right `{r}` is for service `{}`, not `{service}`",
                    right.service()
                ),
            ));
        }
        out.insert(right);
    }
    for a in actions.unwrap_or_default() {
        let right: Right = format!("{service}.{a}").parse().map_err(|_| {
            IdentityError::invalid("actions", format!("`{a}` is not an action like `read`"))
        })?;
        out.insert(right);
    }
    if out.is_empty() {
        return Err(IdentityError::invalid(
            "rights",
            "give at least one right (or legacy action)",
        ));
    }
    Ok(out.into_iter().collect())
}

fn parse_prefix(p: Option<&str>) -> Result<Option<PathPrefix>, IdentityError> {
    p.map(|p| {
        p.parse::<PathPrefix>().map_err(|_| {
            IdentityError::invalid(
                "path_prefix",
                format!("`{p}` must be an absolute, normalised path"),
            )
        })
    })
    .transpose()
}

fn parse_rate(r: Option<&str>) -> Result<Option<RateLimit>, IdentityError> {
    r.map(|r| {
        r.parse::<RateLimit>().map_err(|_| {
            IdentityError::invalid("rate_limit", format!("`{r}` is not a rate like `50rps`"))
        })
    })
    .transpose()
}

/// The `kid` from a token's footer, if it has one that is a PASERK key id: nothing else of
/// the caller's token is echoed, and a token too long to verify is not decoded at all.
fn kid_of(token: &str) -> Option<String> {
    use ct_codecs::{Base64UrlSafeNoPadding, Decoder};
    if token.len() > strata_cap::MAX_TOKEN_LEN {
        return None;
    }
    let footer = token.splitn(4, '.').nth(3)?;
    let bytes = Base64UrlSafeNoPadding::decode_to_vec(footer, None).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let kid: strata_cap::KeyId = v.get("kid")?.as_str()?.parse().ok()?;
    Some(kid.to_string())
}

/// The kernel credentials of a local caller. Identity's methods authorize by them, so a
/// call over TCP (which a listener's allow-list should never let through) is refused.
fn local_caller(call: &Call) -> Result<PeerCred, IdentityError> {
    call.local_peer()
        .copied()
        .ok_or_else(|| IdentityError::Denied("identity is served to local callers only".into()))
}

/// The identity method table.
pub fn router(identity: Arc<Identity>) -> Router {
    let id = || Arc::clone(&identity);
    let (a, b, c, d, e, f, g, h) = (id(), id(), id(), id(), id(), id(), id(), id());
    Router::new("identity", env!("CARGO_PKG_VERSION"))
        .health_extra(move || {
            let mut m = serde_json::Map::new();
            m.insert("node".into(), h.node_id.clone().into());
            if let Some(cluster) = h.cluster_status() {
                m.insert("cluster".into(), cluster);
            }
            m
        })
        .method::<Issue, _, _, _>(move |call: Call, p| {
            let i = Arc::clone(&a);
            async move {
                // A node learns whether it was removed from the cluster state.
                i.cluster_loaded_within(CLUSTER_LOAD_WAIT).await?;
                i.issue(&local_caller(&call)?, p)
            }
        })
        .method::<Delegate, _, _, _>(move |call: Call, p| {
            let i = Arc::clone(&b);
            async move { i.delegate(&local_caller(&call)?, p) }
        })
        .method::<Revoke, _, _, _>(move |call: Call, p| {
            let i = Arc::clone(&c);
            async move { i.revoke(&call, p).await }
        })
        .method::<Introspect, _, _, _>(move |_call: Call, p| {
            let i = Arc::clone(&d);
            async move {
                // Revoked elsewhere, or signed by another node's key: not known before.
                i.cluster_loaded_within(CLUSTER_LOAD_WAIT).await?;
                Ok::<_, IdentityError>(i.introspect(p))
            }
        })
        .method::<Keys, _, _, _>(move |_call: Call, _p: NoParams| {
            let i = Arc::clone(&e);
            async move {
                // The list is the trust bundle: incomplete before it is loaded.
                i.cluster_loaded_within(CLUSTER_LOAD_WAIT).await?;
                i.keys()
            }
        })
        .method::<Rotate, _, _, _>(move |call: Call, _p: NoParams| {
            let i = Arc::clone(&f);
            async move { i.rotate(&local_caller(&call)?).await }
        })
        .method::<Revocations, _, _, _>(move |call: Call, p| {
            let i = Arc::clone(&g);
            async move { i.revocations(&call, p).await }
        })
}
