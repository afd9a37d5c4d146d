//! `identity.introspect`: what a token says and whether it is valid now, judged by the
//! rules verifiers use ([`Verifier`](strata_cap::Verifier) for the signature and key,
//! [`Standing`] for time and revocation), never a copy of them.

use crate::Identity;
use strata_cap::{KeyId, Standing};
use strata_proto::methods::identity::{IntrospectParams, IntrospectResult};

impl Identity {
    /// `identity.introspect`.
    pub fn introspect(&self, p: IntrospectParams) -> IntrospectResult {
        let now = self.now();
        let kid = KeyId::of_token(&p.token).map(|k| k.to_string());
        match self.verifier.verify_uncached(&p.token, now) {
            Ok(claims) => {
                let standing = Standing::of(&claims, now, self.clock.max_skew(), &self.revoked);
                let reason = if standing.revoked {
                    Some("revoked".to_owned())
                } else if standing.expired {
                    Some("expired".to_owned())
                } else if standing.not_yet_valid {
                    Some("not valid yet".to_owned())
                } else {
                    None
                };
                IntrospectResult {
                    claims: serde_json::to_value(&claims).unwrap_or(serde_json::Value::Null),
                    valid: standing.is_current(),
                    expired: standing.expired,
                    revoked: standing.revoked,
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
}
