//! `strata-ctl cluster …`: the cluster's certificates. These commands work on local files
//! only (through `strata-pki`) and talk to no service.

use crate::cli::{Cluster, Global};
use crate::output;
use crate::Failure;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;
use strata_pki::{Overwrite, PkiError};

pub async fn run(cmd: Cluster, global: &Global) -> Result<ExitCode, Failure> {
    match cmd {
        Cluster::RemoveNode { node, etcd, prefix } => {
            remove_node(&node, &etcd, &prefix, global).await
        }
        Cluster::Init { dir, name } => init(&dir, &name, global),
        Cluster::AddNode {
            node,
            ca_dir,
            hosts,
            out,
            days,
            force,
        } => add_node(&node, &ca_dir, &hosts, &out, days, force, global),
    }
}

async fn remove_node(
    node: &str,
    etcd: &str,
    prefix: &str,
    global: &Global,
) -> Result<ExitCode, Failure> {
    let endpoints = etcd.split(',').map(|e| e.trim().to_owned()).collect();
    let mut config = strata_cluster::ClusterConfig::new(node, endpoints)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    config.prefix = prefix.to_owned();
    let etcd = strata_cluster::Etcd::connect(&config)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let keys = strata_cluster::remove_node(&etcd, node)
        .await
        .map_err(|e| match e {
            strata_cluster::ClusterError::Invalid(m) => Failure::Usage(m),
            other => Failure::Failed(other.to_string()),
        })?;
    if global.json {
        output::json(&json!({ "node": node, "removed": true, "keys_removed": keys }));
    } else {
        println!(
            "node {node} removed: {keys} signing key(s) left the trust bundle; its tokens are refused cluster-wide"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn init(dir: &Path, name: &str, global: &Global) -> Result<ExitCode, Failure> {
    let ca = strata_pki::init_ca(dir, name).map_err(failure)?;
    if global.json {
        output::json(&json!({
            "name": name,
            "dir": ca.dir,
            "ca_cert": ca.cert,
            "ca_key": ca.key,
            "not_after": unix(ca.not_after),
        }));
    } else {
        println!("created cluster CA \"{name}\" in {}", ca.dir.display());
        output::fields(&[
            (
                "ca.crt",
                format!("{}  (0644: copy to every node)", ca.cert.display()),
            ),
            (
                "ca.key",
                format!("{}  (0600: keep here, never copy)", ca.key.display()),
            ),
            ("expires", rfc3339(ca.not_after)),
        ]);
    }
    Ok(ExitCode::SUCCESS)
}

fn add_node(
    node: &str,
    ca_dir: &Path,
    hosts: &[String],
    out: &Path,
    days: u32,
    force: bool,
    global: &Global,
) -> Result<ExitCode, Failure> {
    let overwrite = if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let files =
        strata_pki::issue_node(ca_dir, node, hosts, out, days, overwrite).map_err(failure)?;
    if global.json {
        output::json(&json!({
            "node": node,
            "hosts": hosts,
            "dir": files.dir,
            "node_cert": files.cert,
            "node_key": files.key,
            "ca_cert": files.ca_cert,
            "not_after": unix(files.not_after),
        }));
    } else {
        println!(
            "issued a certificate for node {node} ({})",
            hosts.join(", ")
        );
        output::fields(&[
            ("node.crt", format!("{}  (0644)", files.cert.display())),
            ("node.key", format!("{}  (0600)", files.key.display())),
            ("ca.crt", format!("{}  (0644)", files.ca_cert.display())),
            ("expires", rfc3339(files.not_after)),
        ]);
        println!(
            "copy these three files to {node}; {} stays where it is",
            ca_dir.join(strata_pki::CA_KEY).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit 2 when the command line is wrong (a bad id, host or number, or a directory that
/// holds no CA); exit 1 when it was understood but refused or failed (an existing CA or
/// node files, an unusable CA, a file that could not be written).
fn failure(e: PkiError) -> Failure {
    match &e {
        PkiError::InvalidCaName(_)
        | PkiError::InvalidNodeId(_)
        | PkiError::InvalidHost(_)
        | PkiError::NoHosts
        | PkiError::InvalidDays(_) => Failure::Usage(e.to_string()),
        PkiError::CaMissing { dir, .. } => Failure::Usage(format!(
            "{e} (create a CA with `strata-ctl cluster init --dir {}`)",
            dir.display()
        )),
        PkiError::CaExists { .. } => Failure::Failed(format!(
            "{e} (a new CA would orphan every node certificate the old one signed)"
        )),
        PkiError::NodeFileExists { .. } => {
            Failure::Failed(format!("{e} (pass --force to replace the node's files)"))
        }
        _ => Failure::Failed(e.to_string()),
    }
}

fn unix(t: SystemTime) -> i64 {
    time::OffsetDateTime::from(t).unix_timestamp()
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| unix(t).to_string())
}
