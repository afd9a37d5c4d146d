//! Support for the end-to-end tests in `tests/`: a whole node (the supervisor with its
//! built-in graph, or the same three services from a manifest) in temporary directories,
//! `strata-ctl` pointed at it, and what the fault tests read from `/proc` (process trees,
//! open descriptors, peak memory).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use strata_testkit::{call, wait_until, Proc, Sandbox, DEADLINE};

/// The services the supervisor runs in every e2e node.
pub const SERVICES: [&str; 3] = ["registry", "identity", "fs"];

/// A running node: supervisor, registry, identity and fs, all in one sandbox.
pub struct Stack {
    /// The node's runtime and state directories.
    pub sb: Sandbox,
    /// The supervisor process (killed, with its services, on drop).
    pub supervisor: Proc,
    /// The directory fs exports.
    pub export: PathBuf,
    /// Extra environment for `strata-ctl` (cluster mode: the node's TLS files).
    pub ctl_env: Vec<(String, String)>,
}

/// One node of a test cluster: its id, the cluster's etcd, the node's TLS files (from
/// `strata-ctl cluster add-node`) and the address fs listens on for other nodes.
pub struct ClusterNode<'a> {
    /// The node id.
    pub node: &'a str,
    /// The etcd client URL.
    pub etcd: &'a str,
    /// The node's TLS files.
    pub tls_dir: &'a std::path::Path,
    /// Where fs listens for other nodes.
    pub fs_tcp: std::net::SocketAddr,
    /// The node's etcd lease, in seconds.
    pub lease_ttl_secs: u32,
    /// The directory fs exports (the nodes of a test cluster may share one).
    pub export: &'a std::path::Path,
}

impl ClusterNode<'_> {
    /// The variables that put a node (and `strata-ctl` on it) in cluster mode.
    pub fn env(&self) -> Vec<(String, String)> {
        let file = |name: &str| self.tls_dir.join(name).display().to_string();
        vec![
            ("STRATA_NODE_ID".into(), self.node.into()),
            ("STRATA_ETCD_ENDPOINTS".into(), self.etcd.into()),
            (
                "STRATA_LEASE_TTL_SECS".into(),
                self.lease_ttl_secs.to_string(),
            ),
            ("STRATA_TLS_CA".into(), file("ca.crt")),
            ("STRATA_TLS_CERT".into(), file("node.crt")),
            ("STRATA_TLS_KEY".into(), file("node.key")),
            ("STRATA_FS_TCP_LISTEN".into(), self.fs_tcp.to_string()),
            (
                "STRATA_FS_EXPORT_ROOTS".into(),
                self.export.display().to_string(),
            ),
        ]
    }
}

impl Stack {
    /// Start the supervisor with no configuration, fs exporting a directory of the
    /// sandbox, and wait until every service is Healthy.
    pub fn start() -> Stack {
        Stack::launch(true, None, Vec::new())
    }

    /// Start one node of a cluster (built-in graph, fs exporting a sandbox directory and
    /// listening on `node.fs_tcp` with mutual TLS).
    pub fn start_cluster(node: &ClusterNode<'_>) -> Stack {
        Stack::launch(true, None, node.env())
    }

    /// Start the built-in graph as [`Stack::start`] does, with `env` (the supervisor's
    /// settings, e.g. `STRATA_SOCKET_GROUP`) added to the supervisor's environment.
    pub fn start_with_env(env: Vec<(String, String)>) -> Stack {
        Stack::launch(true, None, env)
    }

    /// Start with the embedded defaults only (fs exports `<state dir>/export`).
    pub fn start_with_defaults() -> Stack {
        Stack::launch(false, None, Vec::new())
    }

    /// Start registry, identity and fs from a manifest instead of the built-in graph, with
    /// `tuning` (manifest keys such as `backoff = {...}`) added to every service. fs
    /// exports a directory of the sandbox, as with [`Stack::start`].
    pub fn start_tuned(tuning: &str) -> Stack {
        Stack::launch(true, Some(tuning), Vec::new())
    }

    fn launch(own_export: bool, tuning: Option<&str>, env: Vec<(String, String)>) -> Stack {
        let sb = Sandbox::new();
        let mut cmd = sb.command("strata-supervisor");
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(tuning) = tuning {
            let manifest = sb.root().join("manifest.toml");
            let mut text = String::new();
            for name in SERVICES {
                let bin = strata_testkit::binary(&format!("strata-{name}"));
                text.push_str(&format!(
                    "[[service]]\nname = \"{name}\"\nexec = {:?}\n{tuning}\n",
                    bin.display().to_string()
                ));
                if name == "fs" {
                    text.push_str(&format!(
                        "depends_on = [\"identity\"]\nenv = {{ STRATA_FS_EXPORT_ROOTS = {:?} }}\n",
                        sb.root().join("export").display().to_string()
                    ));
                }
            }
            std::fs::write(&manifest, text).unwrap();
            cmd.arg("--config").arg(&manifest);
        }
        let given = env
            .iter()
            .find(|(k, _)| k == "STRATA_FS_EXPORT_ROOTS")
            .map(|(_, v)| PathBuf::from(v));
        let export = if let Some(export) = given {
            export
        } else if own_export {
            let export = sb.root().join("export");
            std::fs::create_dir(&export).unwrap();
            cmd.env("STRATA_FS_EXPORT_ROOTS", &export);
            export
        } else {
            cmd.env_remove("STRATA_FS_EXPORT_ROOTS");
            sb.state_dir().join("export")
        };
        // Make sure the supervisor finds the sibling binaries of this build.
        for (var, bin) in [
            ("STRATA_REGISTRY_BIN", "strata-registry"),
            ("STRATA_IDENTITY_BIN", "strata-identity"),
            ("STRATA_FS_BIN", "strata-fs"),
        ] {
            cmd.env(var, strata_testkit::binary(bin));
        }
        let supervisor = Proc::spawn("strata-supervisor", &mut cmd);
        // strata-ctl on this node speaks TLS as the node.
        let ctl_env = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("STRATA_TLS_"))
            .collect();
        let stack = Stack {
            sb,
            supervisor,
            export,
            ctl_env,
        };
        stack.wait_all_healthy();
        stack
    }

    /// Poll `supervisor.svc.list` until registry, identity and fs are all Healthy.
    pub fn wait_all_healthy(&self) {
        wait_until("every service Healthy", DEADLINE, || {
            self.services().is_some_and(|list| {
                SERVICES.iter().all(|name| {
                    list.iter()
                        .any(|s| s["name"] == *name && s["state"] == "Healthy")
                })
            })
        });
    }

    /// The supervisor's service list, if it answers.
    pub fn services(&self) -> Option<Vec<Value>> {
        let r = call(
            &self.sb.socket("supervisor"),
            "supervisor.svc.list",
            Value::Null,
            None,
        )
        .ok()?;
        r["result"]["services"].as_array().cloned()
    }

    /// A service's pid, from the supervisor.
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.services()?.iter().find(|s| s["name"] == name)?["pid"]
            .as_i64()
            .map(|p| p as i32)
    }

    /// Run `strata-ctl` against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.sb
            .command("strata-ctl")
            .envs(self.ctl_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run strata-ctl")
    }

    /// Run `strata-ctl` in raw mode and parse the printed envelope.
    pub fn raw(&self, token: Option<&str>, method: &str, params: &str) -> (Option<i32>, Value) {
        let mut args = Vec::new();
        if let Some(t) = token {
            args.extend(["-token", t]);
        }
        args.extend([method, params]);
        let out = self.ctl(&args);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{method}: no JSON on stdout; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), v)
    }

    /// SIGKILL a service and wait until the supervisor has it Healthy again with a new pid.
    // Unsafe: kill(2) of a pid the supervisor spawned (not our Child, so std cannot).
    #[allow(unsafe_code)]
    pub fn kill_and_wait_restart(&self, name: &str) {
        let old = self.pid(name).expect("service has a pid");
        // SAFETY: signalling a child of our supervisor by pid.
        unsafe {
            libc::kill(old, libc::SIGKILL);
        }
        wait_until(&format!("{name} restarted"), DEADLINE, || {
            self.services().is_some_and(|list| {
                list.iter().any(|s| {
                    s["name"] == name
                        && s["state"] == "Healthy"
                        && s["pid"].as_i64().is_some_and(|p| p as i32 != old)
                })
            })
        });
    }
}

impl Stack {
    /// Where the supervisor writes `name`'s output.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.sb.state_dir().join("logs").join(format!("{name}.log"))
    }

    /// SIGKILL `name` and wait until the supervisor has it Healthy again with a new pid.
    /// Returns how long that took, or why it did not happen within `timeout` (no panic, so
    /// a fault test can count and report it).
    // Unsafe: kill(2) of a pid the supervisor spawned (not our Child, so std cannot).
    #[allow(unsafe_code)]
    pub fn kill_and_time_restart(&self, name: &str, timeout: Duration) -> Result<Duration, String> {
        let old = self
            .pid(name)
            .ok_or_else(|| format!("{name} has no pid before the kill"))?;
        let killed_at = Instant::now();
        // SAFETY: signalling a child of our supervisor by pid.
        unsafe {
            libc::kill(old, libc::SIGKILL);
        }
        loop {
            let back = self.services().is_some_and(|list| {
                list.iter().any(|s| {
                    s["name"] == name
                        && s["state"] == "Healthy"
                        && s["pid"].as_i64().is_some_and(|p| p as i32 != old)
                })
            });
            if back {
                return Ok(killed_at.elapsed());
            }
            if killed_at.elapsed() > timeout {
                let state = self.services().map(|l| {
                    l.into_iter()
                        .find(|s| s["name"] == name)
                        .map(|s| s.to_string())
                });
                return Err(format!(
                    "{name} not Healthy again {timeout:?} after SIGKILL: {state:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every log line of every service that reports a panic, as `name: line`.
    pub fn panics_in_logs(&self) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.sb.state_dir().join("logs")) else {
            return found;
        };
        for entry in dir.flatten() {
            let text = std::fs::read(entry.path()).unwrap_or_default();
            for line in String::from_utf8_lossy(&text).lines() {
                if line.contains("panicked") {
                    found.push(format!("{}: {line}", entry.file_name().to_string_lossy()));
                }
            }
        }
        found
    }
}

/// A process as `/proc` shows it: pid, parent, start time (to tell a reused pid apart)
/// and state letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcEntry {
    /// The pid.
    pub pid: i32,
    /// The parent's pid.
    pub ppid: i32,
    /// When it started, in clock ticks since boot.
    pub start_ticks: u64,
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
}

/// `/proc/<pid>/stat`, parsed; `None` once the process is gone.
pub fn proc_entry(pid: i32) -> Option<ProcEntry> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcEntry {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Every live process descended from `root` (not `root` itself), found by walking the
/// parent links in `/proc`.
pub fn descendants(root: i32) -> BTreeSet<ProcEntry> {
    let all: Vec<ProcEntry> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(proc_entry)
                .collect()
        })
        .unwrap_or_default();
    let mut tree = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            if tree.insert(*p) {
                frontier.push(p.pid);
            }
        }
    }
    tree
}

/// Whether `p` still exists as the same process and has not merely exited unreaped.
pub fn still_running(p: &ProcEntry) -> bool {
    proc_entry(p.pid).is_some_and(|now| now.start_ticks == p.start_ticks && now.state != 'Z')
}

/// Wait up to `timeout` for every process in `procs` to be gone; returns those left.
pub fn wait_gone(procs: &BTreeSet<ProcEntry>, timeout: Duration) -> Vec<ProcEntry> {
    let until = Instant::now() + timeout;
    loop {
        let left: Vec<ProcEntry> = procs.iter().filter(|p| still_running(p)).copied().collect();
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many descriptors `pid` has open (entries of `/proc/<pid>/fd`), if it exists.
pub fn open_fds(pid: i32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmHWM`, peak resident memory), in bytes.
pub fn status_bytes(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
