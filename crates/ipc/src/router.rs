//! Method routing: wire name → typed handler.
//!
//! A handler is an async function of the caller ([`Call`]) and its typed params. The router
//! decodes params (refusing bad ones by field name), runs the handler with panics caught,
//! and encodes the result. Every router answers `sys.health` without a token, and
//! `sys.metrics` to admin callers (every request is counted and timed here: see
//! [`crate::metrics`]). A caller over TCP is served only the methods its listener allows
//! (deny by default).

use crate::metrics::{request_families, MethodStats, Snapshot, OTHER_METHOD};
use crate::PeerCred;
use bytes::Bytes;
use futures_util::FutureExt;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use strata_proto::methods::{sys, Method};
use strata_proto::{
    parse_params, parse_request, ErrorBody, ErrorCode, Response, MAX_FRAME, MAX_REQ_ID_LEN,
};
use tokio_util::sync::CancellationToken;

/// What a handler knows about the request it serves.
#[derive(Debug, Clone)]
pub struct Call {
    origin: Origin,
    /// The request's id, echoed in the response.
    pub req_id: String,
    /// The method's wire name.
    pub method: String,
    token: Option<String>,
    stopping: CancellationToken,
}

/// Who made a call: a local process, identified by the kernel, or a node over TCP,
/// identified by the certificate it proved. There is no uid for a remote caller, so no
/// credential check can mistake one for a local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Over the Unix socket, with the credentials the kernel reported (`SO_PEERCRED`,
    /// captured when the connection was accepted).
    Local(PeerCred),
    /// Over TCP, after mutual TLS.
    Remote(RemotePeer),
}

impl Origin {
    /// Whether this caller administers a service running as `service_uid`: a local
    /// process running as root or as that uid. A remote caller never is.
    pub fn is_admin(&self, service_uid: u32) -> bool {
        match self {
            Origin::Local(peer) => peer.is_root() || peer.uid == service_uid,
            Origin::Remote(_) => false,
        }
    }
}

/// A caller on a `tcp://` endpoint, identified by the certificate it proved during the
/// TLS handshake (it chains to the cluster CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    /// The address the connection came from.
    pub addr: SocketAddr,
    /// The client certificate's subject CN (the node id), or the certificate's SHA-256
    /// fingerprint in hex when it has no CN.
    pub name: String,
}

impl Call {
    /// The bearer token from the request's `auth`, if any. Unverified: pass it to the
    /// capability checker, never trust it directly.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Who made this call.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The kernel credentials of a local caller; `None` for a call over TCP.
    pub fn local_peer(&self) -> Option<&PeerCred> {
        match &self.origin {
            Origin::Local(peer) => Some(peer),
            Origin::Remote(_) => None,
        }
    }

    /// The certificate identity of a caller over TCP; `None` for a local call.
    pub fn remote_peer(&self) -> Option<&RemotePeer> {
        match &self.origin {
            Origin::Local(_) => None,
            Origin::Remote(remote) => Some(remote),
        }
    }

    /// The local caller's credentials, or PERMISSION_DENIED for a call over TCP: for a
    /// method whose authorization rests on kernel credentials (a listener's allow-list
    /// should never offer one remotely; this is the second line).
    pub fn require_local(&self) -> Result<&PeerCred, ErrorBody> {
        self.local_peer().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::PermissionDenied,
                "this method is served to local callers only",
            )
        })
    }

    /// Whether the caller administers a service running as `service_uid` (see
    /// [`Origin::is_admin`]). The one admin check every service uses.
    pub fn is_admin(&self, service_uid: u32) -> bool {
        self.origin.is_admin(service_uid)
    }

    /// A call made by `peer` (for handlers exercised directly in tests).
    pub fn new(peer: PeerCred, method: &str, token: Option<String>) -> Call {
        Call::from_origin(Origin::Local(peer), method, token)
    }

    /// A call made over TCP by `remote` (for handlers exercised directly in tests).
    pub fn new_remote(remote: RemotePeer, method: &str, token: Option<String>) -> Call {
        Call::from_origin(Origin::Remote(remote), method, token)
    }

    fn from_origin(origin: Origin, method: &str, token: Option<String>) -> Call {
        Call {
            origin,
            req_id: String::new(),
            method: method.to_owned(),
            token,
            stopping: CancellationToken::new(),
        }
    }

    /// Completes when the server starts shutting down. A handler that may wait a long
    /// time (a long poll) should answer when this completes, so shutdown is not held up.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await
    }
}

/// A route table whose handlers share one state: each route is one line,
/// `.method::<M, _, _, _>(|state, call, params| ...)`, with no clone per handler. Made by
/// [`Router::with_state`]; turned back into the [`Router`] the server runs with
/// [`Routes::into_router`].
pub struct Routes<S> {
    router: Router,
    state: Arc<S>,
}

impl<S: Send + Sync + 'static> Routes<S> {
    /// Route the method `M` to `handler`, which gets the shared state first.
    pub fn method<M, E, F, Fut>(mut self, handler: F) -> Routes<S>
    where
        M: Method,
        E: Into<ErrorBody> + 'static,
        F: Fn(Arc<S>, Call, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, E>> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        self.router = self
            .router
            .method::<M, E, _, _>(move |call, params| handler(Arc::clone(&state), call, params));
        self
    }

    /// Route the method `M` to a handler that returns its result already encoded (see
    /// [`Router::method_encoded`]), with the shared state first.
    pub fn method_encoded<M, E, F, Fut>(mut self, handler: F) -> Routes<S>
    where
        M: Method,
        E: Into<ErrorBody> + 'static,
        F: Fn(Arc<S>, Call, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Box<RawValue>, E>> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        self.router = self
            .router
            .method_encoded::<M, E, _, _>(move |call, params| {
                handler(Arc::clone(&state), call, params)
            });
        self
    }

    /// [`Router::health_extra`], given the shared state.
    pub fn health_extra(
        mut self,
        f: impl Fn(&S) -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static,
    ) -> Routes<S> {
        let state = Arc::clone(&self.state);
        self.router = self.router.health_extra(move || f(&state));
        self
    }

    /// [`Router::metrics`], given the shared state.
    pub fn metrics(mut self, f: impl Fn(&S, &mut Snapshot) + Send + Sync + 'static) -> Routes<S> {
        let state = Arc::clone(&self.state);
        self.router = self.router.metrics(move |snap| f(&state, snap));
        self
    }

    /// [`Router::health_check`], given the shared state.
    pub fn health_check(
        mut self,
        check: impl Fn(&S) -> Result<(), String> + Send + Sync + 'static,
    ) -> Routes<S> {
        let state = Arc::clone(&self.state);
        self.router = self.router.health_check(move || check(&state));
        self
    }

    /// The finished route table.
    pub fn into_router(self) -> Router {
        self.router
    }
}

impl<S> From<Routes<S>> for Router {
    fn from(routes: Routes<S>) -> Router {
        routes.router
    }
}

/// Who is at the other end of a connection, as the server tells the router.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    Local(PeerCred),
    /// Over TCP: only `allowed` methods (and `sys.health`) are served.
    Remote {
        peer: RemotePeer,
        allowed: Arc<HashSet<String>>,
    },
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Box<RawValue>, ErrorBody>> + Send>>;
type Handler = Box<dyn Fn(Call, Option<Box<RawValue>>) -> HandlerFuture + Send + Sync>;
type HealthExtra = Box<dyn Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync>;
type HealthCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;
type MetricsExtra = Box<dyn Fn(&mut Snapshot) + Send + Sync>;

/// One routed method: its handler and its request counts.
struct Route {
    handler: Handler,
    stats: MethodStats,
}

/// The request counts of the methods the router answers itself, and of unknown names.
#[derive(Default)]
struct BuiltinStats {
    health: MethodStats,
    metrics: MethodStats,
    other: MethodStats,
}

/// The method table of one service.
pub struct Router {
    service: String,
    version: String,
    routes: HashMap<String, Route>,
    builtin: BuiltinStats,
    health_extra: Option<HealthExtra>,
    health_check: Option<HealthCheck>,
    metrics_extra: Option<MetricsExtra>,
    /// This process's uid: `sys.metrics` is for root and it ([`Call::is_admin`]).
    own_uid: u32,
    /// Cancelled by the server when it starts shutting down.
    stopping: CancellationToken,
}

impl Router {
    /// A router for `service` whose `sys.health` reports `version`.
    pub fn new(service: &str, version: &str) -> Router {
        Router {
            service: service.to_owned(),
            version: version.to_owned(),
            routes: HashMap::new(),
            builtin: BuiltinStats::default(),
            health_extra: None,
            health_check: None,
            metrics_extra: None,
            own_uid: crate::sys::uid(),
            stopping: CancellationToken::new(),
        }
    }

    /// Add service-specific facts to `sys.health` (e.g. whether a sandbox is active).
    pub fn health_extra(
        mut self,
        f: impl Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static,
    ) -> Router {
        self.health_extra = Some(Box::new(f));
        self
    }

    /// Add the service's own families to `sys.metrics`: `f` is called at every snapshot,
    /// after the request families (see [`crate::metrics`]).
    pub fn metrics(mut self, f: impl Fn(&mut Snapshot) + Send + Sync + 'static) -> Router {
        self.metrics_extra = Some(Box::new(f));
        self
    }

    /// Make `sys.health` report whether the service can serve: while `check` returns an
    /// error, `status` is `"unavailable"` and `status_reason` says why (the supervisor's
    /// probe wants `"ok"`). For example a guard that has not loaded the revocation list.
    pub fn health_check(
        mut self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Router {
        self.health_check = Some(Box::new(check));
        self
    }

    /// Route table builder whose handlers all get `state` (see [`Routes`]).
    pub fn with_state<S: Send + Sync + 'static>(self, state: Arc<S>) -> Routes<S> {
        Routes {
            router: self,
            state,
        }
    }

    /// Route the method `M` to `handler`.
    pub fn method<M, E, F, Fut>(self, handler: F) -> Router
    where
        M: Method,
        E: Into<ErrorBody> + 'static,
        F: Fn(Call, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, E>> + Send + 'static,
    {
        self.route(M::NAME, handler)
    }

    /// Route the method `M` to a handler that returns `M::Result` already encoded as JSON,
    /// for a hot path that writes its answer faster than serde would (fs.read). The
    /// params are still `M::Params`; the handler's module must show, in a test, that its
    /// encoding equals serde's for `M::Result`.
    pub fn method_encoded<M, E, F, Fut>(self, handler: F) -> Router
    where
        M: Method,
        E: Into<ErrorBody> + 'static,
        F: Fn(Call, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Box<RawValue>, E>> + Send + 'static,
    {
        self.route(M::NAME, handler)
    }

    /// Route `method` to `handler`, with params of type `P` and result of type `R`. Private:
    /// every route is typed, through [`Router::method`] (or [`Router::method_encoded`]).
    fn route<P, R, E, F, Fut>(mut self, method: &str, handler: F) -> Router
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Into<ErrorBody> + 'static,
        F: Fn(Call, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        assert!(
            method != sys::Health::NAME && method != sys::Metrics::NAME,
            "{method} is answered by the router itself"
        );
        let handler = Arc::new(handler);
        let erased: Handler = Box::new(move |call, raw| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let params = parse_params::<P>(raw.as_deref())?;
                let result = handler(call, params).await.map_err(Into::into)?;
                serde_json::value::to_raw_value(&result).map_err(|e| {
                    tracing::error!(error = %e, "result did not serialise");
                    ErrorBody::new(ErrorCode::Internal, "internal error")
                })
            })
        });
        let route = Route {
            handler: erased,
            stats: MethodStats::default(),
        };
        let previous = self.routes.insert(method.to_owned(), route);
        assert!(previous.is_none(), "method {method} routed twice");
        self
    }

    /// The service this router answers for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Every routed method name, sorted, `sys.health` and `sys.metrics` included.
    pub fn methods(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        names.extend([sys::Health::NAME, sys::Metrics::NAME]);
        names.sort_unstable();
        names
    }

    fn health(&self) -> sys::HealthResult {
        let mut extra = self.health_extra.as_ref().map(|f| f()).unwrap_or_default();
        let status = match self.health_check.as_ref().map(|check| check()) {
            None | Some(Ok(())) => "ok",
            Some(Err(reason)) => {
                extra.insert("status_reason".into(), reason.into());
                "unavailable"
            }
        };
        sys::HealthResult {
            service: self.service.clone(),
            version: self.version.clone(),
            status: status.to_owned(),
            extra,
        }
    }

    /// The `sys.metrics` answer: request counts and latencies of every routed method (by
    /// name), of the built-in ones and of `other`, then the service's own families.
    pub fn snapshot(&self) -> sys::MetricsResult {
        let mut routed: Vec<(&str, &MethodStats)> = self
            .routes
            .iter()
            .map(|(name, route)| (name.as_str(), &route.stats))
            .collect();
        routed.sort_unstable_by_key(|(name, _)| *name);
        let builtin = [
            (sys::Health::NAME, &self.builtin.health),
            (sys::Metrics::NAME, &self.builtin.metrics),
            (OTHER_METHOD, &self.builtin.other),
        ];
        let mut snap = Snapshot::default();
        for family in request_families(routed.into_iter().chain(builtin)) {
            snap.family(family);
        }
        if let Some(extra) = &self.metrics_extra {
            extra(&mut snap);
        }
        sys::MetricsResult {
            families: snap.into_families(),
        }
    }

    /// Tell long-running handlers that the server is stopping (see [`Call::stopping`]).
    pub fn begin_shutdown(&self) {
        self.stopping.cancel();
    }

    /// Answer one frame from a local caller. Never fails: every problem becomes an error
    /// response.
    pub async fn dispatch(&self, peer: PeerCred, frame: &[u8]) -> Bytes {
        self.dispatch_from(&Peer::Local(peer), frame).await
    }

    pub(crate) async fn dispatch_from(&self, from: &Peer, frame: &[u8]) -> Bytes {
        let started = Instant::now();
        let (stats, code, answer) = self.answer(from, frame).await;
        stats.record(code, started.elapsed());
        answer
    }

    /// The answer to one frame, with the stats it counts in and its result code (`None`:
    /// success).
    async fn answer(&self, from: &Peer, frame: &[u8]) -> (&MethodStats, Option<ErrorCode>, Bytes) {
        let failure = |stats, req_id: String, error: ErrorBody| {
            let code = Some(error.code);
            (stats, code, encode(&Response::<()>::failure(req_id, error)))
        };
        let req = match parse_request(frame) {
            Ok(req) => req,
            Err(bad) => return failure(&self.builtin.other, bad.req_id, bad.error),
        };
        if req.method == sys::Health::NAME {
            let answer = encode(&Response::success(req.req_id, self.health()));
            return (&self.builtin.health, None, answer);
        }
        // One lookup: the route, whose stats count the request (else a built-in's, or
        // `other` for a name no route has).
        let route = self.routes.get(req.method.as_str());
        let stats = match route {
            Some(route) => &route.stats,
            None if req.method == sys::Metrics::NAME => &self.builtin.metrics,
            None => &self.builtin.other,
        };
        // Before the method lookup, so that a remote peer learns nothing about which
        // methods exist beyond those it may call.
        if let Peer::Remote { allowed, .. } = from {
            if !allowed.contains(req.method.as_str()) {
                let error = ErrorBody::new(
                    ErrorCode::PermissionDenied,
                    format!("`{}` is not served over tcp", req.method),
                )
                .with_details(serde_json::json!({"method": req.method}));
                return failure(stats, req.req_id, error);
            }
        }
        let origin = match from {
            Peer::Local(peer) => Origin::Local(*peer),
            Peer::Remote { peer, .. } => Origin::Remote(peer.clone()),
        };
        if req.method == sys::Metrics::NAME {
            if !origin.is_admin(self.own_uid) {
                let error = ErrorBody::new(
                    ErrorCode::PermissionDenied,
                    "sys.metrics is served to root and the service's own user only",
                );
                return failure(stats, req.req_id, error);
            }
            let answer = encode(&Response::success(req.req_id, self.snapshot()));
            return (stats, None, answer);
        }
        let Some(route) = route else {
            let error = ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("unknown method `{}`", req.method),
            )
            .with_details(serde_json::json!({"method": req.method}));
            return failure(stats, req.req_id, error);
        };
        let token = req.auth.and_then(|a| a.token);
        let call = Call {
            origin,
            req_id: req.req_id,
            method: req.method,
            token,
            stopping: self.stopping.clone(),
        };
        let req_id = call.req_id.clone();
        let method = call.method.clone();
        // The handler is invoked inside the guarded future, so a panic in its synchronous
        // part is caught as well as one in its body.
        let params = req.params;
        let handler = &route.handler;
        let outcome = AssertUnwindSafe(async move { handler(call, params).await })
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(result)) => (stats, None, encode(&Response::success(req_id, result))),
            Ok(Err(error)) => failure(stats, req_id, error),
            Err(_) => {
                tracing::error!(%method, "handler panicked; answered INTERNAL");
                let error = ErrorBody::new(ErrorCode::Internal, "internal error");
                failure(stats, req_id, error)
            }
        }
    }
}

/// The largest frame [`encode`]'s fallback ever produces: the envelope, a fixed message and
/// a req_id of at most [`strata_proto::MAX_REQ_ID_LEN`] bytes, each escaped as `\u00XX`.
pub const MAX_FALLBACK_LEN: usize = 2048;

/// Serialise a response, replacing one too large for a frame (or that does not serialise)
/// with an INTERNAL error built from bounded parts only. Never recurses: the replacement
/// is at most [`MAX_FALLBACK_LEN`] bytes, whatever `response` holds.
pub fn encode<R: Serialize>(response: &Response<R>) -> Bytes {
    match serde_json::to_vec(response) {
        Ok(bytes) if bytes.len() <= MAX_FRAME => Bytes::from(bytes),
        Ok(bytes) => {
            tracing::error!(len = bytes.len(), "response exceeds the frame limit");
            fallback(&response.req_id, "response too large for one frame")
        }
        Err(e) => {
            tracing::error!(error = %e, "response did not serialise");
            fallback(&response.req_id, "internal error")
        }
    }
}

/// Sent if even the fallback would not fit (it always does: see the tests).
const LAST_RESORT: &[u8] = br#"{"v":1,"req_id":"","ok":false,"error":{"code":5,"name":"INTERNAL","message":"internal error","details":{}}}"#;

/// The INTERNAL answer that replaces a response [`encode`] cannot send. The req_id is
/// echoed only within [`strata_proto::MAX_REQ_ID_LEN`] (else empty) and the message is a
/// fixed string, so the result always fits; should it not, a constant frame is sent.
fn fallback(req_id: &str, message: &'static str) -> Bytes {
    let req_id = if req_id.len() <= MAX_REQ_ID_LEN {
        req_id
    } else {
        ""
    };
    let error = ErrorBody::new(ErrorCode::Internal, message);
    match serde_json::to_vec(&Response::<()>::failure(req_id, error)) {
        Ok(bytes) if bytes.len() <= MAX_FALLBACK_LEN => Bytes::from(bytes),
        _ => Bytes::from_static(LAST_RESORT),
    }
}

#[cfg(test)]
mod tests;
