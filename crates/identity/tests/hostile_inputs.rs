//! Identity's other inputs, tried as an attacker would: huge tokens to introspect (nothing
//! of them comes back unbounded) and key rotation without end (the key list, which every
//! feed answer may carry, stays bounded).

mod common;

use common::start_identity;
use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use strata_testkit::{call, read_frame, write_frame, Sandbox, DEADLINE};

fn b64(bytes: &[u8]) -> String {
    use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

/// Sends `req` and returns the answer and its size on the wire.
fn raw(sb: &Sandbox, req: &Value) -> (Value, usize) {
    let mut stream = UnixStream::connect(sb.socket("identity")).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write_frame(&mut stream, &serde_json::to_vec(req).unwrap()).unwrap();
    let reply = read_frame(&mut stream).unwrap();
    (serde_json::from_slice(&reply).unwrap(), reply.len())
}

#[test]
fn introspect_echoes_nothing_unbounded_from_a_token() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let payload = b64(&[0u8; 80]);
    // A footer naming a "kid" as large as a frame allows, and one just inside the token
    // length limit: neither comes back.
    for kid_len in [700 * 1024, 5 * 1024] {
        let footer = b64(json!({ "kid": "k".repeat(kid_len) }).to_string().as_bytes());
        let token = format!("v2.public.{payload}.{footer}");
        let req = json!({"v": 1, "req_id": "i", "method": "identity.introspect",
                         "params": {"token": token}});
        let (r, len) = raw(&sb, &req);
        assert_eq!(
            r["ok"],
            true,
            "{}",
            &r.to_string()[..300.min(r.to_string().len())]
        );
        assert_eq!(r["result"]["valid"], false);
        assert!(r["result"]["kid"].is_null(), "kid echoed ({kid_len} bytes)");
        assert!(
            len < 2048,
            "a {len}-byte answer to a {}-byte token",
            token.len()
        );
    }
}

#[test]
fn rotation_is_bounded_so_the_key_list_stays_small() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    const MAX_RETIRED: usize = 256;
    let sock = sb.socket("identity");
    for i in 0..MAX_RETIRED {
        let r = call(&sock, "identity.rotate", json!({}), None).unwrap();
        assert_eq!(r["ok"], true, "rotation {i}: {r}");
    }
    let r = call(&sock, "identity.rotate", json!({}), None).unwrap();
    assert_eq!(r["ok"], false, "rotation past the bound: {r}");
    assert_eq!(r["error"]["code"], 7, "{r}");
    let keys = call(&sock, "identity.keys", json!({}), None).unwrap();
    assert_eq!(
        keys["result"]["keys"].as_array().unwrap().len(),
        MAX_RETIRED + 1
    );
    // The feed still answers with every key and a page.
    let (r, len) = raw(
        &sb,
        &json!({"v": 1, "req_id": "f", "method": "identity.revocations", "params": {}}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert!(len < 256 * 1024, "{len}");
}
