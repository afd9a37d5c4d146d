//! Strata's frame codec, kept out of `strata-proto` so the wire contract needs no runtime
//! crate: a 4-byte big-endian unsigned length, then that many bytes of UTF-8
//! JSON, at most [`MAX_FRAME`] bytes. We use tokio-util's length-delimited codec rather
//! than our own so that partial reads, oversize lengths and buffer management are handled
//! by code with years of use behind it. A declared length above [`MAX_FRAME`] is a
//! protocol error that the decoder reports from the header alone, without allocating.

use tokio_util::codec::{length_delimited::LengthDelimitedCodecError, LengthDelimitedCodec};

pub use strata_proto::MAX_FRAME;

/// A codec for Strata frames, in both directions.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Whether an I/O error from the codec means "declared length above [`MAX_FRAME`]".
pub fn is_frame_too_large(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

    fn encode(payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        frame_codec()
            .encode(Bytes::copy_from_slice(payload), &mut buf)
            .unwrap();
        buf
    }

    #[test]
    fn header_is_four_byte_big_endian_length() {
        let buf = encode(b"{}");
        assert_eq!(&buf[..], &[0, 0, 0, 2, b'{', b'}']);
    }

    #[test]
    fn exactly_max_frame_round_trips() {
        let payload = vec![b'x'; MAX_FRAME];
        let mut buf = encode(&payload);
        let frame = frame_codec().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.len(), MAX_FRAME);
        assert!(buf.is_empty());
    }

    #[test]
    fn one_byte_over_max_is_refused_from_the_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u32((MAX_FRAME + 1) as u32);
        let err = frame_codec().decode(&mut buf).unwrap_err();
        assert!(is_frame_too_large(&err), "{err}");
    }

    #[test]
    fn huge_declared_length_does_not_allocate() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        let cap_before = buf.capacity();
        let err = frame_codec().decode(&mut buf).unwrap_err();
        assert!(is_frame_too_large(&err));
        assert!(buf.capacity() <= cap_before.max(64));
    }

    #[test]
    fn encoder_refuses_an_oversize_payload() {
        let mut buf = BytesMut::new();
        let err = frame_codec()
            .encode(Bytes::from(vec![0u8; MAX_FRAME + 1]), &mut buf)
            .unwrap_err();
        assert!(is_frame_too_large(&err));
    }

    fn payload_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..4096),
            1 => (0usize..=MAX_FRAME).prop_map(|n| vec![0xA5; n]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_payload_up_to_max_round_trips(payload in payload_strategy()) {
            let mut buf = encode(&payload);
            let frame = frame_codec().decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(&frame[..], &payload[..]);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn frames_split_at_any_point_reassemble(payload in proptest::collection::vec(any::<u8>(), 0..2048), cut in any::<prop::sample::Index>()) {
            let whole = encode(&payload);
            let at = cut.index(whole.len() + 1);
            let mut codec = frame_codec();
            let mut buf = BytesMut::from(&whole[..at]);
            let first = codec.decode(&mut buf).unwrap();
            if at < whole.len() {
                prop_assert!(first.is_none());
                buf.extend_from_slice(&whole[at..]);
                let frame = codec.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&frame[..], &payload[..]);
            } else {
                prop_assert_eq!(&first.unwrap()[..], &payload[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_give_frames_or_a_clean_error(bytes in proptest::collection::vec(any::<u8>(), 0..8192)) {
            let mut codec = frame_codec();
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => prop_assert!(frame.len() <= MAX_FRAME),
                    Ok(None) => break,
                    Err(e) => { prop_assert!(is_frame_too_large(&e)); break; }
                }
            }
            // End of stream with leftovers is a clean error too, never a panic.
            let _ = codec.decode_eof(&mut buf);
        }
    }
}
