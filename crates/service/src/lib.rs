//! A kit for writing a Strata service that accepts capabilities, and uses the ones the
//! supervisor routes to it.
//!
//! What it is for: a person writing a service outside this repository's built-in ones
//! (`crates/notes` is the worked example) declares a service name and typed methods, each
//! with the right it needs, and gets, without reading the fs crate:
//! - every request's token checked for that service and right before the handler runs,
//!   by the same guard fs uses ([`strata_guard::Guard`]: identity's keys and revocation
//!   feed), with the same answers: UNAUTHENTICATED (no token, bad, expired, revoked),
//!   PERMISSION_DENIED (another service's token, a right it lacks), RESOURCE_EXHAUSTED
//!   (over its rate limit), UNAVAILABLE (the revocation list not loaded yet);
//! - a token carrying a constraint the service does not enforce refused (a `path_prefix`,
//!   unless the service calls [`Service::accepts_path_prefix`]), never ignored;
//! - every refusal of a token audited (`auth.denied` in the shared audit log, bounded
//!   and rate limited by `strata-audit` like the other services'); a handler's own
//!   answer is not a denial and is not audited as one;
//! - `sys.health` answered (not ok until the guard has the whole revocation list, so the
//!   supervisor does not call the service ready too early) and `sys.metrics` to admins
//!   (root and the service's own uid);
//! - the socket the supervisor expects (`<runtime dir>/<name>.sock`, [`ServiceArgs`]),
//!   served until SIGTERM/SIGINT with a graceful drain ([`Service::serve`]);
//! - [`Credential`]: a capability routed to this service by the manifest's
//!   `[[service.capability]]`, read from `$CREDENTIALS_DIRECTORY/<name>` and re-read when
//!   the supervisor rotates it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use strata_service::{Authorized, Gate, Service, ServiceArgs};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct EchoParams { pub text: String }
//! #[derive(Serialize, Deserialize)]
//! pub struct EchoResult { pub text: String }
//! strata_service::method!(
//!     /// `echo.say`: answers its text.
//!     Say, "echo.say", EchoParams, EchoResult
//! );
//!
//! # async fn run(args: ServiceArgs) -> Result<(), strata_service::ServiceError> {
//! let settings = args.settings("echo")?;
//! let gate = Gate::start(&settings)?;
//! Service::new(gate, env!("CARGO_PKG_VERSION"), Arc::new(()))
//!     // Needs a token for service `echo` granting `echo.say` (the method's name).
//!     .method::<Say, strata_proto::ErrorBody, _, _>(|_state, _req: Authorized, p| async move {
//!         Ok(EchoResult { text: p.text })
//!     })
//!     .serve(&settings)
//!     .await
//! # }
//! ```
//!
//! What it is not: a policy engine (the decision is `strata_cap::authorize`, through the
//! guard), nor a place for a service's own rules (what a note name may be is notes'
//! business). Methods are typed with [`strata_proto::Method`], which a crate outside
//! `strata-proto` implements through [`method!`].

mod credential;
mod error;
mod gate;
mod service;
mod settings;

pub use credential::{Credential, Token, CREDENTIALS_DIRECTORY, MAX_CREDENTIAL_LEN};
pub use error::ServiceError;
pub use gate::{is_denial, Gate};
pub use service::{Authorized, Service, ServiceRouter};
pub use settings::{ServiceArgs, Settings};

// What a service built with the kit names in its own code.
pub use strata_cap::Claims;
pub use strata_ipc::Call;
pub use strata_proto::{ErrorBody, ErrorCode, Method};

/// Declares a method type outside `strata-proto`: a unit struct implementing
/// [`strata_proto::Method`] with its wire name, params and result, exactly as the
/// built-in services' methods are declared. The name must be `<service>.<method>`, the
/// service being the one the kit serves (checked when the method is routed).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// pub struct GetParams { pub name: String }
/// #[derive(Serialize, Deserialize)]
/// pub struct GetResult { pub text: String }
/// strata_service::method!(
///     /// `notes.get`: one note's text.
///     Get, "notes.get", GetParams, GetResult
/// );
/// assert_eq!(<Get as strata_service::Method>::NAME, "notes.get");
/// ```
#[macro_export]
macro_rules! method {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $params:ty, $result:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl $crate::Method for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
            type Result = $result;
        }
    };
}
