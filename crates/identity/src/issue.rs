//! `identity.issue` (a root capability, as the issuance policy allows the caller) and
//! `identity.delegate` (a child no stronger than a presented parent, by the delegation
//! rules in `strata-cap`). Both build their claims the one way ([`Terms::into_claims`]
//! through `Identity::claims`), sign them and count them against the mint quota.

use crate::store::CapRecord;
use crate::{policy, Identity, IdentityError};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use strata_cap::{
    CapId, Claims, Constraints, Narrowing, PathPrefix, RateLimit, Right, SharedRateLimit, Terms,
    Timestamp,
};
use strata_ipc::PeerCred;
use strata_proto::methods::identity::{DelegateParams, IssueParams, IssueResult};
use strata_proto::{NodeId, ServiceName};

/// Lifetime when `ttl_seconds` is absent.
pub const DEFAULT_TTL_SECONDS: i64 = 3600;
/// The longest lifetime anyone, admins included, may obtain: 30 days. A rotated-out key
/// stays trusted this long, so every token it signed can run its course.
pub const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// In cluster mode every verifier refuses a token from `exp` less the cluster's max clock
/// skew on, so on a node whose clock is that far ahead of the issuer's a token lives
/// `ttl - 2 × skew`: a lifetime of twice the skew or less would be refused everywhere
/// from the start on such a node. Refused with the reason, not clamped.
fn check_ttl_for_skew(ttl: i64, max_skew: Option<Duration>) -> Result<(), IdentityError> {
    let Some(skew) = max_skew else {
        return Ok(());
    };
    let floor = skew.saturating_mul(2);
    if Duration::from_secs(ttl.unsigned_abs()) <= floor {
        return Err(IdentityError::invalid(
            "ttl_seconds",
            format!(
                "{ttl} is too short for this cluster's max clock skew of {skew:?}: verifiers \
                 allow for the skew at both ends, so ask for more than {} seconds",
                floor.as_secs()
            ),
        ));
    }
    Ok(())
}

impl Identity {
    /// `identity.issue`: answered once the capability's record is committed (see
    /// [`crate::issuance_log`]).
    pub async fn issue(
        &self,
        peer: &PeerCred,
        p: IssueParams,
    ) -> Result<IssueResult, IdentityError> {
        // Parsed here, not in `IssueParams` (which keeps a `String` so that strata-ctl and
        // older clients build it unchanged); the refusal is the same on the wire.
        let service = ServiceName::parse(&p.service)
            .map_err(|_| IdentityError::invalid("service", "must match [a-z][a-z0-9-]{0,62}"))?;
        let service = service.as_str();
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
        check_ttl_for_skew(ttl, self.clock.max_skew())?;
        let sub = match p.subject.as_deref() {
            None => format!("uid:{}", peer.uid),
            // Only an admin names whom a token is for; anyone else is refused before
            // anything is minted or recorded.
            Some(_) if !self.is_admin(peer) => {
                return Err(self.deny(
                    peer,
                    "identity.issue",
                    "only an admin caller may choose a capability's subject".to_owned(),
                    None,
                ))
            }
            Some(subject) => parse_subject(subject)?,
        };
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
        let claims = self.claims(
            Terms {
                sub,
                iss: issuer,
                aud: Claims::AUDIENCE.into(),
                service: service.to_owned(),
                rights,
                constraints: Constraints {
                    path_prefix,
                    rate_limit,
                    shared_rate_limits,
                },
                exp: now.saturating_add(Duration::from_secs(ttl as u64)),
                parents: Vec::new(),
            },
            now,
        )?;
        let issued = self.mint_counted(peer, None, &claims).await?;
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
    /// are inherited ([`Narrowing::child_of`]); the child is then judged by
    /// [`strata_cap::attenuates`], the one rule for delegation, and refused whole if it
    /// widens anything.
    pub async fn delegate(
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
        let narrowing = Narrowing {
            rights: p
                .rights
                .as_deref()
                .map(|list| requested_rights(&parent.service, Some(list), None))
                .transpose()?,
            path_prefix: parse_prefix(p.path_prefix.as_deref())?,
            rate_limit: parse_rate(p.rate_limit.as_deref())?,
            ttl: match p.ttl_seconds {
                None => None,
                Some(ttl) if ttl <= 0 => {
                    return Err(IdentityError::invalid(
                        "ttl_seconds",
                        "must be a positive number of seconds",
                    ))
                }
                Some(ttl) => {
                    check_ttl_for_skew(ttl, self.clock.max_skew())?;
                    Some(Duration::from_secs(ttl as u64))
                }
            },
        };
        let now = self.now();
        let claims = self.claims(narrowing.child_of(&parent, now)?, now)?;
        if let Err(widening) = strata_cap::attenuates(&parent, &claims) {
            return Err(refuse(widening.reason().to_owned()));
        }
        // Cluster mode: answered only once etcd has its lineage, so its ancestors' holders
        // can revoke it on any node (recorded in `mint_counted`, before the issuance).
        let issued = self
            .mint_counted(peer, Some(*claims.lineage_root()), &claims)
            .await?;
        self.audit.record(
            "cap.delegated",
            Some(peer),
            json!({"cap_id": issued.cap_id, "parent": parent.jti.to_string(),
                   "rights": claims.rights, "path_prefix": claims.constraints.path_prefix,
                   "expires": issued.expires}),
        );
        Ok(issued)
    }

    /// The claims of a capability with `terms`, minted now: the one way issue and delegate
    /// build a token's claims (a fresh random id, issued at `now`).
    fn claims(&self, terms: Terms, now: Timestamp) -> Result<Claims, IdentityError> {
        Ok(terms.into_claims(CapId::random()?, now))
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
    /// against, if any), in the next group commit: committed when this returns, and
    /// durable for a delegation (see [`crate::issuance_log`]).
    async fn record_minted(
        &self,
        claims: &Claims,
        token: String,
        minted_for: Option<u32>,
    ) -> Result<IssueResult, IdentityError> {
        let constraints = &claims.constraints;
        let record = CapRecord {
            parents: claims.parents.iter().map(ToString::to_string).collect(),
            expires: claims.exp.unix_seconds(),
            minted_for,
            issued_at: Some(claims.iat.unix_seconds()),
            service: Some(claims.service.clone()),
            rights: Some(
                claims
                    .rights
                    .iter()
                    .map(|r| r.as_str().to_owned())
                    .collect(),
            ),
            path_prefix: constraints
                .path_prefix
                .as_ref()
                .map(|p| p.as_str().to_owned()),
            rate_limit: constraints.rate_limit.map(|r| r.to_string()),
            subject: Some(claims.sub.clone()),
        };
        self.issuance.record(&claims.jti, &record).await?;
        Ok(IssueResult {
            token,
            cap_id: claims.jti.to_string(),
            expires: claims.exp.unix_seconds(),
        })
    }

    /// Sign, share the lineage of (a delegation, in cluster mode) and record `claims`,
    /// counted against the caller's quota (and the lineage's,
    /// for a delegation) unless the caller is an admin: RESOURCE_EXHAUSTED past it (see
    /// [`mint_quota`]). A capability counts until its record is pruned (expiry plus the
    /// retention). A record that fails to commit (or whose commit panicked on this
    /// worker) gives its place back; one whose caller went away while it waited stays
    /// counted, like its record (which may yet commit).
    async fn mint_counted(
        &self,
        peer: &PeerCred,
        lineage: Option<CapId>,
        claims: &Claims,
    ) -> Result<IssueResult, IdentityError> {
        let token = self.sign(claims)?;
        if self.is_admin(peer) {
            self.share_lineage(claims).await?;
            return self.record_minted(claims, token, None).await;
        }
        let until = self.kept_until(claims.exp.unix_seconds());
        self.minted
            .reserve(self.now().unix_seconds(), peer.uid, lineage, until)
            .map_err(IdentityError::Exhausted)?;
        let place = Reserved {
            quota: &self.minted,
            uid: peer.uid,
            lineage,
            until,
        };
        // A delegation's lineage reaches etcd (cluster mode) before its issuance is
        // recorded: one that cannot be shared leaves no place used and no record (a
        // lineage record with no capability behind it is harmless, and pruned).
        if let Err(e) = self.share_lineage(claims).await {
            place.cancel();
            return Err(e);
        }
        let outcome = self.record_minted(claims, token, Some(peer.uid)).await;
        if outcome.is_err() {
            place.cancel();
        } else {
            std::mem::forget(place);
        }
        outcome
    }

    /// Rebuild the mint quota's counts from the store, so a restart does not give every
    /// caller a fresh quota while its earlier capabilities' records are kept: each counts
    /// until pruning would drop it, the rule [`Identity::mint_counted`] holds at run time.
    /// Delegations' records are durable; a crash can forget the last few root issues.
    pub(crate) fn count_live_minted(&self) -> Result<(), IdentityError> {
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
}

/// A caller's place in the mint quota, taken for a record not yet committed: given back
/// by [`Reserved::cancel`], or on drop while this thread unwinds (a panic after the
/// reservation). Dropped otherwise (the request's future dropped as its caller went away,
/// while its record may still commit), the place stays counted; forgotten once the record
/// committed.
struct Reserved<'a> {
    quota: &'a crate::mint_quota::MintQuota,
    uid: u32,
    lineage: Option<CapId>,
    until: i64,
}

impl Reserved<'_> {
    fn cancel(self) {
        self.quota.cancel(self.uid, self.lineage, self.until);
        std::mem::forget(self);
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.quota.cancel(self.uid, self.lineage, self.until);
        }
    }
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

/// A subject an admin chose: `svc:<service name>@<node id>`, both by the name rule.
fn parse_subject(subject: &str) -> Result<String, IdentityError> {
    let bad = || {
        IdentityError::invalid(
            "subject",
            "must be `svc:<service>@<node>`, both names matching [a-z][a-z0-9-]{0,62}",
        )
    };
    let (service, node) = subject
        .strip_prefix("svc:")
        .and_then(|rest| rest.split_once('@'))
        .ok_or_else(bad)?;
    ServiceName::parse(service).map_err(|_| bad())?;
    NodeId::parse(node).map_err(|_| bad())?;
    Ok(subject.to_owned())
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

#[cfg(test)]
thread_local! {
    /// Unit tests on a single node: delegations on this thread fail as if etcd did not
    /// record their lineage.
    pub(crate) static FAIL_SHARE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{identity, CALLER, ROOT, T0};
    use strata_proto::methods::identity::IntrospectParams;

    fn ask(ttl: Option<i64>) -> IssueParams {
        IssueParams {
            service: "fs".into(),
            rights: Some(vec!["fs.read".into()]),
            path_prefix: Some("/srv/a".into()),
            ttl_seconds: ttl,
            ..IssueParams::default()
        }
    }

    /// The claims identity signed into `token`, as it reads them back.
    fn claims(identity: &Identity, token: &str) -> Claims {
        let seen = identity.introspect(IntrospectParams {
            token: token.into(),
        });
        serde_json::from_value(seen.claims).unwrap()
    }

    fn field(e: IdentityError) -> &'static str {
        match e {
            IdentityError::Invalid { field, .. } => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn in_cluster_mode_a_ttl_must_outlast_twice_the_clock_skew() {
        // A single node allows any positive ttl.
        assert!(check_ttl_for_skew(1, None).is_ok());
        let skew = Some(Duration::from_secs(5));
        for short in [1, 5, 10] {
            let e = check_ttl_for_skew(short, skew).unwrap_err();
            assert!(e.to_string().contains("more than 10 seconds"), "{e}");
            assert_eq!(field(e), "ttl_seconds");
        }
        assert!(check_ttl_for_skew(11, skew).is_ok());
    }

    #[tokio::test]
    async fn a_capability_is_issued_now_and_expires_its_ttl_later() {
        let (identity, clock, _dir) = identity(Duration::from_secs(60));
        clock.advance(Duration::from_secs(5));
        let issued = identity.issue(&CALLER, ask(Some(300))).await.unwrap();
        assert_eq!(issued.expires, T0 + 5 + 300);
        let c = claims(&identity, &issued.token);
        assert_eq!(c.iat, Timestamp::from_unix_seconds(T0 + 5));
        assert_eq!(c.exp, Timestamp::from_unix_seconds(T0 + 305));
        assert_eq!(c.nbf, None);
        assert_eq!(c.sub, format!("uid:{}", CALLER.uid));
        // No ttl: the default lifetime, from the clock's now.
        clock.advance(Duration::from_secs(10));
        let admin = identity.issue(&ROOT, ask(None)).await.unwrap();
        assert_eq!(admin.expires, T0 + 15 + DEFAULT_TTL_SECONDS);
    }

    #[tokio::test]
    async fn an_admin_may_name_a_services_subject_and_no_one_else_may() {
        let (identity, _clock, _dir) = identity(Duration::from_secs(60));
        let with = |subject: &str| IssueParams {
            subject: Some(subject.into()),
            ..ask(Some(60))
        };
        let issued = identity
            .issue(&ROOT, with("svc:photos@node-1"))
            .await
            .unwrap();
        assert_eq!(claims(&identity, &issued.token).sub, "svc:photos@node-1");
        // A caller the policy lets issue still may not choose whom the token is for, and
        // nothing is minted for it.
        match identity.issue(&CALLER, with("svc:photos@node-1")).await {
            Err(IdentityError::Denied(reason)) => assert!(reason.contains("subject"), "{reason}"),
            other => panic!("expected PERMISSION_DENIED, got {other:?}"),
        }
        assert!(identity.store.live_minted_caps(0).unwrap().is_empty());
        let long = "a".repeat(64);
        for bad in [
            "",
            "uid:0",
            "svc:photos",
            "svc:@node",
            "svc:photos@",
            "svc:Photos@node",
            "svc:photos@node@x",
            "svc:pho/tos@node",
            "svc:photos@node 1",
            " svc:photos@node",
            &format!("svc:{long}@node"),
            &format!("svc:photos@{long}"),
        ] {
            assert_eq!(
                field(identity.issue(&ROOT, with(bad)).await.unwrap_err()),
                "subject",
                "{bad:?}"
            );
        }
        // The longest names are fine.
        let longest = "a".repeat(63);
        let issued = identity
            .issue(&ROOT, with(&format!("svc:{longest}@{longest}")))
            .await
            .unwrap();
        assert_eq!(
            claims(&identity, &issued.token).sub,
            format!("svc:{longest}@{longest}")
        );
    }

    #[tokio::test]
    async fn the_policy_bounds_a_callers_ttl_and_the_maximum_bounds_admins() {
        let (identity, _clock, _dir) = identity(Duration::from_secs(60));
        // The grant's max_ttl_seconds is 600: at it is fine, past it is refused (never
        // silently shortened).
        assert_eq!(
            identity
                .issue(&CALLER, ask(Some(600)))
                .await
                .unwrap()
                .expires,
            T0 + 600
        );
        let e = identity.issue(&CALLER, ask(Some(601))).await.unwrap_err();
        assert!(e.to_string().contains("exceeds the maximum of 600"), "{e}");
        assert_eq!(field(e), "ttl_seconds");
        assert_eq!(
            identity
                .issue(&ROOT, ask(Some(MAX_TTL_SECONDS)))
                .await
                .unwrap()
                .expires,
            T0 + MAX_TTL_SECONDS
        );
        let e = identity
            .issue(&ROOT, ask(Some(MAX_TTL_SECONDS + 1)))
            .await
            .unwrap_err();
        assert_eq!(field(e), "ttl_seconds");
        assert_eq!(
            field(identity.issue(&ROOT, ask(Some(0))).await.unwrap_err()),
            "ttl_seconds"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_delegation_whose_lineage_is_not_shared_uses_no_quota_and_leaves_no_record() {
        use super::FAIL_SHARE;
        let limits = crate::mint_quota::MintLimits {
            per_uid: 2,
            ..Default::default()
        };
        let (identity, _clock, _dir) =
            crate::testing::identity_with(Duration::from_secs(60), limits);
        let parent = identity.issue(&CALLER, ask(Some(600))).await.unwrap();
        let delegate = || {
            identity.delegate(
                &CALLER,
                DelegateParams {
                    token: parent.token.clone(),
                    ..DelegateParams::default()
                },
            )
        };
        FAIL_SHARE.with(|f| f.set(true));
        for _ in 0..3 {
            assert!(matches!(
                delegate().await,
                Err(IdentityError::Unavailable(_))
            ));
        }
        FAIL_SHARE.with(|f| f.set(false));
        assert_eq!(identity.store.live_minted_caps(0).unwrap().len(), 1);
        // The one place left is still there.
        delegate().await.unwrap();
        assert!(matches!(delegate().await, Err(IdentityError::Exhausted(_))));
    }

    #[tokio::test]
    async fn a_delegation_never_outlives_its_parent() {
        let (identity, clock, _dir) = identity(Duration::from_secs(60));
        let parent = identity.issue(&CALLER, ask(Some(600))).await.unwrap();
        clock.advance(Duration::from_secs(100));
        let delegate = |ttl: Option<i64>| {
            identity.delegate(
                &CALLER,
                DelegateParams {
                    token: parent.token.clone(),
                    ttl_seconds: ttl,
                    ..DelegateParams::default()
                },
            )
        };
        // Inherited: it expires with the parent.
        let inherited = delegate(None).await.unwrap();
        assert_eq!(inherited.expires, parent.expires);
        // A ttl counts from now, and the child is issued now.
        let short = delegate(Some(50)).await.unwrap();
        assert_eq!(short.expires, T0 + 150);
        assert_eq!(
            claims(&identity, &short.token).iat,
            Timestamp::from_unix_seconds(T0 + 100)
        );
        // Up to the parent's expiry and not a second beyond.
        assert_eq!(delegate(Some(500)).await.unwrap().expires, parent.expires);
        match delegate(Some(501)).await {
            Err(IdentityError::Denied(reason)) => assert!(reason.contains("outlive"), "{reason}"),
            other => panic!("expected PERMISSION_DENIED, got {other:?}"),
        }
        // Once the parent expired on the clock, it delegates nothing.
        clock.advance(Duration::from_secs(500));
        assert!(matches!(
            delegate(None).await,
            Err(IdentityError::Unauthenticated(_))
        ));
    }
}
