//! The console's HTTP/1.1 listener and its one security gate. Every request passes
//! [`Gate::admit`] before anything routes it: the `Host` must be the listen address, an
//! `Origin` (when sent) this console's own, the one-time secret is exchanged for a
//! session cookie and every other request needs that cookie, every POST the session's
//! CSRF token, and every query value is bounded. Every answer, refusals included, carries
//! the same security headers ([`secure`]). Bounded: [`MAX_CONNECTIONS`] connections,
//! request heads within [`MAX_HEAD_BYTES`] / [`MAX_HEADERS`] and sent within
//! [`HEAD_TIMEOUT`], POST bodies within [`MAX_BODY`].

use super::sse::Body;
use super::Console;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most connections served at once (others are closed unanswered).
pub const MAX_CONNECTIONS: usize = 64;

/// Most loopback peer-uid lookups running at once, off the accept loop; while all are
/// busy, accepting waits.
const MAX_PEER_CHECKS: usize = 8;
/// Most bytes of request head hyper buffers (its minimum).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most request headers.
pub const MAX_HEADERS: usize = 32;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest POST body taken (the console's POSTs need none).
pub const MAX_BODY: usize = 1024;
/// Longest query parameter value, in bytes (before decoding).
pub const MAX_QUERY_VALUE: usize = 128;
/// Most sessions at once.
pub const MAX_SESSIONS: usize = 16;
/// Most event streams open at once per session.
pub const MAX_STREAMS_PER_SESSION: usize = 8;
/// The session cookie's name.
pub const COOKIE: &str = "strata_console";
/// Most `strata_console` cookie values tried per request.
pub const MAX_COOKIE_VALUES: usize = 8;

/// The Content-Security-Policy of every answer: the pages' own script and style only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A SHA-256 digest: how secrets and session ids are kept and compared.
type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether two digests are equal, every byte compared whatever differs: the time taken
/// tells nothing of where a guess goes wrong.
fn same(a: &Digest, b: &Digest) -> bool {
    let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(differ) == 0
}

/// 32 random bytes as 43 characters of unpadded base64url.
pub fn random_text() -> Result<String, String> {
    use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random number generator failed".to_owned())?;
    Base64UrlSafeNoPadding::encode_to_string(bytes).map_err(|e| e.to_string())
}

/// One browser session: its id's digest (the id itself is only in the cookie), its
/// CSRF token and its event-stream slots.
struct SessionEntry {
    id: Digest,
    csrf: String,
    streams: Arc<Semaphore>,
}

/// What a request admitted by the gate may use.
pub struct Admitted {
    /// The session's CSRF token (for `/api/session`).
    pub csrf: String,
    /// The session's event-stream slots.
    pub streams: Arc<Semaphore>,
}

/// The secret, the sessions and the checks every request passes. Never logs or shows
/// the secret or a session id (no `Debug`).
pub struct Gate {
    /// `127.0.0.1:PORT`: the only `Host` accepted.
    host: String,
    /// `http://127.0.0.1:PORT`: the only `Origin` accepted.
    origin: String,
    /// The one-time secret's digest, until it is exchanged.
    secret: Mutex<Option<Digest>>,
    sessions: Mutex<Vec<SessionEntry>>,
}

impl Gate {
    /// A gate for a console listening at `host` (the address text, `127.0.0.1:PORT`),
    /// admitting `secret` once.
    pub fn new(host: String, secret: &str) -> Gate {
        Gate {
            origin: format!("http://{host}"),
            host,
            secret: Mutex::new(Some(digest(secret.as_bytes()))),
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// The checks, in order; `Err` is the refusal to send. `Ok` is a request of a
    /// session that may be routed (a POST's body is still to be bounded).
    pub fn admit<B>(&self, req: &Request<B>) -> Result<Admitted, Response<Body>> {
        let headers = req.headers();
        let foreign_authority = req
            .uri()
            .authority()
            .is_some_and(|a| a.as_str() != self.host);
        if foreign_authority || single(headers, header::HOST) != Some(self.host.as_bytes()) {
            return Err(text(
                StatusCode::FORBIDDEN,
                "This Host is not allowed: open the console at the address it printed.\n",
            ));
        }
        if headers.contains_key(header::ORIGIN)
            && single(headers, header::ORIGIN) != Some(self.origin.as_bytes())
        {
            return Err(text(
                StatusCode::FORBIDDEN,
                "This Origin is not allowed: the console answers its own pages only.\n",
            ));
        }
        // A page elsewhere may still make the browser fetch the API (an `<img>`, a
        // link): such a request names its site, and only the console's own is served.
        if req.uri().path().starts_with("/api/")
            && headers.contains_key("sec-fetch-site")
            && single(headers, "sec-fetch-site") != Some(b"same-origin")
        {
            return Err(text(
                StatusCode::FORBIDDEN,
                "This request comes from another site: the console answers its own pages only.\n",
            ));
        }
        let query = match Query::parse(req.uri().query()) {
            Ok(q) => q,
            Err(why) => return Err(text(StatusCode::BAD_REQUEST, why)),
        };
        let session = self.session(headers);
        if req.uri().path() == "/" && query.get("secret").is_some() {
            return Err(self.exchange(req.method(), query.get("secret"), session.is_some()));
        }
        let Some(admitted) = session else {
            return Err(text(
                StatusCode::UNAUTHORIZED,
                "Not signed in: open the URL `strata-ctl console` printed (its secret works once).\n",
            ));
        };
        if req.method() == Method::POST {
            let given = single(headers, "x-csrf-token").unwrap_or_default();
            if !same(&digest(given), &digest(admitted.csrf.as_bytes())) {
                return Err(text(
                    StatusCode::FORBIDDEN,
                    "Missing or wrong X-CSRF-Token: reload the page.\n",
                ));
            }
        }
        Ok(admitted)
    }

    /// `GET /?secret=S`: with the unused secret, a new session and its cookie; with a
    /// session already, back to the page; anything else 401.
    fn exchange(&self, method: &Method, given: Option<&str>, signed_in: bool) -> Response<Body> {
        if method != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET the printed URL.\n");
        }
        let given = digest(given.unwrap_or_default().as_bytes());
        let mut secret = self.secret.lock().unwrap_or_else(|p| p.into_inner());
        let right = secret.as_ref().is_some_and(|s| same(s, &given));
        if !right {
            drop(secret);
            if signed_in {
                return see_other();
            }
            return text(
                StatusCode::UNAUTHORIZED,
                "Wrong or used secret: start `strata-ctl console` again for a new URL.\n",
            );
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many console sessions.\n",
            );
        }
        let (Ok(id), Ok(csrf)) = (random_text(), random_text()) else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No random numbers to make a session with.\n",
            );
        };
        // Used up: a second visit with the same URL is refused.
        *secret = None;
        sessions.push(SessionEntry {
            id: digest(id.as_bytes()),
            csrf,
            streams: Arc::new(Semaphore::new(MAX_STREAMS_PER_SESSION)),
        });
        let mut response = see_other();
        let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }

    /// The session the request's cookie names, if any.
    ///
    /// Every `strata_console` value is tried (up to [`MAX_COOKIE_VALUES`]): a cookie of
    /// the same name planted for a narrower path comes first and must not hide the
    /// session's.
    fn session(&self, headers: &HeaderMap) -> Option<Admitted> {
        let given: Vec<Digest> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .take(MAX_COOKIE_VALUES)
            .map(|v| digest(v.as_bytes()))
            .collect();
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // Every session compared with every value, in constant time each.
        let mut found = None;
        for s in sessions.iter() {
            for g in &given {
                if same(&s.id, g) {
                    found = Some(Admitted {
                        csrf: s.csrf.clone(),
                        streams: Arc::clone(&s.streams),
                    });
                }
            }
        }
        found
    }
}

/// The one value of header `name`; `None` when absent or repeated.
fn single<K: header::AsHeaderName>(headers: &HeaderMap, name: K) -> Option<&[u8]> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v.as_bytes()),
        _ => None,
    }
}

/// A request's query parameters, decoded, each value at most [`MAX_QUERY_VALUE`] bytes.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parse `a=1&b=2`; a value too long, or not UTF-8 once decoded, is refused.
    pub fn parse(query: Option<&str>) -> Result<Query, &'static str> {
        let mut pairs = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if value.len() > MAX_QUERY_VALUE || key.len() > MAX_QUERY_VALUE {
                return Err("A query parameter is too long (at most 128 bytes).\n");
            }
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                percent_encoding::percent_decode_str(&s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
            };
            match (decode(key), decode(value)) {
                (Ok(k), Ok(v)) => pairs.push((k, v)),
                _ => return Err("A query parameter is not UTF-8.\n"),
            }
        }
        if pairs.len() > MAX_HEADERS {
            return Err("Too many query parameters.\n");
        }
        Ok(Query(pairs))
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, `None` when absent or empty.
    pub fn non_empty(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_owned)
    }
}

/// The security headers every answer carries.
pub fn secure(mut response: Response<Body>) -> Response<Body> {
    let h = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", CSP),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

/// An answer of `content_type`.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// 303 to `/` (the page, without the secret in the address bar).
fn see_other() -> Response<Body> {
    let mut response = text(StatusCode::SEE_OTHER, "See /\n");
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    response
}

/// Accept connections on `listener` until the process ends, each request answered by
/// [`answer`].
///
/// With `only_uid` (a loopback listener), a connection whose other end is not a socket
/// of that uid is closed at once, before it takes one of the [`MAX_CONNECTIONS`] slots
/// (the lookup runs on the blocking pool, at most [`MAX_PEER_CHECKS`] at once)
/// ([`super::peer`]): another local user can neither talk to the console nor hold its
/// slots.
pub async fn serve(listener: TcpListener, console: Arc<Console>, only_uid: Option<u32>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let checks = Arc::new(Semaphore::new(MAX_PEER_CHECKS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors, say: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The uid lookup runs off this loop (the runtime goes on serving), a few at
        // once; while all are busy the next connection waits its turn in accept order.
        // Shedding it instead would let another uid's flood close the owner's connection.
        let check = match only_uid {
            Some(uid) => match Arc::clone(&checks).acquire_owned().await {
                Ok(permit) => Some((uid, permit)),
                Err(_) => continue,
            },
            None => None,
        };
        let slots = Arc::clone(&slots);
        let console = Arc::clone(&console);
        tokio::spawn(async move {
            if let Some((uid, permit)) = check {
                let Ok(local) = stream.local_addr() else {
                    return;
                };
                let own = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    super::peer::owned_by(peer, local, uid)
                })
                .await
                .unwrap_or(false);
                if !own {
                    return;
                }
            }
            let Ok(_slot) = slots.try_acquire_owned() else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let console = Arc::clone(&console);
                async move { Ok::<_, std::convert::Infallible>(answer(&console, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer to one request: the gate, the body bound, then the route.
pub async fn answer(console: &Arc<Console>, req: Request<Incoming>) -> Response<Body> {
    let admitted = match console.gate.admit(&req) {
        Ok(a) => a,
        Err(refusal) => return secure(refusal),
    };
    let (parts, body) = req.into_parts();
    if parts.method == Method::POST {
        if let Err(refusal) = bounded_body(body).await {
            return secure(refusal);
        }
    }
    let query = Query::parse(parts.uri.query()).unwrap_or(Query(Vec::new()));
    secure(super::route(console, &admitted, &parts.method, parts.uri.path(), &query).await)
}

/// Read and drop a POST's body, refusing one beyond [`MAX_BODY`] or slower than
/// [`HEAD_TIMEOUT`].
async fn bounded_body(body: Incoming) -> Result<(), Response<Body>> {
    use hyper::body::Body as _;
    let too_big = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The console's POSTs take no body.\n",
        )
    };
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(too_big());
    }
    let read = async {
        let mut body = body;
        let mut total = 0usize;
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(frame) = frame else {
                return Err(text(StatusCode::BAD_REQUEST, "The body was cut short.\n"));
            };
            if let Some(data) = frame.data_ref() {
                total += data.len();
                if total > MAX_BODY {
                    return Err(too_big());
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "The body was too slow.\n",
        )),
    }
}

#[cfg(test)]
mod tests;
