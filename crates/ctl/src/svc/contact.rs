//! `strata-ctl status`'s cluster line: how long ago this node's identity last confirmed
//! contact with etcd, the limit, and whether the node is cut off (from identity's
//! `sys.health` `cluster` facts).

use serde_json::Value;

/// The line for identity's `cluster` health facts; `None` on a single node (or an
/// identity too old to report them).
pub(super) fn line(cluster: &Value) -> Option<String> {
    let age_ms = cluster.get("cluster_contact_age_ms")?.as_u64()?;
    let seconds = |ms: u64| format!("{}.{} s", ms / 1000, (ms % 1000) / 100);
    let limit = match cluster
        .get("cluster_max_staleness_ms")
        .and_then(Value::as_u64)
    {
        Some(ms) => format!("limit {}", seconds(ms)),
        None => "limit off".to_owned(),
    };
    let cut = if cluster["cluster_cut_off"] == true {
        "CUT OFF: refusing protected requests; "
    } else {
        ""
    };
    Some(format!(
        "{cut}etcd contact confirmed {} ago ({limit})",
        seconds(age_ms)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_line_shows_the_age_the_limit_and_a_cut_off() {
        let fresh = json!({"cluster_contact_age_ms": 1234, "cluster_max_staleness_ms": 5000,
                           "cluster_cut_off": false});
        assert_eq!(
            line(&fresh).unwrap(),
            "etcd contact confirmed 1.2 s ago (limit 5.0 s)"
        );
        let cut = json!({"cluster_contact_age_ms": 41_000, "cluster_max_staleness_ms": 30_000,
                         "cluster_cut_off": true});
        assert_eq!(
            line(&cut).unwrap(),
            "CUT OFF: refusing protected requests; etcd contact confirmed 41.0 s ago (limit 30.0 s)"
        );
        let off = json!({"cluster_contact_age_ms": 10, "cluster_max_staleness_ms": null});
        assert_eq!(
            line(&off).unwrap(),
            "etcd contact confirmed 0.0 s ago (limit off)"
        );
        assert_eq!(line(&json!({"node": "a"})), None);
    }
}
