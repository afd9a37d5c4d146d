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
        deserialize_with = "null_as_default"
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
}

/// Go encodes an empty slice or struct pointer as `null`; treat it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
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
    fn exposes_constraints() {
        let claims = sample();
        assert_eq!(claims.path_prefix().unwrap().as_str(), "/srv/data");
        assert_eq!(claims.rate_limit().unwrap().count(), 50);
        assert_eq!(claims.cap_id(), &claims.jti);
    }
}
