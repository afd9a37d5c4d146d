//! Strata's fs service: capability-gated, read-only file access that cannot be escaped,
//! leaked or outrun.
//!
//! What it is for: serving `fs.open`, `fs.read`, `fs.close`, `fs.list` and `fs.stat` to
//! holders of a capability for service `fs`, confined to the token's `path_prefix`.
//!
//! How confinement works, outermost first:
//! - the operator lists the **export roots** fs may ever serve ([`ExportRoots`]); a token
//!   whose prefix lies outside all of them is refused;
//! - the prefix is opened as a directory handle beneath its root, and every request path
//!   beneath that handle, by the kernel (`openat2` with `RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS`): no string check stands between a request and a file outside
//!   the prefix ([`roots`], [`path`]);
//! - at start-up the binary locks itself with Landlock to reading beneath the roots
//!   ([`sandbox`]).
//!
//! Handles ([`handles`]) are unguessable, bound to the capability and subject that opened
//! them, limited per capability and overall, closed at once when the capability (or an
//! ancestor) is revoked, and swept when it expires. Reads are positional and sized to fit
//! one frame ([`read`]). Opens, every denial, and a per-handle summary of reads go to the
//! audit log.
//!
//! What it is not: a token verifier or policy engine. Handlers in [`server`] ask the guard
//! (`strata-guard`) to authorize each request, then call [`FsService`] with the verified
//! claims; fs only enforces what the claims say about paths and handles. The wire types
//! are in `strata_proto::methods::fs`.

mod base64;
pub mod blocking;
pub mod error;
pub mod handles;
mod json;
mod list;
mod metrics;
mod mounts;
mod open;
pub mod path;
pub mod read;
pub mod roots;
pub mod sandbox;
pub mod server;
mod service;
mod stat;

pub use blocking::{BlockingLimits, BlockingPool};
pub use error::FsError;
pub use handles::{HandleLimits, HandleTable, Holder};
pub use list::{list_room, DEFAULT_LIST_LIMIT, INLINE_SCAN_MAX, MAX_LIST_LIMIT};
pub use read::{reply_room, MAX_READ_SIZE};
pub use roots::ExportRoots;
pub use sandbox::LandlockState;
pub use server::{router, spawn_maintenance};
pub use service::{Caller, CloseReason, FsService, RevocationCheck};
