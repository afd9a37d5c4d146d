//! The supervisor's commands: `status`, `reload` and `svc …` (list, status, start, stop,
//! restart, logs; `caps` is in `svc_caps.rs`), printed for people (relative times, no
//! JSON in cells) or as the server's JSON with `-o json`.

use crate::cli::{parse_duration, Format, Svc};
use crate::commands::Session;
use crate::failure::Failure;
use crate::output::{self, cell, Column};
use crate::when;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use strata_proto::methods::supervisor::{
    self as sup, LogLine, SvcLogsParams, SvcLogsResult, SvcNameParams, SvcRestartParams,
    SvcStopParams,
};
use strata_proto::methods::sys::Health;
use strata_proto::methods::NoParams;
use strata_proto::{ErrorCode, ServiceName};

mod contact;

/// How many recent lines each `svc logs -f` poll looks at (the supervisor allows 10,000).
const FOLLOW_WINDOW: usize = 1000;

/// Most lines one `svc.logs` call may ask for.
const MAX_LINES: usize = 10_000;

impl Session {
    pub async fn status(&self) -> Result<ExitCode, Failure> {
        self.not_a_listing("status")?;
        let r = self.supervisor::<sup::Status>(&NoParams {}).await?;
        if self.format() == Format::Json {
            output::json(&r);
            return Ok(ExitCode::SUCCESS);
        }
        let x = &r.extra;
        let now = when::now_secs();
        let mut pairs: Vec<(&str, String)> = vec![
            ("node", r.node_id.clone()),
            ("version", cell(&x["version"])),
            (
                "uptime",
                format!(
                    "{} (since {})",
                    when::span(r.uptime_sec),
                    when::stamp(now - i64::try_from(r.uptime_sec).unwrap_or(0))
                ),
            ),
        ];
        let mut pid = cell(&x["pid"]);
        if let Some(guard) = x["orphan_guard"].as_u64() {
            pid.push_str(&format!(" (orphan guard {guard})"));
        }
        pairs.push(("pid", pid));
        let states = x["states"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(state, n)| format!("{} {state}", cell(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        pairs.push(("services", format!("{}: {states}", cell(&x["services"]))));
        pairs.push((
            "manifest",
            x["manifest"]
                .as_str()
                .map_or_else(|| "built-in graph".to_owned(), str::to_owned),
        ));
        let cgroup = &x["cgroup"];
        pairs.push((
            "cgroup",
            if cgroup["available"] == true {
                let controllers = list(&cgroup["controllers"]);
                format!(
                    "{} (controllers: {})",
                    cell(&cgroup["path"]),
                    if controllers.is_empty() {
                        "none".into()
                    } else {
                        controllers
                    }
                )
            } else {
                format!("unavailable: {}", cell(&cgroup["reason"]))
            },
        ));
        if x["shutting_down"] == true {
            pairs.push(("shutting down", "yes".into()));
        }
        // Cluster mode: identity's confirmed contact with etcd (skipped if it is down).
        if let Ok(mut client) = self.client("identity").await {
            client.set_timeout(Duration::from_secs(2));
            if let Ok(h) = client.call::<Health>(&NoParams {}).await {
                // `extra` is a map: indexing a missing key would panic (single node).
                if let Some(line) = h.extra.get("cluster").and_then(contact::line) {
                    pairs.push(("cluster", line));
                }
            }
        }
        // Anything newer the supervisor reports, if it fits in a cell.
        let known = [
            "version",
            "pid",
            "orphan_guard",
            "states",
            "services",
            "manifest",
            "cgroup",
            "shutting_down",
        ];
        for (k, v) in x {
            if !known.contains(&k.as_str()) && !v.is_object() && !v.is_array() {
                pairs.push((k.as_str(), cell(v)));
            }
        }
        output::fields(&pairs);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn reload(&self) -> Result<ExitCode, Failure> {
        self.not_a_listing("reload")?;
        let r = self.supervisor::<sup::Reload>(&NoParams {}).await?;
        if self.format() == Format::Json {
            output::json(&r);
        } else {
            let part = |n: &[String], what: &str| {
                if n.is_empty() {
                    format!("0 {what}")
                } else {
                    format!("{} {what} ({})", n.len(), output::printable(&n.join(", ")))
                }
            };
            let rep = &r.report;
            println!(
                "reloaded: {}, {}, {}, {}",
                part(&rep.added, "added"),
                part(&rep.removed, "removed"),
                part(&rep.changed, "changed"),
                part(&rep.unchanged, "unchanged")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn svc(&self, cmd: Svc) -> Result<ExitCode, Failure> {
        let done = |name: &ServiceName, what: String| {
            println!("{name}: {}", output::printable(&what));
            Ok(ExitCode::SUCCESS)
        };
        match cmd {
            Svc::List => self.svc_list().await,
            Svc::Status { name, lines } => self.svc_status(&name, lines).await,
            Svc::Start { name } => {
                self.not_a_listing("svc start")?;
                let r = self
                    .supervisor::<sup::SvcStart>(&SvcNameParams { name: name.clone() })
                    .await?;
                if self.format() == Format::Json {
                    output::json(&r);
                    return Ok(ExitCode::SUCCESS);
                }
                done(&name, "started".into())
            }
            Svc::Stop { name, drain_ms } => {
                self.not_a_listing("svc stop")?;
                let params = SvcStopParams {
                    name: name.clone(),
                    drain_ms,
                };
                let r = self.supervisor::<sup::SvcStop>(&params).await?;
                if self.format() == Format::Json {
                    output::json(&r);
                    return Ok(ExitCode::SUCCESS);
                }
                if r.also_stopped.is_empty() {
                    done(&name, "stopped".into())
                } else {
                    done(
                        &name,
                        format!("stopped (and its dependents {})", r.also_stopped.join(", ")),
                    )
                }
            }
            Svc::Caps { name } => self.svc_caps(&name).await,
            Svc::Restart { name } => {
                self.not_a_listing("svc restart")?;
                let params = SvcRestartParams {
                    name: name.clone(),
                    drain_ms: sup::DEFAULT_DRAIN_MS,
                };
                let r = self.supervisor::<sup::SvcRestart>(&params).await?;
                if self.format() == Format::Json {
                    output::json(&r);
                    return Ok(ExitCode::SUCCESS);
                }
                done(&name, "restarted".into())
            }
            Svc::Logs {
                name,
                lines,
                since,
                follow,
            } => self.logs(&name, lines, since.as_deref(), follow).await,
        }
    }

    async fn svc_list(&self) -> Result<ExitCode, Failure> {
        let r = self.supervisor::<sup::SvcList>(&NoParams {}).await?;
        let rows: Vec<Vec<String>> = r
            .services
            .iter()
            .map(|s| {
                let x = &s.extra;
                vec![
                    s.name.clone(),
                    format!("{:?}", s.state),
                    s.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                    cell(&x["restarts"]),
                    x["since"].as_i64().map_or_else(String::new, when::relative),
                    cell(&x["readiness"]),
                    cell(&x["restart"]),
                    dash(list(&x["depends_on"])),
                    dash(exit_summary(&x["last_exit"])),
                    dash(cell(&x["socket"])),
                ]
            })
            .collect();
        let names: Vec<String> = r.services.iter().map(|s| s.name.clone()).collect();
        self.listing(
            &r,
            &[
                Column::fixed("NAME"),
                Column::fixed("STATE"),
                Column::fixed("PID"),
                Column::fixed("RESTARTS"),
                Column::fixed("SINCE"),
                Column::wide("READINESS"),
                Column::wide("RESTART"),
                Column::wide_elastic("DEPENDS ON"),
                Column::wide_elastic("LAST EXIT"),
                Column::wide_elastic("SOCKET"),
            ],
            &rows,
            &names,
        );
        Ok(ExitCode::SUCCESS)
    }

    async fn svc_status(&self, name: &ServiceName, lines: u64) -> Result<ExitCode, Failure> {
        self.not_a_listing("svc status")?;
        let s = self
            .supervisor::<sup::SvcStatus>(&SvcNameParams { name: name.clone() })
            .await?;
        // The log lines are a control method's: a caller without the right still gets
        // the rest, and is told why the lines are missing.
        let logs = if lines == 0 {
            Ok(Vec::new())
        } else {
            let params = SvcLogsParams {
                name: name.clone(),
                lines: usize::try_from(lines).unwrap_or(MAX_LINES).min(MAX_LINES),
            };
            match self.supervisor::<sup::SvcLogs>(&params).await {
                Ok(r) => Ok(r.lines),
                Err(Failure::Server(e))
                    if matches!(
                        e.code,
                        ErrorCode::PermissionDenied | ErrorCode::Unauthenticated
                    ) =>
                {
                    Err(format!("{}: {}", e.code.name(), e.message))
                }
                Err(other) => return Err(other),
            }
        };
        if self.format() == Format::Json {
            let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert(
                    "logs".into(),
                    logs.as_ref()
                        .ok()
                        .map_or(Value::Null, |l| serde_json::to_value(l).unwrap_or_default()),
                );
            }
            output::json(&v);
            return Ok(ExitCode::SUCCESS);
        }
        let since = i64::try_from(s.since).unwrap_or(0);
        println!(
            "{}: {:?} since {}",
            output::printable(&s.name),
            s.state,
            when::stamp_and_relative(since)
        );
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(why) = &s.waiting {
            pairs.push(("waiting", why.clone()));
        }
        pairs.push(("pid", s.pid.map_or_else(|| "-".into(), |p| p.to_string())));
        if s.state == sup::SvcState::Healthy {
            let up = when::now_secs().saturating_sub(since).max(0);
            pairs.push(("uptime", when::span(up.unsigned_abs())));
        }
        pairs.push((
            "restarts",
            format!(
                "{} ({} crashes counted towards quarantine)",
                s.restarts, s.crashes_in_window
            ),
        ));
        pairs.push((
            "last exit",
            s.last_exit.as_ref().map_or_else(|| "-".into(), exit_detail),
        ));
        // Only a caller who may control the supervisor is told the command line.
        if let Some(mut exec) = s.exec.clone() {
            for a in s.args.iter().flatten() {
                exec.push(' ');
                exec.push_str(a);
            }
            pairs.push(("exec", exec));
        }
        pairs.push((
            "readiness",
            format!("{} (restart: {})", s.readiness, s.restart),
        ));
        pairs.push(("depends on", dash(s.depends_on.join(", "))));
        pairs.push(("dependents", dash(s.dependents.join(", "))));
        pairs.push(("socket", s.socket.clone().unwrap_or_else(|| "-".into())));
        if let Some(n) = s.capabilities {
            pairs.push(("capabilities", format!("{n} (strata-ctl svc caps {name})")));
        }
        match &s.applied {
            Some(applied) => pairs.extend(applied_lines(applied)),
            None => pairs.push(("limits", "- (never started)".into())),
        }
        pairs.push(("log file", s.log_file.clone()));
        output::fields(&pairs);
        match logs {
            Ok(lines) if !lines.is_empty() => {
                println!();
                let mut out = std::io::stdout().lock();
                for line in &lines {
                    let _ = writeln!(out, "{}", log_text(line));
                }
            }
            Ok(_) => {}
            Err(why) => println!("\nlog lines not shown: {}", output::printable(&why)),
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn logs(
        &self,
        name: &ServiceName,
        lines: Option<u64>,
        since: Option<&str>,
        follow: bool,
    ) -> Result<ExitCode, Failure> {
        self.not_a_listing("svc logs")?;
        let cutoff_ms = match since {
            Some(text) => {
                let secs = parse_duration(text).map_err(Failure::Usage)?;
                Some(when::now_millis().saturating_sub(secs.saturating_mul(1000)))
            }
            None => None,
        };
        let lines = lines.map(|n| usize::try_from(n).unwrap_or(MAX_LINES));
        if lines == Some(0) || lines.is_some_and(|n| n > MAX_LINES) {
            return Err(Failure::Usage(format!(
                "-n must be between 1 and {MAX_LINES}"
            )));
        }
        // With --since, look as far back as the supervisor keeps, then cut by time.
        let first = match (lines, cutoff_ms) {
            (Some(n), _) => n,
            (None, Some(_)) => MAX_LINES,
            (None, None) => 100,
        };
        let json = self.format() == Format::Json;
        let mut follower = LogFollower::new(name.clone(), first, lines.unwrap_or(0));
        loop {
            let started = follower.started();
            let (r_name, mut fresh) = follower
                .poll(|p| async move { self.supervisor::<sup::SvcLogs>(&p).await })
                .await?;
            if let Some(cutoff) = cutoff_ms {
                fresh.retain(|l| i64::try_from(l.ts_ms).unwrap_or(i64::MAX) >= cutoff);
            }
            if !started {
                if let Some(n) = lines {
                    let skip = fresh.len().saturating_sub(n);
                    fresh.drain(..skip);
                }
            }
            if json && !follow {
                output::json(&SvcLogsResult {
                    name: r_name,
                    lines: fresh,
                });
                return Ok(ExitCode::SUCCESS);
            }
            let mut out = std::io::stdout().lock();
            let mut written = Ok(());
            for line in &fresh {
                let text = if json {
                    serde_json::to_string(line).unwrap_or_default()
                } else {
                    log_text(line)
                };
                written = written.and_then(|()| writeln!(out, "{text}"));
            }
            // Whoever read the output went away (`| head -2`): stop following, quietly.
            if written.and_then(|()| out.flush()).is_err() {
                return Ok(ExitCode::SUCCESS);
            }
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Following a service's output by polling `supervisor.svc.logs` (`svc logs -f`, the
/// console's log stream): each poll returns the latest lines, and [`LogFollower::poll`]
/// gives those after the last one already given (all of them if it scrolled out of the
/// window).
pub struct LogFollower {
    name: ServiceName,
    first: usize,
    at_least: usize,
    last: Option<LogLine>,
    polled: bool,
}

impl LogFollower {
    /// A follower of `name` whose first poll asks for `first` lines and later ones for
    /// at least `at_least` (and [`FOLLOW_WINDOW`]).
    pub fn new(name: ServiceName, first: usize, at_least: usize) -> LogFollower {
        LogFollower {
            name,
            first,
            at_least,
            last: None,
            polled: false,
        }
    }

    /// Whether a poll has already answered.
    pub fn started(&self) -> bool {
        self.polled
    }

    /// One poll through `call` (a `supervisor.svc.logs` call): the service's name as the
    /// supervisor spells it and the lines not given before, oldest first.
    pub async fn poll<F, Fut>(&mut self, call: F) -> Result<(String, Vec<LogLine>), Failure>
    where
        F: FnOnce(SvcLogsParams) -> Fut,
        Fut: std::future::Future<Output = Result<SvcLogsResult, Failure>>,
    {
        // Later polls look back far enough that no line written between them is missed.
        let window = if self.polled {
            FOLLOW_WINDOW.max(self.at_least)
        } else {
            self.first
        };
        let r = call(SvcLogsParams {
            name: self.name.clone(),
            lines: window,
        })
        .await?;
        self.polled = true;
        let newest = r.lines.last().cloned();
        let fresh = match &self.last {
            Some(seen) => match r.lines.iter().rposition(|e| e == seen) {
                Some(i) => r.lines[i + 1..].to_vec(),
                None => r.lines,
            },
            None => r.lines,
        };
        if newest.is_some() {
            self.last = newest;
        }
        Ok((r.name, fresh))
    }
}

/// One log line for a terminal: `2026-12-01T13:40:02.123Z stdout     text`.
fn log_text(line: &LogLine) -> String {
    format!(
        "{} {:<10} {}",
        when::log_stamp(line.ts_ms),
        line.stream.as_str(),
        output::printable(&line.text)
    )
}

/// `a, b` from a JSON array of strings.
fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn dash(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

/// `exit code 1` / `SIGKILL`, from `{"code": 1}` / `{"signal_name": "SIGKILL"}`.
fn exit_status(v: &Value) -> String {
    if let Some(code) = v["code"].as_i64() {
        format!("exit code {code}")
    } else if let Some(sig) = v["signal_name"].as_str() {
        sig.to_owned()
    } else {
        String::new()
    }
}

/// `SIGKILL, 3 min ago` for a table cell.
fn exit_summary(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    let status = exit_status(v);
    let status = if status.is_empty() {
        cell(&v["reason"])
    } else {
        status
    };
    match v["at"].as_i64() {
        Some(at) => format!("{status}, {}", when::relative(at)),
        None => status,
    }
}

/// `exit code 1 at 2026-12-01 13:40:02 UTC (3 min ago): exited (exit code 1)`.
fn exit_detail(v: &Value) -> String {
    let mut text = exit_status(v);
    if let Some(at) = v["at"].as_i64() {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("at {}", when::stamp_and_relative(at)));
    }
    if let Some(reason) = v["reason"].as_str() {
        text.push_str(&format!(": {reason}"));
    }
    text
}

/// The `applied` report as `limits`, `cgroup`, `user` and `sandbox` lines.
fn applied_lines(applied: &Value) -> Vec<(&'static str, String)> {
    let limits = applied["limits"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, l)| limit_text(name, l))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let user = match &applied["user"] {
        Value::Null => "the supervisor's".to_owned(),
        u => format!("uid {}, gid {}", cell(&u["uid"]), cell(&u["gid"])),
    };
    let mut sandbox = Vec::new();
    if applied["no_new_privs"] == true {
        sandbox.push("no_new_privs".to_owned());
    }
    let ns = list(&applied["namespaces"]);
    if !ns.is_empty() {
        sandbox.push(format!("namespaces {ns}"));
    }
    if let Some(abi) = applied["landlock"]["abi"].as_u64() {
        sandbox.push(format!("landlock (ABI {abi})"));
    }
    vec![
        (
            "limits",
            if limits.is_empty() {
                "none".into()
            } else {
                limits
            },
        ),
        ("cgroup", dash(cell(&applied["cgroup"]))),
        ("user", user),
        ("sandbox", dash(sandbox.join(", "))),
    ]
}

/// `memory_max 32 MiB (cgroup)`, `pids_max 64 (rlimit RLIMIT_NPROC)`, `cpu_max … (not enforced)`.
fn limit_text(name: &str, l: &Value) -> String {
    let value = match l["value"].as_u64() {
        Some(n) if name.starts_with("memory") => bytes(n),
        _ => cell(&l["value"]),
    };
    let via = match (l["via"].as_str(), l["rlimit"].as_str()) {
        (Some("none"), _) => "not enforced".to_owned(),
        (Some(via), Some(rlimit)) => format!("{via} {rlimit}"),
        (Some(via), None) => via.to_owned(),
        (None, _) => String::new(),
    };
    format!("{name} {value} ({via})")
}

/// `32 MiB`, `1.5 GiB`, `512 B`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applied_limits_read_as_text() {
        let applied = json!({"limits": {"memory_max": {"value": 33554432, "via": "cgroup"},
            "pids_max": {"value": 64, "via": "rlimit", "rlimit": "RLIMIT_NPROC"},
            "cpu_max": {"value": "50000 100000", "via": "none"}},
            "cgroup": "/sys/fs/cgroup/s/web", "user": {"uid": 65534, "gid": 65534},
            "no_new_privs": true, "namespaces": ["net"], "landlock": {"abi": 7}});
        let lines = applied_lines(&applied);
        assert_eq!(
            lines[0].1,
            "cpu_max 50000 100000 (not enforced), memory_max 32 MiB (cgroup), pids_max 64 (rlimit RLIMIT_NPROC)"
        );
        assert_eq!(lines[2].1, "uid 65534, gid 65534");
        assert_eq!(lines[3].1, "no_new_privs, namespaces net, landlock (ABI 7)");
        assert_eq!(bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(
            exit_detail(&json!({"signal": 9, "signal_name": "SIGKILL", "reason": "stopped"})),
            "SIGKILL: stopped"
        );
        assert_eq!(exit_summary(&Value::Null), "");
    }
}
