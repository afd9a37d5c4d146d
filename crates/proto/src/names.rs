//! Names parsed once, at the boundary: a [`ServiceName`] or a [`NodeId`] that exists is
//! valid, so code past the parse never checks the rule again.
//!
//! Both follow one rule, `[a-z][a-z0-9-]{0,62}`: names become socket, file, cgroup and
//! etcd key names, so nothing else may pass. A refused name is never echoed back (the
//! caller already has it, and it may be long).

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

/// The longest name: 63 bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Whether `name` follows the name rule, `[a-z][a-z0-9-]{0,62}`.
pub fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A string refused as a [`ServiceName`] or [`NodeId`]. Its message states the rule and
/// does not repeat the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    what: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "is not a {} ([a-z][a-z0-9-]{{0,62}})", self.what)
    }
}

impl std::error::Error for NameError {}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// `name`, if it follows the name rule.
            pub fn parse(name: &str) -> Result<$name, NameError> {
                name.parse()
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(name: String) -> Result<$name, NameError> {
                if is_service_name(&name) {
                    Ok($name(name))
                } else {
                    Err(NameError { what: $what })
                }
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(name: &str) -> Result<$name, NameError> {
                if is_service_name(name) {
                    Ok($name(name.to_owned()))
                } else {
                    Err(NameError { what: $what })
                }
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// The name of a service, as the registry, the supervisor, capabilities and the
    /// file system (socket, log and cgroup names) use it.
    ServiceName,
    "service name"
);

name_type!(
    /// The id of a node in a cluster (its certificate's CN and its etcd key prefix).
    NodeId,
    "node id"
);

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 4] = ["fs", "a", "my-svc2", "node-b"];

    fn bad() -> Vec<String> {
        ["", "Fs", "1fs", "-x", "fs.sock", "a b", "é", "a/b", "../x"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("a{}", "b".repeat(63))])
            .collect()
    }

    #[test]
    fn the_rule_accepts_names_up_to_63_bytes_and_nothing_else() {
        let longest = format!("a{}", "b".repeat(62));
        for ok in GOOD.iter().copied().chain([longest.as_str()]) {
            assert!(is_service_name(ok), "{ok}");
            assert_eq!(ServiceName::parse(ok).unwrap().as_str(), ok);
            assert_eq!(NodeId::parse(ok).unwrap().to_string(), ok);
        }
        for no in bad() {
            assert!(!is_service_name(&no), "{no:?}");
            assert!(ServiceName::parse(&no).is_err(), "{no:?}");
            assert!(NodeId::try_from(no.clone()).is_err(), "{no:?}");
        }
    }

    #[test]
    fn json_is_a_plain_string_and_a_bad_one_is_refused_without_echo() {
        let name: ServiceName = serde_json::from_str("\"fs\"").unwrap();
        assert_eq!(name, "fs");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"fs\"");
        let long = format!("\"{}\"", "X".repeat(5000));
        let err = serde_json::from_str::<ServiceName>(&long)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a service name"), "{err}");
        assert!(!err.contains("XXXX"), "the input is not echoed: {err}");
        let err = serde_json::from_str::<NodeId>("\"A\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a node id"), "{err}");
        assert!(serde_json::from_str::<NodeId>("7").is_err());
    }

    #[test]
    fn a_bad_name_in_params_is_invalid_argument_naming_the_field() {
        #[derive(Debug, Deserialize)]
        struct P {
            #[allow(dead_code)]
            name: ServiceName,
        }
        let raw =
            serde_json::value::RawValue::from_string(r#"{"name":"Bad Name"}"#.into()).unwrap();
        let e = crate::parse_params::<P>(Some(&raw)).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::InvalidArgument);
        assert_eq!(e.details["field"], "name");
        assert!(e.message.contains("is not a service name"), "{}", e.message);
    }
}
