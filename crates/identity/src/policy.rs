//! The issuance policy: which callers, identified by kernel peer credentials, may obtain
//! which capabilities. Root and identity's own uid are admins and may obtain anything
//! (within the global maximum lifetime). With no policy file, only admins may issue.
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
//! A request is granted when one grant that matches the caller covers all of it.

use serde::Deserialize;
use std::path::Path;
use strata_cap::{PathPrefix, RateLimit, Right};
use strata_ipc::PeerCred;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub uids: Vec<u32>,
    #[serde(default)]
    pub gids: Vec<u32>,
    pub services: Vec<String>,
    pub rights: Vec<String>,
    #[serde(default)]
    pub path_prefixes: Vec<PathPrefix>,
    pub max_ttl_seconds: i64,
    #[serde(default)]
    pub max_rate_limit: Option<RateLimit>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read issuance policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("issuance policy {path} is invalid: {message}")]
    Invalid { path: String, message: String },
}

/// What a caller asks for, already validated.
pub struct Request<'a> {
    pub service: &'a str,
    pub rights: &'a [Right],
    pub path_prefix: Option<&'a PathPrefix>,
    pub ttl_seconds: i64,
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
            // (uid_t)-1 is no process's id; it is what a caller without kernel
            // credentials (over TCP, `PeerCred::REMOTE`) carries, so a grant naming it
            // would hand capabilities to the network.
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
        self.grants
            .iter()
            .filter(move |g| g.uids.contains(&peer.uid) || g.gids.contains(&peer.gid))
    }

    /// `Ok` if one matching grant covers the whole request; otherwise the reason, naming
    /// the part that exceeded the closest grant.
    pub fn check(&self, peer: &PeerCred, req: &Request<'_>) -> Result<(), String> {
        let mut closest: Option<String> = None;
        for grant in self.matching(peer) {
            match grant.covers(req) {
                Ok(()) => return Ok(()),
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
                Some(p) if !self.path_prefixes.iter().any(|g| is_within(p, g)) => {
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
                Some(r) if per_second(r) > per_second(max) => {
                    return Err(format!("rate_limit {r} exceeds the granted maximum {max}"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Whether `inner` is `outer` or a directory beneath it (component-wise, both normalised).
pub fn is_within(inner: &PathPrefix, outer: &PathPrefix) -> bool {
    inner.as_path().starts_with(outer.as_path())
}

/// A rate limit as requests per second, for comparisons.
pub fn per_second(r: RateLimit) -> f64 {
    r.count() as f64 / r.per().duration().as_secs_f64()
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
        // So nothing in a valid policy matches a TCP caller.
        let p = policy("[[grant]]\ngids = [0, 65534]\nuids = [0]\nservices = [\"fs\"]\nrights = [\"fs.*\"]\nmax_ttl_seconds = 60\n");
        assert_eq!(p.max_ttl(&PeerCred::REMOTE, "fs"), None);
    }
}
