//! [`Service`]: a kit service's route table. Each method is routed with the right it
//! needs; the gate checks the token before the handler runs, and the handler gets the
//! verified claims.

use crate::{Gate, ServiceError, Settings};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use strata_cap::{Claims, Right};
use strata_ipc::{Call, PeerCred, Router, Routes, Server};
use strata_proto::{ErrorBody, ErrorCode, Method};

/// What a handler knows about an authorized request: the call (its origin, req_id) and
/// the verified claims of the token that was checked for the method's right.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The call as the router got it.
    pub call: Call,
    /// The token's claims, verified, current, unrevoked, for this service and right.
    pub claims: Arc<Claims>,
}

/// What every route shares: the gate, the constraints the service enforces itself, and
/// the service's own state.
struct Bound<S> {
    gate: Arc<Gate>,
    accepts: Accepts,
    state: Arc<S>,
}

/// The token constraints a service said it enforces itself. A constraint the service did
/// not opt in to is refused (fail closed): a delegator who narrowed a token by
/// `path_prefix` must not see it honoured as if unconstrained. Rate limits
/// (`rate_limit`, `shared_rate_limits`) are enforced by the guard and always accepted.
#[derive(Debug, Default)]
struct Accepts {
    path_prefix: AtomicBool,
}

impl Accepts {
    /// The refusal of `claims`, if they carry a constraint this service does not enforce.
    fn refusal(&self, claims: &Claims, service: &str) -> Option<ErrorBody> {
        if claims.constraints.path_prefix.is_some() && !self.path_prefix.load(Ordering::Relaxed) {
            return Some(ErrorBody::new(
                ErrorCode::PermissionDenied,
                format!(
                    "the token carries a path_prefix constraint, which service {service} \
                     does not enforce: ask for a token without one"
                ),
            ));
        }
        None
    }
}

/// A finished kit service's route table, ready to serve: it answers frames
/// ([`ServiceRouter::dispatch`], for tests) and cannot be given more methods, so every
/// method it serves went through the gate.
pub struct ServiceRouter(Router);

impl ServiceRouter {
    /// The response frame to one request frame from the local caller `peer`.
    pub async fn dispatch(&self, peer: PeerCred, frame: &[u8]) -> Vec<u8> {
        self.0.dispatch(peer, frame).await.to_vec()
    }

    /// The methods served, `sys.*` included.
    pub fn methods(&self) -> Vec<&str> {
        self.0.methods()
    }
}

type HealthFacts<S> = Box<dyn Fn(&S) -> serde_json::Map<String, serde_json::Value> + Send + Sync>;

/// A kit service's route table over its state `S`, built one method at a time and then
/// served ([`Service::serve`]) or turned into a [`ServiceRouter`] ([`Service::into_router`]).
///
/// A token carrying a constraint the service does not enforce is refused
/// (PERMISSION_DENIED) unless the service opted in ([`Service::accepts_path_prefix`]).
///
/// `sys.health` is answered without a token and is not ok until the guard has loaded
/// identity's revocation list; `sys.metrics` is answered to root and the service's user.
pub struct Service<S> {
    gate: Arc<Gate>,
    routes: Routes<Bound<S>>,
    bound: Arc<Bound<S>>,
    health_facts: Option<HealthFacts<S>>,
}

impl<S: Send + Sync + 'static> Service<S> {
    /// A service admitting tokens through `gate`, reporting `version` in `sys.health`,
    /// whose handlers all get `state`.
    pub fn new(gate: Arc<Gate>, version: &str, state: Arc<S>) -> Service<S> {
        let bound = Arc::new(Bound {
            gate: Arc::clone(&gate),
            accepts: Accepts::default(),
            state,
        });
        let routes = Router::new(gate.service().as_str(), version)
            .with_state(Arc::clone(&bound))
            .health_check(|b| b.gate.guard().ready());
        Service {
            gate,
            routes,
            bound,
            health_facts: None,
        }
    }

    /// Accept tokens carrying a `path_prefix` constraint: the service enforces the prefix
    /// itself (its handlers read [`Claims::path_prefix`]). Without this, such a token is
    /// refused with PERMISSION_DENIED, saying why.
    pub fn accepts_path_prefix(self) -> Service<S> {
        self.bound
            .accepts
            .path_prefix
            .store(true, Ordering::Relaxed);
        self
    }

    /// Route `M` to `handler`, protected by the right named as the method (`notes.put`
    /// needs `notes.put`).
    ///
    /// # Panics
    /// When `M::NAME` is not `<this service>.<method>`, or is routed twice: both are
    /// mistakes in the service's code, found the first time it starts.
    pub fn method<M, E, F, Fut>(self, handler: F) -> Service<S>
    where
        M: Method,
        E: Into<ErrorBody> + 'static,
        F: Fn(Arc<S>, Authorized, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, E>> + Send + 'static,
    {
        self.method_with_right::<M, E, F, Fut>(M::NAME, handler)
    }

    /// Route `M` to `handler`, protected by `right` (a right of this service, e.g. a
    /// `notes.read` shared by several reading methods).
    ///
    /// # Panics
    /// As [`Service::method`], and when `right` is not a right of this service.
    pub fn method_with_right<M, E, F, Fut>(mut self, right: &str, handler: F) -> Service<S>
    where
        M: Method,
        E: Into<ErrorBody> + 'static,
        F: Fn(Arc<S>, Authorized, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, E>> + Send + 'static,
    {
        let service = self.gate.service().as_str();
        assert!(
            belongs_to(M::NAME, service),
            "method {} is not a method of service {service} (<service>.<method>)",
            M::NAME
        );
        let parsed: Result<Right, _> = right.parse();
        assert!(
            parsed.is_ok_and(|r| r.service() == service),
            "right {right:?} of method {} is not a right of service {service}",
            M::NAME
        );
        let right: Arc<str> = Arc::from(right);
        let handler = Arc::new(handler);
        self.routes = self
            .routes
            .method::<M, ErrorBody, _, _>(move |b, call, params| {
                let (right, handler) = (Arc::clone(&right), Arc::clone(&handler));
                async move {
                    let claims = b.gate.authorize(&call, &right).await?;
                    if let Some(refused) = b.accepts.refusal(&claims, b.gate.service().as_str()) {
                        b.gate.audit_denial(&call, Some(&claims), &refused);
                        return Err(refused);
                    }
                    let request = Authorized {
                        call: call.clone(),
                        claims: Arc::clone(&claims),
                    };
                    // A handler's own refusal (a full store, a missing note) is the
                    // service's answer, not a denial of the token: it is not audited as
                    // `auth.denied` and costs the caller nothing in the audit budget.
                    handler(Arc::clone(&b.state), request, params)
                        .await
                        .map_err(Into::into)
                }
            });
        self
    }

    /// Add the service's own facts to `sys.health` (beside the guard's).
    pub fn health_facts(
        mut self,
        facts: impl Fn(&S) -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static,
    ) -> Service<S> {
        self.health_facts = Some(Box::new(facts));
        self
    }

    /// The finished route table (for tests: [`ServiceRouter::dispatch`] answers a frame).
    pub fn into_router(self) -> ServiceRouter {
        ServiceRouter(self.router())
    }

    fn router(self) -> Router {
        let facts = self.health_facts;
        self.routes
            .health_extra(move |b| {
                let mut m = b.gate.health();
                if let Some(facts) = &facts {
                    m.extend(facts(&b.state));
                }
                m
            })
            .into_router()
    }

    /// Bind the socket `settings` name and serve until SIGTERM or SIGINT, then drain
    /// (requests in flight get the server's grace period) and flush the audit log.
    pub async fn serve(self, settings: &Settings) -> Result<(), ServiceError> {
        let gate = Arc::clone(&self.gate);
        let server = Server::bind(settings.server_config(), self.router())?;
        tracing::info!(service = %gate.service().as_str(), socket = %settings.socket.display(), "serving");
        let served = server.serve_until_signal().await;
        gate.audit().flush();
        served?;
        tracing::info!(service = %gate.service().as_str(), "stopped");
        Ok(())
    }
}

/// Whether `method` is `<service>.<something>`.
fn belongs_to(method: &str, service: &str) -> bool {
    method
        .strip_prefix(service)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::belongs_to;

    #[test]
    fn a_method_belongs_to_the_service_it_is_prefixed_with() {
        assert!(belongs_to("notes.put", "notes"));
        assert!(!belongs_to("notesx.put", "notes"));
        assert!(!belongs_to("notes.", "notes"));
        assert!(!belongs_to("notes", "notes"));
        assert!(!belongs_to("fs.read", "notes"));
    }
}
