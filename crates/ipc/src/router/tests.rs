//! The router's unit tests: the bounded fallbacks of `encode`, and the request counts.

use super::*;
use serde_json::{json, Value};

fn decoded(bytes: &Bytes) -> Value {
    assert!(bytes.len() <= MAX_FRAME, "{} bytes", bytes.len());
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn an_oversized_response_with_an_unbounded_req_id_falls_back_once_and_small() {
    // Built by hand: parse_request refuses such a req_id, but encode must not rely
    // on that.
    let req_id = "A".repeat(MAX_FRAME);
    let out = encode(&Response::success(req_id, json!({})));
    assert!(out.len() <= MAX_FALLBACK_LEN, "{} bytes", out.len());
    let v = decoded(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["req_id"], "");
    assert_eq!(v["error"]["code"], ErrorCode::Internal.code());
}

#[test]
fn an_oversized_response_keeps_a_bounded_req_id() {
    // The worst case for size: every byte of the longest req_id escaped as \u00XX.
    let req_id = "\u{1}".repeat(MAX_REQ_ID_LEN);
    let out = encode(&Response::success(
        req_id.as_str(),
        json!({"blob": "z".repeat(2 << 20)}),
    ));
    assert!(out.len() <= MAX_FALLBACK_LEN, "{} bytes", out.len());
    let v = decoded(&out);
    assert_eq!(v["req_id"], req_id);
    assert_eq!(v["error"]["code"], ErrorCode::Internal.code());
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("too large"));
}

#[test]
fn the_last_resort_frame_is_a_valid_internal_error() {
    let v = decoded(&fallback(&"\u{1}".repeat(MAX_REQ_ID_LEN), "internal error"));
    assert_eq!(v["error"]["code"], ErrorCode::Internal.code());
    let r: Response<()> = serde_json::from_slice(LAST_RESORT).unwrap();
    assert_eq!(r.into_result().unwrap_err().code, ErrorCode::Internal);
}

#[test]
fn an_error_too_large_for_a_frame_falls_back_too() {
    let error = ErrorBody::new(ErrorCode::NotFound, "gone")
        .with_details(json!({"echo": "x".repeat(MAX_FRAME)}));
    let out = encode(&Response::<()>::failure("r1", error));
    let v = decoded(&out);
    assert_eq!(v["req_id"], "r1");
    assert_eq!(v["error"]["code"], ErrorCode::Internal.code());
}

#[tokio::test]
async fn a_mebibyte_req_id_on_an_unknown_method_is_refused_without_echo() {
    let router = Router::new("t", "1");
    let frame = format!(
        r#"{{"v":1,"req_id":"{}","method":"nope"}}"#,
        "A".repeat(MAX_FRAME - 64)
    );
    let v = decoded(
        &router
            .dispatch(PeerCred::current_process(), frame.as_bytes())
            .await,
    );
    assert_eq!(v["req_id"], "");
    assert_eq!(v["error"]["code"], ErrorCode::InvalidArgument.code());
    assert_eq!(v["error"]["details"]["field"], "req_id");
}

/// A test method: echoes nothing, fails when asked to.
struct Flaky;
impl Method for Flaky {
    const NAME: &'static str = "t.flaky";
    type Params = serde_json::Value;
    type Result = serde_json::Value;
}

fn flaky_router() -> Router {
    Router::new("t", "1")
        .method::<Flaky, ErrorBody, _, _>(|_call, p: Value| async move {
            if p["fail"] == true {
                Err(ErrorBody::new(ErrorCode::NotFound, "no"))
            } else {
                Ok(json!({}))
            }
        })
        .metrics(|snap| {
            snap.gauge("strata_test_widgets", "Widgets.", 7.0);
        })
}

fn frame(method: &str, params: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"v": 1, "req_id": "r", "method": method, "params": params})).unwrap()
}

/// `strata_requests_total{method,code}` in a snapshot, 0 when the series is absent.
fn requests(snapshot: &sys::MetricsResult, method: &str, code: &str) -> f64 {
    let family = snapshot
        .families
        .iter()
        .find(|f| f.name == "strata_requests_total")
        .expect("request family");
    family
        .samples
        .iter()
        .find(|s| s.labels["method"] == method && s.labels["code"] == code)
        .map_or(0.0, |s| match s.value {
            sys::SampleValue::Scalar { value } => value,
            _ => panic!("not a scalar"),
        })
}

#[tokio::test]
async fn every_request_is_counted_by_method_and_code_and_unknown_names_as_other() {
    let router = flaky_router();
    let me = PeerCred::current_process();
    for params in [json!({}), json!({}), json!({"fail": true})] {
        router.dispatch(me, &frame("t.flaky", params)).await;
    }
    router.dispatch(me, &frame("sys.health", Value::Null)).await;
    for name in ["nope", "also.nope"] {
        router.dispatch(me, &frame(name, Value::Null)).await;
    }
    router.dispatch(me, b"not json").await;
    let snap = router.snapshot();
    assert_eq!(requests(&snap, "t.flaky", "OK"), 2.0);
    assert_eq!(requests(&snap, "t.flaky", "NOT_FOUND"), 1.0);
    assert_eq!(requests(&snap, "sys.health", "OK"), 1.0);
    assert_eq!(requests(&snap, "other", "INVALID_ARGUMENT"), 3.0);
    let methods: std::collections::BTreeSet<&str> = snap
        .families
        .iter()
        .filter(|f| f.name.starts_with("strata_request"))
        .flat_map(|f| f.samples.iter().map(|s| s.labels["method"].as_str()))
        .collect();
    assert_eq!(
        methods.into_iter().collect::<Vec<_>>(),
        ["other", "sys.health", "sys.metrics", "t.flaky"],
        "a caller's method names never become labels"
    );
    let latency = snap
        .families
        .iter()
        .find(|f| f.name == "strata_request_duration_seconds")
        .unwrap();
    let flaky = latency
        .samples
        .iter()
        .find(|s| s.labels["method"] == "t.flaky")
        .unwrap();
    assert!(matches!(
        flaky.value,
        sys::SampleValue::Histogram { count: 3, .. }
    ));
    assert!(snap
        .families
        .iter()
        .any(|f| f.name == "strata_test_widgets"));
}

#[tokio::test]
async fn sys_metrics_answers_admins_and_refuses_everyone_else() {
    let router = flaky_router();
    let me = PeerCred::current_process();
    let v = decoded(
        &router
            .dispatch(me, &frame("sys.metrics", Value::Null))
            .await,
    );
    assert_eq!(v["ok"], true, "{v}");
    let snap: sys::MetricsResult = serde_json::from_value(v["result"].clone()).unwrap();
    assert!(snap
        .families
        .iter()
        .any(|f| f.name == "strata_test_widgets"));
    // Neither root nor this process's uid.
    let stranger = PeerCred {
        pid: None,
        uid: if me.uid == 0 { 1000 } else { me.uid + 1 },
        gid: me.gid,
    };
    let v = decoded(
        &router
            .dispatch(stranger, &frame("sys.metrics", Value::Null))
            .await,
    );
    assert_eq!(
        v["error"]["code"],
        ErrorCode::PermissionDenied.code(),
        "{v}"
    );
    let remote = Peer::Remote {
        peer: RemotePeer {
            addr: "127.0.0.1:1".parse().unwrap(),
            name: "node-b".into(),
        },
        allowed: Arc::new(["sys.metrics".to_owned()].into()),
    };
    let v = decoded(
        &router
            .dispatch_from(&remote, &frame("sys.metrics", Value::Null))
            .await,
    );
    assert_eq!(
        v["error"]["code"],
        ErrorCode::PermissionDenied.code(),
        "{v}"
    );
    let snap = router.snapshot();
    assert_eq!(requests(&snap, "sys.metrics", "OK"), 1.0);
    assert_eq!(requests(&snap, "sys.metrics", "PERMISSION_DENIED"), 2.0);
}
