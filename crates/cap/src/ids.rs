//! Small validated values that appear in claims: [`CapId`], [`Right`] and [`PathPrefix`].
//! Each is parsed once at the boundary and trusted afterwards.

use crate::error::{quoted, Error};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A capability id (`jti`): 128 random bits, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapId([u8; 16]);

impl CapId {
    /// A fresh id from the operating system's random number generator.
    pub fn random() -> Result<CapId, Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|_| Error::Random)?;
        Ok(CapId(bytes))
    }

    /// The id with these 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> CapId {
        CapId(bytes)
    }

    /// The 16 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl FromStr for CapId {
    type Err = Error;

    /// Accepts exactly 32 lowercase hex digits, the only form identity writes.
    fn from_str(s: &str) -> Result<CapId, Error> {
        let invalid = || Error::InvalidValue {
            what: "cap_id",
            reason: format!("{} is not 32 lowercase hex digits", quoted(s)),
        };
        let hex = s.as_bytes();
        if hex.len() != 32 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(invalid)?;
            let lo = hex_value(pair[1]).ok_or_else(invalid)?;
            *byte = (hi << 4) | lo;
        }
        Ok(CapId(bytes))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for CapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for CapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapId({self})")
    }
}

impl Serialize for CapId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CapId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CapId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A fully-qualified right such as `fs.read` or `supervisor.svc.start`: a service name,
/// a dot, then the method. Each dot-separated part is non-empty and made of ASCII letters,
/// digits, `_` and `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Right(String);

impl Right {
    /// Longest right accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// The whole right, e.g. `fs.read`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The service part, before the first dot (`fs`).
    pub fn service(&self) -> &str {
        split_method(&self.0).map_or("", |(service, _)| service)
    }

    /// The method part, after the first dot (`read`, or `svc.start`).
    pub fn method(&self) -> &str {
        split_method(&self.0).map_or("", |(_, method)| method)
    }
}

/// Splits `fs.read` into (`fs`, `read`) at the first dot.
pub(crate) fn split_method(name: &str) -> Option<(&str, &str)> {
    name.split_once('.')
}

impl FromStr for Right {
    type Err = Error;

    fn from_str(s: &str) -> Result<Right, Error> {
        let invalid = |why: &str| Error::InvalidValue {
            what: "right",
            reason: format!("{}: {why}", quoted(s)),
        };
        if s.len() > Right::MAX_LEN {
            return Err(invalid("longer than 128 bytes"));
        }
        if split_method(s).is_none() {
            return Err(invalid("expected service.method, e.g. fs.read"));
        }
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !s.split('.').all(part_ok) {
            return Err(invalid(
                "each dot-separated part must be non-empty ASCII letters, digits, '_' or '-'",
            ));
        }
        Ok(Right(s.to_owned()))
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Right({})", self.0)
    }
}

impl Serialize for Right {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Right {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Right, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `path_prefix` constraint: an absolute, normalised path.
///
/// Valid means: starts with `/`, no empty, `.` or `..` components, no NUL byte, at most
/// 4096 bytes. A trailing slash is dropped (`/srv/data/` becomes `/srv/data`). This type
/// does *not* make the path safe to open: fs resolves every request path beneath the
/// prefix with the kernel, which is where containment is enforced.
///
/// **What a prefix names.** fs opens a prefix beneath its export root component by
/// component *without following any symlink* (`openat2` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`): a prefix with a symlink anywhere below the root names nothing and
/// is refused. So the directory a prefix names is exactly the one its string names, and
/// string containment ([`PathPrefix::contains`]) is containment on disk: what issuance
/// and delegation judge is what fs opens.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Longest prefix accepted, in bytes (Linux `PATH_MAX`).
    pub const MAX_LEN: usize = 4096;

    /// The prefix as a string, e.g. `/srv/data`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix as a path.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// Whether `inner` is this prefix or a directory beneath it, component by component
    /// (`/srv/data` contains `/srv/data/a`, not `/srv/database`). The one containment rule
    /// for issuance, delegation and fs (see the type's docs for why it is sound).
    pub fn contains(&self, inner: &PathPrefix) -> bool {
        inner.as_path().starts_with(self.as_path())
    }
}

impl FromStr for PathPrefix {
    type Err = Error;

    fn from_str(s: &str) -> Result<PathPrefix, Error> {
        let invalid = |why: &str| Error::InvalidValue {
            what: "path_prefix",
            reason: format!("{}: {why}", quoted(s)),
        };
        if s.len() > PathPrefix::MAX_LEN {
            return Err(invalid("longer than 4096 bytes"));
        }
        if !s.starts_with('/') {
            return Err(invalid("must be an absolute path"));
        }
        if s.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if s == "/" {
            return Ok(PathPrefix(s.to_owned()));
        }
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        for component in trimmed[1..].split('/') {
            match component {
                "" => return Err(invalid("contains an empty component ('//')")),
                "." | ".." => return Err(invalid("contains a '.' or '..' component")),
                _ => {}
            }
        }
        Ok(PathPrefix(trimmed.to_owned()))
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPrefix({})", self.0)
    }
}

impl Serialize for PathPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PathPrefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_id_round_trips_as_lowercase_hex() {
        let id = CapId::from_bytes([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        assert_eq!(id.to_string().parse::<CapId>().unwrap(), id);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"00112233445566778899aabbccddeeff\""
        );
    }

    #[test]
    fn cap_id_rejects_other_forms() {
        for bad in [
            "",
            "00112233445566778899AABBCCDDEEFF",
            "00112233445566778899aabbccddeef",
            "00112233445566778899aabbccddeeff0",
            "0011223344556677-899aabbccddeeff",
            "g0112233445566778899aabbccddeeff",
        ] {
            assert!(bad.parse::<CapId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn random_cap_ids_differ() {
        let a = CapId::random().unwrap();
        let b = CapId::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 32);
    }

    #[test]
    fn right_splits_at_first_dot() {
        let r: Right = "supervisor.svc.start".parse().unwrap();
        assert_eq!(r.service(), "supervisor");
        assert_eq!(r.method(), "svc.start");
        let r: Right = "fs.read".parse().unwrap();
        assert_eq!((r.service(), r.method()), ("fs", "read"));
    }

    #[test]
    fn right_rejects_malformed() {
        let long = format!("fs.{}", "a".repeat(200));
        for bad in [
            "", "fs", ".read", "fs.", "fs..read", "fs.read ", "fs/read", "fs.*", &long,
        ] {
            let err = bad.parse::<Right>().unwrap_err();
            assert_eq!(
                err.code(),
                strata_proto::ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn containment_is_component_wise() {
        let p = |s: &str| s.parse::<PathPrefix>().unwrap();
        assert!(p("/srv/data").contains(&p("/srv/data")));
        assert!(p("/srv/data").contains(&p("/srv/data/a/b")));
        assert!(p("/").contains(&p("/srv")));
        assert!(!p("/srv/data").contains(&p("/srv/database")));
        assert!(!p("/srv/data").contains(&p("/srv")));
        assert!(!p("/srv/data/a").contains(&p("/srv/data")));
    }

    #[test]
    fn path_prefix_normalises_trailing_slash_and_rejects_escapes() {
        assert_eq!(
            "/srv/data/".parse::<PathPrefix>().unwrap().as_str(),
            "/srv/data"
        );
        assert_eq!("/".parse::<PathPrefix>().unwrap().as_str(), "/");
        assert_eq!(
            "/tmp".parse::<PathPrefix>().unwrap().as_path(),
            Path::new("/tmp")
        );
        for bad in [
            "",
            "tmp",
            "srv/data",
            "/srv//data",
            "/srv/../etc",
            "/srv/./x",
            "/..",
            "/a\0b",
            "//",
        ] {
            assert!(bad.parse::<PathPrefix>().is_err(), "{bad:?}");
        }
    }
}
