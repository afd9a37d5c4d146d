//! Strata's wire contract: the request/response envelope, the eight error codes, typed
//! params and results for every method, and the frame codec.
//!
//! This crate is pure data: no sockets, no runtime, no policy. Everything that crosses a
//! Strata socket is defined here, so a change to the wire shows up as a change to this
//! crate (and to `api/protocol.md`).

#[cfg(feature = "codec")]
pub mod codec;
pub mod envelope;
pub mod error;
pub mod methods;

#[cfg(feature = "codec")]
pub use codec::{frame_codec, is_frame_too_large};

/// Largest payload a frame may carry: 1 MiB.
pub const MAX_FRAME: usize = 1 << 20;
pub use envelope::{
    parse_params, parse_request, Auth, Request, RequestError, Response, MAX_FIELD_NAME_LEN,
    MAX_METHOD_LEN, MAX_REQ_ID_LEN, PROTOCOL_VERSION,
};
pub use error::{clip, ErrorBody, ErrorCode, MAX_ERROR_MESSAGE_LEN};
pub use methods::Method;

/// Whether `name` is a valid service name: `[a-z][a-z0-9-]{0,62}`. Names become socket,
/// file and cgroup names, so this one rule is used wherever a service is named.
pub fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_names() {
        for ok in ["fs", "a", "my-svc2", &format!("a{}", "b".repeat(62))] {
            assert!(super::is_service_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Fs",
            "1fs",
            "-x",
            "fs.sock",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!super::is_service_name(bad), "{bad:?}");
        }
    }
}
