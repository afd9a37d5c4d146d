//! Strata's wire contract: the request/response envelope, the eight error codes, typed
//! params and results for every method, and the names that cross the wire. The frame
//! codec that carries them is `strata-frame`.
//!
//! This crate is pure data: no sockets, no runtime, no policy. Everything that crosses a
//! Strata socket is defined here, so a change to the wire shows up as a change to this
//! crate (and to `api/protocol.md`).

pub mod envelope;
pub mod error;
pub mod methods;
pub mod names;

/// Largest payload a frame may carry: 1 MiB.
pub const MAX_FRAME: usize = 1 << 20;
pub use envelope::{
    parse_params, parse_request, Auth, Request, RequestError, Response, MAX_FIELD_NAME_LEN,
    MAX_METHOD_LEN, MAX_REQ_ID_LEN, PROTOCOL_VERSION,
};
pub use error::{clip, ErrorBody, ErrorCode, MAX_ERROR_MESSAGE_LEN};
pub use methods::Method;
pub use names::{is_service_name, NameError, NodeId, ServiceName, MAX_NAME_LEN};
