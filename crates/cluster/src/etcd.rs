//! The etcd client as Strata uses it: every request has a deadline, and one that fails
//! for a transport reason on one endpoint is retried on the next.
//!
//! Why by hand: etcd-client 0.21 puts every endpoint behind one tonic balanced channel,
//! and tonic's lazy reconnecting endpoint reports itself ready while its connection is
//! refused, so the balancer hands a request to a dead member and the request fails there
//! (grpc/grpc-rust#2839; etcd-client leaves failover to its users, etcdv3/etcd-client#12).
//! With one member of three down that was a third of all requests. So each endpoint gets
//! a client of its own; requests go to the endpoint in use and move on to the next one
//! when the connection fails, and the endpoint that answered is kept for what follows.

use etcd_client::{Client, DeleteOptions, GetOptions, PutOptions, WatchOptions, WatchStream};
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod connect;

/// How long one etcd request may take, failover included, before it counts as etcd being
/// unreachable. The client connects lazily and a request to a down cluster would
/// otherwise wait forever.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 keep-alive: how long a connection with a request or watch open may stay silent
/// before the client pings etcd, and how long it then waits for the answer before it
/// calls the connection dead (a watch on a silently dead connection would otherwise wait
/// forever). etcd's gRPC server closes a connection whose client pings more often than
/// `--grpc-keepalive-min-time` (default 5 s) with GOAWAY "too_many_pings": a 2 s interval
/// dropped every idle watch about every 8 s. 10 s is twice etcd's default, so a ping
/// never counts against the client; a dead connection is found within about 13 s.
pub(crate) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEP_ALIVE_INTERVAL`].
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// The least time an attempt on one endpoint runs alone (while the deadline allows)
/// before the next endpoint is asked as well, however many are still to try.
const MIN_ATTEMPT: Duration = Duration::from_millis(300);
/// One attempt of [`Etcd::call_at`] on one endpoint: the endpoint's index and its answer.
type Attempt<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = (usize, Result<T, etcd_client::Error>)> + Send + 'a>>;

/// Waits for the first of `attempts` to finish, removes it and answers with its result;
/// pending forever when there are none (the caller's timer then decides).
async fn first_done<T>(
    attempts: &mut Vec<Attempt<'_, T>>,
) -> (usize, Result<T, etcd_client::Error>) {
    std::future::poll_fn(|cx| {
        for k in 0..attempts.len() {
            if let std::task::Poll::Ready(done) = attempts[k].as_mut().poll(cx) {
                drop(attempts.swap_remove(k));
                return std::task::Poll::Ready(done);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// etcd's default `--grpc-keepalive-min-time`: the keep-alive interval must stay above it.
#[cfg(test)]
const ETCD_DEFAULT_KEEPALIVE_MIN_TIME: Duration = Duration::from_secs(5);

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd did not answer within the deadline, or refused the connection.
    #[error("etcd is unreachable: {0}")]
    Unavailable(String),
    /// etcd answered, but with something unusable (a bad value, a refused request).
    #[error("{0}")]
    Invalid(String),
}

impl From<etcd_client::Error> for ClusterError {
    /// A refusal etcd itself sent that no retry changes (the request is too large, not
    /// permitted, names nothing) is [`ClusterError::Invalid`]; everything else (the
    /// connection, an election, an overloaded member) is [`ClusterError::Unavailable`].
    fn from(e: etcd_client::Error) -> ClusterError {
        if is_refusal(&e) {
            ClusterError::Invalid(format!("etcd refused the request: {}", describe(&e)))
        } else {
            ClusterError::Unavailable(describe(&e))
        }
    }
}

/// `e` with its whole chain of causes (tonic hides a TLS failure in a source two levels
/// down), and what to do about the failures a setting causes: credentials etcd refuses,
/// a role without the cluster prefix, a certificate one side does not accept. Never
/// holds a password (etcd's messages do not quote it).
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let hint = hint(&text);
    if hint.is_empty() {
        text
    } else {
        format!("{hint} ({text})")
    }
}

/// The cause of a failure in words, from the text etcd or rustls gave it; empty when it
/// is none of the credential or TLS failures.
fn hint(text: &str) -> &'static str {
    let lower = text.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    if has("authentication failed") {
        "etcd refused the etcd user or password given (authentication failed): check --etcd-user and --etcd-password-file"
    } else if has("permission denied") {
        "etcd denied the request to the etcd user given (permission denied): its role needs readwrite on the cluster prefix (see OPERATIONS.md, \"Running a cluster\")"
    } else if has("authentication is not enabled") {
        "etcd has authentication off, yet an etcd user was given: enable it (`etcdctl auth enable`) or drop --etcd-user"
    } else if has("user name is empty") || has("user name not found") {
        "etcd has authentication on and no etcd user was given: set --etcd-user and --etcd-password-file"
    } else if has("certificaterequired")
        || has("certificate required")
        || has("bad certificate")
        || has("badcertificate")
        || has("unknown ca")
        || has("unknownca")
    {
        "etcd refused this client's TLS client certificate (etcd runs with --client-cert-auth): set --etcd-cert and --etcd-key to a certificate etcd's --trusted-ca-file signed"
    } else if has("invalid peer certificate") || has("unknownissuer") || has("notvalidforname") {
        "etcd's TLS server certificate is not trusted: --etcd-ca must be the CA that signed it, for the host name or address in the endpoint"
    } else if has("handshake") || has("tls") && has("alert") || has("corrupt message") {
        "the TLS handshake with etcd failed (is the endpoint https:// and etcd serving TLS?)"
    } else {
        ""
    }
}

/// A handle on the cluster's etcd. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Etcd {
    members: Arc<Members>,
    prefix: String,
}

/// One client per configured endpoint, and which one is in use.
struct Members {
    /// `(endpoint URL, its client)`, in the configured order.
    clients: Vec<(String, Client)>,
    /// Index into `clients` of the endpoint requests go to first.
    current: AtomicUsize,
    /// The etcd user and password, when etcd authentication is on.
    auth: Option<crate::EtcdAuth>,
    /// Per client: whether it holds an auth token (it logs in before its first request).
    logged_in: Vec<tokio::sync::Mutex<bool>>,
    /// TLS without a client certificate: an etcd with `--client-cert-auth` then closes
    /// each connection right after the handshake, which the client sees only as a
    /// closed connection, so a failure says what may be missing.
    tls_without_client_cert: bool,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Etcd {
    /// Runs `request` on the endpoint in use and answers with the first endpoint's answer.
    /// It is *hedged*: when that endpoint has not answered within its share of the time
    /// left (a stopped or blackholed member keeps the connection open and says nothing),
    /// the request is also sent to the next endpoint, while the first attempt stays in
    /// flight (a member that is merely slow, e.g. fsyncing on a loaded disk, still
    /// answers in time); when an attempt fails for a transport reason (the connection was
    /// refused, reset or closed) or etcd answers with a transient refusal (an election is
    /// on: [`is_transient`]), the next endpoint is tried at once (after a short backoff
    /// once every endpoint has been tried). All within one [`OP_TIMEOUT`]. Any other
    /// answer from etcd, even an error, is final. An endpoint that failed or went silent
    /// is moved away from, so the requests that follow go first to the next one.
    ///
    /// Sending a request twice is safe for every request Strata makes: writes put a
    /// whole value at a key, deletes and lease revocations are idempotent, and a lease
    /// granted twice expires unused.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, request: F) -> Result<T, ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
        T: Send,
    {
        self.call_at(what, request).await.map(|(answer, _)| answer)
    }

    /// [`Etcd::call`], and the index of the endpoint that answered (for a stream opened
    /// there: [`Etcd::broken`] when it breaks).
    pub(crate) async fn call_at<T, F, Fut>(
        &self,
        what: &str,
        mut request: F,
    ) -> Result<(T, usize), ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
        T: Send,
    {
        let until = Instant::now() + OP_TIMEOUT;
        let clients = &self.members.clients;
        let n = clients.len();
        let first = self.members.current.load(Ordering::Relaxed) % n;
        let mut failures: Vec<String> = Vec::new();
        let mut backoff = Duration::from_millis(25);
        // Attempts in flight, and which endpoints they are on.
        let mut in_flight: Vec<Attempt<'_, T>> = Vec::new();
        let mut busy = vec![false; n];
        let mut started = 0usize;
        let mut cursor = first;
        // When the next attempt may start: now, or once the ones in flight had their share.
        let mut next_start = Instant::now();
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if now >= next_start && busy.iter().any(|b| !b) {
                if started > 0 && started.is_multiple_of(n) && in_flight.is_empty() {
                    // Every endpoint failed once already: a short pause before the next round.
                    tokio::time::sleep_until((now + backoff).min(until)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                    if Instant::now() >= until {
                        break;
                    }
                }
                // The next endpoint in order (from the one in use) not already asked.
                let Some(index) = (0..n).map(|k| (cursor + k) % n).find(|&i| !busy[i]) else {
                    continue;
                };
                cursor = (index + 1) % n;
                started += 1;
                busy[index] = true;
                let login = self.log_in(index);
                let attempt = request(clients[index].1.clone());
                in_flight.push(Box::pin(async move {
                    let result = match login.await {
                        Ok(()) => attempt.await,
                        Err(e) => Err(e),
                    };
                    (index, result)
                }));
                // Each endpoint not yet asked gets an equal share of what is left before the
                // next one is asked as well, so one that never answers cannot take the
                // whole deadline, and one that is slow is not abandoned.
                let idle = busy.iter().filter(|b| !**b).count() as u32;
                let remaining = until.saturating_duration_since(Instant::now());
                let share = (remaining / (idle + 1)).max(MIN_ATTEMPT).min(remaining);
                next_start = Instant::now() + share;
            }
            let wake = if busy.iter().any(|b| !b) {
                next_start.min(until)
            } else {
                until
            };
            let finished = tokio::select! {
                done = first_done(&mut in_flight) => Some(done),
                _ = tokio::time::sleep_until(wake) => None,
            };
            let Some((index, result)) = finished else {
                // Time for the next attempt: the endpoints in flight went silent so far.
                for (i, b) in busy.iter().enumerate() {
                    if *b && i == self.members.current.load(Ordering::Relaxed) % n {
                        self.broken(i);
                    }
                }
                continue;
            };
            busy[index] = false;
            let endpoint = &clients[index].0;
            match result {
                Ok(answer) => {
                    if index != first {
                        tracing::info!(%endpoint, unreachable = %failures.join("; "), "etcd: switched to another endpoint");
                        self.members.current.store(index, Ordering::Relaxed);
                    }
                    return Ok((answer, index));
                }
                Err(e) if is_transport(&e) || is_transient(&e) => {
                    tracing::debug!(%endpoint, error = %e, "etcd {what} failed on this endpoint; trying the next");
                    let failure = format!("{endpoint}: {}", describe(&e));
                    if !failures.contains(&failure) {
                        failures.push(failure);
                    }
                    self.broken(index);
                    // The next endpoint is asked at once (an election: after a backoff).
                    next_start = if is_transient(&e) {
                        let at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_millis(250));
                        at
                    } else {
                        Instant::now()
                    };
                }
                Err(e) => return Err(self.refused(e)),
            }
        }
        for (i, b) in busy.iter().enumerate() {
            if *b {
                failures.push(format!(
                    "{}: no answer to etcd {what} in time",
                    clients[i].0
                ));
                self.broken(i);
            }
        }
        failures.push(format!(
            "etcd {what} took longer than {} ms",
            OP_TIMEOUT.as_millis()
        ));
        let mut message = failures.join("; ");
        if self.members.tls_without_client_cert && message.contains("connection closed") {
            message = format!(
                "etcd closed the TLS connection: if etcd runs with --client-cert-auth, etcd refused \
                 this client's TLS client certificate (none was given: set --etcd-cert and --etcd-key) ({message})"
            );
        }
        Err(ClusterError::Unavailable(message))
    }

    /// A final answer from etcd as an error; a refusal to a node that gave no etcd user
    /// says so (etcd then takes the client certificate's common name for the user, or
    /// no one).
    fn refused(&self, e: etcd_client::Error) -> ClusterError {
        match ClusterError::from(e) {
            ClusterError::Invalid(m) if self.members.auth.is_none() && m.contains("permission denied") => {
                ClusterError::Invalid(format!(
                    "etcd has authentication on and no etcd user was given: set --etcd-user and --etcd-password-file ({m})"
                ))
            }
            other => other,
        }
    }

    /// Logs client `index` in to etcd (once; again only if etcd-client's renewal failed
    /// and reset nothing: a refused login is retried on the next request). A no-op
    /// without etcd authentication.
    async fn log_in(&self, index: usize) -> Result<(), etcd_client::Error> {
        let Some(auth) = &self.members.auth else {
            return Ok(());
        };
        let mut logged_in = self.members.logged_in[index].lock().await;
        if !*logged_in {
            let mut client = self.members.clients[index].1.clone();
            // Clones of a client share its credentials and token: every request on this
            // endpoint carries the token from now on, and etcd-client renews it.
            client
                .update_user(Some((auth.user.clone(), auth.password.clone())))
                .await?;
            *logged_in = true;
        }
        Ok(())
    }

    /// Marks endpoint `index` as failing (a request or a stream on it failed or went
    /// silent): if it is the one in use, the next one is from now on. A no-op when
    /// another request has moved on already.
    pub(crate) fn broken(&self, index: usize) {
        let n = self.members.clients.len();
        let current = &self.members.current;
        let _ =
            current.compare_exchange(index, (index + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Starts a watch on `key` (on an endpoint that accepts it); the stream lives on that
    /// endpoint's connection and ends if it breaks. Also the endpoint's index, for
    /// [`Etcd::broken`].
    pub(crate) async fn watch(
        &self,
        key: &str,
        options: WatchOptions,
    ) -> Result<(WatchStream, usize), ClusterError> {
        self.call_at("watch", |mut client| {
            let options = options.clone();
            async move { client.watch(key, Some(options)).await }
        })
        .await
    }

    /// `<prefix>/<part>/<part>…`. An empty last part gives a trailing slash (a prefix).
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push('/');
            key.push_str(part);
        }
        key
    }

    /// The client of the endpoint in use. It does not fail over: use [`Etcd`]'s own
    /// methods where they fit.
    pub fn client(&self) -> Client {
        let clients = &self.members.clients;
        let current = self.members.current.load(Ordering::Relaxed) % clients.len();
        clients[current].1.clone()
    }

    /// Stores `value` as JSON at `key`, attached to `lease` when given. Returns the
    /// revision of the write.
    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        lease: Option<i64>,
    ) -> Result<i64, ClusterError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ClusterError::Invalid(format!("cannot encode {key}: {e}")))?;
        self.put(key, &bytes, lease).await
    }

    /// Write `value` at `key`, attached to `lease` if given; the revision it got.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<i64, ClusterError> {
        let options = lease.map(|id| PutOptions::new().with_lease(id));
        let response = self
            .call("put", |mut client| {
                let options = options.clone();
                async move { client.put(key, value, options).await }
            })
            .await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let response = self
            .call(
                "get",
                |mut client| async move { client.get(key, None).await },
            )
            .await?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Every key under `prefix` with its value, and the store revision they were read at.
    /// Read in pages of [`PAGE`] keys, all at the revision of the first page, so the
    /// result is one consistent snapshot however large the prefix grows (a single reply
    /// is capped at 4 MiB by the gRPC client).
    pub async fn get_prefix(
        &self,
        prefix: &str,
    ) -> Result<(i64, Vec<(String, Vec<u8>)>), ClusterError> {
        let end = prefix_end(prefix.as_bytes());
        let mut from: Vec<u8> = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut entries = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = self
                .call("get", |mut client| {
                    let (from, options) = (from.clone(), options.clone());
                    async move { client.get(from, Some(options)).await }
                })
                .await?;
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or(0);
            }
            let kvs = response.kvs();
            for kv in kvs {
                if let Ok(key) = kv.key_str() {
                    entries.push((key.to_owned(), kv.value().to_vec()));
                }
            }
            match kvs.last() {
                Some(last) if response.more() => {
                    // The next page starts just after the last key read.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((revision, entries)),
            }
        }
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, ClusterError> {
        let response = self
            .call("delete", |mut client| async move {
                client.delete(key, None).await
            })
            .await?;
        Ok(response.deleted() > 0)
    }

    /// Deletes every key under `prefix`; how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, ClusterError> {
        let response = self
            .call("delete", |mut client| async move {
                client
                    .delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    .await
            })
            .await?;
        Ok(response.deleted().max(0) as u64)
    }

    /// Revokes a lease: every key attached to it is deleted. An unknown lease is not an
    /// error (it has expired already).
    pub async fn revoke_lease(&self, id: i64) -> Result<(), ClusterError> {
        match self
            .call("lease revoke", |mut client| async move {
                client.lease_revoke(id).await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(ClusterError::Unavailable(e) | ClusterError::Invalid(e))
                if e.contains("requested lease not found") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Keys per page when reading a whole prefix.
const PAGE: i64 = 1000;

/// The first key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    vec![0]
}

/// Whether `e` is a failure of the connection (refused, reset, closed, timed out at the
/// HTTP/2 level) rather than an answer from etcd. tonic gives a status it made from a
/// local transport error a source; a status etcd sent has none.
fn is_transport(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Whether `e` is an answer etcd sent that says to ask again (gRPC Unavailable from the
/// server itself: "etcdserver: leader changed", "no leader", "request timed out"; or
/// "too many requests"): an election or an overloaded member, over in a moment.
fn is_transient(e: &etcd_client::Error) -> bool {
    matches!(
        etcd_code(e),
        Some(grpc::UNAVAILABLE | grpc::RESOURCE_EXHAUSTED)
    )
}

/// Whether `e` is a final refusal from etcd itself (not the connection, not transient).
fn is_refusal(e: &etcd_client::Error) -> bool {
    use grpc::*;
    matches!(
        etcd_code(e),
        Some(
            INVALID_ARGUMENT
                | NOT_FOUND
                | ALREADY_EXISTS
                | PERMISSION_DENIED
                | FAILED_PRECONDITION
                | OUT_OF_RANGE
                | UNIMPLEMENTED
                | UNAUTHENTICATED
        )
    )
}

/// The gRPC status code of an answer etcd sent (not one tonic made from a local
/// transport error: that has a source).
fn etcd_code(e: &etcd_client::Error) -> Option<i32> {
    match e {
        etcd_client::Error::GRpcStatus(status) if std::error::Error::source(status).is_none() => {
            Some(i32::from(status.code()))
        }
        _ => None,
    }
}

/// gRPC status codes (etcd-client does not re-export tonic's `Code`).
mod grpc {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_respects_etcds_default_ping_policy() {
        // etcd strikes a ping that comes sooner than its min time after the last one and
        // closes the connection at the third strike; twice the default leaves margin.
        assert!(KEEP_ALIVE_INTERVAL >= 2 * ETCD_DEFAULT_KEEPALIVE_MIN_TIME);
        assert!(KEEP_ALIVE_TIMEOUT < KEEP_ALIVE_INTERVAL);
    }

    fn from_etcd(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn an_election_is_retried_and_a_refusal_is_final() {
        use tonic::Code;
        for (code, message) in [
            (Code::Unavailable, "etcdserver: leader changed"),
            (Code::Unavailable, "etcdserver: no leader"),
            (Code::Unavailable, "etcdserver: request timed out"),
            (Code::ResourceExhausted, "etcdserver: too many requests"),
        ] {
            let e = from_etcd(code, message);
            assert!(is_transient(&e), "{message}");
            assert!(matches!(
                ClusterError::from(e),
                ClusterError::Unavailable(_)
            ));
        }
        for (code, message) in [
            (Code::InvalidArgument, "etcdserver: request is too large"),
            (Code::PermissionDenied, "etcdserver: permission denied"),
            (Code::NotFound, "etcdserver: requested lease not found"),
        ] {
            let e = from_etcd(code, message);
            assert!(!is_transient(&e) && !is_transport(&e), "{message}");
            assert!(
                matches!(ClusterError::from(e), ClusterError::Invalid(m) if m.contains(message)),
                "{message}"
            );
        }
        // The same codes made by tonic from a local transport failure are the connection's.
        let local = tonic::Status::from_error(Box::new(std::io::Error::other("reset")));
        let local = etcd_client::Error::GRpcStatus(local);
        assert!(is_transport(&local) && !is_refusal(&local));
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/strata/a/"), b"/strata/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
