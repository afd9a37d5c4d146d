//! Revoking a run's capabilities when it ends or rotates: a few calls to identity at a
//! time ([`AT_ONCE`]), for at most [`DEADLINE`] in all; what identity has not taken by
//! then is owed ([`Pending`](super::Pending)), so a hung identity or verifier does not
//! hold a stop, a shutdown or a reload.

use super::issuer::{identity_socket, retryable, IssuerError};
use super::pending::Owed;
use super::{blocking, unix_now};
use crate::shared::Shared;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How many revocations are asked for at once.
pub(super) const AT_ONCE: usize = 8;
/// How long one [`revoke_all`] asks before the rest are owed.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// One capability to revoke: its name in the credentials directory, cap_id, expiry.
pub(super) type Id = (String, String, i64);

/// Revoke `ids` routed to `service`; what identity cannot take now (unreachable, an
/// answer saying "not now", no answer by [`DEADLINE`]) is owed. When `stop` says so
/// first (a rotation whose run is ending), the calls in flight are left and the ids not
/// yet answered are returned, neither revoked nor owed, for the caller to keep.
pub(super) async fn revoke_all(
    shared: &Arc<Shared>,
    service: &str,
    ids: Vec<Id>,
    why: &str,
    mut stop: Option<watch::Receiver<bool>>,
) -> Vec<Id> {
    if ids.is_empty() {
        return Vec::new();
    }
    let socket = identity_socket(shared);
    let issuer = shared.routing.issuer();
    let deadline = Instant::now() + DEADLINE;
    let mut queue = ids.into_iter();
    let mut asked: HashMap<String, Id> = HashMap::new();
    let mut calls = JoinSet::new();
    let (mut owed, mut done) = (Vec::new(), Vec::new());
    let mut down = false;
    let mut stopped = false;
    let mut late = false;
    loop {
        while !down && calls.len() < AT_ONCE {
            let Some(id) = queue.next() else { break };
            let (issuer, socket, cap_id) = (Arc::clone(&issuer), socket.clone(), id.1.clone());
            asked.insert(id.1.clone(), id);
            calls.spawn(async move {
                let result = issuer.revoke(&socket, &cap_id).await;
                (cap_id, result)
            });
        }
        if calls.is_empty() {
            break;
        }
        let stopping = async {
            match &mut stop {
                Some(s) => {
                    let _ = s.wait_for(|v| *v).await;
                }
                None => std::future::pending().await,
            }
        };
        let (cap_id, result) = tokio::select! {
            joined = calls.join_next() => match joined {
                Some(Ok(answer)) => answer,
                // A call that panicked: its id stays asked, so it is owed below.
                _ => continue,
            },
            _ = tokio::time::sleep_until(deadline) => { late = true; break }
            _ = stopping => { stopped = true; break }
        };
        let Some((capability, cap_id, expires)) = asked.remove(&cap_id) else {
            continue;
        };
        match result {
            Ok(()) => {
                shared.audit.record(
                    "cap.route_revoked",
                    json!({"service": service, "capability": capability, "cap_id": cap_id,
                           "reason": why}),
                );
                done.push(cap_id);
            }
            Err(e) => {
                let pending = retryable(&e);
                shared.audit.record(
                    "cap.route_failed",
                    json!({"service": service, "capability": capability, "cap_id": cap_id,
                           "stage": "revoke", "error": e.to_string(), "pending": pending}),
                );
                if pending {
                    down |= matches!(e, IssuerError::Unreachable(_));
                    tracing::warn!(service, capability, %cap_id, error = %e, "revocation pending: identity did not take it");
                    owed.push(owe(service, capability, cap_id, expires));
                } else {
                    tracing::error!(service, capability, %cap_id, error = %e, "identity refused a revocation");
                    done.push(cap_id);
                }
            }
        }
    }
    calls.abort_all();
    let rest: Vec<Id> = asked.into_values().chain(queue).collect();
    let kept = if stopped {
        rest
    } else {
        let error = if late {
            format!("identity did not answer within {DEADLINE:?}")
        } else {
            "identity did not answer".to_owned()
        };
        if !rest.is_empty() {
            tracing::warn!(service, count = rest.len(), %error, "revocations pending");
        }
        for (capability, cap_id, expires) in rest {
            shared.audit.record(
                "cap.route_failed",
                json!({"service": service, "capability": capability, "cap_id": cap_id,
                       "stage": "revoke", "error": error, "pending": true}),
            );
            owed.push(owe(service, capability, cap_id, expires));
        }
        Vec::new()
    };
    if !done.is_empty() || !owed.is_empty() {
        let s = Arc::clone(shared);
        blocking(move || {
            if !done.is_empty() {
                s.routing.pending.settle(&done, unix_now());
            }
            if !owed.is_empty() {
                if let Err(e) = s.routing.pending.add(owed, unix_now()) {
                    tracing::error!(error = %e, "cannot record the revocations owed; they are retried while the supervisor runs");
                }
            }
        })
        .await;
    }
    kept
}

fn owe(service: &str, capability: String, cap_id: String, expires: i64) -> Owed {
    Owed {
        cap_id,
        service: service.to_owned(),
        capability,
        expires,
        due: true,
    }
}
