//! Strata's wire contract: the request/response envelope, the eight error codes, typed
//! params and results for every method, and the frame codec.
//!
//! This crate is pure data: no sockets, no runtime, no policy. Everything that crosses a
//! Strata socket is defined here, so a change to the wire shows up as a change to this
//! crate (and to `api/protocol.md`).

pub mod codec;
pub mod envelope;
pub mod error;
pub mod methods;

pub use codec::{frame_codec, is_frame_too_large, MAX_FRAME};
pub use envelope::{
    parse_params, parse_request, Auth, Request, RequestError, Response, PROTOCOL_VERSION,
};
pub use error::{ErrorBody, ErrorCode};
pub use methods::Method;
