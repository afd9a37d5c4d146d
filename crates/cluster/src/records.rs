//! The values Strata stores in etcd (JSON).

use serde::{Deserialize, Serialize};

/// `nodes/<node>`: the node is alive (attached to its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id.
    pub node: String,
    /// The node's lease id, so `cluster remove-node` can revoke it.
    pub lease: i64,
    /// Unix seconds when this lease was granted.
    pub since: i64,
}

/// `registry/<service>/<node>`: a Healthy service on a node (attached to the node lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// The service's name.
    pub service: String,
    /// The node it runs on.
    pub node: String,
    /// The endpoint on its own node (usually `unix://`).
    pub endpoint: String,
    /// The `tcp://` endpoint other nodes use, when the service listens on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<String>,
    /// The service's protocol API version.
    pub api_v: i64,
}

/// `revocations/<cap_id>`: a revoked capability. Never deleted while it could matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// The revoked capability's id.
    pub cap_id: String,
    /// Unix seconds after which the capability has expired anyway, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The node whose identity recorded it.
    pub node: String,
    /// Unix seconds.
    pub revoked_at: i64,
}

/// `removed/<node>`: the node was removed from the cluster; its keys are never trusted again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedRecord {
    /// The removed node.
    pub node: String,
    /// Unix seconds.
    pub removed_at: i64,
    /// The public keys (standard base64) the node had in the trust bundle when it was
    /// removed: never trusted again, under any node's name.
    #[serde(default)]
    pub public_keys: Vec<String>,
}

/// `trust/<node>/<kid>`: one of a node's public keys, signed with the node's certificate
/// (from the cluster CA, CN = the node), so that writing etcd is not enough to make the
/// cluster trust a key in a node's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustRecord {
    /// The key, as `identity.keys` lists it.
    pub key: strata_proto::methods::identity::KeyInfo,
    /// The node's certificate, DER in standard base64.
    pub cert: String,
    /// ECDSA P-256/SHA-256 signature (ASN.1 DER, standard base64) over
    /// [`TrustRecord::signed_message`].
    pub signature: String,
}

impl TrustRecord {
    /// What a node signs when it publishes `key`: the node, and every field that decides
    /// what the key may verify (not `current`, which is informational).
    pub fn signed_message(node: &str, key: &strata_proto::methods::identity::KeyInfo) -> Vec<u8> {
        format!(
            "strata-trust-v1\n{node}\n{}\n{}\n{}\n{}",
            key.kid,
            key.public_key,
            key.not_before.as_deref().unwrap_or(""),
            key.not_after.as_deref().unwrap_or(""),
        )
        .into_bytes()
    }
}

/// `lineage/<cap_id>`: the ancestry of a capability a node delegated, so that the holder
/// of an ancestor can revoke it on any node. Signed with the delegating node's
/// certificate (like [`TrustRecord`]), so that writing etcd is not enough to make a
/// token count as another capability's ancestor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageRecord {
    /// The delegated capability's id.
    pub cap_id: String,
    /// The node whose identity delegated it (and signed this record).
    pub node: String,
    /// Its ancestors' ids, root first (the token's `parents`).
    pub parents: Vec<String>,
    /// Unix seconds when the capability expires.
    pub expires: i64,
    /// The node's certificate, DER in standard base64.
    pub cert: String,
    /// ECDSA P-256/SHA-256 signature (ASN.1 DER, standard base64) over
    /// [`LineageRecord::signed_message`].
    pub signature: String,
}

impl LineageRecord {
    /// The largest value accepted from etcd, in bytes: [`LineageRecord::MAX_PARENTS`]
    /// ids, a certificate and a signature fit with room to spare.
    pub const MAX_BYTES: usize = 8 * 1024;
    /// The most ancestors a record may name: the delegation depth limit
    /// (`strata_cap::Claims::MAX_PARENTS`).
    pub const MAX_PARENTS: usize = 32;

    /// What the delegating node signs: every field but the certificate and signature.
    pub fn signed_message(cap_id: &str, node: &str, parents: &[String], expires: i64) -> Vec<u8> {
        format!(
            "strata-lineage-v1\n{node}\n{cap_id}\n{expires}\n{}",
            parents.join(",")
        )
        .into_bytes()
    }

    /// Parses a value read from etcd, refusing one larger than
    /// [`LineageRecord::MAX_BYTES`] or naming more than [`LineageRecord::MAX_PARENTS`]
    /// ancestors before looking further.
    pub fn parse(bytes: &[u8]) -> Result<LineageRecord, String> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(format!(
                "a lineage record of {} bytes is more than the {} accepted",
                bytes.len(),
                Self::MAX_BYTES
            ));
        }
        // serde's message may quote the value's text (an unknown field's name): only
        // where it failed is kept, never what the writer chose.
        let record: LineageRecord = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "not a lineage record ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        if record.parents.len() > Self::MAX_PARENTS {
            return Err(format!(
                "a lineage record naming {} ancestors is more than the {} a delegation may have",
                record.parents.len(),
                Self::MAX_PARENTS
            ));
        }
        Ok(record)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
