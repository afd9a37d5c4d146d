//! The request and response envelopes.
//!
//! Requests are parsed in two steps so that every bad request still gets the best answer
//! the protocol allows: a typed parse first, and only if that fails a lenient look at the
//! JSON to recover the `req_id` to echo.

use crate::error::{clip, MAX_ERROR_MESSAGE_LEN};
use crate::{ErrorBody, ErrorCode};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::value::RawValue;

/// The only protocol version there is.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest `req_id`, in bytes (UTF-8, after JSON unescaping). A request with a longer one
/// is refused INVALID_ARGUMENT with an empty `req_id`: nothing unbounded is echoed.
pub const MAX_REQ_ID_LEN: usize = 256;

/// Longest method name, in bytes. Longer is INVALID_ARGUMENT (`details.field = "method"`).
pub const MAX_METHOD_LEN: usize = 128;

/// Longest `details.field` an error names, in bytes (a path into the params may contain
/// map keys the caller chose).
pub const MAX_FIELD_NAME_LEN: usize = 128;

/// The `auth` object of a request.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The capability token (PASETO), unverified until a checker verifies it.
    pub token: Option<String>,
}

impl std::fmt::Debug for Auth {
    // Tokens are bearer secrets: never print one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A request as it travels on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The caller's id for this request, echoed in the response (at most
    /// [`MAX_REQ_ID_LEN`] bytes).
    #[serde(default)]
    pub req_id: String,
    /// The method's wire name, e.g. `fs.read`.
    pub method: String,
    /// Credentials, when the method needs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// The method's params, decoded by the handler into its typed params.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Box<RawValue>>,
}

impl Request {
    /// The bearer token, if the request carries one.
    pub fn token(&self) -> Option<&str> {
        self.auth.as_ref().and_then(|a| a.token.as_deref())
    }
}

/// Why a frame could not be turned into a [`Request`], with the `req_id` to echo (empty
/// when none could be recovered).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    /// The request's id, if one could be read.
    pub req_id: String,
    /// What was wrong, as the error to answer with.
    pub error: ErrorBody,
}

/// Parse one frame's payload into a request, checking the envelope (not the params).
///
/// An accepted request's `req_id` is at most [`MAX_REQ_ID_LEN`] bytes and its method at
/// most [`MAX_METHOD_LEN`]; a refused one's `req_id` is the request's when that is within
/// the bound, else empty. So nothing a caller sends is echoed without a bound.
pub fn parse_request(frame: &[u8]) -> Result<Request, RequestError> {
    // Plain serde first: tracking the path of every field costs on every request, and it
    // is only needed to explain a refusal, so a refused frame is parsed a second time.
    let mut de = serde_json::Deserializer::from_slice(frame);
    let req = match Request::deserialize(&mut de) {
        Ok(req) => req,
        Err(_) => {
            let mut again = serde_json::Deserializer::from_slice(frame);
            return Err(
                match serde_path_to_error::deserialize::<_, Request>(&mut again) {
                    Err(typed) => explain_bad_envelope(frame, typed),
                    // Cannot happen (the same input, the same types); refused all the same.
                    Ok(_) => RequestError {
                        req_id: String::new(),
                        error: ErrorBody::new(ErrorCode::InvalidArgument, "invalid request"),
                    },
                },
            );
        }
    };
    // First, so that no later error echoes an over-long req_id.
    if req.req_id.len() > MAX_REQ_ID_LEN {
        return Err(RequestError {
            req_id: String::new(),
            error: ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("`req_id` is longer than {MAX_REQ_ID_LEN} bytes"),
            )
            .with_details(serde_json::json!({"field": "req_id"})),
        });
    }
    if req.method.len() > MAX_METHOD_LEN {
        return Err(RequestError {
            req_id: req.req_id,
            error: ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("`method` is longer than {MAX_METHOD_LEN} bytes"),
            )
            .with_details(serde_json::json!({"field": "method"})),
        });
    }
    if let Err(e) = de.end() {
        return Err(RequestError {
            req_id: req.req_id,
            error: ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("request is not valid JSON: {}", strip_position(&e)),
            ),
        });
    }
    if req.v != PROTOCOL_VERSION {
        return Err(RequestError {
            req_id: req.req_id,
            error: ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!(
                    "unsupported protocol version {}: `v` must be {PROTOCOL_VERSION}",
                    req.v
                ),
            )
            .with_details(serde_json::json!({"field": "v"})),
        });
    }
    Ok(req)
}

fn explain_bad_envelope(
    frame: &[u8],
    typed: serde_path_to_error::Error<serde_json::Error>,
) -> RequestError {
    let object = match serde_json::from_slice::<serde_json::Value>(frame) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => {
            return RequestError {
                req_id: String::new(),
                error: ErrorBody::new(ErrorCode::InvalidArgument, "request must be a JSON object"),
            }
        }
        Err(e) => {
            return RequestError {
                req_id: String::new(),
                error: ErrorBody::new(
                    ErrorCode::InvalidArgument,
                    format!("request is not valid JSON: {e}"),
                ),
            }
        }
    };
    let req_id = match object.get("req_id") {
        Some(serde_json::Value::String(s)) if s.len() <= MAX_REQ_ID_LEN => s.clone(),
        _ => String::new(),
    };
    RequestError {
        req_id,
        error: field_error("invalid request", &typed),
    }
}

/// An INVALID_ARGUMENT error that names the offending field.
fn field_error(what: &str, err: &serde_path_to_error::Error<serde_json::Error>) -> ErrorBody {
    let path = err.path().to_string();
    let inner = err.inner();
    // For a missing field serde's own message names it ("missing field `x`") and the
    // path points at the parent object.
    // The path may hold map keys and serde's message may quote the value: both are the
    // caller's, so both are cut to a bound.
    let field = if path == "." {
        missing_field_name(&inner.to_string())
    } else {
        Some(path.clone())
    }
    .map(|f| clip(&f, MAX_FIELD_NAME_LEN).to_owned());
    let reason = strip_position(inner);
    let reason = clip(&reason, MAX_ERROR_MESSAGE_LEN / 2);
    let message = match (&field, path.as_str()) {
        (Some(_), ".") | (None, _) => format!("{what}: {reason}"),
        (Some(f), _) => format!("{what}: field `{f}`: {reason}"),
    };
    let details = match field {
        Some(f) => serde_json::json!({ "field": f }),
        None => serde_json::json!({}),
    };
    ErrorBody::new(ErrorCode::InvalidArgument, message).with_details(details)
}

fn missing_field_name(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// serde_json appends "at line 1 column 17"; useful in a file, noise in a request.
fn strip_position(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

/// Decode a method's params. Absent or `null` params decode as `{}`, so a method whose
/// params are all optional can be called without any, and a missing required field is
/// reported by name.
pub fn parse_params<P: DeserializeOwned>(raw: Option<&RawValue>) -> Result<P, ErrorBody> {
    let text = match raw.map(RawValue::get) {
        None | Some("null") => "{}",
        Some(t) => t,
    };
    // As in `parse_request`: the field's path is worked out only for a refusal.
    if let Ok(params) = serde_json::from_str(text) {
        return Ok(params);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(params) => Ok(params),
        Err(e) => Err(field_error("invalid params", &e)),
    }
}

/// A response as it travels on the wire. `result` is present exactly when `ok` is true,
/// `error` exactly when it is false.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response<R = Box<RawValue>> {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The request's `req_id`, echoed.
    pub req_id: String,
    /// Whether the method succeeded.
    pub ok: bool,
    /// The method's result, when `ok`.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
    /// Why it failed, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl<R> Response<R> {
    /// A successful answer to `req_id`.
    pub fn success(req_id: impl Into<String>, result: R) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            req_id: req_id.into(),
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failed answer to `req_id`.
    pub fn failure(req_id: impl Into<String>, error: ErrorBody) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            req_id: req_id.into(),
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// The result, or the server's error.
    pub fn into_result(self) -> Result<R, ErrorBody> {
        match (self.ok, self.result, self.error) {
            (true, Some(r), _) => Ok(r),
            (false, _, Some(e)) => Err(e),
            (true, None, _) => Err(ErrorBody::new(
                ErrorCode::Internal,
                "malformed response: ok without result",
            )),
            (false, _, None) => Err(ErrorBody::new(
                ErrorCode::Internal,
                "malformed response: error without error object",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bad(frame: &str) -> RequestError {
        parse_request(frame.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_a_full_request() {
        let req = parse_request(
            br#"{"v":1,"req_id":"abc","method":"fs.read","auth":{"token":"v2.public.x"},"params":{"handle":"h1"}}"#,
        )
        .unwrap();
        assert_eq!(req.req_id, "abc");
        assert_eq!(req.method, "fs.read");
        assert_eq!(req.token(), Some("v2.public.x"));
        assert_eq!(req.params.unwrap().get(), r#"{"handle":"h1"}"#);
    }

    #[test]
    fn auth_and_params_are_optional() {
        let req = parse_request(br#"{"v":1,"req_id":"a","method":"m"}"#).unwrap();
        assert!(req.auth.is_none() && req.params.is_none());
        let req = parse_request(br#"{"v":1,"req_id":"a","method":"m","auth":null,"params":null}"#)
            .unwrap();
        assert!(req.token().is_none() && req.params.is_none());
    }

    #[test]
    fn non_object_gets_empty_req_id() {
        for frame in ["[1,2]", "\"x\"", "42", "not json", "", "{\"v\":1,"] {
            let e = bad(frame);
            assert_eq!(e.req_id, "", "{frame}");
            assert_eq!(e.error.code, ErrorCode::InvalidArgument, "{frame}");
        }
    }

    #[test]
    fn wrong_version_echoes_req_id() {
        let e = bad(r#"{"v":2,"req_id":"r7","method":"m"}"#);
        assert_eq!(e.req_id, "r7");
        assert_eq!(e.error.code, ErrorCode::InvalidArgument);
        assert!(
            e.error.message.contains("`v` must be 1"),
            "{}",
            e.error.message
        );
        let e = bad(r#"{"v":"1","req_id":"r8","method":"m"}"#);
        assert_eq!(e.req_id, "r8");
        assert_eq!(e.error.details, json!({"field": "v"}));
        let e = bad(r#"{"req_id":"r9","method":"m"}"#);
        assert_eq!(e.req_id, "r9");
        assert_eq!(e.error.details, json!({"field": "v"}));
    }

    #[test]
    fn missing_method_is_named() {
        let e = bad(r#"{"v":1,"req_id":"q"}"#);
        assert_eq!(e.req_id, "q");
        assert!(e.error.message.contains("method"), "{}", e.error.message);
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let e = bad(r#"{"v":1,"req_id":"q","method":"m"} x"#);
        assert_eq!(e.error.code, ErrorCode::InvalidArgument);
    }

    fn with_req_id(req_id: &str) -> String {
        serde_json::to_string(&json!({"v": 1, "req_id": req_id, "method": "m"})).unwrap()
    }

    #[test]
    fn req_id_at_the_bound_is_accepted_and_one_past_is_refused_without_echo() {
        let at = "r".repeat(MAX_REQ_ID_LEN);
        assert_eq!(
            parse_request(with_req_id(&at).as_bytes()).unwrap().req_id,
            at
        );
        // Multi-byte characters count in bytes.
        let wide = "é".repeat(MAX_REQ_ID_LEN / 2);
        assert_eq!(
            parse_request(with_req_id(&wide).as_bytes()).unwrap().req_id,
            wide
        );

        for past in ["r".repeat(MAX_REQ_ID_LEN + 1), format!("{wide}x")] {
            let e = bad(&with_req_id(&past));
            assert_eq!(e.req_id, "", "an over-long req_id is never echoed");
            assert_eq!(e.error.code, ErrorCode::InvalidArgument);
            assert_eq!(e.error.details, json!({"field": "req_id"}));
            assert!(e.error.message.contains("256"), "{}", e.error.message);
            assert!(!e.error.message.contains(&past));
        }
    }

    #[test]
    fn over_long_req_id_is_not_echoed_whatever_else_is_wrong() {
        let long = "q".repeat(MAX_REQ_ID_LEN + 1);
        for frame in [
            json!({"v": 2, "req_id": long, "method": "m"}),
            json!({"v": "1", "req_id": long, "method": "m"}),
            json!({"req_id": long, "method": "m"}),
            json!({"v": 1, "req_id": long}),
            json!({"v": 1, "req_id": long, "method": 5}),
        ] {
            let e = bad(&frame.to_string());
            assert_eq!(e.req_id, "", "{frame}");
            assert_eq!(e.error.code, ErrorCode::InvalidArgument);
        }
        let e = bad(&format!(r#"{{"v":1,"req_id":"{long}","method":"m"}} x"#));
        assert_eq!(e.req_id, "");
    }

    #[test]
    fn a_mebibyte_req_id_is_refused_with_a_small_error() {
        let huge = "A".repeat(crate::MAX_FRAME - 64);
        let e = bad(&with_req_id(&huge));
        assert_eq!(e.req_id, "");
        let wire = serde_json::to_vec(&Response::<()>::failure(e.req_id, e.error)).unwrap();
        assert!(wire.len() < 512, "{} bytes", wire.len());
    }

    #[test]
    fn method_name_at_the_bound_is_accepted_and_one_past_is_refused() {
        let at = "m".repeat(MAX_METHOD_LEN);
        let frame = json!({"v": 1, "req_id": "r1", "method": at}).to_string();
        assert_eq!(parse_request(frame.as_bytes()).unwrap().method, at);
        let past = "m".repeat(MAX_METHOD_LEN + 1);
        let e = bad(&json!({"v": 1, "req_id": "r2", "method": past}).to_string());
        assert_eq!(e.req_id, "r2");
        assert_eq!(e.error.code, ErrorCode::InvalidArgument);
        assert_eq!(e.error.details, json!({"field": "method"}));
        assert!(!e.error.message.contains(&past), "{}", e.error.message);
    }

    #[test]
    fn errors_never_quote_an_attacker_sized_value() {
        let huge = "Z".repeat(200_000);
        // serde quotes a mistyped string value and an unknown map key's path.
        let e = bad(&json!({"v": huge, "req_id": "r", "method": "m"}).to_string());
        assert!(
            e.error.message.len() <= MAX_ERROR_MESSAGE_LEN,
            "{}",
            e.error.message.len()
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Keyed {
            m: std::collections::HashMap<String, u32>,
        }
        let raw = RawValue::from_string(json!({"m": {huge.clone(): "x"}}).to_string()).unwrap();
        let e = parse_params::<Keyed>(Some(&raw)).unwrap_err();
        assert!(
            e.message.len() <= MAX_ERROR_MESSAGE_LEN,
            "{}",
            e.message.len()
        );
        let field = e.details["field"].as_str().unwrap();
        assert!(field.len() <= MAX_FIELD_NAME_LEN, "{}", field.len());
        let raw = RawValue::from_string(json!({"service": huge}).to_string()).unwrap();
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Num {
            service: u32,
        }
        let e = parse_params::<Num>(Some(&raw)).unwrap_err();
        assert!(
            e.message.len() <= MAX_ERROR_MESSAGE_LEN,
            "{}",
            e.message.len()
        );
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct P {
        service: String,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn params_errors_name_the_field() {
        let raw = RawValue::from_string(r#"{"count":1}"#.into()).unwrap();
        let e = parse_params::<P>(Some(&raw)).unwrap_err();
        assert_eq!(e.details, json!({"field": "service"}));
        assert!(e.message.contains("service"), "{}", e.message);

        let raw = RawValue::from_string(r#"{"service":5}"#.into()).unwrap();
        let e = parse_params::<P>(Some(&raw)).unwrap_err();
        assert_eq!(e.details, json!({"field": "service"}));
        assert!(e.message.contains("`service`"), "{}", e.message);
        assert!(!e.message.contains("line 1"), "{}", e.message);

        let raw = RawValue::from_string(r#"{"service":"x","count":-1}"#.into()).unwrap();
        let e = parse_params::<P>(Some(&raw)).unwrap_err();
        assert_eq!(e.details, json!({"field": "count"}));
    }

    #[test]
    fn absent_params_decode_as_empty_object() {
        let e = parse_params::<P>(None).unwrap_err();
        assert_eq!(e.details, json!({"field": "service"}));
        #[derive(Deserialize)]
        struct Empty {}
        parse_params::<Empty>(None).unwrap();
    }

    #[test]
    fn responses_have_the_wire_shape() {
        let ok = Response::success("a", json!({"x": 1}));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"v": 1, "req_id": "a", "ok": true, "result": {"x": 1}})
        );
        let err = Response::<serde_json::Value>::failure(
            "b",
            ErrorBody::new(ErrorCode::NotFound, "gone"),
        );
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"v": 1, "req_id": "b", "ok": false,
                   "error": {"code": 4, "name": "NOT_FOUND", "message": "gone", "details": {}}})
        );
    }

    #[test]
    fn auth_debug_never_shows_the_token() {
        let a = Auth {
            token: Some("v2.public.secret".into()),
        };
        assert!(!format!("{a:?}").contains("secret"));
    }
}
