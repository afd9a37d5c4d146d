//! notes, the worked example of a Strata service built with `strata-service`: a service
//! that both accepts capabilities and uses one.
//!
//! - It **accepts** `notes` capabilities: `notes.put`, `notes.get` and `notes.list` each
//!   need their own right in a token for service `notes` (the kit checks, audits denials
//!   and answers `sys.health`).
//! - It **uses** the `fs` capability the supervisor routes to it (`[[service.capability]]
//!   name = "fs"` in its manifest entry, `path_prefix` its data directory): Strata fs is
//!   read-only, so notes writes each note as a file of its own data directory
//!   ([`store`]), which the operator exports to fs, and reads notes back through fs
//!   ([`through_fs`]).
//!
//! Not here: anything the kit does (token checks, the socket, shutdown). The binaries are
//! `strata-notes` (`main.rs`) and `strata-notes-client` (`bin/strata-notes-client.rs`);
//! the walk-through is `docs/SERVICES.md`.

pub mod api;
mod error;
pub mod service;
pub mod store;
pub mod through_fs;

pub use error::NotesError;
pub use service::{service, Notes};
pub use store::{Store, DEFAULT_MAX_NOTES, DEFAULT_MAX_NOTES_PER_CALLER, MAX_MAX_NOTES};
pub use through_fs::ThroughFs;
