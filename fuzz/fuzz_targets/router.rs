//! The router's answer path (`strata_ipc::Router::dispatch` and `strata_ipc::router::encode`,
//! with its oversized-response fallback) on arbitrary frames and on responses of arbitrary
//! size and req_id.
//!
//! The first byte picks the mode: even, the rest is a frame dispatched to a router whose
//! methods answer with results and errors of a size the input chooses; odd, the rest
//! describes a response (req_id, result or error size) handed straight to `encode`.
//!
//! Must hold: no panic; every answer fits in one frame and is a protocol-valid response
//! envelope; its req_id is at most 256 bytes and is the request's own (or empty); an
//! error's message is at most 1024 bytes; a response too large for a frame becomes one
//! INTERNAL error of at most `MAX_FALLBACK_LEN` bytes, which echoes the req_id only when
//! that is within the bound; and nothing in the fallback comes from the oversized body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use strata_ipc::router::{encode, MAX_FALLBACK_LEN};
use strata_ipc::{Call, PeerCred, Router};
use strata_proto::methods::Method;
use strata_proto::{
    parse_request, ErrorBody, ErrorCode, Response, MAX_ERROR_MESSAGE_LEN, MAX_FRAME, MAX_REQ_ID_LEN,
};

/// The handlers never wait, so polling once completes them.
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Size {
    #[serde(default)]
    n: u32,
    #[serde(default)]
    fill: String,
}

/// `n` characters (at most 3 Mi) of `fill`, repeated.
fn blob(size: &Size) -> String {
    let n = (size.n as usize).min(3 << 20);
    let fill = if size.fill.is_empty() {
        "z"
    } else {
        size.fill.as_str()
    };
    fill.chars().cycle().take(n).collect()
}

/// A fuzz method: its wire name, params and result.
macro_rules! fuzz_method {
    ($name:ident, $wire:literal, $params:ty) => {
        struct $name;
        impl Method for $name {
            const NAME: &'static str = $wire;
            type Params = $params;
            type Result = Value;
        }
    };
}

fuzz_method!(Echo, "f.echo", Value);
fuzz_method!(Big, "f.big", Size);
fuzz_method!(Fail, "f.fail", Size);
fuzz_method!(Details, "f.details", Size);

fn router() -> Router {
    Router::new("fuzz", "0")
        .method::<Echo, _, _, _>(|_c: Call, p: Value| async move { Ok::<_, ErrorBody>(p) })
        .method::<Big, _, _, _>(|_c: Call, p: Size| async move {
            Ok::<_, ErrorBody>(json!({ "blob": blob(&p) }))
        })
        .method::<Fail, _, _, _>(|_c: Call, p: Size| async move {
            Err::<Value, _>(ErrorBody::new(ErrorCode::NotFound, blob(&p)))
        })
        .method::<Details, _, _, _>(|_c: Call, p: Size| async move {
            Err::<Value, _>(
                ErrorBody::new(ErrorCode::Conflict, "x").with_details(json!({ "echo": blob(&p) })),
            )
        })
}

/// Checks every answer; returns it decoded.
fn check_answer(bytes: &[u8], expected_req_id: &str) -> Value {
    assert!(bytes.len() <= MAX_FRAME, "answer of {} bytes", bytes.len());
    let v: Value = serde_json::from_slice(bytes).expect("an answer is JSON");
    assert_eq!(v["v"], 1);
    let req_id = v["req_id"].as_str().expect("req_id is a string");
    assert!(
        req_id.len() <= MAX_REQ_ID_LEN,
        "req_id of {} bytes",
        req_id.len()
    );
    assert_eq!(req_id, expected_req_id);
    match v["ok"] {
        Value::Bool(true) => assert!(v.get("result").is_some() && v.get("error").is_none()),
        Value::Bool(false) => {
            assert!(v.get("result").is_none());
            let code = v["error"]["code"].as_u64().expect("numeric code");
            assert!((1..=8).contains(&code));
            assert!(v["error"]["details"].is_object());
            let message = v["error"]["message"].as_str().expect("a message");
            assert!(
                message.len() <= MAX_ERROR_MESSAGE_LEN,
                "message of {}",
                message.len()
            );
            if message == "response too large for one frame" {
                assert_eq!(code, 5);
                assert!(
                    bytes.len() <= MAX_FALLBACK_LEN,
                    "fallback of {} bytes",
                    bytes.len()
                );
            }
        }
        _ => panic!("ok is not a boolean"),
    }
    v
}

fn dispatch(frame: &[u8]) {
    let answer = run(router().dispatch(PeerCred::current_process(), frame));
    let expected = match parse_request(frame) {
        Ok(req) => req.req_id,
        Err(e) => e.req_id,
    };
    check_answer(&answer, &expected);
}

/// `encode` on `response`: sent as it is when it fits, else the bounded fallback.
fn check_encode<R: serde::Serialize>(response: &Response<R>) {
    let natural = serde_json::to_vec(response).expect("serialisable");
    let bytes = encode(response);
    if natural.len() <= MAX_FRAME {
        assert_eq!(
            &bytes[..],
            &natural[..],
            "a response that fits is sent as it is"
        );
        return;
    }
    assert!(
        bytes.len() <= MAX_FALLBACK_LEN,
        "fallback of {} bytes",
        bytes.len()
    );
    let v: Value = serde_json::from_slice(&bytes).expect("the fallback is JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], 5);
    let echoed = if response.req_id.len() <= MAX_REQ_ID_LEN {
        response.req_id.as_str()
    } else {
        ""
    };
    assert_eq!(v["req_id"], echoed);
}

/// A response built from the input: the req_id is the input's text, repeated up to a
/// length the input picks (up to about 1.5 MiB), with a result, an error message or
/// error details of a chosen size.
fn encode_direct(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let id_len = u16::from_le_bytes([data[0], data[1]]) as usize * 24;
    let body_len = u16::from_le_bytes([data[2], data[3]]) as usize * 24;
    let text = String::from_utf8_lossy(&data[5..]);
    let unit = if text.is_empty() { "r" } else { &*text };
    let req_id: String = unit.chars().cycle().take(id_len).collect();
    let body = "b".repeat(body_len);
    match data[4] % 3 {
        0 => check_encode(&Response::success(req_id, json!({ "body": body }))),
        1 => check_encode(&Response::<()>::failure(
            req_id,
            ErrorBody::new(ErrorCode::NotFound, body),
        )),
        _ => check_encode(&Response::<()>::failure(
            req_id,
            ErrorBody::new(ErrorCode::NotFound, "x").with_details(json!({ "body": body })),
        )),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        dispatch(rest);
    } else {
        encode_direct(rest);
    }
});
