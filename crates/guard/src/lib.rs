//! The verifier side of capabilities, for every service that accepts tokens.
//!
//! A [`Guard`] holds identity's trusted keys and the revocation list, keeps both in step
//! with identity through a long poll (`identity.revocations`), and answers one question
//! per request: may this caller's token call this method? The decision itself is
//! [`strata_cap::authorize`]; the guard supplies its inputs and turns the answer into a
//! protocol error.
//!
//! The revocation guarantee ("once `identity.revoke` has answered ok, no request sent
//! afterwards may succeed with that token") rests on three rules:
//! - Identity answers a revocation only after every connected guard has polled again with
//!   a `since` at or past it, i.e. has applied it (or has stopped answering for longer
//!   than identity's acknowledgement timeout).
//! - A guard that has never synced (loaded the complete list, every page of it) answers
//!   protected requests UNAVAILABLE, and [`Guard::ready`] says so, for the service's
//!   `sys.health` to report (so the supervisor does not take it for healthy).
//! - A guard whose poll connection is down tries a fresh poll before each protected
//!   request: if identity answers, the guard is up to date before it decides; if identity
//!   is unreachable, no revocation can be made either, so the list it holds is complete
//!   and it serves with it.
//! - In cluster mode a revocation can be made on another node while this one is cut
//!   off, so "serves with the list it holds" is bounded: each answer from identity says
//!   how long ago identity last confirmed contact with etcd, and past the cluster's
//!   `max_staleness` the guard refuses protected requests UNAVAILABLE ("cut off from the
//!   cluster for N s; limit L s") unless one fresh poll shows identity current again
//!   ([`freshness`]). Its long polls wait at most identity's confirmation
//!   period (limit/5 within 200 ms..5 s).
//!
//! Not here: what a service does with a capability once authorized (fs's path prefix, its
//! handles), and auditing (services record their own denials).

mod boot_clock;
mod freshness;

use boot_clock::BootInstant;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_cap::{
    AuthContext, CapId, Claims, Clock, RateLimiter, RevocationSet, SystemClock, Timestamp,
    TrustedKey, TrustedKeys, Verifier, DEFAULT_REVOCATION_RETENTION,
};
use strata_ipc::{Call, Client, Endpoint};
use strata_proto::methods::identity::{
    KeyInfo, Revocations, RevocationsParams, RevocationsResult, MAX_REVOCATIONS_PAGE,
};
use strata_proto::{ErrorBody, ErrorCode};
use tokio::sync::broadcast;

/// How long a background poll waits at identity when nothing happens.
const POLL_WAIT: Duration = Duration::from_secs(25);
/// How often the guard drops revocations of long-expired tokens from memory.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Deadline for each quick poll made before a request while the subscription is down.
const CATCH_UP_TIMEOUT: Duration = Duration::from_millis(500);
/// Deadline for all the pages a request's catch-up reads.
const CATCH_UP_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a guard finds identity and how it names itself there.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Identity is reached at `<runtime_dir>/identity.sock`, never through the registry:
    /// the runtime directory is the trust anchor for who may speak as identity.
    pub runtime_dir: PathBuf,
    /// Name of the subscribing service, e.g. `fs` (shown in identity's logs).
    pub subscriber: String,
}

/// A service's view of which capabilities are good.
pub struct Guard {
    verifier: Verifier,
    revoked: RevocationSet,
    limiter: RateLimiter,
    clock: SystemClock,
    revoked_tx: broadcast::Sender<CapId>,
    sync: SyncState,
    source: Option<Source>,
    /// Cluster mode: how current the list is, and the limit.
    cluster: freshness::ClusterView,
}

struct Source {
    endpoint: Endpoint,
    subscriber: String,
    /// One catch-up poll at a time; the others wait for its outcome.
    catch_up: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SyncState {
    /// The complete revocation list has been loaded at least once (every page).
    synced_once: AtomicBool,
    /// The background poll is connected and its last answer succeeded.
    live: AtomicBool,
    /// Identity's last answer said it is up but has not loaded the cluster from etcd yet
    /// (UNAVAILABLE with `details.waiting_for_cluster`); cleared by any other answer.
    identity_waiting_for_cluster: AtomicBool,
    /// The feed's cursor: everything up to it has been applied.
    seq: AtomicU64,
    keys_epoch: AtomicU64,
    store_id: Mutex<Option<String>>,
}

/// The `details` key identity's `identity.revocations` sets on its UNAVAILABLE while its
/// node has not loaded the cluster from etcd yet (api/protocol.md; identity's
/// `feed::WAITING_FOR_CLUSTER`: the guard does not depend on identity).
const WAITING_FOR_CLUSTER: &str = "waiting_for_cluster";

/// Whether `e` is identity answering that it is up but waiting for the cluster.
fn is_waiting_for_cluster(e: &strata_ipc::ClientError) -> bool {
    matches!(e, strata_ipc::ClientError::Server(body)
        if body.code == ErrorCode::Unavailable
            && body.details.get(WAITING_FOR_CLUSTER) == Some(&serde_json::Value::Bool(true)))
}

impl SyncState {
    /// Records what identity's last feed answer said: `None` an answer, else its error.
    fn note_answer(&self, error: Option<&strata_ipc::ClientError>) {
        self.identity_waiting_for_cluster
            .store(error.is_some_and(is_waiting_for_cluster), Ordering::SeqCst);
    }
}

/// Test control for an offline guard: plays identity's revocation feed.
pub struct GuardHandle {
    guard: Arc<Guard>,
}

impl GuardHandle {
    /// Tell the guard `cap` was revoked, as the feed would.
    pub fn revoke(&self, cap: CapId) {
        self.guard.learn_revoked(cap, None);
    }
}

impl Guard {
    /// A guard following identity. Spawns its subscription; call inside a Tokio runtime.
    pub fn start(config: GuardConfig) -> Arc<Guard> {
        let socket = strata_ipc::paths::socket_path(&config.runtime_dir, "identity");
        let endpoint = match Endpoint::unix(&socket) {
            Ok(e) => e,
            Err(e) => panic!("identity socket path is unusable: {e}"),
        };
        let mut guard = Guard::new(
            Arc::new(TrustedKeys::new([])),
            Some(Source {
                endpoint,
                subscriber: config.subscriber,
                catch_up: tokio::sync::Mutex::new(()),
            }),
        );
        // In cluster mode every check of a token's time window allows for the cluster's
        // max clock skew (strata_cap::check_current). A bad setting stops the service.
        match strata_cap::max_clock_skew_from_env() {
            Ok(skew) => guard.clock = guard.clock.with_max_skew(skew),
            Err(e) => panic!("{e}"),
        }
        let guard = Arc::new(guard);
        tokio::spawn(subscribe(Arc::clone(&guard)));
        guard
    }

    /// A guard with fixed keys and no identity (tests, tools). Synced from the start.
    pub fn offline(keys: Arc<TrustedKeys>) -> (Arc<Guard>, GuardHandle) {
        let guard = Arc::new(Guard::new(keys, None));
        guard.sync.synced_once.store(true, Ordering::SeqCst);
        guard.sync.live.store(true, Ordering::SeqCst);
        let handle = GuardHandle {
            guard: Arc::clone(&guard),
        };
        (guard, handle)
    }

    fn new(keys: Arc<TrustedKeys>, source: Option<Source>) -> Guard {
        let (revoked_tx, _) = broadcast::channel(4096);
        Guard {
            verifier: Verifier::new(keys, Verifier::DEFAULT_CACHE_CAPACITY),
            revoked: RevocationSet::new(),
            limiter: RateLimiter::default(),
            clock: SystemClock::new(),
            revoked_tx,
            sync: SyncState::default(),
            source,
            cluster: freshness::ClusterView::default(),
        }
    }

    /// Authorize a protected request: the token is present, verified, current, not
    /// revoked (nor any ancestor), for this service, carries the right, and is within its
    /// rate limit. UNAVAILABLE until the revocation list has been loaded once.
    pub async fn authorize(&self, call: &Call, method: &str) -> Result<Arc<Claims>, ErrorBody> {
        let Some(token) = call.token() else {
            return Err(ErrorBody::new(
                ErrorCode::Unauthenticated,
                format!("{method} needs a capability token in `auth.token`"),
            ));
        };
        if !self.sync.live.load(Ordering::SeqCst) || !self.sync.synced_once.load(Ordering::SeqCst) {
            self.catch_up().await?;
        }
        self.within_staleness().await?;
        let ctx = AuthContext::new(&self.clock, &self.revoked, &self.limiter);
        self.verifier
            .authorize_request(token, method, &ctx)
            .map_err(|e| ErrorBody::new(e.code(), e.to_string()))
    }

    /// Whether `claims` or any of its ancestors is revoked.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        self.revoked.covers(claims)
    }

    /// Every cap_id revoked from now on, as the guard learns it.
    pub fn revocations(&self) -> broadcast::Receiver<CapId> {
        self.revoked_tx.subscribe()
    }

    /// Drops revocations of tokens that expired more than
    /// [`strata_cap::DEFAULT_REVOCATION_RETENTION`] ago (by this guard's clock, which also
    /// refuses such tokens on their `exp`); returns how many went. Without it the set grows
    /// with every revocation ever made.
    pub fn prune_expired(&self) -> usize {
        let retention = i64::try_from(DEFAULT_REVOCATION_RETENTION.as_secs()).unwrap_or(i64::MAX);
        let cutoff = self.clock.now().unix_seconds().saturating_sub(retention);
        self.revoked
            .prune_expired(Timestamp::from_unix_seconds(cutoff))
    }

    /// Whether this guard can decide requests: it has loaded the complete revocation list
    /// from identity at least once. A service passes this to
    /// [`strata_ipc::Router::health_check`], so its `sys.health` is not ok (and the
    /// supervisor does not mark it healthy) before that.
    ///
    /// Also Ok while identity answers that it is waiting for the cluster (a node started
    /// while etcd is down): the service is as healthy as identity, which is up; protected
    /// requests are still refused until the list is loaded.
    pub fn ready(&self) -> Result<(), String> {
        if self.sync.synced_once.load(Ordering::SeqCst)
            || self
                .sync
                .identity_waiting_for_cluster
                .load(Ordering::SeqCst)
        {
            Ok(())
        } else {
            Err(format!(
                "the revocation list has not been loaded from identity yet ({} entries so far)",
                self.revoked.len()
            ))
        }
    }

    /// Facts for `sys.health`.
    pub fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "revocations_synced".into(),
            self.sync.synced_once.load(Ordering::SeqCst).into(),
        );
        m.insert(
            "identity_connected".into(),
            self.sync.live.load(Ordering::SeqCst).into(),
        );
        m.insert(
            "revocation_seq".into(),
            self.sync.seq.load(Ordering::SeqCst).into(),
        );
        m.insert("revocations".into(), self.revoked.len().into());
        if self
            .sync
            .identity_waiting_for_cluster
            .load(Ordering::SeqCst)
        {
            m.insert(WAITING_FOR_CLUSTER.into(), true.into());
        }
        m.insert(
            "trusted_keys".into(),
            self.verifier.keys().keys().len().into(),
        );
        self.cluster.facts(BootInstant::now(), &mut m);
        m
    }

    /// Cluster mode, past `max_staleness`: one fresh poll (unless another started since
    /// this request arrived); still past it (or identity unreachable), UNAVAILABLE with
    /// the cut-off message.
    async fn within_staleness(&self) -> Result<(), ErrorBody> {
        let asked = BootInstant::now();
        if self.cluster.stale_at(asked).is_none() {
            return Ok(());
        }
        if let Some(source) = &self.source {
            let _one_at_a_time = source.catch_up.lock().await;
            if self.cluster.claim_refresh(asked) {
                let mut client = Client::new(source.endpoint.clone());
                client.set_timeout(CATCH_UP_TIMEOUT);
                let deadline = tokio::time::Instant::now() + CATCH_UP_LOAD_TIMEOUT;
                loop {
                    let sent = BootInstant::now();
                    match client
                        .call::<Revocations>(&self.poll_params(source, 0))
                        .await
                    {
                        // More pages: ask again at once, within the deadline.
                        Ok(result) => {
                            if !self.apply(result, sent) || tokio::time::Instant::now() >= deadline
                            {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "identity unreachable while cut off from the cluster");
                            break;
                        }
                    }
                }
            }
        }
        match self.cluster.stale_at(BootInstant::now()) {
            None => Ok(()),
            Some(message) => Err(ErrorBody::new(ErrorCode::Unavailable, message)),
        }
    }

    /// Before a request while the subscription is down or the list not loaded yet: ask
    /// identity, every page until it says there is no more. If it answers, apply what it
    /// says; if it cannot be reached, serve with the list we hold (no revocation can be
    /// made while identity is down), unless we never had a complete one.
    async fn catch_up(&self) -> Result<(), ErrorBody> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let _one_at_a_time = source.catch_up.lock().await;
        if self.sync.live.load(Ordering::SeqCst) && self.sync.synced_once.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut client = Client::new(source.endpoint.clone());
        client.set_timeout(CATCH_UP_TIMEOUT);
        let deadline = tokio::time::Instant::now() + CATCH_UP_LOAD_TIMEOUT;
        loop {
            let sent = BootInstant::now();
            let answer = client
                .call::<Revocations>(&self.poll_params(source, 0))
                .await;
            self.sync.note_answer(answer.as_ref().err());
            match answer {
                Ok(result) => {
                    if !self.apply(result, sent) {
                        return Ok(());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!("the revocation list is still loading; refusing for now");
                        return Err(ErrorBody::new(
                            ErrorCode::Unavailable,
                            "still loading the revocation list from identity; try again shortly",
                        ));
                    }
                }
                // Identity is up but will not track this verifier (its subscriber
                // quota): revocations can be made that it would not hear of in time, so
                // the list held is not enough.
                Err(strata_ipc::ClientError::Server(e))
                    if e.code == ErrorCode::ResourceExhausted =>
                {
                    tracing::warn!(error = %e, "identity refuses this verifier's feed; refusing protected requests");
                    return Err(ErrorBody::new(
                        ErrorCode::Unavailable,
                        "identity does not accept this verifier's revocation feed now; try again shortly",
                    ));
                }
                Err(e) if self.sync.synced_once.load(Ordering::SeqCst) => {
                    tracing::debug!(error = %e, "identity unreachable; serving with the revocation list held");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no revocation list yet; refusing protected requests");
                    return Err(ErrorBody::new(
                        ErrorCode::Unavailable,
                        "waiting for the revocation list from identity; try again shortly",
                    ));
                }
            }
        }
    }

    fn poll_params(&self, source: &Source, wait: u64) -> RevocationsParams {
        RevocationsParams {
            since: self.sync.seq.load(Ordering::SeqCst),
            keys_epoch: self.sync.keys_epoch.load(Ordering::SeqCst),
            store_id: self.lock_store_id().clone(),
            wait_ms: wait,
            subscriber: source.subscriber.clone(),
            limit: Some(MAX_REVOCATIONS_PAGE),
        }
    }

    fn lock_store_id(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.sync.store_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply one answer from identity to a poll sent at `sent`: keys first (so a new kid
    /// is trusted before any token signed with it could be seen), then revocations, then
    /// the cursor, then (complete answers only) the cluster freshness. Returns whether
    /// more pages follow; the guard is synced once an answer says none do.
    fn apply(&self, result: RevocationsResult, sent: BootInstant) -> bool {
        if let Some(keys) = &result.keys {
            match trusted_keys(keys) {
                Ok(trusted) => {
                    self.verifier.keys().replace(trusted);
                    self.sync
                        .keys_epoch
                        .store(result.keys_epoch, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(error = %e, "identity sent a key we cannot use; keeping the old set")
                }
            }
        }
        // A complete list (`full`, then its further pages) replaces ours only by adding: a
        // revocation is never undone, and entries identity pruned have expired anyway.
        for r in &result.revocations {
            match r.cap_id.parse::<CapId>() {
                Ok(cap) => {
                    let expires = r.expires.map(Timestamp::from_unix_seconds);
                    self.learn_revoked(cap, expires);
                }
                Err(e) => {
                    tracing::error!(cap_id = %r.cap_id, error = %e, "unusable revocation entry")
                }
            }
        }
        *self.lock_store_id() = Some(result.store_id);
        self.sync.seq.store(result.seq, Ordering::SeqCst);
        if !result.more {
            self.cluster.record(sent, result.cluster.as_ref());
        }
        if !result.more && !self.sync.synced_once.swap(true, Ordering::SeqCst) {
            tracing::info!(
                count = self.revoked.len(),
                seq = result.seq,
                "loaded the full revocation list"
            );
        }
        result.more
    }

    fn learn_revoked(&self, cap: CapId, expires: Option<Timestamp>) {
        if self.revoked.insert(cap, expires) {
            let _ = self.revoked_tx.send(cap);
        }
    }
}

fn trusted_keys(keys: &[KeyInfo]) -> Result<Vec<TrustedKey>, strata_cap::Error> {
    keys.iter().map(TrustedKey::try_from).collect()
}

/// The background subscription: long-poll identity forever, marking the guard live only
/// while a poll on the current connection has succeeded.
async fn subscribe(guard: Arc<Guard>) {
    let Some(source) = &guard.source else { return };
    let mut backoff = Duration::from_millis(20);
    let mut client = Client::new(source.endpoint.clone());
    client.set_timeout(POLL_WAIT + Duration::from_secs(5));
    let mut pruned_at = std::time::Instant::now();
    let mut more = false;
    loop {
        // While pages remain, ask for the next at once.
        let wait = if more {
            0
        } else {
            guard.cluster.poll_wait(POLL_WAIT).as_millis() as u64
        };
        let params = guard.poll_params(source, wait);
        let sent = BootInstant::now();
        match client.call::<Revocations>(&params).await {
            Ok(result) => {
                guard.sync.note_answer(None);
                more = guard.apply(result, sent);
                guard.sync.live.store(true, Ordering::SeqCst);
                backoff = Duration::from_millis(20);
                if pruned_at.elapsed() >= PRUNE_EVERY {
                    pruned_at = std::time::Instant::now();
                    let pruned = guard.prune_expired();
                    if pruned > 0 {
                        tracing::info!(pruned, "dropped revocations of expired tokens");
                    }
                }
            }
            Err(e) => {
                guard.sync.note_answer(Some(&e));
                let was_live = guard.sync.live.swap(false, Ordering::SeqCst);
                if was_live {
                    tracing::warn!(error = %e, "lost identity; will catch up before each request until it is back");
                }
                client = Client::new(source.endpoint.clone());
                client.set_timeout(POLL_WAIT + Duration::from_secs(5));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod staleness_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_drops_only_revocations_of_tokens_expired_beyond_the_retention() {
        let (guard, _) = Guard::offline(Arc::new(TrustedKeys::new([])));
        let now = guard.clock.now().unix_seconds();
        let retention = DEFAULT_REVOCATION_RETENTION.as_secs() as i64;
        let ids: Vec<CapId> = (0..4).map(|_| CapId::random().unwrap()).collect();
        let at = |s: i64| Some(Timestamp::from_unix_seconds(s));
        guard.learn_revoked(ids[0], at(now - retention - 60)); // long expired: goes
        guard.learn_revoked(ids[1], at(now - 60)); // expired within the retention: stays
        guard.learn_revoked(ids[2], at(now + 600)); // still valid: stays
        guard.learn_revoked(ids[3], None); // expiry unknown: stays
        assert_eq!(guard.prune_expired(), 1);
        assert_eq!(guard.status()["revocations"], 3);
        assert!(!guard.revoked.is_revoked(&ids[0]));
        assert!(ids[1..].iter().all(|id| guard.revoked.is_revoked(id)));
        assert_eq!(guard.prune_expired(), 0);
    }
}
