//! The protocol side of fs: the method table, each handler as "authorize, then serve",
//! denials audited in one place, and the background work that keeps handles honest.
//!
//! Every handler first asks the guard to authorize the call for its right (`fs.open`,
//! `fs.read`, `fs.list`, `fs.stat`). `fs.close` needs no right of its own, only the
//! capability that owns the handle; since only a capability holding `fs.open` can own a
//! handle, close is authorized as `fs.open`, which also proves the token is current and
//! unrevoked.
//!
//! The work of every method runs on the bounded blocking pool ([`crate::blocking`]), so a
//! file system that hangs `open(2)` or `read(2)` (a dead NFS server, a stuck FUSE daemon)
//! costs its callers their slots and nobody else anything; only small reads and closes of
//! handles on local file systems, and listings of small directories beneath local export
//! roots with nothing mounted beneath them ([`FsService::list_json_inline`]), run inline. The maintenance tasks close descriptors on
//! blocking threads too.

use crate::error::FsError;
use crate::list::list_room;
use crate::read::reply_room;
use crate::sandbox::LandlockState;
use crate::service::{Caller, FsService, RevocationCheck};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use strata_cap::Claims;
use strata_guard::Guard;
use strata_ipc::{Call, Router};
use strata_proto::methods::fs;
use strata_proto::{ErrorBody, ErrorCode};
use tokio::sync::broadcast::error::RecvError;

/// How often handles of expired capabilities are swept.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl RevocationCheck for Guard {
    fn is_revoked(&self, claims: &Claims) -> bool {
        Guard::is_revoked(self, claims)
    }
}

/// What every fs handler works with: the service and the guard that authorizes for it.
struct Served {
    fs: Arc<FsService>,
    guard: Arc<Guard>,
    landlock: LandlockState,
}

impl Served {
    /// `sys.health`'s facts: the guard's sync state, Landlock, exported roots, handles.
    fn health(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut facts = self.guard.status();
        facts.insert("landlock".into(), self.landlock.is_active().into());
        facts.insert("landlock_status".into(), self.landlock.as_str().into());
        facts.insert("export_roots".into(), self.fs.roots().len().into());
        facts.insert("open_handles".into(), self.fs.handles().len().into());
        facts.insert(
            "file_ops_in_flight".into(),
            self.fs.blocking().in_flight().into(),
        );
        facts
    }

    /// Authorize `call` for `right`, run `work` with the verified caller where `place`
    /// says, and audit any denial, from the guard or from fs.
    async fn serve<R, W>(
        &self,
        call: Call,
        right: &str,
        place: Place,
        work: W,
    ) -> Result<R, ErrorBody>
    where
        R: Send + 'static,
        W: FnOnce(&FsService, &Caller) -> Result<R, FsError> + Send + 'static,
    {
        let caller = self.authorized(&call, right).await?;
        let outcome = match place {
            Place::Inline => work(&self.fs, &caller),
            Place::Pool => self.on_pool(&caller, work).await,
        };
        self.finish(&call, &caller, outcome)
    }

    /// `fs.list`: inline when [`FsService::list_json_inline`] may answer it, else on the
    /// pool.
    async fn serve_list(
        &self,
        call: Call,
        params: fs::ListParams,
        room: usize,
    ) -> Result<Box<RawValue>, ErrorBody> {
        let caller = self.authorized(&call, "fs.list").await?;
        let outcome = match self.fs.list_json_inline(&caller, &params, room) {
            Some(answer) => answer,
            None => {
                self.on_pool(&caller, move |fs, c| fs.list_json(c, &params, room))
                    .await
            }
        };
        self.finish(&call, &caller, outcome)
    }

    /// The verified caller of `call`, once the guard has authorized it for `right`;
    /// a denial is audited.
    async fn authorized(&self, call: &Call, right: &str) -> Result<Caller, ErrorBody> {
        match self.guard.authorize(call, right).await {
            Ok(claims) => Ok(Caller::of(claims, call)),
            Err(denied) => {
                if is_denial(denied.code) {
                    self.fs.audit_denial(call, None, &denied);
                }
                Err(denied)
            }
        }
    }

    /// Run `work` on the bounded blocking pool.
    async fn on_pool<R, W>(&self, caller: &Caller, work: W) -> Result<R, FsError>
    where
        R: Send + 'static,
        W: FnOnce(&FsService, &Caller) -> Result<R, FsError> + Send + 'static,
    {
        let (service, worker) = (Arc::clone(&self.fs), caller.clone());
        self.fs
            .blocking
            .run(&caller.holder, move || work(&service, &worker))
            .await
    }

    /// The answer to `call`, with a refusal by fs audited.
    fn finish<R>(
        &self,
        call: &Call,
        caller: &Caller,
        outcome: Result<R, FsError>,
    ) -> Result<R, ErrorBody> {
        outcome.map_err(|e| {
            let body = ErrorBody::from(e);
            if is_denial(body.code) {
                self.fs.audit_denial(call, Some(&caller.claims), &body);
            }
            body
        })
    }
}

/// The fs method table. `sys.health` reports the guard's sync state, whether Landlock
/// confines the process, how many roots are exported and how many handles are open; it
/// is not healthy before the guard has the whole revocation list.
///
/// `fs.read` and `fs.list` answer with JSON they encode themselves
/// ([`FsService::read_json`], [`FsService::list_json`], each tested equal to serde's
/// encoding of its result). `fs.close` is authorized as `fs.open` (see the
/// module docs).
pub fn router(fs: Arc<FsService>, guard: Arc<Guard>, landlock: LandlockState) -> Router {
    let served = Arc::new(Served {
        fs,
        guard,
        landlock,
    });
    Router::new("fs", env!("CARGO_PKG_VERSION"))
        .with_state(served)
        .health_extra(Served::health)
        .metrics(|s, snap| crate::metrics::report(&s.fs, snap))
        .health_check(|s| s.guard.ready())
        .method::<fs::Open, _, _, _>(|s, call, p| async move {
            s.serve(call, "fs.open", Place::Pool, move |fs, c| fs.open(c, &p))
                .await
        })
        .method_encoded::<fs::Read, _, _, _>(|s, call, p| {
            let (room, place) = (
                reply_room(&call.req_id),
                Place::for_handle(&s.fs, &p.handle, p.size),
            );
            async move {
                s.serve(call, "fs.read", place, move |fs, c| {
                    fs.read_json(c, &p, room)
                })
                .await
            }
        })
        .method::<fs::Close, _, _, _>(|s, call, p| {
            let place = Place::for_handle(&s.fs, &p.handle, 0);
            async move {
                s.serve(call, "fs.open", place, move |fs, c| fs.close(c, &p))
                    .await
            }
        })
        .method_encoded::<fs::List, _, _, _>(|s, call, p| {
            let room = list_room(&call.req_id);
            async move { s.serve_list(call, p, room).await }
        })
        .method::<fs::Stat, _, _, _>(|s, call, p| async move {
            s.serve(call, "fs.stat", Place::Pool, move |fs, c| fs.stat(c, &p))
                .await
        })
        .into_router()
}

/// Where a handler's file work runs.
#[derive(Clone, Copy)]
enum Place {
    /// The bounded blocking pool: anything that may block for long.
    Pool,
    /// The async worker: a small read or a close of a handle on a local file system.
    Inline,
}

impl Place {
    fn for_handle(fs: &FsService, handle: &str, size: u64) -> Place {
        if fs.runs_inline(handle, size) {
            Place::Inline
        } else {
            Place::Pool
        }
    }
}

/// Refusals that are audited: bad credentials, missing rights or constraints, quotas.
fn is_denial(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::ResourceExhausted
    )
}

/// Start the background work: close a capability's handles the moment the guard learns of
/// its revocation (re-checking every handle if notices were missed), and sweep handles of
/// expired capabilities every [`EXPIRY_SWEEP_INTERVAL`]. Call inside a Tokio runtime,
/// before serving, so no revocation learned after this call is missed.
pub fn spawn_maintenance(fs: Arc<FsService>, guard: &Guard) {
    let mut revocations = guard.revocations();
    let revoker = Arc::clone(&fs);
    tokio::spawn(async move {
        loop {
            match revocations.recv().await {
                Ok(cap) => {
                    // Closing descriptors can block (NFS flushes on close).
                    let fs = Arc::clone(&revoker);
                    let closed = tokio::task::spawn_blocking(move || fs.revoke(&cap))
                        .await
                        .unwrap_or(0);
                    if closed > 0 {
                        tracing::info!(cap_id = %cap, closed, "revoked capability: handles closed");
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let fs = Arc::clone(&revoker);
                    let closed = tokio::task::spawn_blocking(move || fs.recheck_revocations())
                        .await
                        .unwrap_or(0);
                    tracing::warn!(
                        missed,
                        closed,
                        "revocation notices missed; re-checked every handle"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sweeper = Arc::clone(&fs);
            let closed = tokio::task::spawn_blocking(move || sweeper.sweep_expired())
                .await
                .unwrap_or(0);
            if closed > 0 {
                tracing::info!(closed, "closed handles of expired capabilities");
            }
        }
    });
}
