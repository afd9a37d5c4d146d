//! Envelope and params parsing (`strata_proto::parse_request`, `parse_params`) on arbitrary
//! frame payloads.
//!
//! Must hold: no panic; a refused request is INVALID_ARGUMENT with `details` an object, and
//! serialises as a protocol-valid error response; an accepted request has `v == 1`, and its
//! params decode into every method's params type or fail with INVALID_ARGUMENT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use strata_proto::methods::{fs, identity, registry, supervisor, Method, NoParams};
use strata_proto::{parse_params, parse_request, ErrorBody, ErrorCode, Response};

fn params_of<M: Method>(raw: Option<&RawValue>) {
    check_params::<M::Params>(raw);
}

fn check_params<P: DeserializeOwned>(raw: Option<&RawValue>) {
    if let Err(e) = parse_params::<P>(raw) {
        check_error(&e);
    }
}

fn check_error(e: &ErrorBody) {
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
    assert!(e.details.is_object(), "details must be an object: {e:?}");
    let wire = serde_json::to_vec(&Response::<()>::failure("", e.clone())).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&wire).unwrap();
    assert_eq!(back["ok"], false);
    assert_eq!(back["error"]["code"], 1);
}

fn every_method(raw: Option<&RawValue>) {
    params_of::<fs::Open>(raw);
    params_of::<fs::Read>(raw);
    params_of::<fs::List>(raw);
    params_of::<fs::Close>(raw);
    params_of::<fs::Stat>(raw);
    params_of::<identity::Issue>(raw);
    params_of::<identity::Revoke>(raw);
    params_of::<identity::Introspect>(raw);
    params_of::<identity::Delegate>(raw);
    params_of::<identity::Revocations>(raw);
    params_of::<registry::Register>(raw);
    params_of::<registry::Resolve>(raw);
    params_of::<registry::Deregister>(raw);
    params_of::<supervisor::SvcStart>(raw);
    params_of::<supervisor::SvcStop>(raw);
    check_params::<NoParams>(raw);
}

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(req) => {
            assert_eq!(req.v, 1);
            every_method(req.params.as_deref());
        }
        Err(e) => check_error(&e.error),
    }
    // The payload as params on its own, when it is JSON at all.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) {
            every_method(Some(&raw));
        }
    }
});
