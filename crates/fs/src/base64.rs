//! Standard base64 with padding (RFC 4648 §4), the encoding of `data_b64`.
//!
//! fs encodes every byte it serves, so this sits on the hot path of `fs.read`. The SIMD
//! encoder (`base64-simd`, AVX2/SSE where the CPU has them) is about five times faster
//! than a scalar one on 4 KiB; the constant-time encoder in `ct-codecs` is slower still,
//! and its guarantee protects secrets from timing observers, which file contents sent to
//! the caller who asked for them are not.

/// Length of `n` bytes encoded, padding included.
pub(crate) fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// `bytes` in standard base64 with `=` padding.
pub(crate) fn encode(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// [`encode`], appended to `out` (no buffer of its own).
pub(crate) fn encode_append(bytes: &[u8], out: &mut String) {
    base64_simd::STANDARD.encode_append(bytes, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_codecs::{Base64, Encoder};

    #[test]
    fn matches_a_reference_encoder_for_every_length_and_byte() {
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..bytes.len() {
            let want = Base64::encode_to_string(&bytes[..len]).unwrap();
            assert_eq!(encode(&bytes[..len]), want, "length {len}");
            assert_eq!(encoded_len(len), want.len());
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        let mut out = String::from("x");
        encode_append(b"foobar", &mut out);
        assert_eq!(out, "xZm9vYmFy");
    }
}
