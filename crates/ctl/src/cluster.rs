//! `strata-ctl cluster …`: the cluster's certificates (local files only, through
//! `strata-pki`: the CA, node certificates from `add-node`, user certificates from
//! `add-user`, the two kinds kept apart so a user's is never a node's), and its nodes as etcd records them (`nodes`, `remove-node`, through
//! `strata-cluster`). None of these talks to a Strata service.
//!
//! `cluster nodes` reads etcd because that is where the cluster's own record of its
//! nodes is: `nodes/<node>` lives exactly as long as the node's lease (so it is the
//! liveness record), `trust/<node>/…` holds the keys a node published (a node with keys
//! but no lease is down), `removed/<node>` the tombstones, and `registry/<service>/<node>`
//! what each live node serves. A node's registry sees only the services other nodes can
//! reach; identity's trust bundle only nodes that published keys.

use crate::cli::{Cluster, Format, Global};
use crate::failure::Failure;
use crate::output::{self, Column, Layout};
use crate::when;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;
use strata_pki::{Overwrite, PkiError};

pub async fn run(cmd: Cluster, global: &Global) -> Result<ExitCode, Failure> {
    match cmd {
        Cluster::Nodes { etcd } => {
            nodes(
                &etcd_config(&etcd.etcd, &etcd.prefix, &etcd.access)?,
                global,
            )
            .await
        }
        Cluster::RemoveNode { node, etcd } => {
            let config = etcd_config(&etcd.etcd, &etcd.prefix, &etcd.access)?;
            remove_node(&node, &config, global).await
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
        Cluster::AddUser {
            user,
            ca_dir,
            out,
            days,
            force,
        } => add_user(&user, &ca_dir, &out, days, force, global),
    }
}

/// At most this many nodes are shown (the rest of etcd's answer is left out).
pub const MAX_NODES: usize = 1_000;
/// At most this many services are listed per node.
pub const MAX_SERVICES: usize = 256;

/// One node as etcd knows it.
#[derive(Debug, Default, Serialize)]
pub struct NodeView {
    /// The node's id.
    pub node: String,
    /// `alive` (holds its lease), `down` (published keys, no lease) or `removed`.
    pub status: &'static str,
    /// Unix seconds its current lease was granted.
    pub since: Option<i64>,
    /// Its lease's id.
    pub lease: Option<i64>,
    /// Services it has registered under its lease.
    pub services: Vec<String>,
    /// Keys it has in the trust bundle.
    pub keys: usize,
    /// Unix seconds it was removed.
    pub removed_at: Option<i64>,
}

/// What etcd holds under the cluster prefix, as `(key, value)` pairs per directory.
#[derive(Default)]
pub struct Records {
    /// `nodes/<node>`: lease records.
    pub nodes: Vec<(String, Vec<u8>)>,
    /// `trust/<node>/<kid>`: published keys.
    pub trust: Vec<(String, Vec<u8>)>,
    /// `registry/<service>/<node>`: registrations.
    pub registry: Vec<(String, Vec<u8>)>,
    /// `removed/<node>`: tombstones.
    pub removed: Vec<(String, Vec<u8>)>,
}

/// The settings to reach etcd at `etcd` (comma-separated URLs) under `prefix`, with
/// `access` (TLS, user): parsed and checked as a node's are, files read.
pub fn etcd_config(
    etcd: &str,
    prefix: &str,
    access: &crate::cli::EtcdAccessArgs,
) -> Result<strata_cluster::ClusterConfig, Failure> {
    let var = |name: &str| match name {
        "STRATA_ETCD_ENDPOINTS" => Some(etcd.to_owned()),
        // The id only names a lease this command never takes.
        "STRATA_NODE_ID" => Some("strata-ctl".to_owned()),
        "STRATA_CLUSTER_PREFIX" => Some(prefix.to_owned()),
        other => access.var(other),
    };
    strata_cluster::ClusterConfig::from_lookup(var)
        .map_err(|e| Failure::Usage(e.to_string()))?
        .ok_or_else(|| Failure::Usage("--etcd names no endpoint".into()))
}

async fn connect(config: &strata_cluster::ClusterConfig) -> Result<strata_cluster::Etcd, Failure> {
    strata_cluster::Etcd::connect(config).await.map_err(|e| {
        Failure::Unreachable(format!(
            "cannot reach etcd at {}: {e}",
            config.etcd.join(",")
        ))
    })
}

/// Read the four directories of the cluster's record from etcd.
async fn read_records(etcd: &strata_cluster::Etcd) -> Result<Records, Failure> {
    let read = |what: &'static str| {
        let key = etcd.key(&[what, ""]);
        async move {
            etcd.get_prefix(&key)
                .await
                .map(|(_, kvs)| kvs)
                .map_err(|e| Failure::Unreachable(format!("cannot read {key} from etcd: {e}")))
        }
    };
    Ok(Records {
        nodes: read("nodes").await?,
        trust: read("trust").await?,
        registry: read("registry").await?,
        removed: read("removed").await?,
    })
}

/// The node's entry, made `down` until its lease record says otherwise; `None` once
/// [`MAX_NODES`] other nodes are known.
fn view<'a>(views: &'a mut BTreeMap<String, NodeView>, node: &str) -> Option<&'a mut NodeView> {
    if views.len() >= MAX_NODES && !views.contains_key(node) {
        return None;
    }
    Some(views.entry(node.to_owned()).or_insert_with(|| NodeView {
        node: node.to_owned(),
        status: "down",
        ..NodeView::default()
    }))
}

/// The per-node views of etcd's records (`trust_prefix` is `<prefix>/trust/`), sorted by
/// node, at most [`MAX_NODES`] nodes with at most [`MAX_SERVICES`] services each.
/// Records that do not parse are left out.
pub fn node_views(records: &Records, trust_prefix: &str) -> Vec<NodeView> {
    let mut views: BTreeMap<String, NodeView> = BTreeMap::new();
    for (_, value) in &records.nodes {
        if let Ok(r) = serde_json::from_slice::<strata_cluster::NodeRecord>(value) {
            if let Some(v) = view(&mut views, &r.node) {
                v.status = "alive";
                v.since = Some(r.since);
                v.lease = Some(r.lease);
            }
        }
    }
    for (key, _) in &records.trust {
        // trust/<node>/<kid>: the node is the key's, never the value's.
        let rest = key.strip_prefix(trust_prefix).unwrap_or("");
        if let Some((node, _kid)) = rest.split_once('/') {
            if let Some(v) = view(&mut views, node) {
                v.keys += 1;
            }
        }
    }
    for (_, value) in &records.registry {
        if let Ok(r) = serde_json::from_slice::<strata_cluster::RegistryRecord>(value) {
            if let Some(v) = view(&mut views, &r.node) {
                if v.services.len() < MAX_SERVICES {
                    v.services.push(r.service);
                }
            }
        }
    }
    for (_, value) in &records.removed {
        if let Ok(r) = serde_json::from_slice::<strata_cluster::RemovedRecord>(value) {
            if let Some(v) = view(&mut views, &r.node) {
                v.status = "removed";
                v.removed_at = Some(r.removed_at);
            }
        }
    }
    views.into_values().collect()
}

/// Connect to etcd and read the nodes' views (for `cluster nodes` and the console).
pub async fn read_nodes(config: &strata_cluster::ClusterConfig) -> Result<Vec<NodeView>, Failure> {
    let etcd = connect(config).await?;
    let records = read_records(&etcd).await?;
    Ok(node_views(&records, &etcd.key(&["trust", ""])))
}

async fn nodes(
    config: &strata_cluster::ClusterConfig,
    global: &Global,
) -> Result<ExitCode, Failure> {
    let views = read_nodes(config).await?;
    let format = global.format();
    match format {
        Format::Json => output::json(&json!({ "nodes": views })),
        Format::Name => {
            for v in &views {
                println!("{}", output::printable(&v.node));
            }
        }
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.node.clone(),
                        v.status.to_owned(),
                        match (v.since, v.removed_at) {
                            (_, Some(at)) => when::relative(at),
                            (Some(since), None) => when::relative(since),
                            (None, None) => "-".into(),
                        },
                        if v.services.is_empty() {
                            "-".into()
                        } else {
                            v.services.join(",")
                        },
                        v.keys.to_string(),
                        v.lease.map_or_else(|| "-".into(), |l| format!("{l:x}")),
                    ]
                })
                .collect();
            let layout = Layout {
                wide: format == Format::Wide,
                headers: !global.no_headers,
                width: output::terminal_width(),
            };
            output::table(
                &layout,
                &[
                    Column::fixed("NODE"),
                    Column::fixed("STATUS"),
                    Column::fixed("SINCE"),
                    Column::elastic("SERVICES"),
                    Column::fixed("KEYS"),
                    Column::wide("LEASE"),
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove_node(
    node: &str,
    config: &strata_cluster::ClusterConfig,
    global: &Global,
) -> Result<ExitCode, Failure> {
    let etcd = connect(config).await?;
    let keys = strata_cluster::remove_node(&etcd, node)
        .await
        .map_err(|e| match e {
            strata_cluster::ClusterError::Invalid(m) => Failure::Usage(m),
            other => Failure::Failed(other.to_string()),
        })?;
    if global.format() == Format::Json {
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
    if global.format() == Format::Json {
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

fn overwrite(force: bool) -> Overwrite {
    if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    }
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
    let files = strata_pki::issue_node(ca_dir, node, hosts, out, days, overwrite(force))
        .map_err(failure)?;
    if global.format() == Format::Json {
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

/// A user's certificate: a TLS client that nodes never take for a node (`strata-pki`'s
/// `issue_user`).
fn add_user(
    user: &str,
    ca_dir: &Path,
    out: &Path,
    days: u32,
    force: bool,
    global: &Global,
) -> Result<ExitCode, Failure> {
    let files =
        strata_pki::issue_user(ca_dir, user, out, days, overwrite(force)).map_err(failure)?;
    if global.format() == Format::Json {
        output::json(&json!({
            "user": user,
            "dir": files.dir,
            "user_cert": files.cert,
            "user_key": files.key,
            "ca_cert": files.ca_cert,
            "not_after": unix(files.not_after),
        }));
    } else {
        println!("issued a user certificate for {user} (a client only: never a node)");
        output::fields(&[
            ("user.crt", format!("{}  (0644)", files.cert.display())),
            ("user.key", format!("{}  (0600)", files.key.display())),
            ("ca.crt", format!("{}  (0644)", files.ca_cert.display())),
            ("expires", rfc3339(files.not_after)),
        ]);
        println!(
            "give these three files to {user} only, and set STRATA_TLS_CA, STRATA_TLS_CERT and STRATA_TLS_KEY to them for `strata-ctl --node`"
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
        | PkiError::InvalidUserName(_)
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
            Failure::Failed(format!("{e} (pass --force to replace them)"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &serde_json::Value) -> (String, Vec<u8>) {
        (key.to_owned(), serde_json::to_vec(value).unwrap())
    }

    #[test]
    fn node_views_join_leases_keys_services_and_tombstones() {
        let records = Records {
            nodes: vec![
                kv(
                    "/s/nodes/a",
                    &json!({"node": "a", "lease": 7, "since": 100}),
                ),
                ("/s/nodes/junk".into(), b"not json".to_vec()),
            ],
            trust: vec![
                kv("/s/trust/a/k1", &json!({})),
                kv("/s/trust/b/k1", &json!({})),
                kv("/s/trust/b/k2", &json!({})),
                kv("/s/trust/c/k1", &json!({})),
            ],
            registry: vec![kv(
                "/s/registry/fs/a",
                &json!({"service": "fs", "node": "a", "endpoint": "tcp://x:1", "api_v": 1}),
            )],
            removed: vec![kv("/s/removed/c", &json!({"node": "c", "removed_at": 200}))],
        };
        let v = node_views(&records, "/s/trust/");
        let got: Vec<_> = v
            .iter()
            .map(|n| {
                (
                    n.node.as_str(),
                    n.status,
                    n.since,
                    n.lease,
                    n.keys,
                    n.services.clone(),
                    n.removed_at,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a",
                    "alive",
                    Some(100),
                    Some(7),
                    1,
                    vec!["fs".to_owned()],
                    None
                ),
                ("b", "down", None, None, 2, vec![], None),
                ("c", "removed", None, None, 1, vec![], Some(200)),
            ]
        );
    }

    #[test]
    fn node_views_are_bounded() {
        let mut records = Records::default();
        for i in 0..MAX_NODES + 5 {
            let node = format!("n{i:05}");
            records.nodes.push(kv(
                &format!("/s/nodes/{node}"),
                &json!({"node": node, "lease": 1, "since": 1}),
            ));
        }
        for i in 0..MAX_SERVICES + 5 {
            records.registry.push(kv(
                &format!("/s/registry/s{i}/n00000"),
                &json!({"service": format!("s{i}"), "node": "n00000", "endpoint": "tcp://x:1", "api_v": 1}),
            ));
        }
        // A node past the bound gets nothing, not even from other directories.
        records.trust.push(kv("/s/trust/zz/k", &json!({})));
        let v = node_views(&records, "/s/trust/");
        assert_eq!(v.len(), MAX_NODES);
        assert_eq!(v[0].services.len(), MAX_SERVICES);
        assert!(v.iter().all(|n| n.node != "zz"));
    }
}
