//! `identity.*`: capability tokens.

use super::{method, NoParams, StatusResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssueParams {
    pub service: String,
    /// Fully-qualified rights, e.g. `["fs.open"]`. Preferred over `actions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Vec<String>>,
    /// Legacy short actions, e.g. `["open"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Lifetime in seconds (3600 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// For example `"50rps"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueResult {
    pub token: String,
    pub cap_id: String,
    /// Unix seconds.
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeParams {
    pub cap_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntrospectParams {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntrospectResult {
    /// The token's claims when its signature verifies, else `null`.
    pub claims: serde_json::Value,
    /// Signature good, key trusted, within `nbf`..`exp`, not revoked (nor any ancestor).
    pub valid: bool,
    pub expired: bool,
    pub revoked: bool,
    /// The key id from the footer, when readable.
    pub kid: Option<String>,
    /// Why the token is not valid, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `identity.delegate`: a child capability at most as strong as the presented one.
/// Omitted fields are inherited from the parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DelegateParams {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

/// One trusted signing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub kid: String,
    /// Standard base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// RFC 3339; tokens signed by this key are accepted from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// RFC 3339; absent for the current key. A rotated-out key stays trusted until the
    /// last token it could have signed has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Whether identity signs new tokens with this key.
    pub current: bool,
    /// The node whose identity holds this key. When present, tokens signed with it are
    /// accepted only with `iss = "identity@<node>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysResult {
    pub keys: Vec<KeyInfo>,
    /// Increases whenever the key set changes.
    pub keys_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotateResult {
    /// The new current key.
    pub kid: String,
    pub keys_epoch: u64,
}

fn default_subscriber() -> String {
    "anonymous".to_owned()
}

/// `identity.revocations`: a verifier's long poll for revocations and key changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationsParams {
    /// The last sequence number the caller has applied (0: none).
    #[serde(default)]
    pub since: u64,
    /// The key epoch the caller holds (0: none).
    #[serde(default)]
    pub keys_epoch: u64,
    /// The revocation store the caller's `since` refers to; a different one means start over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// How long to hold the request open when there is nothing new (0..=60000).
    #[serde(default)]
    pub wait_ms: u64,
    /// A name for the subscribing service, e.g. `fs`.
    #[serde(default = "default_subscriber")]
    pub subscriber: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub seq: u64,
    pub cap_id: String,
    /// Unix seconds after which the revoked capability has expired anyway, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationsResult {
    pub store_id: String,
    /// The newest sequence number; pass it as `since` next time.
    pub seq: u64,
    /// True when `revocations` is the complete list and replaces what the caller holds.
    pub full: bool,
    pub revocations: Vec<Revocation>,
    pub keys_epoch: u64,
    /// Present when the caller's `keys_epoch` is out of date: the complete trusted key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyInfo>>,
}

method!(
    /// Mint a capability token.
    Issue,
    "identity.issue",
    IssueParams,
    IssueResult
);
method!(
    /// Revoke a capability (and its descendants).
    Revoke,
    "identity.revoke",
    RevokeParams,
    StatusResult
);
method!(
    /// Decode and check a token.
    Introspect,
    "identity.introspect",
    IntrospectParams,
    IntrospectResult
);
method!(
    /// Mint a child of the presented capability, at most as strong.
    Delegate,
    "identity.delegate",
    DelegateParams,
    IssueResult
);
method!(
    /// Every trusted signing key.
    Keys,
    "identity.keys",
    NoParams,
    KeysResult
);
method!(
    /// Make a new current signing key (admin only).
    Rotate,
    "identity.rotate",
    NoParams,
    RotateResult
);
method!(
    /// Long poll for revocations and key changes (verifiers).
    Revocations,
    "identity.revocations",
    RevocationsParams,
    RevocationsResult
);
