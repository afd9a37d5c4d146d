//! Delegation: what a child capability may be given from its parent. [`Narrowing`] is what
//! a delegation asks for (anything omitted is inherited from the parent) and
//! [`attenuates`] is the one rule that judges the result: a child allows nothing its
//! parent does not. Identity builds every child with the first and checks it with the
//! second; verifiers never need either (a child is checked like any token).

use crate::claims::{Claims, Constraints};
use crate::clock::Timestamp;
use crate::error::{quoted, Error};
use crate::ids::{PathPrefix, Right};
use crate::rate::RateLimit;

/// Why [`attenuates`] refused a child: the part of the claims that widened, and a reason
/// for the person who asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Widening {
    what: &'static str,
    reason: String,
}

impl Widening {
    fn new(what: &'static str, reason: String) -> Widening {
        Widening { what, reason }
    }

    /// The claim that widened: `service`, `sub`, `aud`, `iss`, `parents`, `rights`,
    /// `exp`, `nbf`, `path_prefix`, `rate_limit` or `shared_rate_limits`.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Why, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Whether `child` is an attenuation of `parent`: it allows nothing `parent` does not.
/// The one rule for delegation (identity checks every child it mints with it).
///
/// A constraint whose absence a verifier treats as "deny" is never widened; one whose
/// absence means "unlimited" may be added. In order:
/// - the same `service`, `sub`, `aud` and `iss`; `parents` is the parent's ancestors
///   then the parent, at most [`Claims::MAX_PARENTS`] long (so revoking any ancestor
///   revokes the child, and delegation depth is bounded);
/// - rights ⊆ the parent's (legacy actions count as the rights they name);
/// - `exp` ≤ the parent's; valid from no earlier than the parent (`nbf`);
/// - `path_prefix`: the parent's contains the child's ([`PathPrefix::contains`], sound
///   because fs follows no symlink in a prefix). A parent **without** a prefix has no
///   child with one: fs refuses every token without a prefix, so "no prefix" is a
///   denial, not a wildcard;
/// - `rate_limit`: if the parent has one, the child has one [at most] it (burst and
///   rate); a parent without one may have a limited child;
/// - `shared_rate_limits`: the child carries every bucket
///   [`Claims::shared_rate_limits_for_child`] names, so the parent's limit (and its
///   ancestors' and grant's) holds across all its descendants.
///
/// [`PathPrefix::contains`]: crate::PathPrefix::contains
/// [at most]: crate::RateLimit::at_most
pub fn attenuates(parent: &Claims, child: &Claims) -> Result<(), Widening> {
    let same = |what: &'static str, p: &str, c: &str| {
        if p == c {
            Ok(())
        } else {
            Err(Widening::new(
                what,
                format!(
                    "{what} {} differs from the parent's {}",
                    quoted(c),
                    quoted(p)
                ),
            ))
        }
    };
    same("service", &parent.service, &child.service)?;
    same("sub", &parent.sub, &child.sub)?;
    same("aud", &parent.aud, &child.aud)?;
    same("iss", &parent.iss, &child.iss)?;

    if parent.parents.len() >= Claims::MAX_PARENTS {
        return Err(Widening::new(
            "parents",
            format!(
                "the capability is already {} delegations deep, the most allowed",
                parent.parents.len()
            ),
        ));
    }
    let lineage_ok = child.parents.len() == parent.parents.len() + 1
        && child.parents[..parent.parents.len()] == parent.parents[..]
        && child.parents.last() == Some(&parent.jti);
    if !lineage_ok {
        return Err(Widening::new(
            "parents",
            "parents must be the parent's ancestors followed by the parent".into(),
        ));
    }

    let granted = parent.effective_rights();
    if let Some(extra) = child
        .effective_rights()
        .into_iter()
        .find(|r| !granted.contains(r))
    {
        return Err(Widening::new(
            "rights",
            format!("right {} is not in the parent capability", quoted(&extra)),
        ));
    }

    if child.exp > parent.exp {
        return Err(Widening::new(
            "exp",
            format!(
                "the child would outlive the parent capability (expires {})",
                parent.exp
            ),
        ));
    }
    if let Some(parent_nbf) = parent.nbf {
        if child.nbf.unwrap_or(child.iat) < parent_nbf {
            return Err(Widening::new(
                "nbf",
                format!("the child would be valid before the parent ({parent_nbf})"),
            ));
        }
    }

    match (&parent.constraints.path_prefix, &child.constraints.path_prefix) {
        (None, None) => {}
        (None, Some(c)) => {
            return Err(Widening::new(
                "path_prefix",
                format!(
                    "path_prefix {} cannot be added: the parent has no path_prefix, which                      fs treats as no file access at all",
                    quoted(c.as_str())
                ),
            ))
        }
        (Some(p), None) => {
            return Err(Widening::new(
                "path_prefix",
                format!(
                    "the child must keep a path_prefix inside the parent's {}",
                    quoted(p.as_str())
                ),
            ))
        }
        (Some(p), Some(c)) if !p.contains(c) => {
            return Err(Widening::new(
                "path_prefix",
                format!(
                    "path_prefix {} is outside the parent's {}",
                    quoted(c.as_str()),
                    quoted(p.as_str())
                ),
            ))
        }
        (Some(_), Some(_)) => {}
    }

    match (parent.constraints.rate_limit, child.constraints.rate_limit) {
        (Some(p), None) => {
            return Err(Widening::new(
                "rate_limit",
                format!("the child must keep a rate_limit at most the parent's {p}"),
            ))
        }
        (Some(p), Some(c)) if !c.at_most(p) => {
            return Err(Widening::new(
                "rate_limit",
                format!(
                    "rate_limit {c} is above the parent's {p} (a child's burst and rate must                      each be at most the parent's)"
                ),
            ))
        }
        _ => {}
    }
    let required = parent.shared_rate_limits_for_child();
    if let Some(missing) = required
        .iter()
        .find(|s| !child.constraints.shared_rate_limits.contains(s))
    {
        return Err(Widening::new(
            "shared_rate_limits",
            format!(
                "the child must share bucket {} ({}) with the parent",
                missing.bucket, missing.rate_limit
            ),
        ));
    }
    Ok(())
}

/// A capability before it is minted: everything in its [`Claims`] but its id, issue time
/// and the legacy `actions` (derived from `rights`). Identity fills one in for a root issue
/// (from its policy) or gets one from [`Narrowing::child_of`] for a delegation, and mints
/// either with [`Terms::into_claims`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    /// Whom the capability is for (`uid:…`).
    pub sub: String,
    /// The issuer, `identity@<node>`.
    pub iss: String,
    /// The audience, [`Claims::AUDIENCE`].
    pub aud: String,
    /// The one service the capability is for.
    pub service: String,
    /// The rights granted, all for `service`.
    pub rights: Vec<Right>,
    /// Path prefix and rate limits.
    pub constraints: Constraints,
    /// When the capability expires.
    pub exp: Timestamp,
    /// The capabilities it was delegated from, root first; empty for a root issue.
    pub parents: Vec<crate::ids::CapId>,
}

impl Terms {
    /// The claims of a capability with these terms, minted at `iat` as `jti`: valid from
    /// `iat` (no `nbf`), with the legacy `actions` the rights name.
    pub fn into_claims(self, jti: crate::ids::CapId, iat: Timestamp) -> Claims {
        Claims {
            jti,
            sub: self.sub,
            iss: self.iss,
            aud: self.aud,
            iat,
            exp: self.exp,
            nbf: None,
            service: self.service,
            actions: self.rights.iter().map(|r| r.method().to_owned()).collect(),
            rights: self.rights,
            constraints: self.constraints,
            parents: self.parents,
        }
    }
}

/// What a delegation asks for; each `None` is inherited from the parent. Nothing here is
/// judged: the child built from it ([`Narrowing::child_of`]) is checked by [`attenuates`],
/// which refuses it whole if it widens anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// The child's rights; `None`: the parent's (its legacy actions as the rights they name).
    pub rights: Option<Vec<Right>>,
    /// The child's path prefix; `None`: the parent's.
    pub path_prefix: Option<PathPrefix>,
    /// The child's own rate limit; `None`: the parent's.
    pub rate_limit: Option<RateLimit>,
    /// The child's lifetime from now; `None`: it expires with the parent.
    pub ttl: Option<std::time::Duration>,
}

impl Narrowing {
    /// The terms of the child of `parent` this asks for at `now`: what is asked, else
    /// the parent's; the same `sub`, `aud`, `iss` and service; `parents` the parent's
    /// ancestors then the parent; and every rate-limit bucket the parent shares with its
    /// lineage or grant ([`Claims::shared_rate_limits_for_child`]), so the parent's limits
    /// hold across all its descendants. Fails only if the parent's own rights do not parse.
    pub fn child_of(self, parent: &Claims, now: Timestamp) -> Result<Terms, Error> {
        let rights = match self.rights {
            Some(rights) => rights,
            None => parent
                .effective_rights()
                .iter()
                .map(|r| r.parse())
                .collect::<Result<Vec<Right>, _>>()?,
        };
        let exp = match self.ttl {
            None => parent.exp,
            Some(ttl) => now.saturating_add(ttl),
        };
        let mut parents = parent.parents.clone();
        parents.push(parent.jti);
        Ok(Terms {
            sub: parent.sub.clone(),
            iss: parent.iss.clone(),
            aud: parent.aud.clone(),
            service: parent.service.clone(),
            rights,
            constraints: Constraints {
                path_prefix: self
                    .path_prefix
                    .or_else(|| parent.constraints.path_prefix.clone()),
                rate_limit: self.rate_limit.or(parent.constraints.rate_limit),
                shared_rate_limits: parent.shared_rate_limits_for_child(),
            },
            exp,
            parents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CapId;
    use std::time::Duration;

    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn parent() -> Claims {
        Terms {
            sub: "uid:1000".into(),
            iss: "identity@node-1".into(),
            aud: "strata".into(),
            service: "fs".into(),
            rights: vec!["fs.open".parse().unwrap(), "fs.read".parse().unwrap()],
            constraints: Constraints {
                path_prefix: Some("/srv/data".parse().unwrap()),
                rate_limit: Some("5rps".parse().unwrap()),
                shared_rate_limits: vec![],
            },
            exp: Timestamp::from_unix_seconds(T0 + 3600),
            parents: vec![],
        }
        .into_claims(CapId::from_bytes([1; 16]), Timestamp::from_unix_seconds(T0))
    }

    #[test]
    fn into_claims_derives_the_legacy_actions_and_is_valid_from_iat() {
        let p = parent();
        assert_eq!(p.actions, ["open", "read"]);
        assert_eq!(p.iat, Timestamp::from_unix_seconds(T0));
        assert_eq!(p.nbf, None);
    }

    #[test]
    fn a_child_inherits_what_it_does_not_ask_for_and_attenuates() {
        let p = parent();
        let now = Timestamp::from_unix_seconds(T0 + 10);
        let terms = Narrowing::default().child_of(&p, now).unwrap();
        assert_eq!(terms.rights, p.rights);
        assert_eq!(terms.constraints.path_prefix, p.constraints.path_prefix);
        assert_eq!(terms.constraints.rate_limit, p.constraints.rate_limit);
        assert_eq!(terms.exp, p.exp, "no ttl: it expires with the parent");
        assert_eq!(terms.parents, [p.jti]);
        assert_eq!(
            terms.constraints.shared_rate_limits,
            p.shared_rate_limits_for_child()
        );
        let child = terms.into_claims(CapId::from_bytes([2; 16]), now);
        attenuates(&p, &child).unwrap();
    }

    #[test]
    fn a_child_asking_narrower_gets_it_and_a_ttl_counts_from_now() {
        let p = parent();
        let now = Timestamp::from_unix_seconds(T0 + 100);
        let terms = Narrowing {
            rights: Some(vec!["fs.read".parse().unwrap()]),
            path_prefix: Some("/srv/data/sub".parse().unwrap()),
            rate_limit: Some("1rps".parse().unwrap()),
            ttl: Some(Duration::from_secs(60)),
        }
        .child_of(&p, now)
        .unwrap();
        assert_eq!(terms.exp, Timestamp::from_unix_seconds(T0 + 160));
        assert_eq!(terms.rights.len(), 1);
        let child = terms.into_claims(CapId::from_bytes([2; 16]), now);
        attenuates(&p, &child).unwrap();
        // A ttl reaching past the parent's expiry is refused, never clamped.
        let long = Narrowing {
            ttl: Some(Duration::from_secs(3600)),
            ..Narrowing::default()
        }
        .child_of(&p, now)
        .unwrap()
        .into_claims(CapId::from_bytes([3; 16]), now);
        assert_eq!(attenuates(&p, &long).unwrap_err().what(), "exp");
    }
}
