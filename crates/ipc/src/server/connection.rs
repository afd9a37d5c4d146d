//! One connection's request loop: read a frame, dispatch it, write the answer, in order,
//! under the connection's deadlines.

use super::codec::{over_budget, BudgetedCodec};
use super::deadlines::{Clock, Phase, Watch};
use super::UNBUDGETED_FRAME;
use crate::router::{encode, Peer, Router};
use crate::slots::{ByteBudget, PeerKey, Refusal};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use strata_frame::is_frame_too_large;
use strata_proto::{ErrorBody, ErrorCode, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

/// What the next read gave.
enum Next {
    Frame(bytes::BytesMut),
    /// The client closed, broke the framing, timed out, or we are stopping.
    Close,
    TooLarge,
    OverBudget(Refusal),
}

/// Serve requests on one connection, in order, until it closes, breaks the framing, misses
/// a deadline, or the server stops. `io` reports the arrival of bytes to `watch`; frames
/// are counted against `budget` as `key`.
pub(super) async fn serve_connection<S>(
    io: S,
    origin: &Peer,
    router: &Router,
    watch: &Watch,
    clock: Clock,
    (budget, key): (Arc<ByteBudget>, PeerKey),
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(io, BudgetedCodec::new(budget, key));
    loop {
        let next = tokio::select! {
            biased;
            _ = watch.kill.cancelled() => Next::Close,
            next = framed.next() => match next {
                Some(Ok(frame)) => Next::Frame(frame),
                Some(Err(e)) if is_frame_too_large(&e) => Next::TooLarge,
                Some(Err(e)) if over_budget(&e).is_some() => {
                    Next::OverBudget(over_budget(&e).expect("checked by the guard"))
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "read failed; closing");
                    Next::Close
                }
                None => Next::Close,
            },
        };
        let reply = match next {
            Next::Frame(frame) => {
                watch.enter(Phase::Handling, clock.now_ms());
                router.dispatch_from(origin, &frame).await
            }
            Next::Close => return,
            Next::OverBudget(refusal) => {
                tracing::debug!(?refusal, "frame refused: over the buffered-bytes budget");
                watch.enter(Phase::Writing, clock.now_ms());
                let reply = encode(&Response::<()>::failure("", refusal.error()));
                tokio::select! {
                    biased;
                    _ = watch.kill.cancelled() => {}
                    _ = framed.send(reply) => {}
                }
                return;
            }
            Next::TooLarge => {
                let error = ErrorBody::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "frame too large: the limit is {} bytes",
                        strata_proto::MAX_FRAME
                    ),
                );
                watch.enter(Phase::Writing, clock.now_ms());
                let reply = encode(&Response::<()>::failure("", error));
                tokio::select! {
                    biased;
                    _ = watch.kill.cancelled() => {}
                    _ = framed.send(reply) => {}
                }
                return;
            }
        };
        watch.enter(Phase::Writing, clock.now_ms());
        let sent = tokio::select! {
            biased;
            _ = watch.kill.cancelled() => {
                tracing::debug!("client did not read its response in time; closing");
                return;
            }
            sent = framed.send(reply) => sent,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "write failed; closing");
            return;
        }
        // The request is answered and its frame dropped: give back its budget, and the
        // read buffer's memory too when it grew for a large frame (an idle connection
        // would keep it for the whole idle timeout otherwise).
        framed.codec_mut().done();
        if framed.read_buffer().is_empty() && framed.read_buffer().capacity() > UNBUDGETED_FRAME {
            *framed.read_buffer_mut() = BytesMut::new();
        }
        let phase = if framed.read_buffer().is_empty() {
            Phase::Waiting
        } else {
            Phase::Partial
        };
        watch.enter(phase, clock.now_ms());
        if watch.closing.load(Ordering::SeqCst) {
            return;
        }
    }
}
