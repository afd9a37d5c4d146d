//! Bounds on what a caller sends fs (issue 13, "the class, not the case"): each at the
//! bound and one past it, and nothing echoed back unbounded.

mod common;

use common::{open_params, Fixture};
use strata_fs::path::{RequestPath, MAX_PATH_LEN};
use strata_proto::methods::fs::{ListParams, OpenParams, StatParams};
use strata_proto::{ErrorBody, ErrorCode};

/// A relative path of exactly `len` bytes, in components of at most 200 bytes.
fn path_of(len: usize) -> String {
    let mut p = String::new();
    while p.len() < len {
        if !p.is_empty() {
            p.push('/');
        }
        let take = (len - p.len()).min(200);
        p.push_str(&"a".repeat(take));
    }
    p
}

#[test]
fn request_paths_at_the_bound_and_past_it() {
    let at = path_of(MAX_PATH_LEN);
    assert_eq!(at.len(), MAX_PATH_LEN);
    RequestPath::parse(&at).unwrap();
    let past = path_of(MAX_PATH_LEN + 1);
    assert_eq!(
        RequestPath::parse(&past).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    // Through the service: at the bound the kernel is asked (and finds nothing), past it
    // the request is refused before any lookup; either way the answer is short.
    let f = Fixture::new();
    let c = f.caller();
    let at_answer = f.fs.stat(&c, &StatParams { path: at }).unwrap_err();
    assert_eq!(at_answer.code(), ErrorCode::NotFound);
    let past_answer = f.fs.stat(&c, &StatParams { path: past }).unwrap_err();
    assert_eq!(past_answer.code(), ErrorCode::InvalidArgument);
    for e in [at_answer, past_answer] {
        let body = ErrorBody::from(e);
        assert!(body.message.len() <= 512, "{} bytes", body.message.len());
    }
}

#[test]
fn nothing_the_caller_sent_comes_back_unbounded() {
    let f = Fixture::new();
    let c = f.caller();
    let huge = "m".repeat(1 << 20);
    let e =
        f.fs.open(
            &c,
            &OpenParams {
                path: "f".into(),
                mode: huge.clone(),
            },
        )
        .unwrap_err();
    let body = ErrorBody::from(e);
    assert_eq!(body.code, ErrorCode::InvalidArgument);
    assert!(
        body.message.len() < 200,
        "mode echoed: {} bytes",
        body.message.len()
    );
    // Paths refused on their face are quoted, but cut short.
    let absolute = format!("/{}", "x/".repeat(2000));
    for e in [
        f.fs.open(&c, &open_params(&absolute)).unwrap_err(),
        f.fs.list(
            &c,
            &ListParams {
                path: format!("{}/..", "y".repeat(4000)),
                limit: None,
                cursor: None,
            },
            usize::MAX,
        )
        .unwrap_err(),
        f.fs.open(&c, &open_params(&"z/".repeat(2000))).unwrap_err(),
    ] {
        let body = ErrorBody::from(e);
        assert!(body.message.len() <= 512, "{} bytes", body.message.len());
    }
}
