//! Support for the end-to-end tests in `tests/`: a whole node (the supervisor with its
//! built-in graph) in temporary directories, and `strata-ctl` pointed at it.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use strata_testkit::{call, wait_until, Proc, Sandbox, DEADLINE};

/// A running node: supervisor, registry, identity and fs, all in one sandbox.
pub struct Stack {
    pub sb: Sandbox,
    pub supervisor: Proc,
    /// The directory fs exports.
    pub export: PathBuf,
}

impl Stack {
    /// Start the supervisor with no configuration, fs exporting a directory of the
    /// sandbox, and wait until every service is Healthy.
    pub fn start() -> Stack {
        Stack::launch(true)
    }

    /// Start with the embedded defaults only (fs exports `<state dir>/export`).
    pub fn start_with_defaults() -> Stack {
        Stack::launch(false)
    }

    fn launch(own_export: bool) -> Stack {
        let sb = Sandbox::new();
        let mut cmd = sb.command("strata-supervisor");
        let export = if own_export {
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
        let stack = Stack {
            sb,
            supervisor,
            export,
        };
        stack.wait_all_healthy();
        stack
    }

    /// Poll `supervisor.svc.list` until registry, identity and fs are all Healthy.
    pub fn wait_all_healthy(&self) {
        wait_until("every service Healthy", DEADLINE, || {
            self.services().is_some_and(|list| {
                ["registry", "identity", "fs"].iter().all(|name| {
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
