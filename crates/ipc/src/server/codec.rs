//! Framing: the length-delimited frame codec, with large frames counted against the
//! server's buffered-bytes budget.

use super::UNBUDGETED_FRAME;
use crate::slots::{ByteBudget, PeerKey, Refusal, Reservation};
use bytes::{Bytes, BytesMut};
use std::io;
use std::sync::Arc;
use strata_frame::frame_codec;
use strata_proto::MAX_FRAME;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// A frame arriving past the byte budget (see [`BudgetedCodec`]).
#[derive(Debug)]
struct OverBudget(Refusal);

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "frame over the buffered-bytes budget: {:?}", self.0)
    }
}

impl std::error::Error for OverBudget {}

/// The frame codec, with each large frame's declared length reserved from the server's
/// byte budget when its header arrives. The reservation lasts until [`Self::done`], which
/// the connection calls once the frame's request is answered, so that the frame's memory
/// is counted for as long as the server holds it.
pub(super) struct BudgetedCodec {
    inner: LengthDelimitedCodec,
    budget: Arc<ByteBudget>,
    key: PeerKey,
    /// The header of the frame now arriving has been seen.
    in_frame: bool,
    reserved: Option<Reservation>,
}

impl BudgetedCodec {
    /// The frame codec, counting against `budget` as `key`.
    pub(super) fn new(budget: Arc<ByteBudget>, key: PeerKey) -> BudgetedCodec {
        BudgetedCodec {
            inner: frame_codec(),
            budget,
            key,
            in_frame: false,
            reserved: None,
        }
    }

    /// The last frame's request is answered: give its bytes back.
    pub(super) fn done(&mut self) {
        self.reserved = None;
    }
}

impl Decoder for BudgetedCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if !self.in_frame && src.len() >= 4 {
            let declared = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            // Larger than a frame: the inner codec refuses it from the header alone.
            if declared > UNBUDGETED_FRAME && declared <= MAX_FRAME {
                self.reserved = None;
                match self.budget.reserve(&self.key, declared) {
                    Ok(r) => self.reserved = Some(r),
                    Err(refusal) => return Err(io::Error::other(OverBudget(refusal))),
                }
            }
            self.in_frame = true;
        }
        let frame = self.inner.decode(src)?;
        if frame.is_some() {
            self.in_frame = false;
        }
        Ok(frame)
    }
}

impl Encoder<Bytes> for BudgetedCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        self.inner.encode(item, dst)
    }
}

/// The refusal, if `err` is a frame refused for the byte budget.
pub(super) fn over_budget(err: &io::Error) -> Option<Refusal> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<OverBudget>())
        .map(|o| o.0)
}
