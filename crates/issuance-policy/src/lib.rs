//! The issuance policy: which callers, identified by kernel peer credentials, may obtain
//! which capabilities. Root and identity's own uid are admins and may obtain anything
//! (within the global maximum lifetime). With no policy file, only admins may issue.
//!
//! A crate of its own, apart from `strata-identity` (which re-exports it as
//! `strata_identity::policy`), so that the policy fuzz target builds without identity's
//! runtime (etcd, redb, certificates).
//!
//! ```toml
//! [[grant]]
//! uids = [1000]                 # and/or gids = [100] (the caller's primary gid)
//! services = ["fs"]
//! rights = ["fs.open", "fs.read", "fs.list", "fs.stat"]   # "fs.*" grants every fs right
//! path_prefixes = ["/srv/data"] # tokens must carry a prefix inside one of these
//! max_ttl_seconds = 3600
//! max_rate_limit = "100rps"     # optional: tokens must carry a rate limit at most this
//! ```
//!
//! A request is granted when one grant that matches the caller covers all of it. Prefixes
//! and rate limits are judged by the same rules as delegation, from `strata-cap`:
//! [`PathPrefix::contains`] (sound because fs follows no symlink in a prefix) and
//! [`RateLimit::at_most`] (burst and rate: `3600rph` is not at most `1rps`). A grant with
//! no `path_prefixes` puts no bound on the prefix (an fs token without one is refused by
//! fs anyway).
//!
//! A grant's `max_rate_limit` holds across every token the caller obtains under it, not
//! per token: identity gives each such token a shared bucket ([`grant_bucket`]) keyed by
//! issuer, caller uid and grant, which every verifier charges along with the token's own.

use serde::Deserialize;
use std::hash::{Hash, Hasher};
use std::path::Path;
use strata_cap::{CapId, PathPrefix, RateLimit, Right};
use strata_ipc::PeerCred;

/// The issuance policy: who may obtain which capabilities (the `[[grant]]` tables of the
/// policy file). Without a grant for a caller, only admins issue.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The grants, in file order.
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
}

/// One grant: callers it applies to and the most they may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Caller uids it applies to.
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Caller gids it applies to.
    #[serde(default)]
    pub gids: Vec<u32>,
    /// Services capabilities may be for.
    pub services: Vec<String>,
    /// Rights (or `service.*`) capabilities may carry.
    pub rights: Vec<String>,
    /// Prefixes a capability's `path_prefix` must be inside (empty: no prefix rule).
    #[serde(default)]
    pub path_prefixes: Vec<PathPrefix>,
    /// The longest lifetime a capability under it may have.
    pub max_ttl_seconds: i64,
    /// A rate limit shared by every capability issued under the grant to one caller.
    #[serde(default)]
    pub max_rate_limit: Option<RateLimit>,
}

/// Why the policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read issuance policy {path}: {source}")]
    Read {
        /// The policy file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("issuance policy {path} is invalid: {message}")]
    Invalid {
        /// The policy file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// What a caller asks for, already validated.
pub struct Request<'a> {
    /// The service the capability would be for.
    pub service: &'a str,
    /// The rights asked for.
    pub rights: &'a [Right],
    /// The path prefix asked for.
    pub path_prefix: Option<&'a PathPrefix>,
    /// The lifetime asked for.
    pub ttl_seconds: i64,
    /// The capability's own rate limit asked for.
    pub rate_limit: Option<RateLimit>,
}

impl Policy {
    /// Read and parse the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Policy::parse(&text, &shown)
    }

    /// Parse and check policy text; `origin` names it in errors (normally the file's path).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Invalid {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        for (i, g) in policy.grants.iter().enumerate() {
            let bad = |m: String| PolicyError::Invalid {
                path: origin.to_owned(),
                message: format!("grant {}: {m}", i + 1),
            };
            if g.uids.is_empty() && g.gids.is_empty() {
                return Err(bad("names no uids and no gids".into()));
            }
            // (uid_t)-1 is no process's id (the kernel's "no id" value in chown and
            // setresuid), so a grant naming it names nobody and is a mistake.
            if g.uids.contains(&u32::MAX) || g.gids.contains(&u32::MAX) {
                return Err(bad(format!(
                    "{} is (uid_t)-1, which names no user or group",
                    u32::MAX
                )));
            }
            if g.max_ttl_seconds <= 0 {
                return Err(bad("max_ttl_seconds must be positive".into()));
            }
            for r in &g.rights {
                let pattern_ok = match r.strip_suffix(".*") {
                    Some(svc) => !svc.is_empty() && !svc.contains('.'),
                    None => r.parse::<Right>().is_ok(),
                };
                if !pattern_ok {
                    return Err(bad(format!(
                        "`{r}` is not a right like `fs.read` or `fs.*`"
                    )));
                }
            }
        }
        Ok(policy)
    }

    /// The largest TTL any grant gives this caller for this service (for error messages
    /// and the TTL check), if any grant matches.
    pub fn max_ttl(&self, peer: &PeerCred, service: &str) -> Option<i64> {
        self.matching(peer)
            .filter(|g| g.services.iter().any(|s| s == service))
            .map(|g| g.max_ttl_seconds)
            .max()
    }

    fn matching<'a>(&'a self, peer: &'a PeerCred) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants.iter().filter(move |g| g.matches(peer))
    }

    /// The grant (its index in the file, and itself) that covers the whole request, the
    /// first if several do; otherwise the reason, naming the part that exceeded the
    /// closest grant.
    pub fn check(&self, peer: &PeerCred, req: &Request<'_>) -> Result<(usize, &Grant), String> {
        let mut closest: Option<String> = None;
        for (index, grant) in self.grants.iter().enumerate() {
            if !grant.matches(peer) {
                continue;
            }
            match grant.covers(req) {
                Ok(()) => return Ok((index, grant)),
                Err(reason) => {
                    if closest.is_none() || grant.services.iter().any(|s| s == req.service) {
                        closest = Some(reason);
                    }
                }
            }
        }
        Err(closest.unwrap_or_else(|| {
            format!(
                "uid {} (gid {}) has no grant in the issuance policy",
                peer.uid, peer.gid
            )
        }))
    }
}

impl Grant {
    fn matches(&self, peer: &PeerCred) -> bool {
        self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }

    fn covers(&self, req: &Request<'_>) -> Result<(), String> {
        if !self.services.iter().any(|s| s == req.service) {
            return Err(format!("service `{}` is not granted", req.service));
        }
        for right in req.rights {
            let ok = self.rights.iter().any(|g| match g.strip_suffix(".*") {
                Some(svc) => right.service() == svc,
                None => g == right.as_str(),
            });
            if !ok {
                return Err(format!("right `{right}` is not granted"));
            }
        }
        if !self.path_prefixes.is_empty() {
            match req.path_prefix {
                None => {
                    return Err(
                        "path_prefix is required and must lie inside a granted prefix".into(),
                    )
                }
                Some(p) if !self.path_prefixes.iter().any(|g| g.contains(p)) => {
                    return Err(format!("path_prefix `{p}` is outside every granted prefix"));
                }
                Some(_) => {}
            }
        }
        if req.ttl_seconds > self.max_ttl_seconds {
            return Err(format!(
                "ttl_seconds {} exceeds the granted maximum {}",
                req.ttl_seconds, self.max_ttl_seconds
            ));
        }
        if let Some(max) = self.max_rate_limit {
            match req.rate_limit {
                None => return Err(format!("rate_limit is required, at most {max}")),
                Some(r) if !r.at_most(max) => {
                    return Err(format!(
                        "rate_limit {r} exceeds the granted maximum {max} (burst and rate \
                         must each be at most the grant's)"
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The id of the bucket shared by every token `uid` obtains from issuer `issuer` under
/// `grant` (the `index`th in the policy): a hash of those, so it is the same for every
/// such token and across restarts of identity with the same policy, and differs between
/// callers, grants and nodes. Not a secret: only identity writes claims.
pub fn grant_bucket(issuer: &str, uid: u32, index: usize, grant: &Grant) -> CapId {
    let half = |domain: u8| {
        // SipHash with fixed keys: deterministic, which is what a bucket id needs.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        (domain, "strata grant bucket", issuer, uid, index).hash(&mut h);
        format!("{grant:?}").hash(&mut h);
        h.finish()
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&half(0).to_le_bytes());
    bytes[8..].copy_from_slice(&half(1).to_le_bytes());
    CapId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCred {
        PeerCred {
            pid: None,
            uid,
            gid,
        }
    }

    fn policy(text: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, text).unwrap();
        Policy::load(&p).unwrap()
    }

    const GRANT: &str = r#"
[[grant]]
uids = [1000]
services = ["fs"]
rights = ["fs.open", "fs.read"]
path_prefixes = ["/srv/data"]
max_ttl_seconds = 600
max_rate_limit = "10rps"
"#;

    fn rights(r: &[&str]) -> Vec<Right> {
        r.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn grant_covers_exactly_its_scope() {
        let p = policy(GRANT);
        let prefix: PathPrefix = "/srv/data/a".parse().unwrap();
        let rs = rights(&["fs.read"]);
        let ok = Request {
            service: "fs",
            rights: &rs,
            path_prefix: Some(&prefix),
            ttl_seconds: 600,
            rate_limit: Some("5rps".parse().unwrap()),
        };
        p.check(&peer(1000, 1000), &ok).unwrap();
        assert!(p
            .check(&peer(1001, 1001), &ok)
            .unwrap_err()
            .contains("no grant"));

        let wide = rights(&["fs.read", "fs.list"]);
        let e = p
            .check(
                &peer(1000, 1),
                &Request {
                    rights: &wide,
                    ..ok_like(&ok)
                },
            )
            .unwrap_err();
        assert!(e.contains("fs.list"), "{e}");
        let outside: PathPrefix = "/srv/other".parse().unwrap();
        let e = p
            .check(
                &peer(1000, 1),
                &Request {
                    path_prefix: Some(&outside),
                    ..ok_like(&ok)
                },
            )
            .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let sibling: PathPrefix = "/srv/database".parse().unwrap();
        assert!(p
            .check(
                &peer(1000, 1),
                &Request {
                    path_prefix: Some(&sibling),
                    ..ok_like(&ok)
                }
            )
            .is_err());
        let e = p
            .check(
                &peer(1000, 1),
                &Request {
                    path_prefix: None,
                    ..ok_like(&ok)
                },
            )
            .unwrap_err();
        assert!(e.contains("required"), "{e}");
        let e = p
            .check(
                &peer(1000, 1),
                &Request {
                    ttl_seconds: 601,
                    ..ok_like(&ok)
                },
            )
            .unwrap_err();
        assert!(e.contains("ttl_seconds"), "{e}");
        let e = p
            .check(
                &peer(1000, 1),
                &Request {
                    rate_limit: Some("11rps".parse().unwrap()),
                    ..ok_like(&ok)
                },
            )
            .unwrap_err();
        assert!(e.contains("rate_limit"), "{e}");
        let e = p
            .check(
                &peer(1000, 1),
                &Request {
                    rate_limit: None,
                    ..ok_like(&ok)
                },
            )
            .unwrap_err();
        assert!(e.contains("rate_limit"), "{e}");
        let e = p
            .check(
                &peer(1000, 1),
                &Request {
                    service: "registry",
                    ..ok_like(&ok)
                },
            )
            .unwrap_err();
        assert!(e.contains("service"), "{e}");
    }

    fn ok_like<'a>(r: &Request<'a>) -> Request<'a> {
        Request {
            service: r.service,
            rights: r.rights,
            path_prefix: r.path_prefix,
            ttl_seconds: r.ttl_seconds,
            rate_limit: r.rate_limit,
        }
    }

    #[test]
    fn a_grant_rate_is_judged_by_burst_and_rate() {
        let p = policy(
            "[[grant]]\nuids = [1000]\nservices = [\"fs\"]\nrights = [\"fs.read\"]\n\
             max_ttl_seconds = 60\nmax_rate_limit = \"1rps\"\n",
        );
        let rs = rights(&["fs.read"]);
        let req = |rate: &str| Request {
            service: "fs",
            rights: &rs,
            path_prefix: None,
            ttl_seconds: 60,
            rate_limit: Some(rate.parse().unwrap()),
        };
        for wider in ["3600rph", "60rpm", "2rps"] {
            let e = p.check(&peer(1000, 1), &req(wider)).unwrap_err();
            assert!(e.contains("rate_limit"), "{wider}: {e}");
        }
        for narrower in ["1rps", "1rpm", "1rph"] {
            assert_eq!(p.check(&peer(1000, 1), &req(narrower)).unwrap().0, 0);
        }
    }

    #[test]
    fn grant_buckets_are_stable_and_distinct() {
        let p = policy(&format!("{GRANT}{GRANT}"));
        let (g0, g1) = (&p.grants[0], &p.grants[1]);
        let a = grant_bucket("identity@n1", 1000, 0, g0);
        assert_eq!(a, grant_bucket("identity@n1", 1000, 0, g0));
        for other in [
            grant_bucket("identity@n2", 1000, 0, g0),
            grant_bucket("identity@n1", 1001, 0, g0),
            grant_bucket("identity@n1", 1000, 1, g1),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn gid_grants_and_wildcards() {
        let p = policy("[[grant]]\ngids = [50]\nservices = [\"fs\"]\nrights = [\"fs.*\"]\nmax_ttl_seconds = 60\n");
        let rs = rights(&["fs.read", "fs.stat"]);
        let req = Request {
            service: "fs",
            rights: &rs,
            path_prefix: None,
            ttl_seconds: 60,
            rate_limit: None,
        };
        p.check(&peer(7, 50), &req).unwrap();
        assert!(p.check(&peer(7, 51), &req).is_err());
        assert_eq!(p.max_ttl(&peer(7, 50), "fs"), Some(60));
        assert_eq!(p.max_ttl(&peer(7, 50), "registry"), None);
    }

    #[test]
    fn bad_policies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        for bad in [
            "[[grant]]\nservices=[\"fs\"]\nrights=[\"fs.read\"]\nmax_ttl_seconds=1\n",
            "[[grant]]\nuids=[1]\nservices=[\"fs\"]\nrights=[\"read\"]\nmax_ttl_seconds=1\n",
            "[[grant]]\nuids=[1]\nservices=[\"fs\"]\nrights=[\"fs.read\"]\nmax_ttl_seconds=0\n",
            "[[grant]]\nuids=[1]\nservices=[\"fs\"]\nrights=[\"fs.read\"]\nmax_ttl_seconds=1\ntypo=1\n",
            "[[grant]]\nuids=[1]\nservices=[\"fs\"]\nrights=[\"fs.read\"]\nmax_ttl_seconds=1\npath_prefixes=[\"rel\"]\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(Policy::load(&p).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_grant_can_name_the_id_callers_without_credentials_carry() {
        for who in ["uids = [4294967295]", "gids = [100, 4294967295]"] {
            let text = format!(
                "[[grant]]\n{who}\nservices=[\"fs\"]\nrights=[\"fs.read\"]\nmax_ttl_seconds=1\n"
            );
            let e = Policy::parse(&text, "p.toml").unwrap_err().to_string();
            assert!(e.contains("(uid_t)-1"), "{e}");
        }
    }
}
