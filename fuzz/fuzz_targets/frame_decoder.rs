//! The frame decoder (`strata_frame::frame_codec`) fed arbitrary bytes in arbitrary
//! pieces, as a socket would deliver them.
//!
//! Must hold: every frame it yields is at most `MAX_FRAME` bytes; the only error is "frame
//! too large" and it comes from the header alone (the buffer never grows to the declared
//! length); each yielded frame re-encodes to the exact bytes it was cut from; end of
//! stream with leftovers is a clean error, never a panic.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use strata_frame::{frame_codec, is_frame_too_large, MAX_FRAME};
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    // Deliver the stream in pieces of 1..=256 bytes.
    let piece = usize::from(piece) + 1;
    let mut codec = frame_codec();
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME, "frame of {} bytes", frame.len());
                    let start = consumed;
                    consumed += 4 + frame.len();
                    let mut again = BytesMut::new();
                    frame_codec()
                        .encode(Bytes::copy_from_slice(&frame), &mut again)
                        .expect("a decoded frame re-encodes");
                    assert_eq!(&again[..], &stream[start..consumed], "re-encoding differs");
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(is_frame_too_large(&e), "unexpected decoder error: {e}");
                    let header = &stream[consumed..consumed + 4];
                    let declared = u32::from_be_bytes(header.try_into().unwrap()) as usize;
                    assert!(declared > MAX_FRAME, "refused a {declared}-byte frame");
                    // Never allocated for the declared length.
                    assert!(buf.capacity() <= stream.len().max(8 * 1024) + 4096);
                    return;
                }
            }
        }
    }
    // What is left is an unfinished frame (its header already taken in by the decoder once
    // all four bytes arrived), or nothing.
    let left = stream.len() - consumed;
    assert!(
        buf.len() == left || (left >= 4 && buf.len() == left - 4),
        "{} bytes buffered for {left} unconsumed",
        buf.len()
    );
    let _ = codec.decode_eof(&mut buf);
});
