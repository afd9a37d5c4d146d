//! One run's rotation task: when a third of a token's lifetime is left by the wall
//! clock (at most
//! [`CapabilitySpec::rotate_after`](crate::manifest::CapabilitySpec::rotate_after) after
//! it was asked for) a
//! fresh token is obtained and renamed over the file, the service is told (`on_rotate`,
//! to its process group), and the replaced token is revoked once its grace
//! ([`CapabilitySpec::grace_period`](crate::manifest::CapabilitySpec::grace_period)) is
//! over. A failed rotation leaves the file as it is and is tried again with a bounded
//! backoff; each failure is logged and audited.
//!
//! The task is stopped by [`Routes::end`] (it leaves a call to identity in flight when
//! told, and is aborted only if its file work overstays), which then revokes whatever it
//! held and makes due whatever else the run held in the pending list, so a token
//! obtained during a call in flight is not forgotten.
//!
//! [`Routes::end`]: super::Routes::end

use super::{issue, publish, revoke_all, unix_now, write, RouteState};
use crate::shared::Shared;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The first wait after a failed rotation; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at one rotation.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The run whose tokens a rotation task replaces.
pub(super) struct Run {
    pub shared: Arc<Shared>,
    pub service: String,
    /// Its process (and process group).
    pub pid: i32,
    pub state: Arc<Mutex<RouteState>>,
    /// See [`Routes`](super::Routes)'s `run_over`.
    pub run_over: Arc<AtomicBool>,
}

/// Rotate the tokens of `run` until `stop` says the run is over. A call to identity in
/// flight is left when it does; a replaced token stays in its `retiring` list until its
/// revocation was answered or owed, so a task stopped (or aborted) meanwhile leaves it
/// to the run's end.
pub(super) async fn rotate(run: Run, mut stop: watch::Receiver<bool>) {
    let Run {
        shared,
        service,
        pid,
        state,
        run_over,
    } = run;
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let next = {
            let st = lock();
            st.held
                .iter()
                .flat_map(|h| std::iter::once(h.rotate_at()).chain(h.retiring.iter().map(|r| r.2)))
                .min()
        };
        let Some(next) = next else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
        if *stop.borrow() {
            return;
        }
        let now = Instant::now();
        // Replaced tokens whose grace is over.
        let due: Vec<(String, String, i64)> = lock()
            .held
            .iter()
            .flat_map(|h| {
                h.retiring
                    .iter()
                    .filter(|(_, _, at)| *at <= now)
                    .map(|(cap_id, expires, _)| (h.spec.name.clone(), cap_id.clone(), *expires))
            })
            .collect();
        if !due.is_empty() {
            let kept = revoke_all(
                &shared,
                &service,
                due.clone(),
                "rotated out",
                Some(stop.clone()),
            )
            .await;
            let answered: HashSet<String> = due
                .into_iter()
                .map(|d| d.1)
                .filter(|id| !kept.iter().any(|k| &k.1 == id))
                .collect();
            for h in &mut lock().held {
                h.retiring.retain(|r| !answered.contains(&r.0));
            }
            if *stop.borrow() {
                return;
            }
        }
        // Tokens due for replacement.
        let specs: Vec<_> = lock()
            .held
            .iter()
            .filter(|h| h.rotate_at() <= now)
            .map(|h| h.spec.clone())
            .collect();
        for spec in specs {
            if *stop.borrow() {
                return;
            }
            let issued = tokio::select! {
                issued = issue(&shared, &service, &spec, &run_over) => issued,
                // The run is ending: whatever this call obtains is owed by its end.
                _ = stop.wait_for(|v| *v) => return,
            };
            let outcome = match issued {
                Ok((fresh, token)) => {
                    // Ok(Some(old cap_id)) when delivered; Err when the file was not
                    // written (the fresh token then goes back).
                    let written = write(&state, spec.name.clone(), token).await;
                    let delivered = {
                        let mut st = lock();
                        written.map(|()| {
                            let h = st.held.iter_mut().find(|h| h.spec.name == spec.name)?;
                            let old = std::mem::replace(&mut h.cap_id, fresh.cap_id.clone());
                            h.retiring
                                // The grace runs from the delivery, not from the wake-up.
                                .push((
                                    old.clone(),
                                    h.expires,
                                    Instant::now() + spec.grace_period(),
                                ));
                            h.expires = fresh.expires;
                            h.issued = fresh.issued;
                            h.rotate_due = fresh.rotate_due;
                            h.rotations += 1;
                            h.last_rotation = Some(unix_now());
                            h.retry_at = None;
                            h.failures = 0;
                            publish(&shared, &service, &st.held);
                            Some(old)
                        })
                    };
                    match delivered {
                        Ok(Some(old)) => Ok((old, fresh.cap_id)),
                        Ok(None) => continue,
                        Err(why) => {
                            revoke_all(
                                &shared,
                                &service,
                                vec![(spec.name.clone(), fresh.cap_id, fresh.expires)],
                                "not delivered",
                                None,
                            )
                            .await;
                            Err(format!("cannot write the credential: {why}"))
                        }
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok((old, new)) => {
                    shared.audit.record(
                        "cap.rotated",
                        json!({"service": service, "capability": spec.name,
                               "cap_id": new, "replaced": old,
                               "grace_ms": spec.grace_period().as_millis() as u64}),
                    );
                    tracing::info!(service = %service, capability = %spec.name, cap_id = %new, "capability rotated");
                    // Checked right before the signal, with nothing awaited in between:
                    // once the run's end has said stop, its group may be gone.
                    if let Some(signal) = spec.on_rotate.filter(|_| !*stop.borrow()) {
                        shared.spawner.signal_group(pid, signal.0);
                    }
                }
                Err(why) => {
                    let mut st = lock();
                    if let Some(h) = st.held.iter_mut().find(|h| h.spec.name == spec.name) {
                        h.failures = h.failures.saturating_add(1);
                        let wait = RETRY_MIN
                            .saturating_mul(1 << h.failures.min(6).saturating_sub(1))
                            .min(RETRY_MAX);
                        h.retry_at = Some(Instant::now() + wait);
                        tracing::warn!(service = %service, capability = %spec.name, failures = h.failures, ?wait, error = %why, "capability rotation failed; the current token stays until a new one is obtained");
                        shared.audit.record(
                            "cap.route_failed",
                            json!({"service": service, "capability": spec.name,
                                   "cap_id": h.cap_id, "stage": "rotate", "error": why,
                                   "failures": h.failures}),
                        );
                    }
                }
            }
        }
    }
}
