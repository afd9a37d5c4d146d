//! `[[service.capability]]`: the capabilities the supervisor obtains from identity for a
//! service, delivers into its credentials directory, rotates and revokes with the run.
//!
//! The types, and their validation: [`CapabilitySpec::validate`] checks one entry,
//! [`validate_service`] a service's list (count, unique names, the implicit dependency on
//! identity), [`check_identity`] that the manifest has an identity to ask. Every refusal
//! is a [`CapabilityError`] naming the service and the entry. The rules are in the
//! supervisor README and `docs/OPERATIONS.md`; they are identity's own where identity has
//! one (rights, prefixes, rates, the longest lifetime), so a manifest `--check-config`
//! accepts is one identity will not refuse.

use super::{Manifest, ManifestError, ServiceSpec};
use crate::units::{HumanDuration, Signal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;
use strata_cap::{PathPrefix, RateLimit, Right};
use strata_proto::methods::identity::{MAX_RIGHTS, MAX_RIGHT_LEN};
use strata_proto::ServiceName;

/// Default lifetime of a routed capability: one hour.
pub const DEFAULT_TTL: HumanDuration = HumanDuration::secs(3600);
/// Shortest `ttl`: 10 s. identity's expiry is its second-truncated issue time plus
/// `ttl`, so a token lives up to a second (plus the answer's latency) less than `ttl`;
/// rotation at two thirds of it must still leave seconds to obtain and write the next.
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// Most bytes an entry's terms may take in the signed claims: `rights`, `path_prefix` and
/// `rate_limit` as JSON. A token is at most [`strata_cap::MAX_TOKEN_LEN`] (8 KiB) of
/// base64 (3 bytes in 4) holding the claims and a 64-byte signature, with a ~90-byte
/// header and footer: about 6 000 bytes of claims. 4 KiB for the terms leaves more than
/// 1 900 for the rest (ids, issuer, subject, times, eight shared rate limits: under
/// 1 200 at their longest), so identity never refuses an entry `--check-config` accepts
/// for its size.
pub const MAX_TERMS_LEN: usize = 4096;
/// Longest `ttl`: 30 days, the longest lifetime identity issues to anyone.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most `[[service.capability]]` entries one service may declare.
pub const MAX_PER_SERVICE: usize = 32;
/// Longest capability `name` (a file name), in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The service routed capabilities are obtained from: a service that declares any
/// depends on it.
pub const IDENTITY: &str = "identity";

/// One routed capability of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySpec {
    /// The file name in the service's credentials directory (unique per service).
    pub name: String,
    /// The service the token is for (`fs`, `notes`, ...).
    pub service: String,
    /// Full method names of that service, e.g. `fs.read`.
    pub rights: Vec<String>,
    /// The token's `path_prefix` constraint (absolute, normalised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The token's `rate_limit` constraint, e.g. `200rps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// The token's lifetime; a fresh one replaces it at about two thirds of it.
    #[serde(default = "default_ttl")]
    pub ttl: HumanDuration,
    /// How long a replaced token stays valid after its rotation before it is revoked
    /// (default: a sixth of `ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<HumanDuration>,
    /// A signal sent to the service after its file was replaced (e.g. `SIGHUP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rotate: Option<Signal>,
}

fn default_ttl() -> HumanDuration {
    DEFAULT_TTL
}

impl CapabilitySpec {
    /// The grace after a rotation: `grace`, or a sixth of `ttl`.
    pub fn grace_period(&self) -> std::time::Duration {
        self.grace.map(|g| g.0).unwrap_or(self.ttl.0 / 6)
    }

    /// When, after a token was obtained, the next one is: two thirds of `ttl`.
    pub fn rotate_after(&self) -> std::time::Duration {
        self.ttl.0 * 2 / 3
    }

    /// Check this entry on its own; the message names the field at fault (the caller
    /// adds the service and the entry).
    pub fn validate(&self) -> Result<(), String> {
        check_file_name(&self.name)?;
        if ServiceName::parse(&self.service).is_err() {
            return Err(format!(
                "`service` {} is not a service name ([a-z][a-z0-9-]{{0,62}})",
                shown(&self.service)
            ));
        }
        self.check_rights()?;
        if let Some(prefix) = &self.path_prefix {
            let parsed: PathPrefix = prefix.parse().map_err(|e| format!("`path_prefix`: {e}"))?;
            // The token's prefix is exactly the manifest's (what introspection shows).
            if parsed.as_str() != prefix {
                return Err(format!(
                    "`path_prefix` {} is not normalised: write {}",
                    shown(prefix),
                    shown(parsed.as_str())
                ));
            }
        }
        if let Some(rate) = &self.rate_limit {
            rate.parse::<RateLimit>()
                .map_err(|e| format!("`rate_limit`: {e}"))?;
        }
        let terms = self.terms_len();
        if terms > MAX_TERMS_LEN {
            return Err(format!(
                "`rights`, `path_prefix` and `rate_limit` take {terms} bytes in the token; at \
                 most {MAX_TERMS_LEN} (a token is at most {} bytes): list fewer or shorter \
                 rights, or a shorter path_prefix",
                strata_cap::MAX_TOKEN_LEN
            ));
        }
        let ttl = self.ttl.get();
        if ttl < MIN_TTL || ttl > MAX_TTL {
            return Err(format!(
                "`ttl` is {}; it must be 10s to 30 days (720h)",
                self.ttl
            ));
        }
        if ttl.subsec_nanos() != 0 {
            return Err(format!(
                "`ttl` is {}; it must be whole seconds (identity issues lifetimes in seconds)",
                self.ttl
            ));
        }
        if let Some(grace) = self.grace {
            if grace.get().is_zero() {
                return Err("`grace` must be more than 0".into());
            }
            // Rotation is at two thirds of ttl, so the old token is revoked by the time
            // it would have expired anyway.
            if grace.get().checked_mul(3).is_none_or(|g3| g3 > ttl) {
                return Err(format!(
                    "`grace` is {grace}; it must be at most a third of `ttl` ({})",
                    HumanDuration(ttl / 3)
                ));
            }
        }
        if let Some(signal) = self.on_rotate {
            if !(1..=64).contains(&signal.0) {
                return Err(format!("`on_rotate` {} is not a signal", signal.0));
            }
        }
        Ok(())
    }

    /// The bytes this entry's terms take in the token's claims: `rights`, `path_prefix`
    /// and `rate_limit` each encoded as JSON (bounded by [`MAX_TERMS_LEN`]).
    pub fn terms_len(&self) -> usize {
        fn json<T: Serialize + ?Sized>(v: &T) -> usize {
            serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
        }
        json(&self.rights)
            .saturating_add(self.path_prefix.as_deref().map_or(0, json))
            .saturating_add(self.rate_limit.as_deref().map_or(0, json))
    }

    /// 1 to 64 rights, each at most 128 bytes, each `<service>.<method>` of this entry's
    /// `service` (identity refuses anything else), none twice.
    fn check_rights(&self) -> Result<(), String> {
        if self.rights.is_empty() {
            return Err("`rights` must list at least one right, e.g. \"fs.read\"".into());
        }
        if self.rights.len() > MAX_RIGHTS {
            return Err(format!(
                "`rights` has {} entries; at most {MAX_RIGHTS}",
                self.rights.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for text in &self.rights {
            if text.len() > MAX_RIGHT_LEN {
                return Err(format!(
                    "`rights`: {} is {} bytes long; at most {MAX_RIGHT_LEN}",
                    shown(text),
                    text.len()
                ));
            }
            let right: Right = text.parse().map_err(|_| {
                format!(
                    "`rights`: {} is not a right like \"fs.read\" (service.method: letters, digits, `_` and `-`, parts joined by dots)",
                    shown(text)
                )
            })?;
            if right.service() != self.service {
                return Err(format!(
                    "`rights`: {} is for service {}, not {} (a token carries rights of its own service only)",
                    shown(text),
                    shown(right.service()),
                    shown(&self.service)
                ));
            }
            if !seen.insert(text.as_str()) {
                return Err(format!("`rights`: {} is listed twice", shown(text)));
            }
        }
        Ok(())
    }
}

/// A capability `name`: a safe file name, `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (so no `/`,
/// no NUL, and never `.` or `..`).
fn check_file_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`name` {} is not a safe file name: [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}",
            shown(name)
        ))
    }
}

/// A `[[service.capability]]` entry (or a service's list of them) that is wrong.
#[derive(Debug)]
pub struct CapabilityError {
    /// The service that declares it.
    pub service: String,
    /// The entry, as shown to people (its name quoted, or `#n` for one without a name);
    /// `None` when the fault is the service's list as a whole.
    pub entry: Option<String>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {}: ", shown(&self.service))?;
        if let Some(entry) = &self.entry {
            write!(f, "capability {entry}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for CapabilityError {}

/// `name` in backticks when it is plain, else quoted and escaped (at most 64 characters),
/// so a hostile or mistyped value cannot garble the message.
fn shown(name: &str) -> String {
    const MAX_CHARS: usize = 64;
    let plain = !name.is_empty()
        && name.chars().count() <= MAX_CHARS
        && name.chars().all(|c| c.is_ascii_graphic() && c != '`');
    if plain {
        return format!("`{name}`");
    }
    let mut cut: String = name.chars().take(MAX_CHARS).collect();
    if cut.len() < name.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// A service's capabilities: each entry valid, at most [`MAX_PER_SERVICE`], names
/// unique, `identity` in `depends_on` ([`Manifest::normalise`] puts it there), and none
/// for identity itself. Called from `ServiceSpec::validate_fields`.
pub fn validate_service(spec: &ServiceSpec) -> Result<(), CapabilityError> {
    let caps = &spec.capabilities;
    if caps.is_empty() {
        return Ok(());
    }
    let refuse = |entry: Option<&str>, message: String| CapabilityError {
        service: spec.name.clone(),
        entry: entry.map(shown),
        message,
    };
    if spec.name == IDENTITY {
        return Err(refuse(
            None,
            "identity issues capabilities and may not be routed any ([[service.capability]])"
                .into(),
        ));
    }
    if caps.len() > MAX_PER_SERVICE {
        return Err(refuse(
            None,
            format!(
                "declares {} capabilities; at most {MAX_PER_SERVICE}",
                caps.len()
            ),
        ));
    }
    if !spec.depends_on.iter().any(|d| d == IDENTITY) {
        return Err(refuse(
            None,
            "declares capabilities, so it depends on `identity`, which `depends_on` lacks \
             (Manifest::normalise adds it)"
                .into(),
        ));
    }
    let mut names = BTreeSet::new();
    for cap in caps {
        cap.validate().map_err(|m| refuse(Some(&cap.name), m))?;
        if !names.insert(cap.name.as_str()) {
            return Err(refuse(
                Some(&cap.name),
                "is declared more than once (names are file names in one directory)".into(),
            ));
        }
    }
    Ok(())
}

/// A service that declares capabilities needs an `identity` service to obtain them from.
pub fn check_identity(manifest: &Manifest) -> Result<(), CapabilityError> {
    if manifest.service(IDENTITY).is_some() {
        return Ok(());
    }
    match manifest
        .services
        .iter()
        .find(|s| !s.capabilities.is_empty())
    {
        Some(s) => Err(CapabilityError {
            service: s.name.clone(),
            entry: None,
            message: "declares capabilities, which identity issues, but the manifest \
                      declares no `identity` service"
                .into(),
        }),
        None => Ok(()),
    }
}

impl Manifest {
    /// Add what a manifest implies without spelling it out: `identity` in the
    /// `depends_on` of every service that declares capabilities. [`Manifest::parse`]
    /// calls it; a manifest built in code calls it before [`Manifest::validate`], which
    /// refuses a service with capabilities that does not depend on identity.
    pub fn normalise(&mut self) {
        for s in &mut self.services {
            if !s.capabilities.is_empty()
                && s.name != IDENTITY
                && !s.depends_on.iter().any(|d| d == IDENTITY)
            {
                s.depends_on.push(IDENTITY.to_owned());
            }
        }
    }
}

/// The manifest's parse error, led (when the fault is in a `[[service.capability]]`
/// entry, e.g. an unknown key) by a line naming the service and the entry: TOML's own
/// message gives only the line.
pub(super) fn parse_error(text: &str, origin: &str, error: toml::de::Error) -> ManifestError {
    let original = error.to_string().trim_end().to_owned();
    let message = match entry_at_fault(text) {
        Some(entry) => format!("{entry}\n{original}"),
        None => original,
    };
    ManifestError::Parse {
        origin: origin.to_owned(),
        message,
    }
}

/// The first capability entry that does not parse on its own, read from the untyped
/// TOML (the text is valid TOML when the typed parse fails only on a field).
fn entry_at_fault(text: &str) -> Option<CapabilityError> {
    let table: toml::Table = text.parse().ok()?;
    for service in table.get("service")?.as_array()? {
        let Some(caps) = service.get("capability").and_then(toml::Value::as_array) else {
            continue;
        };
        let name = service.get("name").and_then(toml::Value::as_str);
        for (i, cap) in caps.iter().enumerate() {
            if let Err(e) = cap.clone().try_into::<CapabilitySpec>() {
                return Some(CapabilityError {
                    service: name.unwrap_or("?").to_owned(),
                    entry: Some(
                        cap.get("name")
                            .and_then(toml::Value::as_str)
                            .map_or_else(|| format!("#{}", i + 1), shown),
                    ),
                    message: e.to_string().trim_end().to_owned(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
