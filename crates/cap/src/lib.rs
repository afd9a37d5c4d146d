//! Strata's capability tokens: everything a verifier or the identity service needs to
//! issue, check and decide on a capability.
//!
//! This crate owns:
//! - the token [`Claims`] (SPEC §4) and the validated values inside them ([`CapId`],
//!   [`Right`], [`PathPrefix`], [`RateLimit`], [`Timestamp`]);
//! - PASETO `v2.public` signing and verification (Ed25519, via `pasetors`; `v4.public` is
//!   accepted too and can be issued on request), with the signing key's PASERK id
//!   (`k2.pid.…`) in the footer as `{"kid":…}` ([`paseto`]);
//! - identity's [`SigningKey`] file (0600, written atomically), the `identity.pub`
//!   encoding of a [`PublicKey`], and the verifiers' runtime-updatable [`TrustedKeys`];
//! - [`Verifier`], which turns token text into claims through a bounded cache, so a
//!   repeated token costs a hash and a comparison instead of a signature check;
//! - [`authorize`], the single place that decides whether a capability may call a method
//!   (SPEC §1, invariant 3), with its inputs: [`RevocationSet`], [`RateLimiter`], and a
//!   [`Clock`] that tests replace with [`ManualClock`], and in cluster mode the max clock
//!   skew between nodes it allows for ([`max_clock_skew_from_env`]);
//! - the delegation rules: a child's [`Terms`] from what a delegation asks for
//!   ([`Narrowing`], omitted terms inherited) and [`attenuates`], the one check that a child
//!   allows nothing its parent does not; and [`Standing`], each validity fact
//!   [`check_current`] refuses on, for reports.
//!
//! It is not a service and does no I/O beyond key files: no sockets, no async runtime, no
//! persistence of revocations (identity and the services own that), and no path
//! resolution (fs enforces `path_prefix` with the kernel; this crate only parses it).
//! The Strata crates it depends on are `strata-proto`, for [`ErrorCode`](strata_proto::ErrorCode)
//! and the key types' wire form, and `strata-files`, whose `write_atomic` writes the key files.
//!
//! A service's request path:
//! ```no_run
//! # use std::sync::Arc;
//! # use strata_cap::*;
//! # fn handle(token: &str) -> Result<(), Error> {
//! # let public_key = PublicKey::from_bytes([0; 32]);
//! let keys = Arc::new(TrustedKeys::new([TrustedKey::new(public_key)]));
//! let verifier = Verifier::new(keys, Verifier::DEFAULT_CACHE_CAPACITY);
//! let (revocations, limiter, clock) = (RevocationSet::new(), RateLimiter::default(), SystemClock::new());
//!
//! // Per request:
//! let ctx = AuthContext::new(&clock, &revocations, &limiter);
//! let claims = verifier.authorize_request(token, "fs.read", &ctx)?;
//! let prefix = claims.path_prefix();
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod cache;
mod claims;
mod clock;
mod delegation;
mod error;
mod ids;
mod keys;
pub mod paseto;
mod policy;
mod rate;
mod revocation;
mod skew;
mod table;
mod verify;

pub use claims::{Claims, Constraints, SharedRateLimit};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use delegation::{attenuates, Narrowing, Terms, Widening};
pub use error::Error;
pub use ids::{CapId, PathPrefix, Right};
pub use keys::{KeyId, KeyOrigin, PublicKey, SigningKey, TrustedKey, TrustedKeys};
pub use paseto::{TokenVersion, MAX_TOKEN_LEN};
pub use policy::{authorize, check_current, AuthContext, Denial, DenialKind, Standing};
pub use rate::{RateLimit, RateLimiter, RatePeriod};
pub use revocation::{RevocationSet, DEFAULT_REVOCATION_RETENTION};
pub use skew::{
    max_clock_skew_from_env, max_clock_skew_from_lookup, parse_max_clock_skew,
    DEFAULT_MAX_CLOCK_SKEW, ENV_MAX_CLOCK_SKEW, MAX_MAX_CLOCK_SKEW,
};
pub use verify::Verifier;
