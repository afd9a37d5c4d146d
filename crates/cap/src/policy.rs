//! [`authorize`]: the one function that decides whether a verified capability may call a
//! method (SPEC §1, invariant 3). Services call it; they never re-implement any part of it.

use crate::claims::Claims;
use crate::clock::{Clock, Timestamp};
use crate::error::quoted;
use crate::ids::{split_method, CapId};
use crate::rate::RateLimiter;
use crate::revocation::RevocationSet;
use std::fmt;
use std::time::Duration;
use strata_proto::ErrorCode;

/// What [`authorize`] consults besides the claims: the time, the revocations and the rate
/// buckets. Build one per request with [`AuthContext::new`], which reads the clock once.
#[derive(Clone, Copy)]
pub struct AuthContext<'a> {
    /// Wall-clock time, compared with `exp` and `nbf`.
    pub now: Timestamp,
    /// Monotonic time, for the rate buckets.
    pub monotonic: Duration,
    /// How far the issuing node's clock may be from `now` ([`Clock::max_skew`]): `None`
    /// on a single node.
    pub max_skew: Option<Duration>,
    /// Revoked capabilities.
    pub revocations: &'a RevocationSet,
    /// Per-capability rate buckets.
    pub rate_limiter: &'a RateLimiter,
}

impl<'a> AuthContext<'a> {
    /// A context reading the time from `clock` now.
    pub fn new(
        clock: &dyn Clock,
        revocations: &'a RevocationSet,
        rate_limiter: &'a RateLimiter,
    ) -> AuthContext<'a> {
        AuthContext {
            now: clock.now(),
            monotonic: clock.monotonic(),
            max_skew: clock.max_skew(),
            revocations,
            rate_limiter,
        }
    }
}

impl fmt::Debug for AuthContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("now", &self.now)
            .field("monotonic", &self.monotonic)
            .field("max_skew", &self.max_skew)
            .finish_non_exhaustive()
    }
}

/// Why [`authorize`] said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenialKind {
    /// `nbf` is in the future, or (cluster mode) `iat` is further ahead of this node's
    /// clock than the cluster's max clock skew allows.
    NotYetValid,
    /// `exp` has passed.
    Expired,
    /// The capability, or one it was delegated from, was revoked.
    Revoked,
    /// The method's name has no `service.` prefix.
    BadMethod,
    /// The token is for another service.
    WrongService,
    /// The token grants neither the right nor the legacy action for the method.
    MissingRight,
    /// The capability's rate limit is used up; retry after the given time.
    RateLimited {
        /// How long until the bucket has room for one request.
        retry_after: Duration,
    },
}

impl DenialKind {
    /// The protocol error code for this kind of refusal.
    pub fn code(self) -> ErrorCode {
        match self {
            DenialKind::NotYetValid | DenialKind::Expired | DenialKind::Revoked => {
                ErrorCode::Unauthenticated
            }
            DenialKind::BadMethod | DenialKind::WrongService | DenialKind::MissingRight => {
                ErrorCode::PermissionDenied
            }
            DenialKind::RateLimited { .. } => ErrorCode::ResourceExhausted,
        }
    }
}

/// A refusal from [`authorize`]: a kind (for code mapping and audit) and a reason for the
/// person who was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denial {
    kind: DenialKind,
    reason: String,
}

impl Denial {
    fn new(kind: DenialKind, reason: String) -> Denial {
        Denial { kind, reason }
    }

    /// Why, as a value.
    pub fn kind(&self) -> DenialKind {
        self.kind
    }

    /// Why, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The protocol error code to answer with: expired, not yet valid or revoked →
    /// `UNAUTHENTICATED`; wrong service or missing right → `PERMISSION_DENIED`; rate limit
    /// → `RESOURCE_EXHAUSTED`.
    pub fn code(&self) -> ErrorCode {
        self.kind.code()
    }
}

/// Decides whether the capability in `claims` may call `method` (e.g. `fs.read`) now.
///
/// In order, each failure ending the check:
/// 1. `nbf` ≤ now < `exp` on `ctx`'s wall clock; in cluster mode (`ctx.max_skew` set)
///    for every clock within the skew of it, and `iat` is at most the skew ahead
///    ([`check_current`]);
/// 2. neither the capability nor any of its `parents` is revoked;
/// 3. the token's `service` is the method's service (the part before the first dot);
/// 4. the token grants the method: a right equal to the full method name, or a legacy
///    action equal to the part after the first dot;
/// 5. the capability's rate limits have room: one request is taken from its own bucket
///    (`rate_limit`, keyed by `jti`) and from every bucket it shares with its lineage or
///    grant (`shared_rate_limits`), or from none of them if any is used up. Only
///    requests that pass 1–4 take from the buckets.
///
/// `path_prefix` is not checked here: fs enforces it by resolving paths beneath the prefix
/// ([`Claims::path_prefix`]). The claims must come from a verified token
/// ([`Verifier::verify`](crate::Verifier::verify)); a token whose constraints could not be
/// parsed was already refused there (fail closed).
pub fn authorize(claims: &Claims, method: &str, ctx: &AuthContext<'_>) -> Result<(), Denial> {
    check_current(claims, ctx.now, ctx.max_skew, ctx.revocations)?;

    let Some((service, action)) = split_method(method) else {
        return Err(Denial::new(
            DenialKind::BadMethod,
            format!(
                "method {} is not of the form service.method",
                quoted(method)
            ),
        ));
    };
    if claims.service != service {
        return Err(Denial::new(
            DenialKind::WrongService,
            format!(
                "token is for service {}, not {}",
                quoted(&claims.service),
                quoted(service)
            ),
        ));
    }
    let granted = claims.rights.iter().any(|r| r.as_str() == method)
        || claims.actions.iter().any(|a| a == action);
    if !granted {
        return Err(Denial::new(
            DenialKind::MissingRight,
            format!("token does not grant {}", quoted(method)),
        ));
    }

    let refused = if claims.constraints.shared_rate_limits.is_empty() {
        // The common case, without building a list: the capability's own bucket only.
        claims.rate_limit().and_then(|limit| {
            ctx.rate_limiter
                .check(&claims.jti, limit, ctx.monotonic)
                .err()
                .map(|wait| ((claims.jti, limit), wait))
        })
    } else {
        let buckets = claims.rate_buckets();
        ctx.rate_limiter
            .check_all(&buckets, ctx.monotonic)
            .err()
            .map(|(i, wait)| (buckets[i], wait))
    };
    if let Some(((bucket, limit), retry_after)) = refused {
        let whose = if bucket == claims.jti {
            "this capability"
        } else {
            "the capabilities this one shares it with (its lineage or grant)"
        };
        return Err(Denial::new(
            DenialKind::RateLimited { retry_after },
            format!(
                "rate limit {limit} for {whose} is used up; retry in {} ms",
                retry_after.as_millis().max(1)
            ),
        ));
    }
    Ok(())
}

/// Checks 1 and 2 of [`authorize`] alone: the capability is within `nbf`..`exp` at `now`
/// and neither it nor an ancestor is revoked. For operations on a capability itself
/// (identity's delegate and revoke) that are not calls of the capability's service.
///
/// `max_skew` ([`Clock::max_skew`]) is how far the issuing node's clock may be from the one
/// that read `now`: `None` on a single node. With a skew `s`, the window is read as the
/// issuer's clock could be reading it, and a token is current only if it is current for
/// every such reading: expired from `exp - s` on, valid only from `nbf + s` on, so that no
/// node honours a token outside `nbf..exp` of the issuer's clock while the clocks are
/// within `s` of each other. A token whose `iat` is more than `s` ahead of `now` is refused
/// as not yet valid: its issuer's clock is further from this one than the bound, and the
/// guarantee would not hold.
pub fn check_current(
    claims: &Claims,
    now: Timestamp,
    max_skew: Option<Duration>,
    revocations: &RevocationSet,
) -> Result<(), Denial> {
    if let Some(reason) = valid_later(claims, now, max_skew) {
        return Err(Denial::new(DenialKind::NotYetValid, reason));
    }
    if expired(claims, now, max_skew) {
        let reason = match max_skew {
            None => format!("token expired at {}", claims.exp),
            Some(skew) => format!(
                "token expired at {} less this cluster's max clock skew of {}",
                claims.exp,
                skew_text(skew)
            ),
        };
        return Err(Denial::new(DenialKind::Expired, reason));
    }
    check_revocation(claims, revocations)
}

/// `5s`, or `250ms` when not whole seconds.
fn skew_text(skew: Duration) -> String {
    if skew.subsec_nanos() == 0 {
        format!("{}s", skew.as_secs())
    } else {
        format!("{}ms", skew.as_millis())
    }
}

/// Where a verified capability stands at a time, each fact on its own: what
/// [`check_current`] refuses on, for reports that show all of them
/// (`identity.introspect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// `nbf` is after the time.
    pub not_yet_valid: bool,
    /// `exp` is at or before the time.
    pub expired: bool,
    /// The capability or one of its ancestors is revoked.
    pub revoked: bool,
}

impl Standing {
    /// How `claims` stand at `now` against `revocations`, allowing for `max_skew`, by the
    /// rules of [`check_current`].
    pub fn of(
        claims: &Claims,
        now: Timestamp,
        max_skew: Option<Duration>,
        revocations: &RevocationSet,
    ) -> Standing {
        Standing {
            not_yet_valid: valid_later(claims, now, max_skew).is_some(),
            expired: expired(claims, now, max_skew),
            revoked: revocations.covers(claims),
        }
    }

    /// Whether [`check_current`] accepts the capability: none of the three.
    pub fn is_current(&self) -> bool {
        !(self.not_yet_valid || self.expired || self.revoked)
    }
}

/// Why a capability is not valid yet at `now`, if it is not: valid from `nbf` on,
/// inclusive, plus the skew; in cluster mode `iat` at most the skew ahead.
fn valid_later(claims: &Claims, now: Timestamp, max_skew: Option<Duration>) -> Option<String> {
    let skew = max_skew.unwrap_or_default();
    if let Some(nbf) = claims.nbf.filter(|&nbf| now < nbf.saturating_add(skew)) {
        return Some(match max_skew {
            None => format!("token is not valid before {nbf}"),
            Some(skew) => format!(
                "token is not valid before {nbf} plus this cluster's max clock skew of {}",
                skew_text(skew)
            ),
        });
    }
    let skew = max_skew?;
    (claims.iat > now.saturating_add(skew)).then(|| {
        format!(
            "token was issued at {}, more than this cluster's max clock skew of {} ahead of \
             this node's clock ({now}): the two nodes' clocks are further apart than allowed",
            claims.iat,
            skew_text(skew)
        )
    })
}

/// Valid until `exp`, exclusive; until `exp` less the skew in cluster mode.
fn expired(claims: &Claims, now: Timestamp, max_skew: Option<Duration>) -> bool {
    now.saturating_add(max_skew.unwrap_or_default()) >= claims.exp
}

fn check_revocation(claims: &Claims, revocations: &RevocationSet) -> Result<(), Denial> {
    if revocations.is_empty() {
        return Ok(());
    }
    let revoked = |id: &CapId, what: &str| {
        Denial::new(DenialKind::Revoked, format!("{what} {id} has been revoked"))
    };
    if revocations.is_revoked(&claims.jti) {
        return Err(revoked(&claims.jti, "capability"));
    }
    for parent in &claims.parents {
        if revocations.is_revoked(parent) {
            return Err(revoked(
                parent,
                "this capability was delegated from capability",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Constraints;
    use crate::clock::ManualClock;

    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn claims() -> Claims {
        Claims {
            jti: CapId::from_bytes([0xab; 16]),
            sub: "uid:1000".into(),
            iss: "identity@node-1".into(),
            aud: "strata".into(),
            iat: Timestamp::from_unix_seconds(T0),
            exp: Timestamp::from_unix_seconds(T0 + 3600),
            nbf: None,
            service: "fs".into(),
            actions: vec![],
            rights: vec!["fs.read".parse().unwrap(), "fs.open".parse().unwrap()],
            constraints: Constraints::default(),
            parents: vec![],
        }
    }

    struct Fixture {
        clock: ManualClock,
        revocations: RevocationSet,
        limiter: RateLimiter,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                clock: ManualClock::new(Timestamp::from_unix_seconds(T0 + 60)),
                revocations: RevocationSet::new(),
                limiter: RateLimiter::new(64),
            }
        }

        fn check(&self, claims: &Claims, method: &str) -> Result<(), Denial> {
            authorize(
                claims,
                method,
                &AuthContext::new(&self.clock, &self.revocations, &self.limiter),
            )
        }
    }

    fn kind(r: Result<(), Denial>) -> DenialKind {
        r.expect_err("expected a denial").kind()
    }

    #[test]
    fn grants_a_held_right() {
        let f = Fixture::new();
        assert_eq!(f.check(&claims(), "fs.read"), Ok(()));
        assert_eq!(f.check(&claims(), "fs.open"), Ok(()));
    }

    #[test]
    fn refuses_a_missing_right_as_permission_denied() {
        let f = Fixture::new();
        let denial = f.check(&claims(), "fs.list").unwrap_err();
        assert_eq!(denial.kind(), DenialKind::MissingRight);
        assert_eq!(denial.code(), ErrorCode::PermissionDenied);
        assert!(denial.reason().contains("fs.list"), "{denial}");
    }

    #[test]
    fn refuses_another_service_even_with_a_matching_action() {
        let f = Fixture::new();
        let mut c = claims();
        c.actions = vec!["read".into()];
        let denial = f.check(&c, "registry.read").unwrap_err();
        assert_eq!(denial.kind(), DenialKind::WrongService);
        assert_eq!(denial.code(), ErrorCode::PermissionDenied);
    }

    #[test]
    fn a_right_for_another_service_does_not_grant() {
        // Service must match even if a right names the method exactly.
        let f = Fixture::new();
        let mut c = claims();
        c.rights = vec!["registry.list".parse().unwrap()];
        assert_eq!(kind(f.check(&c, "registry.list")), DenialKind::WrongService);
        assert_eq!(kind(f.check(&c, "fs.list")), DenialKind::MissingRight);
    }

    #[test]
    fn legacy_actions_match_the_part_after_the_first_dot() {
        let f = Fixture::new();
        let mut c = claims();
        c.rights.clear();
        c.actions = vec!["read".into()];
        assert_eq!(f.check(&c, "fs.read"), Ok(()));
        assert_eq!(kind(f.check(&c, "fs.open")), DenialKind::MissingRight);

        c.service = "supervisor".into();
        c.actions = vec!["svc.start".into()];
        assert_eq!(f.check(&c, "supervisor.svc.start"), Ok(()));
        c.actions = vec!["start".into()];
        assert_eq!(
            kind(f.check(&c, "supervisor.svc.start")),
            DenialKind::MissingRight
        );
    }

    #[test]
    fn refuses_a_method_without_a_service() {
        let f = Fixture::new();
        assert_eq!(kind(f.check(&claims(), "read")), DenialKind::BadMethod);
        assert_eq!(kind(f.check(&claims(), "")), DenialKind::BadMethod);
    }

    #[test]
    fn expiry_is_exclusive_and_unauthenticated() {
        let f = Fixture::new();
        let c = claims();
        f.clock.set_wall(Timestamp::from_unix_seconds(T0 + 3599));
        assert_eq!(f.check(&c, "fs.read"), Ok(()));
        f.clock.advance(Duration::from_secs(1));
        let denial = f.check(&c, "fs.read").unwrap_err();
        assert_eq!(denial.kind(), DenialKind::Expired);
        assert_eq!(denial.code(), ErrorCode::Unauthenticated);
        assert!(denial.reason().contains("2026-01-01T01:00:00Z"), "{denial}");
    }

    #[test]
    fn not_before_is_enforced() {
        let f = Fixture::new();
        let mut c = claims();
        c.nbf = Some(Timestamp::from_unix_seconds(T0 + 120));
        let denial = f.check(&c, "fs.read").unwrap_err();
        assert_eq!(denial.kind(), DenialKind::NotYetValid);
        assert_eq!(denial.code(), ErrorCode::Unauthenticated);
        f.clock.advance(Duration::from_secs(60));
        assert_eq!(f.check(&c, "fs.read"), Ok(()));
    }

    /// A verifier whose wall clock reads `offset` seconds from the issuer's (the real
    /// time, here), in a cluster allowing `skew` seconds.
    fn skewed(real: i64, offset: i64, skew: Option<u64>) -> Fixture {
        let mut f = Fixture::new();
        f.clock = ManualClock::new(Timestamp::from_unix_seconds(real + offset))
            .with_max_skew(skew.map(Duration::from_secs));
        f
    }

    #[test]
    fn a_verifier_behind_the_issuer_refuses_a_token_at_the_issuers_exp() {
        // Issued at T0 by a correct clock, expiring at T0 + 3600 (real time).
        let c = claims();
        let exp = T0 + 3600;
        // Without an allowance a clock 5 s behind honours the token 5 s past its exp.
        assert_eq!(skewed(exp + 4, -5, None).check(&c, "fs.read"), Ok(()));
        // With the cluster's 5 s it is refused from the real exp on.
        assert_eq!(skewed(exp - 1, -5, Some(5)).check(&c, "fs.read"), Ok(()));
        for real in [exp, exp + 1, exp + 4, exp + 60] {
            let denial = skewed(real, -5, Some(5)).check(&c, "fs.read").unwrap_err();
            assert_eq!(
                denial.kind(),
                DenialKind::Expired,
                "real time exp{:+}",
                real - exp
            );
            assert_eq!(denial.code(), ErrorCode::Unauthenticated);
            assert!(denial.reason().contains("max clock skew of 5s"), "{denial}");
        }
    }

    #[test]
    fn a_verifier_ahead_of_the_issuer_refuses_early_and_accepts_fresh_tokens() {
        let c = claims();
        let exp = T0 + 3600;
        // A token fresh from the issuer is good on a node 5 s ahead or behind.
        for offset in [-5, 0, 5] {
            assert_eq!(
                skewed(T0, offset, Some(5)).check(&c, "fs.read"),
                Ok(()),
                "offset {offset}"
            );
        }
        // Ahead: refused 10 s before the real exp (its clock reads exp - 5 then), never after.
        assert_eq!(skewed(exp - 11, 5, Some(5)).check(&c, "fs.read"), Ok(()));
        for real in [exp - 10, exp, exp + 5] {
            assert_eq!(
                kind(skewed(real, 5, Some(5)).check(&c, "fs.read")),
                DenialKind::Expired
            );
        }
    }

    #[test]
    fn a_token_issued_further_ahead_than_the_skew_is_not_yet_valid() {
        let c = claims();
        // The verifier is 6 s behind the issuer: outside the 5 s bound, so its clock
        // cannot be trusted to judge the window.
        let denial = skewed(T0, -6, Some(5)).check(&c, "fs.read").unwrap_err();
        assert_eq!(denial.kind(), DenialKind::NotYetValid);
        assert_eq!(denial.code(), ErrorCode::Unauthenticated);
        assert!(denial.reason().contains("issued at"), "{denial}");
        // Once its clock has caught up to within the bound it is good.
        assert_eq!(skewed(T0 + 1, -6, Some(5)).check(&c, "fs.read"), Ok(()));
        // A single node checks only its own tokens: no `iat` check there.
        assert_eq!(skewed(T0, -60, None).check(&c, "fs.read"), Ok(()));
    }

    #[test]
    fn not_before_allows_for_the_skew_in_the_safe_direction() {
        let mut c = claims();
        c.nbf = Some(Timestamp::from_unix_seconds(T0 + 120));
        // A node 5 s ahead of the issuer would honour it 5 s early; with the allowance it
        // waits until every clock within the bound is past nbf.
        assert_eq!(skewed(T0 + 119, 5, None).check(&c, "fs.read"), Ok(()));
        let denial = skewed(T0 + 119, 5, Some(5))
            .check(&c, "fs.read")
            .unwrap_err();
        assert_eq!(denial.kind(), DenialKind::NotYetValid);
        assert!(denial.reason().contains("max clock skew"), "{denial}");
        assert_eq!(skewed(T0 + 120, 5, Some(5)).check(&c, "fs.read"), Ok(()));
    }

    #[test]
    fn a_revoked_token_is_refused_whatever_the_skew() {
        let c = claims();
        for offset in [-5, 0, 5] {
            let f = skewed(T0 + 60, offset, Some(5));
            f.revocations.insert(c.jti, None);
            assert_eq!(
                kind(f.check(&c, "fs.read")),
                DenialKind::Revoked,
                "{offset}"
            );
        }
    }

    #[test]
    fn standing_reports_what_check_current_decides_with_the_skew() {
        let c = claims();
        let exp = Timestamp::from_unix_seconds(T0 + 3600);
        let at = exp.saturating_sub(Duration::from_secs(2));
        let revoked = RevocationSet::new();
        let skew = Some(Duration::from_secs(5));
        assert!(Standing::of(&c, at, None, &revoked).is_current());
        assert!(check_current(&c, at, None, &revoked).is_ok());
        let standing = Standing::of(&c, at, skew, &revoked);
        assert!(standing.expired && !standing.not_yet_valid, "{standing:?}");
        assert_eq!(
            check_current(&c, at, skew, &revoked).unwrap_err().kind(),
            DenialKind::Expired
        );
    }

    #[test]
    fn revocation_of_the_capability_or_any_ancestor_denies() {
        let f = Fixture::new();
        let root = CapId::from_bytes([1; 16]);
        let middle = CapId::from_bytes([2; 16]);
        let mut c = claims();
        c.parents = vec![root, middle];
        assert_eq!(f.check(&c, "fs.read"), Ok(()));

        f.revocations.insert(CapId::from_bytes([9; 16]), None);
        assert_eq!(f.check(&c, "fs.read"), Ok(()), "unrelated revocation");

        f.revocations.insert(middle, None);
        let denial = f.check(&c, "fs.read").unwrap_err();
        assert_eq!(denial.kind(), DenialKind::Revoked);
        assert_eq!(denial.code(), ErrorCode::Unauthenticated);

        let f = Fixture::new();
        f.revocations.insert(root, None);
        assert_eq!(kind(f.check(&c, "fs.read")), DenialKind::Revoked);

        let f = Fixture::new();
        f.revocations.insert(c.jti, None);
        assert_eq!(kind(f.check(&c, "fs.read")), DenialKind::Revoked);
    }

    #[test]
    fn rate_limit_is_per_capability_and_resource_exhausted() {
        let f = Fixture::new();
        let mut c = claims();
        c.constraints.rate_limit = Some("2rps".parse().unwrap());
        assert_eq!(f.check(&c, "fs.read"), Ok(()));
        assert_eq!(f.check(&c, "fs.read"), Ok(()));
        let denial = f.check(&c, "fs.read").unwrap_err();
        assert_eq!(
            denial.kind(),
            DenialKind::RateLimited {
                retry_after: Duration::from_millis(500)
            }
        );
        assert_eq!(denial.code(), ErrorCode::ResourceExhausted);

        // Another capability has its own bucket.
        let mut other = c.clone();
        other.jti = CapId::from_bytes([0xcd; 16]);
        assert_eq!(f.check(&other, "fs.read"), Ok(()));

        f.clock.advance(Duration::from_millis(500));
        assert_eq!(f.check(&c, "fs.read"), Ok(()));
        assert!(f.check(&c, "fs.read").is_err());
    }

    #[test]
    fn denied_requests_do_not_use_up_the_rate_limit() {
        let f = Fixture::new();
        let mut c = claims();
        c.constraints.rate_limit = Some("1rph".parse().unwrap());
        for _ in 0..10 {
            assert_eq!(kind(f.check(&c, "fs.list")), DenialKind::MissingRight);
        }
        assert_eq!(f.check(&c, "fs.read"), Ok(()));
        assert!(matches!(
            kind(f.check(&c, "fs.read")),
            DenialKind::RateLimited { .. }
        ));
    }

    #[test]
    fn denial_converts_to_the_crate_error_with_the_same_code() {
        let f = Fixture::new();
        let denial = f.check(&claims(), "fs.list").unwrap_err();
        let err = crate::Error::from(denial.clone());
        assert_eq!(err.code(), ErrorCode::PermissionDenied);
        assert_eq!(err.to_string(), denial.reason());
    }
}
