//! Capability routing: the capabilities a service's manifest declares
//! (`[[service.capability]]`, [`CapabilitySpec`]) obtained from identity before each start,
//! delivered into `<runtime dir>/credentials/<service>/` (`CREDENTIALS_DIRECTORY`),
//! rotated before they expire, and revoked when the run ends.
//!
//! | file | job |
//! |---|---|
//! | `routing.rs` | [`Routing`] (the issuer and the revocations owed, shared by every run), [`Routes`]: one run's capabilities, obtained ([`Routes::obtain`]), rotated ([`Routes::start_rotation`]) and ended ([`Routes::end`]) |
//! | `routing/credentials.rs` | the credentials directory, made and written beneath opened handles |
//! | `routing/issuer.rs` | [`Issuer`]: `identity.issue` / `identity.revoke` over identity's socket |
//! | `routing/rotation.rs` | the per-run task replacing tokens at two thirds of their lifetime and revoking the replaced ones after the grace |
//! | `routing/pending.rs` | revocations identity could not take yet, persisted and retried |
//!
//! A token is written to its file and nowhere else: not to the environment, a command
//! line, a log line or an audit event (those name the `cap_id`).

use crate::manifest::CapabilitySpec;
use crate::shared::Shared;
use credentials::{CredentialsDir, Owner};
use issuer::{identity_socket, retryable, Issuer, SocketIssuer};
use pending::{Owed, Pending, RETRY_MAX, RETRY_MIN};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use strata_proto::methods::identity::IssueParams;
use strata_proto::methods::supervisor::{RoutedCap, SvcState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub mod credentials;
pub mod issuer;
pub mod pending;
mod revoke;
mod rotation;
#[cfg(test)]
mod tests;

use revoke::revoke_all;

/// How long the end of a run waits for its rotation task to stop. The task leaves a
/// call to identity as soon as it is told to stop, so this covers its file work; a task
/// aborted anyway loses nothing (what it obtained is owed, [`Pending::release`]).
const ROTATION_STOP: Duration = Duration::from_secs(5);

/// What every run's routing shares: how identity is asked, and what is owed to it.
pub(crate) struct Routing {
    issuer: Mutex<Arc<dyn Issuer>>,
    /// Revocations identity could not take when they were due.
    pub pending: Pending,
}

impl Routing {
    /// Routing through identity's socket, with what a previous supervisor left owing in
    /// `state_dir`.
    pub fn new(state_dir: &Path) -> Routing {
        Routing {
            issuer: Mutex::new(Arc::new(SocketIssuer)),
            pending: Pending::load(state_dir),
        }
    }

    /// The issuer in use.
    pub fn issuer(&self) -> Arc<dyn Issuer> {
        Arc::clone(&self.issuer.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Use `issuer` instead of identity's socket (unit tests).
    #[cfg(test)]
    pub fn set_issuer(&self, issuer: Arc<dyn Issuer>) {
        *self.issuer.lock().unwrap_or_else(|p| p.into_inner()) = issuer;
    }
}

/// One routed capability of a run.
struct Held {
    spec: CapabilitySpec,
    cap_id: String,
    expires: i64,
    issued: i64,
    /// When the token now in the file is replaced ([`rotation_due`]).
    rotate_due: Instant,
    rotations: u64,
    last_rotation: Option<i64>,
    /// Replaced tokens waiting out their grace: cap_id, expiry, when to revoke.
    retiring: Vec<(String, i64, Instant)>,
    /// After a failed rotation: when to try again, and how many failed in a row.
    retry_at: Option<Instant>,
    failures: u32,
}

impl Held {
    fn rotate_at(&self) -> Instant {
        self.retry_at.unwrap_or(self.rotate_due)
    }

    fn routed(&self) -> RoutedCap {
        let mut rights = self.spec.rights.clone();
        rights.sort();
        let mut constraints = serde_json::Map::new();
        if let Some(p) = &self.spec.path_prefix {
            constraints.insert("path_prefix".into(), json!(p));
        }
        if let Some(r) = &self.spec.rate_limit {
            constraints.insert("rate_limit".into(), json!(r));
        }
        RoutedCap {
            name: self.spec.name.clone(),
            cap_id: self.cap_id.clone(),
            service: self.spec.service.clone(),
            rights,
            constraints: Value::Object(constraints),
            expires: self.expires,
            issued: self.issued,
            rotations: self.rotations,
            last_rotation: self.last_rotation,
        }
    }
}

/// A run's routed capabilities and its credentials directory.
struct RouteState {
    dir: Option<CredentialsDir>,
    held: Vec<Held>,
}

/// Why [`Routes::obtain`] did not obtain a run's capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObtainError {
    /// Worth trying again later: identity not Healthy, unreachable, answering that it
    /// cannot now (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL) or not answering in time.
    Retry(String),
    /// Never succeeds as asked: identity refused the request itself (INVALID_ARGUMENT,
    /// PERMISSION_DENIED), or the supervisor cannot hold what it would obtain.
    Refused(String),
}

impl std::fmt::Display for ObtainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObtainError::Retry(why) | ObtainError::Refused(why) => f.write_str(why),
        }
    }
}

/// The capabilities routed to one run of a service.
pub(crate) struct Routes {
    shared: Arc<Shared>,
    service: String,
    state: Arc<Mutex<RouteState>>,
    rotation: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// Set when the run is over, before its held capabilities are released: a token
    /// issued after that (by a rotation call stopped or aborted in flight) is recorded
    /// due, not held ([`Pending::hold`]).
    run_over: Arc<AtomicBool>,
}

impl Routes {
    /// Obtain every capability `spec` declares from identity and write each to the
    /// service's credentials directory, owned by `owner`. `Err` says why not (identity
    /// not Healthy, unreachable or refusing; the directory unusable); whatever was
    /// obtained by then is revoked again (or owed) and the directory removed.
    pub async fn obtain(
        shared: &Arc<Shared>,
        spec: &crate::manifest::ServiceSpec,
        owner: Owner,
    ) -> Result<Routes, ObtainError> {
        match shared.state_of(crate::manifest::capability::IDENTITY) {
            Some(SvcState::Healthy) => {}
            Some(state) => return Err(ObtainError::Retry(format!("identity is {state:?}"))),
            None => {
                return Err(ObtainError::Retry(
                    "no identity service in the manifest".to_owned(),
                ))
            }
        }
        let (runtime_dir, name) = (shared.runtime_dir.clone(), spec.name.clone());
        let dir = blocking(move || CredentialsDir::create(&runtime_dir, &name, owner))
            .await
            .map_err(|e| {
                ObtainError::Retry(format!("cannot make the credentials directory: {e}"))
            })?;
        let routes = Routes {
            shared: Arc::clone(shared),
            service: spec.name.clone(),
            state: Arc::new(Mutex::new(RouteState {
                dir: Some(dir),
                held: Vec::new(),
            })),
            rotation: None,
            run_over: Arc::new(AtomicBool::new(false)),
        };
        for cap in &spec.capabilities {
            match issue(shared, &spec.name, cap, &routes.run_over).await {
                Ok((held, token)) => {
                    let written = write(&routes.state, cap.name.clone(), token).await;
                    if let Err(e) = written {
                        routes.lock().held.push(held);
                        let why = format!("cannot write credential `{}`: {e}", cap.name);
                        routes.end().await;
                        return Err(ObtainError::Retry(why));
                    }
                    shared.audit.record(
                        "cap.routed",
                        json!({"service": spec.name, "capability": cap.name,
                               "cap_id": held.cap_id, "for_service": cap.service,
                               "expires": held.expires}),
                    );
                    routes.lock().held.push(held);
                }
                Err(e) => {
                    routes.end().await;
                    return Err(e);
                }
            }
        }
        routes.publish(shared);
        Ok(routes)
    }

    fn lock(&self) -> MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credentials directory (`CREDENTIALS_DIRECTORY`).
    pub fn dir(&self) -> Option<std::path::PathBuf> {
        self.lock().dir.as_ref().map(|d| d.path().to_owned())
    }

    /// Rotate the capabilities while the run's process `pid` lives.
    pub fn start_rotation(&mut self, shared: &Arc<Shared>, pid: i32) {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(rotation::rotate(
            rotation::Run {
                shared: Arc::clone(shared),
                service: self.service.clone(),
                pid,
                state: Arc::clone(&self.state),
                run_over: Arc::clone(&self.run_over),
            },
            stopped,
        ));
        self.rotation = Some((stop, task));
    }

    /// Stop rotating (and signalling the run's process group), waiting for a call in
    /// flight to finish so what it obtained is held.
    pub async fn stop_rotation(&mut self) {
        if let Some((stop, mut task)) = self.rotation.take() {
            let _ = stop.send(true);
            if tokio::time::timeout(ROTATION_STOP, &mut task)
                .await
                .is_err()
            {
                tracing::warn!(service = %self.service, "capability rotation did not stop in time");
                task.abort();
            }
        }
    }

    /// The run is over: stop rotating, remove the files and the directory, and revoke
    /// every capability routed to the run (the current and the replaced ones, a few at
    /// a time, for at most [`revoke::DEADLINE`]); what identity does not take by then is
    /// owed ([`Pending`]), and so is anything else the run still held there (a token a
    /// stopped rotation obtained).
    pub async fn end(mut self) {
        self.stop_rotation().await;
        self.run_over.store(true, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        let (dir, held) = {
            let mut state = self.lock();
            (state.dir.take(), std::mem::take(&mut state.held))
        };
        if let Some(dir) = dir {
            if let Err(e) = blocking(move || dir.remove()).await {
                tracing::warn!(service = %self.service, error = %e, "cannot remove the credentials directory");
            }
        }
        let mut ids = Vec::new();
        for h in held {
            for (cap_id, expires, _) in h.retiring {
                ids.push((h.spec.name.clone(), cap_id, expires));
            }
            ids.push((h.spec.name.clone(), h.cap_id, h.expires));
        }
        revoke_all(&shared, &self.service, ids, "run ended", None).await;
        let (s, service) = (Arc::clone(&shared), self.service.clone());
        if let Err(e) = blocking(move || s.routing.pending.release(&service)).await {
            tracing::error!(service = %self.service, error = %e, "cannot record the run's capabilities as owed");
        }
        let mut table = shared.table();
        if let Some(rec) = table.services.get_mut(&self.service) {
            rec.caps.clear();
        }
    }

    /// Show what the run holds in `svc.caps` / `svc.status`.
    fn publish(&self, shared: &Shared) {
        publish(shared, &self.service, &self.lock().held);
    }
}

/// A safety net: routes dropped without [`Routes::end`] (a bug, or a panic in the
/// service's task) stop rotating, lose their files, and leave every capability owed, so
/// the retrier revokes it.
impl Drop for Routes {
    fn drop(&mut self) {
        if let Some((stop, _)) = self.rotation.take() {
            let _ = stop.send(true);
        }
        self.run_over.store(true, Ordering::SeqCst);
        let (dir, held) = {
            let mut state = self.lock();
            (state.dir.take(), std::mem::take(&mut state.held))
        };
        if dir.is_none() && held.is_empty() {
            return;
        }
        tracing::error!(service = %self.service, "a run's capabilities outlived it; they are removed and their revocation is owed");
        if let Some(dir) = dir {
            let _ = dir.remove();
        }
        let mut owed = Vec::new();
        for h in held {
            for (cap_id, expires, _) in h.retiring {
                owed.push(Owed {
                    cap_id,
                    service: self.service.clone(),
                    capability: h.spec.name.clone(),
                    expires,
                    due: true,
                });
            }
            owed.push(Owed {
                cap_id: h.cap_id,
                service: self.service.clone(),
                capability: h.spec.name,
                expires: h.expires,
                due: true,
            });
        }
        let pending = &self.shared.routing.pending;
        if let Err(e) = pending
            .add(owed, unix_now())
            .and_then(|_| pending.release(&self.service))
        {
            tracing::error!(service = %self.service, error = %e, "cannot record the run's capabilities as owed");
        }
    }
}

fn publish(shared: &Shared, service: &str, held: &[Held]) {
    let caps: Vec<RoutedCap> = held.iter().map(Held::routed).collect();
    if let Some(rec) = shared.table().services.get_mut(service) {
        rec.caps = caps;
    }
}

/// `identity.issue` for one manifest entry: the token and what is held of it, recorded
/// ([`Pending::hold`]) before it is handed out. A token that cannot be recorded is
/// revoked again and the issue fails.
async fn issue(
    shared: &Arc<Shared>,
    service: &str,
    cap: &CapabilitySpec,
    run_over: &Arc<AtomicBool>,
) -> Result<(Held, String), ObtainError> {
    let ttl = cap.ttl.get().as_secs() as i64;
    let params = IssueParams {
        service: cap.service.clone(),
        rights: Some(cap.rights.clone()),
        actions: None,
        path_prefix: cap.path_prefix.clone(),
        ttl_seconds: Some(ttl),
        rate_limit: cap.rate_limit.clone(),
        subject: Some(format!("svc:{service}@{}", shared.node_id)),
    };
    let socket = identity_socket(shared);
    let asked = Instant::now();
    let issued = shared
        .routing
        .issuer()
        .issue(&socket, params)
        .await
        .map_err(|e| {
            let why = format!("capability `{}`: {e}", cap.name);
            if retryable(&e) {
                ObtainError::Retry(why)
            } else {
                ObtainError::Refused(why)
            }
        })?;
    let rotate_due = rotation_due(
        asked,
        cap,
        issued.expires,
        Instant::now(),
        SystemTime::now(),
    );
    // Recorded before anyone can use it, so a supervisor that crashes from here on
    // leaves it owed to the next one.
    let held = Owed {
        cap_id: issued.cap_id.clone(),
        service: service.to_owned(),
        capability: cap.name.clone(),
        expires: issued.expires,
        due: false,
    };
    let (s, flag) = (Arc::clone(shared), Arc::clone(run_over));
    if let Err(e) = blocking(move || s.routing.pending.hold(held, unix_now(), &flag)).await {
        tracing::error!(service, capability = %cap.name, cap_id = %issued.cap_id, error = %e, "a routed capability cannot be held; it is revoked again");
        let id = (cap.name.clone(), issued.cap_id, issued.expires);
        revoke_all(shared, service, vec![id], "not held", None).await;
        // Both pass: a full list drains as identity takes the revocations owed (or they
        // expire), and a disk recovers. Neither is the service's fault, so neither may
        // count towards its quarantine.
        let why = format!("cannot hold capability `{}`: {e}", cap.name);
        return Err(ObtainError::Retry(why));
    }
    Ok((
        Held {
            spec: cap.clone(),
            cap_id: issued.cap_id,
            expires: issued.expires,
            // identity sets `exp` to its `iat` plus the ttl asked for.
            issued: issued.expires - ttl,
            rotate_due,
            rotations: 0,
            last_rotation: None,
            retiring: Vec::new(),
            retry_at: None,
            failures: 0,
        },
        issued.token,
    ))
}

/// When a token of `cap`, asked for at `asked` and expiring at `expires` (unix seconds,
/// by identity's clock, the supervisor's own), is replaced: when, by the wall clock
/// `wall` (at `now`), a third of its lifetime (`ttl` less
/// [`rotate_after`](CapabilitySpec::rotate_after)) is left. identity's `exp` is its
/// second-truncated clock plus the ttl, and the answer took its time, so counting from
/// the answer would leave less; never later than `rotate_after` from the asking.
fn rotation_due(
    asked: Instant,
    cap: &CapabilitySpec,
    expires: i64,
    now: Instant,
    wall: SystemTime,
) -> Instant {
    let margin = cap.ttl.get().saturating_sub(cap.rotate_after());
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(expires.max(0) as u64);
    let left = expiry.duration_since(wall).unwrap_or(Duration::ZERO);
    let by_wall = now + left.saturating_sub(margin);
    by_wall.min(asked + cap.rotate_after())
}

/// Run file work (writes and their syncs, which a slow disk makes take hundreds of
/// milliseconds) off the supervisor's single runtime thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Write `token` as the credential `name` in the run's directory.
async fn write(state: &Arc<Mutex<RouteState>>, name: String, token: String) -> Result<(), String> {
    let state = Arc::clone(state);
    blocking(move || {
        let st = state.lock().unwrap_or_else(|p| p.into_inner());
        match &st.dir {
            Some(dir) => dir.write(&name, &token).map_err(|e| e.to_string()),
            None => Err("the credentials directory is gone".to_owned()),
        }
    })
    .await
}

/// Retry the owed revocations for as long as the supervisor runs: whenever one is added,
/// whenever a service changes state (identity coming back), and after a backoff.
pub(crate) fn spawn_retrier(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut changed = shared.changed.subscribe();
        let mut delay = RETRY_MIN;
        loop {
            let owing = !shared.routing.pending.owed().is_empty();
            let identity_up =
                shared.state_of(crate::manifest::capability::IDENTITY) == Some(SvcState::Healthy);
            if owing && identity_up {
                let socket = identity_socket(&shared);
                let issuer = shared.routing.issuer();
                let out = shared
                    .routing
                    .pending
                    .retry(issuer.as_ref(), &socket, unix_now())
                    .await;
                for o in &out.revoked {
                    shared.audit.record(
                        "cap.route_revoked",
                        json!({"service": o.service, "capability": o.capability,
                               "cap_id": o.cap_id, "reason": "pending"}),
                    );
                }
                for (o, e) in &out.failed {
                    shared.audit.record(
                        "cap.route_failed",
                        json!({"service": o.service, "capability": o.capability,
                               "cap_id": o.cap_id, "stage": "revoke", "error": e,
                               "pending": false}),
                    );
                }
                if out.error.is_some() {
                    delay = (delay * 2).min(RETRY_MAX);
                } else {
                    delay = RETRY_MIN;
                }
                // Settled (and the list written) off the runtime thread.
                let s = Arc::clone(&shared);
                let left = blocking(move || {
                    s.routing.pending.settle(&out.done, unix_now());
                    s.routing.pending.owed().len()
                })
                .await;
                if left == 0 {
                    tracing::info!("no revocations pending");
                }
            }
            let owing = !shared.routing.pending.owed().is_empty();
            tokio::select! {
                _ = tokio::time::sleep(delay), if owing => {}
                _ = shared.routing.pending.added.notified() => {}
                r = changed.changed() => if r.is_err() { return },
            }
        }
    });
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
