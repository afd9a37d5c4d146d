//! Everything decided before fork for one run of a service: the program, the user, the
//! cgroup and limits (with the rlimit fallbacks), the notify socket, Landlock, and a clean
//! environment. What was applied is reported for `svc.list`.

use crate::cgroup::ServiceCgroup;
use crate::landlock::Ruleset;
use crate::manifest::{Readiness, ServiceSpec};
use crate::process::{self, Rlimit, SpawnError, SpawnPlan};
use crate::readiness::NotifySocket;
use crate::shared::{notify_socket_path, Shared};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A run, ready to spawn.
pub(crate) struct Prepared {
    pub plan: SpawnPlan,
    pub cgroup: Option<ServiceCgroup>,
    pub notify: Option<NotifySocket>,
    /// What limits and sandboxing the run gets, as `svc.list` reports it.
    pub applied: Value,
}

/// Everything decided before fork: program, user, cgroup and limits, notify socket,
/// Landlock, environment. Also reports what was applied.
pub(crate) fn prepare(shared: &Shared, spec: &ServiceSpec) -> Result<Prepared, SpawnError> {
    let program = shared.programs.find(&spec.exec)?;
    let credentials = process::resolve_credentials(spec.user.as_deref(), spec.group.as_deref())?;
    if let Some(socket) = spec.socket_path(&shared.runtime_dir) {
        remove_stale_socket(&socket);
    }

    let mut limits = serde_json::Map::new();
    let mut rlimits = Vec::new();
    let cgroup = match &shared.cgroups {
        Ok(root) => Some(root.create(&spec.name).map_err(SpawnError::Cgroup)?),
        Err(_) => None,
    };
    if let (Some(cg), Some(g)) = (&cgroup, &shared.orphans) {
        g.watch_cgroup(cg.dir());
    }
    let result = (|| {
        let has =
            |c: &str| cgroup.is_some() && shared.cgroups.as_ref().is_ok_and(|root| root.has(c));
        if let Some(mem) = spec.limits.memory_max {
            let via = match &cgroup {
                Some(cg) if has("memory") && cg.set("memory.max", &mem.0.to_string()).is_ok() => {
                    json!({"value": mem.0, "via": "cgroup"})
                }
                _ => {
                    rlimits.push(Rlimit::AddressSpace(mem.0));
                    json!({"value": mem.0, "via": "rlimit", "rlimit": "RLIMIT_AS",
                           "note": "address space, not resident memory: no cgroup memory controller"})
                }
            };
            limits.insert("memory_max".into(), via);
        }
        if let Some(pids) = spec.limits.pids_max {
            let via = match &cgroup {
                Some(cg) if has("pids") && cg.set("pids.max", &pids.to_string()).is_ok() => {
                    json!({"value": pids, "via": "cgroup"})
                }
                _ => {
                    rlimits.push(Rlimit::Processes(pids));
                    json!({"value": pids, "via": "rlimit", "rlimit": "RLIMIT_NPROC",
                           "note": "counts every process of the service's user; not enforced for root"})
                }
            };
            limits.insert("pids_max".into(), via);
        }
        if let Some(cpu) = spec.limits.cpu_max {
            let via = match &cgroup {
                Some(cg) if has("cpu") && cg.set("cpu.max", &cpu.cgroup_value()).is_ok() => {
                    json!({"value": cpu.cgroup_value(), "via": "cgroup"})
                }
                _ => json!({"value": cpu.cgroup_value(), "via": "none",
                            "note": "no cgroup cpu controller and no rlimit equivalent: not enforced"}),
            };
            limits.insert("cpu_max".into(), via);
        }
        let (cgroup_procs, cgroup_dir) = match &cgroup {
            Some(cg) => (
                Some(cg.procs_for_join().map_err(SpawnError::Cgroup)?),
                Some(cg.dir_for_clone().map_err(SpawnError::Cgroup)?),
            ),
            None => (None, None),
        };
        let notify = if spec.readiness == Readiness::Notify {
            let path = notify_socket_path(&shared.notify_dir(), &spec.name);
            let owner = credentials.as_ref().map(|c| (c.uid, c.gid));
            Some(
                NotifySocket::bind(&path, owner).map_err(|source| SpawnError::Prepare {
                    what: format!("the notify socket {}", path.display()),
                    source,
                })?,
            )
        } else {
            None
        };
        let landlock = match &spec.sandbox.landlock {
            Some(rules) => Some(Ruleset::build(rules)?),
            None => None,
        };
        let namespaces = spec
            .sandbox
            .namespaces
            .iter()
            .fold(0, |flags, ns| flags | ns.clone_flag());
        let applied = json!({
            "limits": limits,
            "cgroup": cgroup.as_ref().map(|c| c.dir().display().to_string()),
            "user": credentials.as_ref().map(|c| json!({"uid": c.uid, "gid": c.gid, "groups": c.groups})),
            "no_new_privs": spec.sandbox.no_new_privs,
            "namespaces": spec.sandbox.namespaces.iter().map(|n| n.name()).collect::<Vec<_>>(),
            "landlock": landlock.as_ref().map(|r| json!({"abi": r.abi()})),
        });
        let env = environment(
            shared,
            spec,
            notify.as_ref().map(|n| n.path()),
            credentials.is_some(),
        );
        let plan = SpawnPlan {
            program,
            args: spec.args.clone(),
            env,
            cwd: spec
                .working_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/")),
            credentials: credentials.clone(),
            rlimits: rlimits.clone(),
            cgroup_procs,
            cgroup_dir,
            namespaces,
            no_new_privs: spec.sandbox.no_new_privs,
            landlock,
        };
        Ok((plan, notify, applied))
    })();
    match result {
        Ok((plan, notify, applied)) => Ok(Prepared {
            plan,
            cgroup,
            notify,
            applied,
        }),
        Err(e) => {
            if let Some(cg) = &cgroup {
                forget_cgroup(shared, cg);
                let _ = cg.remove();
            }
            Err(e)
        }
    }
}

/// A clean environment: the Strata variables, a few pass-throughs, then the
/// service's own `env`.
fn environment(
    shared: &Shared,
    spec: &ServiceSpec,
    notify: Option<&Path>,
    other_user: bool,
) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
    env.insert("PATH".into(), path);
    let mut pass = vec!["STRATA_LOG", "STRATA_LOG_FORMAT", "LANG", "TZ"];
    if !other_user {
        pass.push("HOME");
    }
    for key in pass {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.into(), v);
        }
    }
    env.insert(
        "STRATA_RUNTIME_DIR".into(),
        shared.runtime_dir.display().to_string(),
    );
    env.insert(
        "STRATA_STATE_DIR".into(),
        shared.state_dir.display().to_string(),
    );
    env.insert("STRATA_NODE_ID".into(), shared.node_id.clone());
    env.insert("STRATA_SERVICE".into(), spec.name.clone());
    // Every writer of the audit log rotates it alike.
    for (k, v) in shared.audit.rotation().env() {
        env.insert(k.into(), v);
    }
    // Resolved once by the supervisor: the service gives its socket to this gid.
    if let Some(gid) = shared.socket_gid {
        env.insert("STRATA_SOCKET_GROUP".into(), gid.to_string());
    }
    for (k, v) in &shared.cluster_env {
        env.insert(k.clone(), v.clone());
    }
    if let Some(addr) = spec.tcp {
        env.insert("STRATA_TCP_LISTEN".into(), addr.to_string());
    }
    if let Some(n) = notify {
        env.insert("NOTIFY_SOCKET".into(), n.display().to_string());
    }
    for (k, v) in &spec.env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

/// Tell the orphan guard a cgroup is no longer the service's.
pub(crate) fn forget_cgroup(shared: &Shared, cg: &ServiceCgroup) {
    if let Some(g) = &shared.orphans {
        g.forget_cgroup(cg.dir());
    }
}

/// Remove a socket file nobody answers on, so a new run cannot be mistaken for ready
/// and can bind.
pub(crate) fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.file_type().is_socket() {
        return;
    }
    if let Err(e) = std::os::unix::net::UnixStream::connect(path) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            tracing::debug!(socket = %path.display(), "removing stale socket");
            let _ = std::fs::remove_file(path);
        }
    }
}
