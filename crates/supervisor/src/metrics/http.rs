//! `GET /metrics` over HTTP/1.1 (hyper), and nothing else: any other path is 404, any
//! other method on it 405; with a [`Token`], a request without `Authorization: Bearer
//! <token>` is 401. Bounded: at most [`MAX_CONNECTIONS`] connections at once (others are
//! closed unanswered), request headers within [`MAX_HEADER_BYTES`] and [`MAX_HEADERS`]
//! and read within [`HEADER_TIMEOUT`], each connection closed after one answer and cut
//! at [`CONNECTION_TIMEOUT`]. The connection limit is not the gathering limit: however
//! many requests come at once, one scrape is gathered for them ([`Scraper`]), so idle or
//! slow clients hold a connection slot each and nothing more.

use super::Scraper;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Most bytes of request head hyper buffers (its minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most request headers.
pub const MAX_HEADERS: usize = 32;
/// How long a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a connection lives, scrape included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The content type of OpenMetrics 1.0, served when the `Accept` header asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// The bearer token a request must carry, kept as its SHA-256 digest only. Never
/// printed (its `Debug` hides it).
pub struct Token([u8; TOKEN_DIGEST_LEN]);

/// Bytes of a SHA-256 digest.
const TOKEN_DIGEST_LEN: usize = 32;

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The SHA-256 digest of `bytes`.
fn digest(bytes: &[u8]) -> [u8; TOKEN_DIGEST_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; TOKEN_DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

impl Token {
    /// A token: 1 to [`MAX_TOKEN_LEN`] bytes of printable ASCII without spaces (what an
    /// HTTP header carries whole).
    pub fn new(token: &str) -> Result<Token, String> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(format!("the token must be 1 to {MAX_TOKEN_LEN} bytes"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".to_owned());
        }
        Ok(Token(digest(token.as_bytes())))
    }

    /// Whether `header` (an `Authorization` value) is `Bearer <this token>`. The digests
    /// of the two are compared, every byte whatever differs, so the time taken depends
    /// on the length of what the caller sent only: neither the token's length nor where
    /// a guess goes wrong shows.
    pub fn admits(&self, header: &[u8]) -> bool {
        let Some((scheme, given)) = header.split_first_chunk::<7>() else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"Bearer ") {
            return false;
        }
        let given = digest(given.trim_ascii());
        let differ = given
            .iter()
            .zip(&self.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(differ) == 0
    }
}

/// Accept connections on `listener` for ever, each served by `scraper`; with `token`,
/// only requests bearing it.
pub async fn serve(listener: TcpListener, scraper: Arc<Scraper>, token: Option<Arc<Token>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("metrics: connection refused at the limit");
            continue;
        };
        let scraper = Arc::clone(&scraper);
        let token = token.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let scraper = Arc::clone(&scraper);
                let token = token.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        answer(&scraper, token.as_deref(), &req).await,
                    )
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .max_headers(MAX_HEADERS)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics: connection failed"),
                Err(_) => tracing::debug!("metrics: connection cut at its time limit"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// The answer to one request (with `token`, 401 to one that does not bear it).
pub async fn answer<B>(
    scraper: &Scraper,
    token: Option<&Token>,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    if let Some(token) = token {
        let mut given = req.headers().get_all(AUTHORIZATION).iter();
        let admitted = match (given.next(), given.next()) {
            (Some(value), None) => token.admits(value.as_bytes()),
            _ => false,
        };
        if !admitted {
            let mut response = plain(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <the metrics token>\n",
            );
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = scraper.exposition(openmetrics).await;
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn a_token_admits_only_itself_as_a_bearer() {
        let token = Token::new("s3cret-Token").unwrap();
        assert!(token.admits(b"Bearer s3cret-Token"));
        assert!(token.admits(b"bearer s3cret-Token"));
        for wrong in [
            &b"Bearer s3cret-Tokem"[..],
            b"Bearer s3cret-Toke",
            b"Bearer s3cret-Token2",
            b"Basic s3cret-Token",
            b"s3cret-Token",
            b"Bearer ",
            b"",
        ] {
            assert!(!token.admits(wrong), "{:?}", String::from_utf8_lossy(wrong));
        }
        assert!(Token::new("").is_err());
        assert!(Token::new("has space").is_err());
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn a_token_is_kept_as_a_fixed_size_digest_whatever_its_length() {
        // What a request is compared with is 32 bytes for every token, so the compare
        // cannot take longer or shorter for a longer or shorter token.
        assert_eq!(std::mem::size_of::<Token>(), 32);
        for len in [1, 7, 64, super::MAX_TOKEN_LEN] {
            let secret = "k".repeat(len);
            let token = Token::new(&secret).unwrap();
            assert!(token.admits(format!("Bearer {secret}").as_bytes()));
            assert!(!token.admits(format!("Bearer {secret}k").as_bytes()));
            assert!(!token.admits(format!("Bearer {}", &secret[1..]).as_bytes()));
        }
    }
}
