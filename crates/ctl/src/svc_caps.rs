//! `svc caps NAME`: the capabilities the supervisor routed to a service's current run
//! (`supervisor.svc.caps`), one row each: what the token in the credentials file is
//! (cap_id, service, rights, constraints), when it expires and how often it was rotated.
//! The server never sends the tokens; every string it does send is printed through
//! [`output::printable`] (by the table), `-o json` prints its result unchanged.

use crate::cli::Format;
use crate::commands::Session;
use crate::failure::Failure;
use crate::output::{self, cell, Column};
use crate::when;
use serde_json::Value;
use std::process::ExitCode;
use strata_proto::methods::supervisor::{self as sup, RoutedCap, SvcNameParams};
use strata_proto::ServiceName;

impl Session {
    pub async fn svc_caps(&self, name: &ServiceName) -> Result<ExitCode, Failure> {
        let r = self
            .supervisor::<sup::SvcCaps>(&SvcNameParams { name: name.clone() })
            .await?;
        if r.capabilities.is_empty() && matches!(self.format(), Format::Table | Format::Wide) {
            println!(
                "{}: no capabilities are routed to its current run",
                output::printable(&r.name)
            );
            return Ok(ExitCode::SUCCESS);
        }
        let now = when::now_secs();
        let rows: Vec<Vec<String>> = r.capabilities.iter().map(|c| row(c, now)).collect();
        let names: Vec<String> = r.capabilities.iter().map(|c| c.name.clone()).collect();
        self.listing(
            &r,
            &[
                Column::fixed("NAME"),
                Column::fixed("CAP ID"),
                Column::fixed("SERVICE"),
                Column::elastic("RIGHTS"),
                Column::elastic("CONSTRAINTS"),
                Column::fixed("EXPIRES"),
                Column::fixed("ROTATIONS"),
                Column::wide("ISSUED"),
            ],
            &rows,
            &names,
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// One capability's cells, times relative to `now`.
fn row(c: &RoutedCap, now: i64) -> Vec<String> {
    vec![
        c.name.clone(),
        c.cap_id.clone(),
        c.service.clone(),
        c.rights.join(", "),
        constraints(&c.constraints),
        when::relative_to(now, c.expires),
        rotations(c, now),
        when::relative_to(now, c.issued),
    ]
}

/// `path_prefix /srv/photos, rate_limit 200rps`, or `-` for none.
fn constraints(v: &Value) -> String {
    let parts: Vec<String> = match v {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .map(|(k, v)| format!("{k} {}", cell(v)))
            .collect(),
        Value::Null => Vec::new(),
        other => vec![cell(other)],
    };
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `0`, or `3 (last 5 min ago)`.
fn rotations(c: &RoutedCap, now: i64) -> String {
    match c.last_rotation {
        Some(at) => format!("{} (last {})", c.rotations, when::relative_to(now, at)),
        None => c.rotations.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_routed_capability_reads_as_one_row() {
        let now = 1_767_225_600;
        let cap = RoutedCap {
            name: "photos".into(),
            cap_id: "0123456789abcdef0123456789abcdef".into(),
            service: "fs".into(),
            rights: vec!["fs.list".into(), "fs.read".into()],
            constraints: json!({"path_prefix": "/srv/photos", "rate_limit": "200rps",
                                "shared_rate_limits": []}),
            expires: now + 40 * 60,
            issued: now - 20 * 60,
            rotations: 2,
            last_rotation: Some(now - 300),
        };
        assert_eq!(
            row(&cap, now),
            [
                "photos",
                "0123456789abcdef0123456789abcdef",
                "fs",
                "fs.list, fs.read",
                "path_prefix /srv/photos, rate_limit 200rps",
                "in 40 min",
                "2 (last 5 min ago)",
                "20 min ago",
            ]
        );
        let fresh = RoutedCap {
            constraints: json!({}),
            rotations: 0,
            last_rotation: None,
            ..cap
        };
        let cells = row(&fresh, now);
        assert_eq!((cells[4].as_str(), cells[6].as_str()), ("-", "0"));
    }
}
