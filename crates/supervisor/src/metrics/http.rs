//! `GET /metrics` over HTTP/1.1 (hyper), and nothing else: any other path is 404, any
//! other method on it 405. Bounded: at most [`MAX_CONNECTIONS`] connections at once
//! (others are closed unanswered), request headers within [`MAX_HEADER_BYTES`] and
//! [`MAX_HEADERS`] and read within [`HEADER_TIMEOUT`], each connection closed after one
//! answer and cut at [`CONNECTION_TIMEOUT`].

use super::Scraper;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Most bytes of request head hyper buffers (its minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most request headers.
pub const MAX_HEADERS: usize = 32;
/// How long a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection lives, scrape included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The content type of OpenMetrics 1.0, served when the `Accept` header asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Accept connections on `listener` for ever, each served by `scraper`.
pub async fn serve(listener: TcpListener, scraper: Arc<Scraper>) {
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
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let scraper = Arc::clone(&scraper);
                async move { Ok::<_, std::convert::Infallible>(answer(&scraper, &req).await) }
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

/// The answer to one request.
pub async fn answer<B>(scraper: &Scraper, req: &Request<B>) -> Response<Full<Bytes>> {
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
    let mut response = Response::new(Full::new(Bytes::from(body)));
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
