//! The claims a capability token carries (SPEC §4).

use crate::clock::Timestamp;
use crate::ids::{CapId, PathPrefix, Right};
use crate::rate::RateLimit;
use serde::{Deserialize, Deserializer, Serialize};

/// The payload of a Strata capability token.
///
/// On the wire (JSON, inside the signed PASETO payload):
/// ```json
/// {"jti": "<32 hex digits>", "sub": "...", "iss": "identity@node-1", "aud": "strata",
///  "iat": "2026-01-01T00:00:00Z", "exp": "2026-01-01T01:00:00Z",
///  "service": "fs", "actions": ["read"], "rights": ["fs.read"],
///  "constraints": {"path_prefix": "/srv/data", "rate_limit": "50rps"},
///  "nbf": "2026-01-01T00:00:00Z", "parents": ["<cap id>", "..."]}
/// ```
/// `nbf` and `parents` are omitted when absent. On input, `actions`, `rights`,
/// `constraints` and `parents` may be missing or `null` (empty); unknown fields are ignored.
/// `parents` holds at most [`Claims::MAX_PARENTS`] ids; more is refused (fail closed).
/// Every typed field is validated while parsing, so a token whose rights, prefix or rate
/// limit cannot be understood is refused as a whole (fail closed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The capability's id (`cap_id`), used for revocation, rate buckets and handle binding.
    pub jti: CapId,
    /// Who the capability was issued to.
    pub sub: String,
    /// Who issued it, e.g. `identity@node-1`.
    pub iss: String,
    /// Audience: must be [`Claims::AUDIENCE`] (`strata`), checked on verification.
    pub aud: String,
    /// When it was issued.
    pub iat: Timestamp,
    /// When it stops being valid (exclusive).
    pub exp: Timestamp,
    /// When it starts being valid, if later than `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<Timestamp>,
    /// The one service this capability is for, e.g. `fs`.
    pub service: String,
    /// Legacy rights: method names without the service prefix (`read`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub actions: Vec<String>,
    /// Fully-qualified rights (`fs.read`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub rights: Vec<Right>,
    /// Limits on how the rights may be used.
    #[serde(default, deserialize_with = "null_as_default")]
    pub constraints: Constraints,
    /// Ancestors this capability was delegated from, root first. Revoking any of them
    /// revokes this one.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded_parents"
    )]
    pub parents: Vec<CapId>,
}

/// The `constraints` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// The directory fs confines this capability to. Not checked by
    /// [`authorize`](crate::authorize): fs enforces it when resolving paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<PathPrefix>,
    /// Token bucket applied per `jti` by [`authorize`](crate::authorize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Buckets this capability shares with others: every request takes one from each of
    /// them as well as from its own `rate_limit` bucket (see [`SharedRateLimit`]). Written
    /// by identity; at most [`Constraints::MAX_SHARED_RATE_LIMITS`].
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded_shared"
    )]
    pub shared_rate_limits: Vec<SharedRateLimit>,
}

impl Constraints {
    /// Most shared buckets a token may name (a bound checked when claims are parsed).
    pub const MAX_SHARED_RATE_LIMITS: usize = 8;
}

/// A rate limit charged to a bucket that several capabilities share.
///
/// On the wire: `{"bucket": "<32 hex digits>", "rate_limit": "1rps"}` in
/// `constraints.shared_rate_limits`. Identity writes two kinds:
/// - a **lineage** bucket: a delegated child carries its ancestors' limits keyed by the
///   ancestor's `jti`, so a parent's rate limit holds across every token derived from it
///   (200 children of a `1rps` token share one request a second, not 200);
/// - a **grant** bucket: a token a non-admin obtains under a grant with a
///   `max_rate_limit` carries that limit keyed by (issuer, caller uid, grant), so the
///   grant's rate holds across every token the caller obtains under it.
///
/// A verifier that predates this field ignores it (unknown fields are ignored) and
/// enforces `rate_limit` per `jti` only, as before; it never refuses such a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SharedRateLimit {
    /// The bucket's id: an ancestor's `jti`, or an id identity derives for a grant.
    pub bucket: CapId,
    /// The limit the bucket is charged at. A bucket id always comes with the same limit.
    pub rate_limit: RateLimit,
}

impl Claims {
    /// The one audience Strata tokens are for: verification refuses a token whose `aud`
    /// is anything else (a token minted for another system by a key we trust is not ours).
    pub const AUDIENCE: &'static str = "strata";

    /// The capability id (the `jti` claim).
    pub fn cap_id(&self) -> &CapId {
        &self.jti
    }

    /// The `path_prefix` constraint, for fs to resolve paths beneath.
    pub fn path_prefix(&self) -> Option<&PathPrefix> {
        self.constraints.path_prefix.as_ref()
    }

    /// The `rate_limit` constraint.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.constraints.rate_limit
    }

    /// Every right this capability grants, as full method names: its `rights` and its
    /// legacy `actions` (`read` for service `fs` is `fs.read`).
    pub fn effective_rights(&self) -> std::collections::BTreeSet<String> {
        let mut set: std::collections::BTreeSet<String> =
            self.rights.iter().map(|r| r.as_str().to_owned()).collect();
        set.extend(self.actions.iter().map(|a| format!("{}.{a}", self.service)));
        set
    }

    /// Most ancestors a capability may have ([`Claims::parents`]): delegation past this
    /// depth is refused, and so is a token claiming more.
    pub const MAX_PARENTS: usize = 32;

    /// The root of this capability's lineage: its first ancestor, or itself.
    pub fn lineage_root(&self) -> &CapId {
        self.parents.first().unwrap_or(&self.jti)
    }

    /// Every bucket a request with this capability takes from, each with its limit: its
    /// own (`jti`, `rate_limit`) if it has a limit, then the shared ones.
    pub fn rate_buckets(&self) -> Vec<(CapId, RateLimit)> {
        let own = self.constraints.rate_limit.map(|limit| (self.jti, limit));
        own.into_iter()
            .chain(
                self.constraints
                    .shared_rate_limits
                    .iter()
                    .map(|s| (s.bucket, s.rate_limit)),
            )
            .collect()
    }

    /// The shared buckets a child delegated from this capability must carry: this one's
    /// shared buckets, plus its own limit keyed by its `jti` (so its limit holds across
    /// all its descendants), unless a shared bucket already bounds it at least as tightly
    /// (one charged by a superset of the same requests at a limit [`at most`] its own).
    ///
    /// [`at most`]: RateLimit::at_most
    pub fn shared_rate_limits_for_child(&self) -> Vec<SharedRateLimit> {
        let mut shared = self.constraints.shared_rate_limits.clone();
        if let Some(own) = self.constraints.rate_limit {
            if !shared.iter().any(|s| s.rate_limit.at_most(own)) {
                shared.push(SharedRateLimit {
                    bucket: self.jti,
                    rate_limit: own,
                });
            }
        }
        shared
    }
}

/// Go encodes an empty slice or struct pointer as `null`; treat it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn bounded_parents<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CapId>, D::Error> {
    let parents: Vec<CapId> = null_as_default(d)?;
    if parents.len() > Claims::MAX_PARENTS {
        return Err(serde::de::Error::custom(format_args!(
            "parents lists {} ancestors; at most {} are allowed",
            parents.len(),
            Claims::MAX_PARENTS
        )));
    }
    Ok(parents)
}

fn bounded_shared<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SharedRateLimit>, D::Error> {
    let shared: Vec<SharedRateLimit> = null_as_default(d)?;
    if shared.len() > Constraints::MAX_SHARED_RATE_LIMITS {
        return Err(serde::de::Error::custom(format_args!(
            "shared_rate_limits lists {} buckets; at most {} are allowed",
            shared.len(),
            Constraints::MAX_SHARED_RATE_LIMITS
        )));
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Claims {
        Claims {
            jti: "00112233445566778899aabbccddeeff".parse().unwrap(),
            sub: "uid:1000".into(),
            iss: "identity@node-1".into(),
            aud: "strata".into(),
            iat: "2026-01-01T00:00:00Z".parse().unwrap(),
            exp: "2026-01-01T01:00:00Z".parse().unwrap(),
            nbf: None,
            service: "fs".into(),
            actions: vec!["open".into(), "read".into()],
            rights: vec!["fs.open".parse().unwrap(), "fs.read".parse().unwrap()],
            constraints: Constraints {
                path_prefix: Some("/srv/data".parse().unwrap()),
                rate_limit: Some("50rps".parse().unwrap()),
                shared_rate_limits: vec![],
            },
            parents: vec![],
        }
    }

    #[test]
    fn serialises_exactly_the_spec_fields() {
        let value = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            value,
            json!({
                "jti": "00112233445566778899aabbccddeeff",
                "sub": "uid:1000",
                "iss": "identity@node-1",
                "aud": "strata",
                "iat": "2026-01-01T00:00:00Z",
                "exp": "2026-01-01T01:00:00Z",
                "service": "fs",
                "actions": ["open", "read"],
                "rights": ["fs.open", "fs.read"],
                "constraints": {"path_prefix": "/srv/data", "rate_limit": "50rps"}
            })
        );
    }

    #[test]
    fn optional_fields_appear_when_set_and_round_trip() {
        let mut claims = sample();
        claims.nbf = Some("2026-01-01T00:30:00Z".parse().unwrap());
        claims.parents = vec![CapId::from_bytes([1; 16]), CapId::from_bytes([2; 16])];
        claims.constraints = Constraints::default();
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(value["nbf"], "2026-01-01T00:30:00Z");
        assert_eq!(value["parents"][0], "01010101010101010101010101010101");
        assert_eq!(value["constraints"], json!({}));
        let back: Claims = serde_json::from_value(value).unwrap();
        assert_eq!(back, claims);
    }

    #[test]
    fn accepts_go_style_nulls_and_offsets() {
        let claims: Claims = serde_json::from_value(json!({
            "jti": "00112233445566778899aabbccddeeff",
            "sub": "", "iss": "identity@node-1", "aud": "strata",
            "iat": "2026-01-01T01:00:00+01:00", "exp": "2026-01-01T01:00:00Z",
            "service": "fs", "actions": ["read"], "rights": null,
            "constraints": null, "parents": null, "future_field": 1
        }))
        .unwrap();
        assert_eq!(claims.iat.unix_seconds(), 1_767_225_600);
        assert!(claims.rights.is_empty());
        assert_eq!(claims.constraints, Constraints::default());
        assert_eq!(claims.actions, vec!["read".to_string()]);
    }

    #[test]
    fn refuses_claims_it_cannot_understand() {
        let base = serde_json::to_value(sample()).unwrap();
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("jti", json!("not-hex")),
            ("exp", json!(1767229200)),
            ("exp", json!("tomorrow")),
            ("rights", json!(["fs"])),
            ("constraints", json!({"rate_limit": "lots"})),
            ("constraints", json!({"rate_limit": "0rps"})),
            ("constraints", json!({"path_prefix": "relative/dir"})),
            ("constraints", json!({"path_prefix": "/srv/../etc"})),
            ("parents", json!(["xyz"])),
        ];
        for (field, bad) in cases {
            let mut value = base.clone();
            value[field] = bad.clone();
            assert!(
                serde_json::from_value::<Claims>(value).is_err(),
                "{field} = {bad} was accepted"
            );
        }
        for required in ["jti", "sub", "iss", "aud", "iat", "exp", "service"] {
            let mut value = base.clone();
            value.as_object_mut().unwrap().remove(required);
            assert!(
                serde_json::from_value::<Claims>(value).is_err(),
                "missing {required} was accepted"
            );
        }
    }

    #[test]
    fn parents_and_shared_buckets_are_bounded_at_parse_time() {
        let base = serde_json::to_value(sample()).unwrap();
        let ids = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| CapId::from_bytes([i as u8; 16]).to_string())
                .collect()
        };
        let mut value = base.clone();
        value["parents"] = json!(ids(Claims::MAX_PARENTS));
        assert!(serde_json::from_value::<Claims>(value.clone()).is_ok());
        value["parents"] = json!(ids(Claims::MAX_PARENTS + 1));
        assert!(serde_json::from_value::<Claims>(value).is_err());

        let shared = |n: usize| -> serde_json::Value {
            ids(n)
                .into_iter()
                .map(|b| json!({"bucket": b, "rate_limit": "1rps"}))
                .collect()
        };
        let mut value = base.clone();
        value["constraints"]["shared_rate_limits"] = shared(Constraints::MAX_SHARED_RATE_LIMITS);
        let claims: Claims = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(
            claims.constraints.shared_rate_limits.len(),
            Constraints::MAX_SHARED_RATE_LIMITS
        );
        value["constraints"]["shared_rate_limits"] =
            shared(Constraints::MAX_SHARED_RATE_LIMITS + 1);
        assert!(serde_json::from_value::<Claims>(value.clone()).is_err());
        // A bad bucket or limit is refused whole (fail closed).
        for bad in [
            json!([{"bucket": "xyz", "rate_limit": "1rps"}]),
            json!([{"bucket": CapId::from_bytes([1; 16]), "rate_limit": "lots"}]),
            json!([{"bucket": CapId::from_bytes([1; 16])}]),
        ] {
            value["constraints"]["shared_rate_limits"] = bad.clone();
            assert!(
                serde_json::from_value::<Claims>(value.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn children_carry_their_ancestors_limits_once() {
        let mut root = sample();
        root.constraints.rate_limit = Some("1rps".parse().unwrap());
        let shared = root.shared_rate_limits_for_child();
        assert_eq!(
            shared,
            vec![SharedRateLimit {
                bucket: root.jti,
                rate_limit: "1rps".parse().unwrap()
            }]
        );
        // A child with the same limit adds nothing; one that narrows it adds its own.
        let mut child = sample();
        child.jti = CapId::from_bytes([7; 16]);
        child.constraints.rate_limit = Some("1rps".parse().unwrap());
        child.constraints.shared_rate_limits = shared.clone();
        assert_eq!(child.shared_rate_limits_for_child(), shared);
        child.constraints.rate_limit = Some("1rpm".parse().unwrap());
        let grandchild = child.shared_rate_limits_for_child();
        assert_eq!(grandchild.len(), 2);
        assert_eq!(grandchild[1].bucket, child.jti);
        // Requests take from the own bucket, then every shared one.
        child.constraints.shared_rate_limits = grandchild;
        let buckets = child.rate_buckets();
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets[0], (child.jti, "1rpm".parse().unwrap()));
        // No limit anywhere: no buckets.
        let mut free = sample();
        free.constraints.rate_limit = None;
        assert!(free.rate_buckets().is_empty());
        assert!(free.shared_rate_limits_for_child().is_empty());
        assert_eq!(free.lineage_root(), &free.jti);
        free.parents = vec![CapId::from_bytes([3; 16]), CapId::from_bytes([4; 16])];
        assert_eq!(free.lineage_root(), &CapId::from_bytes([3; 16]));
    }

    #[test]
    fn exposes_constraints() {
        let claims = sample();
        assert_eq!(claims.path_prefix().unwrap().as_str(), "/srv/data");
        assert_eq!(claims.rate_limit().unwrap().count(), 50);
        assert_eq!(claims.cap_id(), &claims.jti);
    }
}
