//! The identity method types' own tests: parse-time bounds and older answers.

use super::*;
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<RevocationsParams, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[test]
fn subscriber_and_limit_are_bounded_at_parse_time() {
    let old = parse(json!({"since": 3, "wait_ms": 10})).unwrap();
    assert_eq!((old.subscriber.as_str(), old.limit), ("anonymous", None));
    let name = "s".repeat(MAX_SUBSCRIBER_LEN);
    assert_eq!(
        parse(json!({ "subscriber": name })).unwrap().subscriber,
        name
    );
    for bad in [
        "s".repeat(MAX_SUBSCRIBER_LEN + 1),
        String::new(),
        "a b".into(),
        "a\u{7f}".into(),
        "é".into(),
    ] {
        let e = parse(json!({ "subscriber": bad })).unwrap_err();
        assert!(!e.contains("sss"), "the name was echoed: {e}");
    }
    let max = MAX_REVOCATIONS_PAGE;
    assert_eq!(parse(json!({"limit": max})).unwrap().limit, Some(max));
    assert_eq!(parse(json!({"limit": 1})).unwrap().limit, Some(1));
    assert_eq!(parse(json!({"limit": null})).unwrap().limit, None);
    for bad in [
        json!(max + 1),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!("9"),
    ] {
        assert!(parse(json!({ "limit": bad })).is_err(), "limit {bad}");
    }
}

fn parse_issue(v: serde_json::Value) -> Result<IssueParams, crate::ErrorBody> {
    let raw = serde_json::value::to_raw_value(&v).unwrap();
    crate::parse_params::<IssueParams>(Some(&raw))
}

#[test]
fn rights_and_actions_are_bounded_at_parse_time() {
    let list = |n: usize, len: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("{:0>len$}", format!("fs.r{i}")))
            .collect()
    };
    for field in ["rights", "actions"] {
        let at = parse_issue(json!({"service": "fs", field: list(MAX_RIGHTS, MAX_RIGHT_LEN)}))
            .unwrap_or_else(|e| panic!("{field} at the bound: {e:?}"));
        let got = if field == "rights" {
            at.rights
        } else {
            at.actions
        };
        assert_eq!(got.unwrap().len(), MAX_RIGHTS);
        for (what, bad) in [
            ("one entry too many", list(MAX_RIGHTS + 1, 8)),
            ("an entry one byte too long", list(1, MAX_RIGHT_LEN + 1)),
            ("a million entries", vec!["fs.read".to_owned(); 1_000_000]),
        ] {
            let e = parse_issue(json!({"service": "fs", field: bad})).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::InvalidArgument, "{field}: {what}");
            assert_eq!(e.details["field"], field, "{field}: {what}: {e:?}");
            assert!(e.message.len() < 512, "{field}: {what}: echoed");
        }
    }
    let old = parse_issue(json!({"service": "fs", "rights": null})).unwrap();
    assert_eq!(old.rights, None);
    let d: Result<DelegateParams, _> =
        serde_json::from_value(json!({"token": "t", "rights": list(MAX_RIGHTS + 1, 8)}));
    assert!(d.is_err(), "delegate's rights are bounded too");
    let d: DelegateParams =
        serde_json::from_value(json!({"token": "t", "rights": list(MAX_RIGHTS, 8)})).unwrap();
    assert_eq!(d.rights.unwrap().len(), MAX_RIGHTS);
}

#[test]
fn subject_is_bounded_at_parse_time() {
    let at = "s".repeat(MAX_SUBJECT_LEN);
    let p = parse_issue(json!({"service": "fs", "subject": at})).unwrap();
    assert_eq!(p.subject.as_deref(), Some(at.as_str()));
    assert_eq!(parse_issue(json!({"service": "fs"})).unwrap().subject, None);
    for bad in [
        json!("s".repeat(MAX_SUBJECT_LEN + 1)),
        json!(7),
        json!(["x"]),
    ] {
        let e = parse_issue(json!({"service": "fs", "subject": bad})).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::InvalidArgument);
        assert_eq!(e.details["field"], "subject", "{e:?}");
        assert!(!e.message.contains("sss"), "echoed: {e:?}");
    }
}

#[test]
fn a_revoke_result_of_an_older_identity_still_reads() {
    let r: RevokeResult = serde_json::from_value(json!({"status": "revoked"})).unwrap();
    assert_eq!((r.confirmed, r.unconfirmed), (0, 0));
}

#[test]
fn a_result_without_more_is_complete() {
    let r: RevocationsResult = serde_json::from_value(json!({
        "store_id": "s", "seq": 4, "full": true, "revocations": [], "keys_epoch": 1
    }))
    .unwrap();
    assert!(!r.more);
}

#[test]
fn the_cluster_freshness_is_optional_and_its_limit_may_be_null() {
    let r: RevocationsResult = serde_json::from_value(json!({
        "store_id": "s", "seq": 4, "full": true, "revocations": [], "keys_epoch": 1,
        "cluster": {"contact_age_ms": 1200, "max_staleness_ms": null}
    }))
    .unwrap();
    let cluster = r.cluster.unwrap();
    assert_eq!(
        (cluster.contact_age_ms, cluster.max_staleness_ms),
        (1200, None)
    );
    let mut single = r.clone();
    single.cluster = None;
    assert!(serde_json::to_value(&single)
        .unwrap()
        .get("cluster")
        .is_none());
    let limited = ClusterFreshness {
        contact_age_ms: 0,
        max_staleness_ms: Some(5000),
    };
    assert_eq!(
        serde_json::to_value(limited).unwrap(),
        json!({"contact_age_ms": 0, "max_staleness_ms": 5000})
    );
}

fn parse_issued(v: serde_json::Value) -> Result<IssuedParams, crate::ErrorBody> {
    let raw = serde_json::value::to_raw_value(&v).unwrap();
    crate::parse_params::<IssuedParams>(Some(&raw))
}

#[test]
fn issued_params_are_bounded_at_parse_time() {
    let id = "0123456789abcdef0123456789abcdef";
    let p = parse_issued(json!({"after": id, "limit": MAX_ISSUED_PAGE})).unwrap();
    assert_eq!(
        (p.after.as_deref(), p.limit),
        (Some(id), Some(MAX_ISSUED_PAGE))
    );
    assert_eq!(parse_issued(json!({})).unwrap(), IssuedParams::default());
    let nulls = parse_issued(json!({"after": null, "limit": null})).unwrap();
    assert_eq!(nulls, IssuedParams::default());
    assert_eq!(parse_issued(json!({"limit": 1})).unwrap().limit, Some(1));
    let huge = "f".repeat(1 << 20);
    for (field, bad) in [
        ("after", json!("0123456789ABCDEF0123456789ABCDEF")),
        ("after", json!(&id[1..])),
        ("after", json!(format!("{id}0"))),
        ("after", json!("0123456789abcdef0123456789abcdeg")),
        ("after", json!(huge)),
        ("after", json!(5)),
        ("after", json!([id])),
        ("after", json!({"a": id})),
        ("limit", json!(0)),
        ("limit", json!(MAX_ISSUED_PAGE + 1)),
        ("limit", json!(-1)),
        ("limit", json!(u64::MAX)),
        ("limit", json!(1.5)),
        ("limit", json!("fffffffffffffff")),
        ("limit", json!(true)),
        ("limit", json!([1])),
    ] {
        let e = parse_issued(json!({ field: bad })).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::InvalidArgument, "{field}={bad}");
        assert_eq!(e.details["field"], field, "{field}={bad}: {e:?}");
        assert!(!e.message.contains("fff"), "echoed: {e:?}");
        assert!(!e.message.contains("ABC"), "echoed: {e:?}");
        assert!(!e.message.contains("abcdeg"), "echoed: {e:?}");
    }
}

#[test]
fn an_issued_cap_without_the_newer_fields_omits_them() {
    let cap = IssuedCap {
        cap_id: "c".into(),
        parents: vec![],
        expires: 1,
        issued_at: None,
        service: None,
        rights: None,
        path_prefix: None,
        rate_limit: None,
        subject: None,
        revoked: false,
    };
    let v = serde_json::to_value(IssuedResult {
        caps: vec![cap],
        next: None,
    })
    .unwrap();
    assert_eq!(
        v,
        json!({"caps": [{"cap_id": "c", "parents": [], "expires": 1, "revoked": false}],
               "next": null})
    );
}
