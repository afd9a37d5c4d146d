//! Answer bodies: a whole one, or a server-sent event stream fed by a task. A stream
//! holds one of its session's slots ([`super::http::MAX_STREAMS_PER_SESSION`]) while it
//! lives, and its task ends when the browser goes away (the body, and with it the
//! channel's receiver, is dropped).

use bytes::Bytes;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How often an idle stream sends a comment, so a browser that went away is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Events buffered for a slow browser before its task waits.
const BUFFERED: usize = 64;

/// An answer's body.
pub enum Body {
    /// All of it at once (`None` once sent).
    Full(Option<Bytes>),
    /// Event-stream chunks as the task sends them.
    Events(mpsc::Receiver<Bytes>),
}

impl Body {
    /// A whole body.
    pub fn full(bytes: Bytes) -> Body {
        Body::Full(Some(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Events(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(b) => {
                hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Events(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Where a stream's task sends its events.
pub struct Events {
    tx: mpsc::Sender<Bytes>,
}

impl Events {
    /// Send one `data:` event holding `value` as JSON; `false` once the browser is gone.
    pub async fn data<T: Serialize>(&self, value: &T) -> bool {
        match serde_json::to_string(value) {
            Ok(json) => self.raw_data(&json).await,
            Err(_) => true,
        }
    }

    /// Send one `data:` event holding `json`, text of one line (a JSON object);
    /// `false` once the browser is gone.
    pub async fn raw_data(&self, json: &str) -> bool {
        self.send(format!("data: {json}\n\n")).await
    }

    /// Send an `error` event (`{"error": {...}}`, as the JSON API's errors).
    pub async fn error(&self, body: &serde_json::Value) -> bool {
        self.send(format!("event: error\ndata: {body}\n\n")).await
    }

    /// Send a comment (nothing the page sees) to check the browser is still there.
    pub async fn keepalive(&self) -> bool {
        self.send(": keepalive\n\n".to_owned()).await
    }

    /// Resolves when the browser has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    async fn send(&self, chunk: String) -> bool {
        self.tx.send(Bytes::from(chunk)).await.is_ok()
    }
}

/// One of a session's event-stream slots, or the 429 to answer when none is free.
pub fn slot(slots: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Response<Body>> {
    Arc::clone(slots).try_acquire_owned().map_err(|_| {
        super::api::error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "too many event streams open in this session (at most 8): close a tab",
        )
    })
}

/// An event-stream answer whose events `produce` sends, run as a task holding `slot`.
/// `produce` should end when a send says the browser is gone; the task also ends when a
/// keepalive finds it gone.
pub fn stream<F, Fut>(slot: OwnedSemaphorePermit, produce: F) -> Response<Body>
where
    F: FnOnce(Events) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFERED);
    let keepalive = Events { tx: tx.clone() };
    let task = produce(Events { tx });
    tokio::spawn(async move {
        let _slot = slot;
        let beat = async {
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                if !keepalive.keepalive().await {
                    return;
                }
            }
        };
        tokio::select! {
            () = task => {}
            () = beat => {}
        }
    });
    let mut response = Response::new(Body::Events(rx));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}
