//! notes' wire types: three methods, their params and results, and the two bounded values
//! a caller sends ([`NoteName`], [`NoteText`]), refused while the params are parsed.
//! The contract is in `api/protocol.md` ("notes").

use serde::{Deserialize, Serialize};

/// Longest note name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest note text, in bytes: 64 KiB.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// A note's name, which is also its file name in the data directory: 1 to
/// [`MAX_NAME_LEN`] bytes of `A-Z a-z 0-9 . _ -`, not starting with `.` (so never `.`,
/// `..`, a hidden file or a temporary file of the atomic writer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NoteName(String);

impl NoteName {
    /// The rule, in the words of the error a caller gets.
    pub const RULE: &'static str =
        "a note name is 1 to 64 bytes of A-Z a-z 0-9 . _ -, not starting with `.`";

    /// `name`, if it follows the rule.
    pub fn parse(name: &str) -> Result<NoteName, &'static str> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(NoteName(name.to_owned()))
        } else {
            Err(NoteName::RULE)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NoteName {
    type Error = &'static str;
    fn try_from(name: String) -> Result<NoteName, &'static str> {
        NoteName::parse(&name)
    }
}

impl From<NoteName> for String {
    fn from(name: NoteName) -> String {
        name.0
    }
}

impl std::fmt::Display for NoteName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A note's text: at most [`MAX_TEXT_LEN`] bytes of UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NoteText(String);

impl NoteText {
    /// `text`, if it is within the bound.
    pub fn new(text: String) -> Result<NoteText, &'static str> {
        if text.len() <= MAX_TEXT_LEN {
            Ok(NoteText(text))
        } else {
            Err("a note's text is at most 65536 bytes")
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NoteText {
    type Error = &'static str;
    fn try_from(text: String) -> Result<NoteText, &'static str> {
        NoteText::new(text)
    }
}

impl From<NoteText> for String {
    fn from(text: NoteText) -> String {
        text.0
    }
}

/// `notes.put`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutParams {
    /// The note's name.
    pub name: NoteName,
    /// Its text (replacing the note's text if it exists).
    pub text: NoteText,
}

/// `notes.put`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutResult {
    /// The note's name.
    pub name: NoteName,
    /// `created` or `replaced`.
    pub status: String,
    /// The text's length in bytes.
    pub bytes: u64,
}

/// `notes.get`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetParams {
    /// The note's name.
    pub name: NoteName,
}

/// `notes.get`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetResult {
    /// The note's name.
    pub name: NoteName,
    /// Its text.
    pub text: String,
}

/// `notes.list`'s params (none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListParams {}

/// `notes.list`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    /// Every note's name, sorted.
    pub names: Vec<NoteName>,
}

strata_service::method!(
    /// Write a note (right `notes.put`).
    Put,
    "notes.put",
    PutParams,
    PutResult
);
strata_service::method!(
    /// Read a note back, through Strata fs (right `notes.get`).
    Get,
    "notes.get",
    GetParams,
    GetResult
);
strata_service::method!(
    /// List the notes, through Strata fs (right `notes.list`).
    List,
    "notes.list",
    ListParams,
    ListResult
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_file_names_within_the_bound() {
        for good in ["a", "todo", "2026-12-01.md", "A_b-c.d", &"n".repeat(64)] {
            assert!(NoteName::parse(good).is_ok(), "{good:?} refused");
        }
        let long = "n".repeat(65);
        for bad in [
            "", ".", "..", ".hidden", "a/b", "../x", "a b", "é", "a\0", &long,
        ] {
            assert!(NoteName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn text_is_bounded_at_64_kib() {
        assert!(NoteText::new("x".repeat(MAX_TEXT_LEN)).is_ok());
        assert!(NoteText::new("x".repeat(MAX_TEXT_LEN + 1)).is_err());
    }

    #[test]
    fn bad_params_are_refused_while_parsing_without_echoing_them() {
        let raw = serde_json::value::to_raw_value(
            &serde_json::json!({"name": "../etc/passwd", "text": "x"}),
        )
        .unwrap();
        let err = strata_proto::parse_params::<PutParams>(Some(&raw)).unwrap_err();
        assert_eq!(err.code, strata_proto::ErrorCode::InvalidArgument);
        assert!(err.message.contains("a note name is"), "{}", err.message);
        assert!(!err.message.contains("passwd"), "{}", err.message);
    }
}
