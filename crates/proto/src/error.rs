//! The eight protocol error codes. Clients may rely on the numeric `code` alone, so the
//! numbers and names here are part of the wire contract and never change.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A protocol error code as carried in `error.code` / `error.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed request, bad or missing param, unknown method.
    InvalidArgument,
    /// Token missing, malformed, badly signed, expired or revoked.
    Unauthenticated,
    /// Valid token without the right, or outside its constraints; or a caller that the
    /// peer-credential policy does not allow.
    PermissionDenied,
    /// The named resource does not exist.
    NotFound,
    /// Unexpected server error. The message never carries internals.
    Internal,
    /// Service not reachable or not ready.
    Unavailable,
    /// Rate limit or quota exceeded.
    ResourceExhausted,
    /// State conflict, e.g. starting a running service.
    Conflict,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::ResourceExhausted,
        ErrorCode::Conflict,
    ];

    /// The numeric code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 1,
            ErrorCode::Unauthenticated => 2,
            ErrorCode::PermissionDenied => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::Internal => 5,
            ErrorCode::Unavailable => 6,
            ErrorCode::ResourceExhausted => 7,
            ErrorCode::Conflict => 8,
        }
    }

    /// The symbolic name on the wire, e.g. `PERMISSION_DENIED`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Conflict => "CONFLICT",
        }
    }

    /// The code for a numeric value, if it is one of the eight.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(d)?;
        ErrorCode::from_code(n)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {n}")))
    }
}

/// Longest `error.message` a server sends, in bytes; a longer one is cut (at a character
/// boundary, ending in `…`). Messages may quote what a caller sent, so this is the bound
/// on how much of it comes back.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// The longest prefix of `text` that is at most `max` bytes and ends on a character
/// boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `error` object of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The protocol error code.
    pub code: ErrorCode,
    /// The code's name, e.g. `INVALID_ARGUMENT`.
    pub name: String,
    /// What went wrong, for a person (bounded: see [`MAX_ERROR_MESSAGE_LEN`]).
    pub message: String,
    /// Facts for a program, e.g. `{"field": "path"}`; `{}` when there are none.
    #[serde(default = "empty_details")]
    pub details: serde_json::Value,
}

fn empty_details() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl ErrorBody {
    /// An error with `message` cut to [`MAX_ERROR_MESSAGE_LEN`] bytes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_LEN {
            let keep = clip(&message, MAX_ERROR_MESSAGE_LEN - '…'.len_utf8()).len();
            message.truncate(keep);
            message.push('…');
        }
        ErrorBody {
            code,
            name: code.name().to_owned(),
            message,
            details: empty_details(),
        }
    }

    /// Attach structured details (must be a JSON object to be useful to clients).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_match_the_spec_table() {
        let table = [
            (1, "INVALID_ARGUMENT"),
            (2, "UNAUTHENTICATED"),
            (3, "PERMISSION_DENIED"),
            (4, "NOT_FOUND"),
            (5, "INTERNAL"),
            (6, "UNAVAILABLE"),
            (7, "RESOURCE_EXHAUSTED"),
            (8, "CONFLICT"),
        ];
        for (code, (n, name)) in ErrorCode::ALL.iter().zip(table) {
            assert_eq!(code.code(), n);
            assert_eq!(code.name(), name);
            assert_eq!(ErrorCode::from_code(n), Some(*code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(9), None);
    }

    #[test]
    fn messages_are_bounded_at_a_character_boundary() {
        let at = "m".repeat(MAX_ERROR_MESSAGE_LEN);
        assert_eq!(ErrorBody::new(ErrorCode::Internal, at.clone()).message, at);
        let past = format!("{at}x");
        let body = ErrorBody::new(ErrorCode::Internal, past);
        assert!(body.message.len() <= MAX_ERROR_MESSAGE_LEN);
        assert!(body.message.ends_with('…'), "{}", body.message);
        let wide = "é".repeat(MAX_ERROR_MESSAGE_LEN);
        let body = ErrorBody::new(ErrorCode::Internal, wide);
        assert!(body.message.len() <= MAX_ERROR_MESSAGE_LEN);
        assert!(body.message.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn error_body_serialises_with_numeric_code_and_name() {
        let body = ErrorBody::new(ErrorCode::PermissionDenied, "no");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 3, "name": "PERMISSION_DENIED", "message": "no", "details": {}})
        );
        let back: ErrorBody = serde_json::from_value(v).unwrap();
        assert_eq!(back, body);
    }
}
