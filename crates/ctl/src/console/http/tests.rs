use super::*;

const HOST: &str = "127.0.0.1:4242";

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn status(r: Result<Admitted, Response<Body>>) -> StatusCode {
    match r {
        Ok(_) => StatusCode::OK,
        Err(response) => response.status(),
    }
}

/// Exchange `secret` and return the cookie's `name=value`.
fn sign_in(gate: &Gate, secret: &str) -> String {
    let r = gate
        .admit(&request(
            "GET",
            &format!("/?secret={secret}"),
            &[("host", HOST)],
        ))
        .err()
        .expect("the exchange answers itself");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/");
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    let flags: Vec<&str> = cookie.split("; ").collect();
    assert!(flags.contains(&"HttpOnly"), "{cookie}");
    assert!(flags.contains(&"SameSite=Strict"), "{cookie}");
    assert!(flags.contains(&"Path=/"), "{cookie}");
    let pair = flags[0].to_owned();
    assert!(
        pair.starts_with("strata_console=") && pair.len() == 15 + 43,
        "{pair}"
    );
    pair
}

#[test]
fn the_secret_is_exchanged_once_for_a_session_cookie() {
    let secret = random_text().unwrap();
    assert_eq!(secret.len(), 43);
    let gate = Gate::new(HOST.into(), &secret);
    let host = [("host", HOST)];
    assert_eq!(
        status(gate.admit(&request("GET", "/", &host))),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(gate.admit(&request("GET", "/api/node", &host))),
        StatusCode::UNAUTHORIZED
    );
    let wrong = format!("{}A", &secret[..42]);
    for bad in [wrong.as_str(), "", &secret[..42]] {
        let r = gate.admit(&request("GET", &format!("/?secret={bad}"), &host));
        assert_eq!(status(r), StatusCode::UNAUTHORIZED, "{bad}");
    }
    let cookie = sign_in(&gate, &secret);
    // Used up: the same URL again, without the cookie, is refused.
    let again = gate.admit(&request("GET", &format!("/?secret={secret}"), &host));
    assert_eq!(status(again), StatusCode::UNAUTHORIZED);
    // With the cookie, the page (and the old URL just goes back to it).
    let signed = [("host", HOST), ("cookie", cookie.as_str())];
    assert_eq!(
        status(gate.admit(&request("GET", "/api/node", &signed))),
        StatusCode::OK
    );
    let back = gate.admit(&request("GET", &format!("/?secret={secret}"), &signed));
    assert_eq!(status(back), StatusCode::SEE_OTHER);
    // Among other cookies, and only by its own name.
    let among = format!("a=b; {cookie}; c=d");
    let r = gate.admit(&request("GET", "/", &[("host", HOST), ("cookie", &among)]));
    assert_eq!(status(r), StatusCode::OK);
    let value = cookie.strip_prefix("strata_console=").unwrap();
    for forged in [
        format!("strata_consolex={value}"),
        format!("strata_console={value}x"),
    ] {
        let r = gate.admit(&request("GET", "/", &[("host", HOST), ("cookie", &forged)]));
        assert_eq!(status(r), StatusCode::UNAUTHORIZED, "{forged}");
    }
}

#[test]
fn a_foreign_host_or_origin_is_forbidden_even_with_the_secret() {
    let secret = random_text().unwrap();
    let gate = Gate::new(HOST.into(), &secret);
    let uri = format!("/?secret={secret}");
    for host in [
        &[("host", "evil.example:4242")][..],
        &[("host", "localhost:4242")],
        &[("host", "127.0.0.1")],
        &[],
        &[("host", HOST), ("host", HOST)],
    ] {
        let r = gate.admit(&request("GET", &uri, host));
        assert_eq!(status(r), StatusCode::FORBIDDEN, "{host:?}");
    }
    let r = gate.admit(&request(
        "GET",
        &uri,
        &[("host", HOST), ("origin", "http://evil.example")],
    ));
    assert_eq!(status(r), StatusCode::FORBIDDEN);
    // The secret was not used up by the refused requests.
    let cookie = sign_in(&gate, &secret);
    let ok = gate.admit(&request(
        "GET",
        "/",
        &[
            ("host", HOST),
            ("cookie", &cookie),
            ("origin", "http://127.0.0.1:4242"),
        ],
    ));
    assert_eq!(status(ok), StatusCode::OK);
    for origin in ["null", "http://127.0.0.1:4243", "https://127.0.0.1:4242"] {
        let r = gate.admit(&request(
            "GET",
            "/",
            &[("host", HOST), ("cookie", &cookie), ("origin", origin)],
        ));
        assert_eq!(status(r), StatusCode::FORBIDDEN, "{origin}");
    }
}

#[test]
fn a_post_needs_the_sessions_csrf_token() {
    let secret = random_text().unwrap();
    let gate = Gate::new(HOST.into(), &secret);
    let cookie = sign_in(&gate, &secret);
    let signed = [("host", HOST), ("cookie", cookie.as_str())];
    let csrf = gate
        .admit(&request("GET", "/api/session", &signed))
        .ok()
        .unwrap()
        .csrf;
    assert_eq!(csrf.len(), 43);
    let uri = "/api/services/fs/restart";
    assert_eq!(
        status(gate.admit(&request("POST", uri, &signed))),
        StatusCode::FORBIDDEN
    );
    let wrong = format!("{}x", &csrf[..42]);
    for given in [wrong.as_str(), "", &csrf[..42]] {
        let r = gate.admit(&request(
            "POST",
            uri,
            &[("host", HOST), ("cookie", &cookie), ("x-csrf-token", given)],
        ));
        assert_eq!(status(r), StatusCode::FORBIDDEN, "{given}");
    }
    let with = [
        ("host", HOST),
        ("cookie", cookie.as_str()),
        ("x-csrf-token", csrf.as_str()),
    ];
    assert_eq!(
        status(gate.admit(&request("POST", uri, &with))),
        StatusCode::OK
    );
    // The token without the cookie is nothing.
    let r = gate.admit(&request(
        "POST",
        uri,
        &[("host", HOST), ("x-csrf-token", &csrf)],
    ));
    assert_eq!(status(r), StatusCode::UNAUTHORIZED);
}

#[test]
fn query_values_are_bounded_and_decoded() {
    let q = Query::parse(Some("service=fs&event=auth.denied&cap_id=&x=a%20b+c")).unwrap();
    assert_eq!(q.get("service"), Some("fs"));
    assert_eq!(q.non_empty("cap_id"), None);
    assert_eq!(q.get("x"), Some("a b c"));
    let long = format!("service={}", "a".repeat(MAX_QUERY_VALUE + 1));
    assert!(Query::parse(Some(&long)).is_err());
    assert!(Query::parse(Some(&format!("service={}", "a".repeat(MAX_QUERY_VALUE)))).is_ok());
    assert!(Query::parse(Some("x=%ff")).is_err());
    let gate = Gate::new(HOST.into(), "s");
    let r = gate.admit(&request(
        "GET",
        &format!("/api/audit?{long}"),
        &[("host", HOST)],
    ));
    assert_eq!(status(r), StatusCode::BAD_REQUEST);
}

#[test]
fn every_answer_carries_the_security_headers() {
    let r = secure(text(StatusCode::FORBIDDEN, "no\n"));
    let h = r.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'; script-src 'self';"));
}

#[test]
fn an_absolute_target_must_name_the_listen_address() {
    let secret = random_text().unwrap();
    let gate = Gate::new(HOST.into(), &secret);
    let cookie = sign_in(&gate, &secret);
    let signed = [("host", HOST), ("cookie", cookie.as_str())];
    let ok = gate.admit(&request("GET", "http://127.0.0.1:4242/api/node", &signed));
    assert_eq!(status(ok), StatusCode::OK);
    for target in [
        "http://evil.example:4242/api/node",
        "http://127.0.0.1:4243/api/node",
        "http://localhost:4242/api/node",
    ] {
        let r = gate.admit(&request("GET", target, &signed));
        assert_eq!(status(r), StatusCode::FORBIDDEN, "{target}");
    }
}

#[test]
fn every_session_cookie_value_is_tried() {
    let secret = random_text().unwrap();
    let gate = Gate::new(HOST.into(), &secret);
    let cookie = sign_in(&gate, &secret);
    // A cookie of the same name planted for /api comes first in the header.
    let planted = format!("strata_console=x; {cookie}");
    let r = gate.admit(&request(
        "GET",
        "/api/node",
        &[("host", HOST), ("cookie", &planted)],
    ));
    assert_eq!(status(r), StatusCode::OK);
    let split = [
        ("host", HOST),
        ("cookie", "strata_console=y"),
        ("cookie", &cookie),
    ];
    assert_eq!(
        status(gate.admit(&request("GET", "/api/node", &split))),
        StatusCode::OK
    );
    // Bounded: past MAX_COOKIE_VALUES, values are not looked at.
    let many = format!("{}{cookie}", "strata_console=z; ".repeat(MAX_COOKIE_VALUES));
    let r = gate.admit(&request(
        "GET",
        "/api/node",
        &[("host", HOST), ("cookie", &many)],
    ));
    assert_eq!(status(r), StatusCode::UNAUTHORIZED);
}

#[test]
fn an_api_request_from_another_site_is_forbidden() {
    let secret = random_text().unwrap();
    let gate = Gate::new(HOST.into(), &secret);
    let cookie = sign_in(&gate, &secret);
    let with = |site: &'static str| {
        [
            ("host", HOST),
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", site),
        ]
    };
    for site in ["cross-site", "same-site", "none"] {
        let r = gate.admit(&request("GET", "/api/audit", &with(site)));
        assert_eq!(status(r), StatusCode::FORBIDDEN, "{site}");
    }
    let r = gate.admit(&request("GET", "/api/audit", &with("same-origin")));
    assert_eq!(status(r), StatusCode::OK);
    // Not sent (an older browser, curl): the cookie is what holds.
    let plain = [("host", HOST), ("cookie", cookie.as_str())];
    assert_eq!(
        status(gate.admit(&request("GET", "/api/audit", &plain))),
        StatusCode::OK
    );
    // The pages themselves may be opened from anywhere (a link, a typed address).
    let r = gate.admit(&request("GET", "/", &with("none")));
    assert_eq!(status(r), StatusCode::OK);
}
