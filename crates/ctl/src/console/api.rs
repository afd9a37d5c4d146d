//! The JSON API under `/api/`, for the pages. Every call is made as the console's user
//! ([`super::Caller`]); a protocol error becomes an HTTP status ([`failure`]) with the
//! body `{"error": {"code", "message"}}`. Names and ids in paths are parsed before
//! anything is called.

use super::audit::{Filter, Tail};
use super::http::{self, Admitted, Query};
use super::sse::{self, Body, Events};
use super::{metrics, Console};
use crate::failure::Failure;
use crate::svc::LogFollower;
use bytes::Bytes;
use hyper::{Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_proto::methods::supervisor::{self as sup, SvcNameParams};
use strata_proto::methods::{identity, sys, NoParams};
use strata_proto::{ErrorCode, ServiceName};

/// How often a log stream asks the supervisor for new lines.
const LOG_POLL: Duration = Duration::from_millis(500);
/// How often the audit stream looks at the log.
const AUDIT_POLL: Duration = Duration::from_millis(250);
/// Lines a log stream starts with.
const LOG_BACKLOG: usize = 100;
/// Most capabilities `/api/caps` gathers.
const MAX_CAPS: usize = 10_000;
/// Most `identity.issued` calls one `/api/caps` makes (pages may be cut short by the
/// scan bound with few caps each, so the cap count alone does not bound the calls).
const MAX_CAPS_CALLS: usize = 20;

/// Route `/api/<rest>`.
pub async fn route(
    console: &Arc<Console>,
    admitted: &Admitted,
    method: &Method,
    rest: &str,
    query: &Query,
) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match parts.as_slice() {
        ["session"] if get => session(console, admitted).await,
        ["node"] if get => node(console).await,
        ["cluster"] if get => cluster(console).await,
        ["audit"] if get => audit(console, admitted, query).await,
        ["services", name] if get => match service_name(name) {
            Ok(name) => service(console, name).await,
            Err(r) => r,
        },
        ["services", name, "logs"] if get => match service_name(name) {
            Ok(name) => logs(console, admitted, name).await,
            Err(r) => r,
        },
        ["services", name, action @ ("start" | "stop" | "restart")] if post => {
            match service_name(name) {
                Ok(name) => control(console, name, action).await,
                Err(r) => r,
            }
        }
        ["caps"] if get => caps(console).await,
        ["caps", cap_id, "revoke"] if post => revoke(console, cap_id).await,
        ["caps"]
        | ["session"]
        | ["node"]
        | ["cluster"]
        | ["audit"]
        | ["services", _]
        | ["services", _, "logs" | "start" | "stop" | "restart"]
        | ["caps", _, "revoke"] => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_ARGUMENT",
            "method not allowed here",
        ),
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such API path"),
    }
}

/// An error answer: `{"error": {"code", "message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => http::with_type(status, "application/json", Bytes::from(bytes)),
        Err(_) => http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer\n",
        ),
    }
}

/// The HTTP status and protocol code name for a failed call.
fn status_of(f: &Failure) -> (StatusCode, &'static str) {
    match f {
        Failure::Server(body) => (
            match body.code {
                ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
                ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::Conflict => StatusCode::CONFLICT,
                ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            body.code.name(),
        ),
        Failure::Denied(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        Failure::Unreachable(_) | Failure::Usage(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        }
        Failure::Failed(_) => (StatusCode::BAD_GATEWAY, "INTERNAL"),
    }
}

/// The message of a failed call.
fn message_of(f: &Failure) -> &str {
    match f {
        Failure::Server(body) => &body.message,
        Failure::Denied(m) | Failure::Unreachable(m) | Failure::Usage(m) | Failure::Failed(m) => m,
    }
}

/// A failed call as an answer.
pub fn failure(f: &Failure) -> Response<Body> {
    let (status, code) = status_of(f);
    error(status, code, message_of(f))
}

/// A failed call as the body of an `error` event.
fn failure_body(f: &Failure) -> Value {
    json!({"error": {"code": status_of(f).1, "message": message_of(f)}})
}

fn service_name(text: &str) -> Result<ServiceName, Response<Body>> {
    text.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "that is not a service name",
        )
    })
}

/// Call `M` on `service`'s socket as the console's user.
async fn call<M: strata_proto::methods::Method>(
    console: &Console,
    service: &str,
    params: &M::Params,
) -> Result<M::Result, Failure> {
    let mut client = console.caller.client(service).await?;
    Ok(client.call::<M>(params).await?)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn session(console: &Console, admitted: &Admitted) -> Response<Body> {
    let node_id = call::<sup::Status>(console, "supervisor", &NoParams {})
        .await
        .map(|s| s.node_id)
        .ok();
    json(
        StatusCode::OK,
        &json!({"csrf": admitted.csrf, "node_id": node_id,
                "uid": rustix::process::getuid().as_raw()}),
    )
}

/// The node page's data. The pids, and the sockets `sys.metrics` is asked on, are the
/// supervisor's machine's: they are looked at only when the supervisor was reached over
/// a local socket (not with `--node`/`--endpoint` over TCP), else RSS, CPU and rate are
/// null.
async fn node(console: &Console) -> Response<Body> {
    let mut supervisor = match console.caller.client("supervisor").await {
        Ok(c) => c,
        Err(f) => return failure(&f),
    };
    let local = matches!(supervisor.endpoint(), strata_ipc::Endpoint::Unix(_));
    let list = match supervisor.call::<sup::SvcList>(&NoParams {}).await {
        Ok(l) => l,
        Err(e) => return failure(&Failure::from(e)),
    };
    let node_id = supervisor
        .call::<sup::Status>(&NoParams {})
        .await
        .map(|s| s.node_id)
        .ok();
    let now = Instant::now();
    // Ask each service with a socket for its request counter, all at once.
    let asks = list.services.iter().map(|s| {
        let socket = s
            .extra
            .get("socket")
            .and_then(Value::as_str)
            .filter(|_| local)
            .map(str::to_owned);
        let refused = console
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused_lately(&s.name, now);
        async move {
            let socket = socket.filter(|_| !refused)?;
            let mut client = console.caller.client_at(&socket).ok()?;
            Some(
                client
                    .call::<sys::Metrics>(&NoParams {})
                    .await
                    .map_err(Failure::from),
            )
        }
    });
    let totals = futures_util::future::join_all(asks).await;
    let now_ms = now_ms();
    let mut rates = console.rates.lock().unwrap_or_else(|p| p.into_inner());
    let names: Vec<String> = list.services.iter().map(|s| s.name.clone()).collect();
    rates.keep_only(&names);
    let services: Vec<Value> =
        list.services
            .iter()
            .zip(totals)
            .map(|(s, total)| {
                let x = &s.extra;
                let since = x.get("since").and_then(Value::as_u64);
                let since_ms = x
                    .get("since_ms")
                    .and_then(Value::as_u64)
                    .or(since.map(|s| s.saturating_mul(1000)));
                let uptime_s = since_ms
                    .filter(|_| s.state == sup::SvcState::Healthy)
                    .map(|at| now_ms.saturating_sub(at) / 1000);
                let (rss, cpu) = s
                    .pid
                    .filter(|_| local)
                    .map_or((None, None), metrics::process);
                let request_rate = match total {
                    Some(Ok(snapshot)) => metrics::requests(&snapshot)
                        .and_then(|t| rates.rate(&s.name, s.pid, t, now)),
                    Some(Err(Failure::Server(e)))
                        if matches!(
                            e.code,
                            ErrorCode::PermissionDenied | ErrorCode::Unauthenticated
                        ) =>
                    {
                        rates.refused(&s.name, now);
                        None
                    }
                    _ => None,
                };
                json!({
                    "name": s.name, "state": s.state, "pid": s.pid,
                    "since_ms": since_ms, "uptime_s": uptime_s,
                    "restarts": x.get("restarts").cloned().unwrap_or(json!(0)),
                    "depends_on": x.get("depends_on").cloned().unwrap_or(json!([])),
                    "capabilities": x.get("capabilities").cloned().unwrap_or(json!(0)),
                    "waiting": x.get("waiting").cloned().unwrap_or(Value::Null),
                    "last_exit": x.get("last_exit").cloned().unwrap_or(Value::Null),
                    "rss_bytes": rss, "cpu_seconds": cpu, "request_rate": request_rate,
                })
            })
            .collect();
    json(
        StatusCode::OK,
        &json!({"node_id": node_id, "services": services, "at_ms": now_ms}),
    )
}

async fn service(console: &Console, name: ServiceName) -> Response<Body> {
    let params = SvcNameParams { name };
    let status = match call::<sup::SvcStatus>(console, "supervisor", &params).await {
        Ok(s) => s,
        Err(f) => return failure(&f),
    };
    let caps = call::<sup::SvcCaps>(console, "supervisor", &params)
        .await
        .ok();
    json(StatusCode::OK, &json!({"status": status, "caps": caps}))
}

async fn control(console: &Console, name: ServiceName, action: &str) -> Response<Body> {
    let done = match action {
        "start" => call::<sup::SvcStart>(console, "supervisor", &SvcNameParams { name })
            .await
            .map(|r| json!(r)),
        "stop" => {
            let params = sup::SvcStopParams {
                name,
                drain_ms: sup::DEFAULT_DRAIN_MS,
            };
            call::<sup::SvcStop>(console, "supervisor", &params)
                .await
                .map(|r| json!(r))
        }
        _ => {
            let params = sup::SvcRestartParams {
                name,
                drain_ms: sup::DEFAULT_DRAIN_MS,
            };
            call::<sup::SvcRestart>(console, "supervisor", &params)
                .await
                .map(|r| json!(r))
        }
    };
    match done {
        Ok(v) => json(StatusCode::OK, &v),
        Err(f) => failure(&f),
    }
}

/// Every page of `identity.issued`, up to [`MAX_CAPS`] caps and [`MAX_CAPS_CALLS`]
/// calls (`truncated` past either).
async fn caps(console: &Console) -> Response<Body> {
    let mut client = match console.caller.client("identity").await {
        Ok(c) => c,
        Err(f) => return failure(&f),
    };
    let mut caps = Vec::new();
    let mut after = None;
    let mut calls = 0;
    let truncated = loop {
        if calls == MAX_CAPS_CALLS {
            break true;
        }
        calls += 1;
        let params = identity::IssuedParams {
            after: after.take(),
            limit: Some(identity::MAX_ISSUED_PAGE),
        };
        let page = match client.call::<identity::Issued>(&params).await {
            Ok(p) => p,
            Err(e) => return failure(&Failure::from(e)),
        };
        caps.extend(page.caps);
        if caps.len() > MAX_CAPS {
            caps.truncate(MAX_CAPS);
            break true;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break false,
        }
    };
    json(
        StatusCode::OK,
        &json!({"caps": caps, "truncated": truncated}),
    )
}

async fn revoke(console: &Console, cap_id: &str) -> Response<Body> {
    let is_id = cap_id.len() == 32
        && cap_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_id {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "a cap_id is 32 lowercase hex digits",
        );
    }
    let params = identity::RevokeParams {
        cap_id: cap_id.to_owned(),
    };
    match call::<identity::Revoke>(console, "identity", &params).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(f) => failure(&f),
    }
}

async fn cluster(console: &Console) -> Response<Body> {
    let identity = match call::<sys::Health>(console, "identity", &NoParams {}).await {
        Ok(h) => h,
        Err(f) => return failure(&f),
    };
    let Some(cluster) = identity.extra.get("cluster") else {
        return json(StatusCode::OK, &json!({"configured": false}));
    };
    let registry = call::<sys::Health>(console, "registry", &NoParams {})
        .await
        .ok()
        .and_then(|h| h.extra.get("cluster").cloned());
    let mut answer = json!({"configured": true, "identity": cluster, "registry": registry});
    if let (Value::Object(a), Value::Object(s)) = (&mut answer, registry_staleness(console).await) {
        a.extend(s);
    }
    if let Some(config) = &console.etcd {
        let read = tokio::time::timeout(
            std::time::Duration::from_secs_f64(console.caller.global.timeout.clamp(1.0, 10.0)),
            crate::cluster::read_nodes(config),
        );
        match read.await {
            Ok(Ok(nodes)) => answer["nodes"] = json!(nodes),
            Ok(Err(f)) => answer["nodes_error"] = json!(failure_text(&f)),
            Err(_) => answer["nodes_error"] = json!("etcd did not answer in time"),
        }
    }
    json(StatusCode::OK, &answer)
}

/// The registry's etcd contact from its `sys.metrics` (admin only: all `null` when
/// refused, and not asked again for a while).
async fn registry_staleness(console: &Console) -> Value {
    let now = std::time::Instant::now();
    let refused = console
        .rates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .refused_lately("registry", now);
    let snapshot = if refused {
        None
    } else {
        match call::<sys::Metrics>(console, "registry", &NoParams {}).await {
            Ok(m) => Some(m),
            // An answer (a refusal) is remembered; an unreachable registry is asked again.
            Err(Failure::Server(_)) => {
                console
                    .rates
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refused("registry", now);
                None
            }
            Err(_) => None,
        }
    };
    match snapshot {
        Some(m) => metrics::staleness(&m),
        None => json!({"contact_age_s": null, "lease_held": null, "etcd_connected": null}),
    }
}

/// A failure's message, without its exit code.
fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Server(body) => body.message.clone(),
        Failure::Usage(m) | Failure::Unreachable(m) | Failure::Denied(m) | Failure::Failed(m) => {
            m.clone()
        }
    }
}

/// The log stream: the last lines, then new ones as the supervisor has them.
async fn logs(console: &Arc<Console>, admitted: &Admitted, name: ServiceName) -> Response<Body> {
    let slot = match sse::slot(&admitted.streams) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut follower = LogFollower::new(name, LOG_BACKLOG, 0);
    // The first answer decides the status: an unknown service or a refusal is an error.
    let first = match poll_logs(&mut follower, console).await {
        Ok(lines) => lines,
        Err(f) => return failure(&f),
    };
    let console = Arc::clone(console);
    sse::stream(slot, move |events: Events| async move {
        let mut lines = first;
        loop {
            for l in &lines {
                let event = json!({"line": l.text, "stream": l.stream, "ts_ms": l.ts_ms});
                if !events.data(&event).await {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(LOG_POLL) => {}
                () = events.closed() => return,
            }
            lines = match poll_logs(&mut follower, &console).await {
                Ok(lines) => lines,
                Err(f) => {
                    events.error(&failure_body(&f)).await;
                    return;
                }
            };
        }
    })
}

/// One poll of a log stream: the lines not sent yet.
async fn poll_logs(
    follower: &mut LogFollower,
    console: &Console,
) -> Result<Vec<strata_proto::methods::supervisor::LogLine>, Failure> {
    follower
        .poll(|p| async move { call::<sup::SvcLogs>(console, "supervisor", &p).await })
        .await
        .map(|(_, lines)| lines)
}

/// The audit stream: the last matching lines, then new ones as they are appended.
async fn audit(console: &Console, admitted: &Admitted, query: &Query) -> Response<Body> {
    let path = match &console.audit_log {
        Ok(p) => p.clone(),
        Err(why) => return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", why),
    };
    let filter = Filter {
        service: query.non_empty("service"),
        event: query.non_empty("event"),
        cap_id: query.non_empty("cap_id"),
    };
    let slot = match sse::slot(&admitted.streams) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let shown = path.display().to_string();
    let mut tail = Tail::new(path, filter);
    let first = tokio::task::spawn_blocking(move || {
        let lines = tail.backlog();
        (tail, lines)
    })
    .await;
    let (mut tail, first) = match first {
        Ok((tail, Ok(lines))) => (tail, lines),
        Ok((_, Err(e))) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                &format!("you may not read {shown}"),
            )
        }
        Ok((_, Err(e))) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL",
                &format!("cannot read {shown}: {e}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL",
                "the audit reader failed",
            )
        }
    };
    sse::stream(slot, move |events: Events| async move {
        let mut lines = first;
        loop {
            for line in &lines {
                if !events.raw_data(line).await {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(AUDIT_POLL) => {}
                () = events.closed() => return,
            }
            let read = tokio::task::spawn_blocking(move || {
                let lines = tail.new_lines();
                (tail, lines)
            })
            .await;
            (tail, lines) = match read {
                Ok((tail, Ok(lines))) => (tail, lines),
                Ok((_, Err(e))) => {
                    let message = format!("cannot read {shown}: {e}");
                    events
                        .error(&json!({"error": {"code": "INTERNAL", "message": message}}))
                        .await;
                    return;
                }
                Err(_) => return,
            };
        }
    })
}
