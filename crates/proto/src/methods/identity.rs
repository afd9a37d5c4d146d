//! `identity.*`: capability tokens.

use super::{method, NoParams};
use serde::{Deserialize, Serialize};

/// The most entries in `rights` (and in `actions`) of `identity.issue` and
/// `identity.delegate`.
pub const MAX_RIGHTS: usize = 64;
/// The longest entry of `rights` or `actions`, in bytes (the longest right a token may
/// carry, `strata_cap::Right::MAX_LEN`).
pub const MAX_RIGHT_LEN: usize = 128;

/// A list of rights or actions: at most [`MAX_RIGHTS`] entries of at most
/// [`MAX_RIGHT_LEN`] bytes each, checked while parsing (nothing of it is echoed).
fn bounded_rights<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "a list of at most {MAX_RIGHTS} strings of at most {MAX_RIGHT_LEN} bytes"
            )
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            // One entry at a time: a list of a million entries is refused at the 65th.
            while let Some(entry) = seq.next_element::<String>()? {
                if out.len() == MAX_RIGHTS {
                    return Err(serde::de::Error::custom(format!(
                        "at most {MAX_RIGHTS} entries"
                    )));
                }
                if entry.len() > MAX_RIGHT_LEN {
                    return Err(serde::de::Error::custom(format!(
                        "entry {} is {} bytes, more than {MAX_RIGHT_LEN}",
                        out.len(),
                        entry.len()
                    )));
                }
                out.push(entry);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(Bounded)
}

/// `identity.issue`: a root capability for one service, as the issuance policy allows the
/// caller (admins: anything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssueParams {
    /// The service the capability is for (`[a-z][a-z0-9-]{0,62}`; anything else is
    /// INVALID_ARGUMENT naming `service`).
    pub service: String,
    /// Fully-qualified rights, e.g. `["fs.open"]`. Preferred over `actions`. At most
    /// [`MAX_RIGHTS`] of at most [`MAX_RIGHT_LEN`] bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_rights"
    )]
    pub rights: Option<Vec<String>>,
    /// Legacy short actions, e.g. `["open"]`. Bounded as `rights`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_rights"
    )]
    pub actions: Option<Vec<String>>,
    /// The absolute, normalised directory the capability is confined to (fs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Lifetime in seconds (3600 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// For example `"50rps"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Admins only: the token's `sub`, `svc:<service name>@<node id>` (the supervisor
    /// names the service it routes the capability to). At most [`MAX_SUBJECT_LEN`] bytes,
    /// checked while parsing; absent, `sub` is `uid:<caller's uid>`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_subject"
    )]
    pub subject: Option<String>,
}

/// The longest `subject` of `identity.issue`: `svc:`, two names and `@`.
pub const MAX_SUBJECT_LEN: usize = 4 + 2 * crate::names::MAX_NAME_LEN + 1;

fn bounded_subject<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(subject) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if subject.len() > MAX_SUBJECT_LEN {
        // Not echoed: it may be a megabyte of anything.
        return Err(serde::de::Error::custom(format!(
            "is {} bytes, more than {MAX_SUBJECT_LEN}",
            subject.len()
        )));
    }
    Ok(Some(subject))
}

/// A minted capability (`identity.issue`, `identity.delegate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueResult {
    /// The signed token (`v2.public.…`), presented as `auth.token`.
    pub token: String,
    /// The capability's id (32 hex digits), to revoke it by.
    pub cap_id: String,
    /// Unix seconds.
    pub expires: i64,
}

/// `identity.revoke`: revoke a capability (and with it every descendant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeParams {
    /// The capability's id (32 hex digits).
    pub cap_id: String,
}

/// `identity.revoke`'s answer: the revocation is durable, and how many of the verifiers
/// identity waits for (root's, identity's own uid's, the operator's `--verifier-uids`)
/// confirmed they apply it. Identity answers `ok` only once the revocation is durable;
/// `unconfirmed > 0` means that many waited-for verifiers did not acknowledge within the
/// timeout (2 s): they may still serve the token until they catch up. Subscribers of other
/// uids are fed but neither waited for nor counted. `confirmed`/`unconfirmed` are absent
/// (read as 0) from identities older than these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeResult {
    /// `"revoked"`.
    pub status: String,
    /// Waited-for verifiers that acknowledged the revocation.
    #[serde(default)]
    pub confirmed: u64,
    /// Waited-for verifiers that did not acknowledge it within the timeout.
    #[serde(default)]
    pub unconfirmed: u64,
}

/// `identity.introspect`: what a token says and whether it is valid now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntrospectParams {
    /// The token to look at.
    pub token: String,
}

/// `identity.introspect`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntrospectResult {
    /// The token's claims when its signature verifies, else `null`.
    pub claims: serde_json::Value,
    /// Signature good, key trusted, within `nbf`..`exp`, not revoked (nor any ancestor).
    pub valid: bool,
    /// `exp` has passed.
    pub expired: bool,
    /// The capability or one of its ancestors is revoked.
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
    /// The parent capability's token.
    pub token: String,
    /// Bounded as [`IssueParams::rights`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_rights"
    )]
    pub rights: Option<Vec<String>>,
    /// A path prefix inside the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Lifetime in seconds from now; never past the parent's expiry (absent: the
    /// parent's expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// A rate limit at most the parent's, e.g. `"10rps"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

/// One trusted signing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's PASERK id (`k2.pid.…`), as in a token's footer.
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

/// `identity.keys`'s answer: the keys verifiers should trust.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysResult {
    /// Every trusted key: this node's current and retired ones, and (in a cluster) the
    /// other nodes'.
    pub keys: Vec<KeyInfo>,
    /// Increases whenever the key set changes.
    pub keys_epoch: u64,
}

/// `identity.rotate`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotateResult {
    /// The new current key.
    pub kid: String,
    /// The key epoch that includes it.
    pub keys_epoch: u64,
}

fn default_subscriber() -> String {
    "anonymous".to_owned()
}

/// The longest `subscriber` name, in bytes.
pub const MAX_SUBSCRIBER_LEN: usize = 128;
/// The most revocations one `identity.revocations` answer carries (and the largest
/// `limit`). Each entry is at most ~110 bytes of JSON, so a full page stays under 512 KiB,
/// well inside a frame.
pub const MAX_REVOCATIONS_PAGE: u32 = 4096;

/// Whether `name` is a usable subscriber name: 1..=[`MAX_SUBSCRIBER_LEN`] bytes of
/// printable ASCII without spaces (it appears in identity's logs).
pub fn is_subscriber_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SUBSCRIBER_LEN
        && name.bytes().all(|b| b.is_ascii_graphic())
}

fn bounded_subscriber<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if is_subscriber_name(&name) {
        Ok(name)
    } else {
        // The name itself is not echoed: it may be a megabyte of anything.
        Err(serde::de::Error::custom(format!(
            "must be 1 to {MAX_SUBSCRIBER_LEN} bytes of printable ASCII without spaces \
             (got {} bytes)",
            name.len()
        )))
    }
}

fn bounded_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(limit) = Option::<u64>::deserialize(d)? else {
        return Ok(None);
    };
    match u32::try_from(limit) {
        Ok(n) if (1..=MAX_REVOCATIONS_PAGE).contains(&n) => Ok(Some(n)),
        _ => Err(serde::de::Error::custom(format!(
            "must be 1 to {MAX_REVOCATIONS_PAGE}"
        ))),
    }
}

/// `identity.revocations`: a verifier's long poll for revocations and key changes, paged:
/// `since` is the cursor, and the answer's `seq` the cursor for the next call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationsParams {
    /// The last sequence number the caller has applied (0: none). Entries after it are
    /// returned, oldest first.
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
    /// A name for the subscribing service, e.g. `fs`: 1..=[`MAX_SUBSCRIBER_LEN`] bytes of
    /// printable ASCII (anything else is INVALID_ARGUMENT).
    #[serde(
        default = "default_subscriber",
        deserialize_with = "bounded_subscriber"
    )]
    pub subscriber: String,
    /// The most entries to return, 1..=[`MAX_REVOCATIONS_PAGE`] (absent: the maximum).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_limit"
    )]
    pub limit: Option<u32>,
}

/// One entry of the revocation list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    /// Its place in the list (increasing).
    pub seq: u64,
    /// The revoked capability's id.
    pub cap_id: String,
    /// Unix seconds after which the revoked capability has expired anyway, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

/// `identity.revocations`'s answer: one page of the revocation list after `since`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationsResult {
    /// The revocation store this list comes from (pass it back as `store_id`).
    pub store_id: String,
    /// The cursor: pass it as `since` next time. The newest sequence number when `more` is
    /// false, else the last one in `revocations`.
    pub seq: u64,
    /// True when the answer starts from the beginning of the list (`since` was 0, or the
    /// caller's `store_id` is not this store's): with the pages that follow while `more`
    /// is true, it is the complete list.
    pub full: bool,
    /// The entries after `since`, oldest first.
    pub revocations: Vec<Revocation>,
    /// True when entries after `seq` did not fit in this answer: ask again at once with
    /// `since = seq`. A verifier has the complete list only once an answer says false.
    #[serde(default)]
    pub more: bool,
    /// The current key epoch.
    pub keys_epoch: u64,
    /// Present when the caller's `keys_epoch` is out of date: the complete trusted key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyInfo>>,
    /// Cluster mode only: how current identity's copy of the cluster's state is (absent
    /// on a single node). A verifier past the limit refuses protected requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFreshness>,
}

/// How long ago identity last confirmed it held everything etcd had, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFreshness {
    /// Milliseconds since the last confirmed contact with etcd, when identity answered.
    pub contact_age_ms: u64,
    /// `max_staleness` in milliseconds; null when it is `off` (no cut-off).
    #[serde(default)]
    pub max_staleness_ms: Option<u64>,
}

/// The largest `limit` of `identity.issued`.
pub const MAX_ISSUED_PAGE: u32 = 1000;
/// `identity.issued`'s `limit` when absent.
pub const DEFAULT_ISSUED_PAGE: u32 = 256;

/// A refusal while parsing that says what was expected and nothing of what was sent.
fn refuse<E: serde::de::Error>(expected: &str) -> E {
    E::custom(format!("must be {expected}"))
}

/// Whether `s` is a cap_id as identity writes it: 32 lowercase hex digits.
pub fn is_cap_id_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An optional cap_id (32 lowercase hex digits), checked while parsing without copying
/// or echoing what was sent (a megabyte string is refused as it is read).
fn bounded_cap_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    const EXPECTED: &str = "a cap_id of 32 lowercase hex digits";
    struct CapIdHex;
    impl<'de> serde::de::Visitor<'de> for CapIdHex {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if is_cap_id_hex(v) {
                Ok(Some(v.to_owned()))
            } else {
                Err(refuse(EXPECTED))
            }
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(refuse(EXPECTED))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(refuse(EXPECTED))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(refuse(EXPECTED))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(refuse(EXPECTED))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(refuse(EXPECTED))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(refuse(EXPECTED))
        }
    }
    d.deserialize_option(CapIdHex)
}

/// An optional `limit` of `identity.issued`: 1..=[`MAX_ISSUED_PAGE`], anything else
/// (another type included) refused without echoing it.
fn bounded_issued_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Limit;
    const EXPECTED: &str = "an integer from 1 to 1000";
    impl<'de> serde::de::Visitor<'de> for Limit {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match u32::try_from(v) {
                Ok(n) if (1..=MAX_ISSUED_PAGE).contains(&n) => Ok(Some(n)),
                _ => Err(refuse(EXPECTED)),
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(refuse(EXPECTED)),
            }
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(refuse(EXPECTED))
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(refuse(EXPECTED))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(refuse(EXPECTED))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(refuse(EXPECTED))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(refuse(EXPECTED))
        }
    }
    d.deserialize_option(Limit)
}

/// `identity.issued` (admin): one page of the capabilities this node issued or delegated
/// and has not seen expire, in cap_id order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssuedParams {
    /// Start strictly after this cap_id (32 lowercase hex digits; absent: the beginning),
    /// checked while parsing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_cap_id"
    )]
    pub after: Option<String>,
    /// The most caps to return, 1..=[`MAX_ISSUED_PAGE`] (absent: [`DEFAULT_ISSUED_PAGE`]),
    /// checked while parsing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_issued_limit"
    )]
    pub limit: Option<u32>,
}

/// One capability in `identity.issued`'s answer. The optional fields are absent for
/// records written before the method existed (and `path_prefix`/`rate_limit` when the
/// token has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCap {
    /// The capability's id (32 hex digits).
    pub cap_id: String,
    /// Its ancestors, root first, direct parent last (empty for a root capability).
    pub parents: Vec<String>,
    /// Unix seconds when it expires.
    pub expires: i64,
    /// Unix seconds when it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    /// The service it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Its rights, e.g. `["fs.read"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Vec<String>>,
    /// The directory it is confined to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Its own rate limit, e.g. `"10rps"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Whom it was issued to (the token's `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// It or one of its ancestors is revoked.
    pub revoked: bool,
}

/// `identity.issued`'s answer: one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedResult {
    /// The capabilities of this page, in cap_id order.
    pub caps: Vec<IssuedCap>,
    /// The cursor to pass as `after` for the next page; `null` when the walk reached the
    /// end. A page may be short (or empty) while this is not `null`.
    pub next: Option<String>,
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
    RevokeResult
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
    /// One page of the capabilities this node issued and has not seen expire (admin only).
    Issued,
    "identity.issued",
    IssuedParams,
    IssuedResult
);
method!(
    /// Long poll for revocations and key changes (verifiers).
    Revocations,
    "identity.revocations",
    RevocationsParams,
    RevocationsResult
);

#[cfg(test)]
mod tests;
